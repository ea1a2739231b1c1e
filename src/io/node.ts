// Node's built-in modules, fetched on first use instead of imported. Modules the browser entry
// reaches keep their folder-path functions (Node only) next to the FileSource ones (anywhere):
// a bundler sees no `node:*` import in them, and a page that calls a path function gets one line
// saying to pass a FileSource instead. Under Node the functions behave exactly as with a static
// import (`process.getBuiltinModule`, Node ≥ 20.16; the Node entry also registers the modules
// through `io/node-preload.ts`, which covers older Node 20 releases).
import type * as Fs from 'node:fs';
import type * as Path from 'node:path';
import type * as Os from 'node:os';
import type * as Crypto from 'node:crypto';
import type * as Zlib from 'node:zlib';
import type * as Url from 'node:url';
import type * as NodeModule from 'node:module';
import type * as NodeBuffer from 'node:buffer';
import type * as WorkerThreads from 'node:worker_threads';
import { VeraError } from './errors.js';

export interface NodeBuiltins {
  'node:fs': typeof Fs;
  'node:path': typeof Path;
  'node:os': typeof Os;
  'node:crypto': typeof Crypto;
  'node:zlib': typeof Zlib;
  'node:url': typeof Url;
  'node:module': typeof NodeModule;
  'node:buffer': typeof NodeBuffer;
  'node:worker_threads': typeof WorkerThreads;
}
type Name = keyof NodeBuiltins;

const registered: Partial<NodeBuiltins> = {};

/** Registers built-ins imported statically (the Node entry does, for Node releases without getBuiltinModule). */
export function registerNodeBuiltins(mods: Partial<NodeBuiltins>): void {
  Object.assign(registered, mods);
}

interface MaybeProcess {
  versions?: { node?: string };
  getBuiltinModule?: (id: string) => unknown;
}
const proc = (): MaybeProcess | undefined => (globalThis as { process?: MaybeProcess }).process;

/** True under Node (or a runtime that provides Node's built-ins). */
export function isNode(): boolean {
  return typeof proc()?.versions?.node === 'string';
}

/** The built-in module `name`; throws one line where there is none (a browser): pass a FileSource there. */
export function nodeBuiltin<K extends Name>(name: K): NodeBuiltins[K] {
  const mod = registered[name] ?? (proc()?.getBuiltinModule?.(name) as NodeBuiltins[K] | undefined);
  if (mod === undefined) {
    throw new VeraError(isNode()
      ? `${name} is not available: this Node release lacks process.getBuiltinModule (use Node ≥ 20.16, or import the package entry first)`
      : `${name} is needed here: file paths work under Node only; in a browser pass a FileSource (urlSource, blobSource) or bytes instead`);
  }
  registered[name] = mod;
  return mod;
}

/** A stand-in for `import * as x from name` that resolves the module on first property access. */
function lazy<K extends Name>(name: K): NodeBuiltins[K] {
  return new Proxy({} as NodeBuiltins[K], {
    get(_target, prop) {
      const mod = nodeBuiltin(name) as unknown as Record<PropertyKey, unknown>;
      return mod[prop];
    },
  });
}

export const fs = lazy('node:fs');
export const path = lazy('node:path');
export const os = lazy('node:os');
export const crypto = lazy('node:crypto');
export const zlib = lazy('node:zlib');
export const url = lazy('node:url');
export const nodeModule = lazy('node:module');
export const buffer = lazy('node:buffer');

/** A one-line notice on stderr under Node, console.warn elsewhere (a page has no stderr). */
export function writeStderr(line: string): void {
  const p = (globalThis as { process?: { stderr?: { write(s: string): unknown } } }).process;
  if (p?.stderr) p.stderr.write(line.endsWith('\n') ? line : `${line}\n`);
  else console.warn(line.replace(/\n$/, ''));
}

/**
 * Bytes a new allocation may take: what the OS reports available now under Node; unknown
 * (Infinity) in a page, where the checkpoint's own size is then the only bound.
 */
export function availableMemory(): number {
  return isNode() ? Math.min(os.freemem(), os.totalmem()) : Infinity;
}

/** The largest buffer one allocation can make: Node's limit, or 2³¹ − 1 bytes elsewhere (what every engine allows). */
export function maxBufferBytes(): number {
  return isNode() ? buffer.constants.MAX_LENGTH : 2 ** 31 - 1;
}
