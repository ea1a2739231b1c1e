// The rules for every command that writes a folder (--out, --checkpoint-dir): it must not be, lie
// inside, or contain one of the command's inputs (compared as real paths, so symlinks and `a/../a`
// cannot slip past); an existing non-empty folder is refused unless --overwrite is given, and then
// it is replaced whole and atomically (io/atomic.ts writeDirAtomic 'replace'), never file by file.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { recoverDir, type WriteDirOptions } from '../io/atomic.js';
import { fail } from '../io/errors.js';

/** The flag that lets a command replace an existing non-empty output folder. */
export const OVERWRITE_HELP = 'replace an existing non-empty output folder (atomically, as a whole)';

/**
 * Real path of `p`, also when it does not exist yet: the deepest existing ancestor is resolved and
 * the rest appended.
 */
export function realPathLoose(p: string): string {
  let head = path.resolve(p);
  const tail: string[] = [];
  for (;;) {
    try {
      return path.join(fs.realpathSync(head), ...tail);
    } catch {
      const parent = path.dirname(head);
      if (parent === head) return path.join(head, ...tail);
      tail.unshift(path.basename(head));
      head = parent;
    }
  }
}

/** `inner` is `outer` or lies below it (both real, absolute paths). */
function within(inner: string, outer: string): boolean {
  const rel = path.relative(outer, inner);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** An input of the command: its flag (`--model`) and path; undefined paths are skipped. */
export type OutInput = readonly [flag: string, file: string | undefined];

/**
 * Checks an output folder before any work is done and says how to write it. Also cleans up what a
 * killed earlier run left beside it (its temp folders, or an old folder set aside mid-swap).
 */
export function prepareOut(flag: string, out: string, inputs: readonly OutInput[], overwrite: boolean): WriteDirOptions {
  const label = `${flag} ${out}`;
  const real = checkNoOverlap(flag, out, inputs);
  recoverDir(real);
  if (fs.existsSync(real)) {
    if (!fs.statSync(real).isDirectory()) fail(`${label}: exists and is not a folder`);
    if (fs.readdirSync(real).length > 0 && !overwrite) fail(`${label}: exists and is not empty (give --overwrite to replace it)`);
  }
  return { mode: overwrite ? 'replace' : 'create', label };
}

/**
 * Refuses an output folder that is, lies inside or contains an input (or the current folder);
 * returns its real path.
 */
export function checkNoOverlap(flag: string, out: string, inputs: readonly OutInput[]): string {
  const label = `${flag} ${out}`;
  const real = realPathLoose(out);
  for (const [inFlag, file] of inputs) {
    if (file === undefined) continue;
    const input = realPathLoose(file);
    if (input === real) fail(`${label}: is the same path as ${inFlag} ${file}; write to another folder`);
    if (within(real, input)) fail(`${label}: lies inside ${inFlag} ${file}; write to another folder`);
    if (within(input, real)) fail(`${label}: contains ${inFlag} ${file}, which writing there would replace; write to another folder`);
  }
  if (within(realPathLoose(process.cwd()), real)) fail(`${label}: is the current folder or one above it; write to a new folder`);
  return real;
}
