// Backend selection. Under Node, `VERA_BACKEND=ts|native` chooses at import; native (the C++ addon)
// is the default when it was built at install, else the reference TypeScript backend, with a
// one-line notice saying why. Elsewhere (a page) nothing Node is touched: the TypeScript backend is
// active until `initBackend` picks another. Backends that need asynchronous setup (WebAssembly,
// WebGPU) register a loader, which runs only when `initBackend` asks for that backend.
import { setKernels, hasKernels } from '../tensor/device.js';
import type { Kernels } from '../tensor/kernels.js';
import { checkedKernels } from '../tensor/kernel-checks.js';
import { isNode, writeStderr } from '../io/node.js';
import { tsKernels } from './ts/index.js';
import { loadAddon, nativeKernels } from './native/index.js';
import { tryLoadWasm } from './wasm/node.js';

// every registered backend runs behind the same argument checks (buffer lengths against the
// sizes a kernel will touch), so a new backend is as safe as these two
const available: Record<string, Kernels> = { ts: checkedKernels(tsKernels) };
const loaders = new Map<string, (options: BackendOptions) => Promise<Kernels>>();

/** Options `initBackend` hands to a backend's loader (each loader takes what applies to it). */
export interface BackendOptions {
  /** Threads (the WebAssembly loader: more than 1 needs a cross-origin isolated page; default the cores, at most 8). */
  threads?: number;
}
let activeName: string | null = null;

/** Which backend `initBackend()` without a name takes first, when it is ready or loads. */
const PREFERENCE = ['native', 'webgpu', 'wasm', 'ts'];


const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
const wanted = env?.VERA_BACKEND;
// VERA_BACKEND=ts never touches the addon; outside Node there is none
const native = !isNode() || wanted === 'ts' ? null : loadAddon();
if (native?.addon) available.native = checkedKernels(nativeKernels(native.addon));
// under Node, the WebAssembly build of the same kernels, loaded only when asked for or when there is no addon
const wasm = !isNode() || wanted === 'ts' || (native?.addon && wanted !== 'wasm') ? null : tryLoadWasm();
if (wasm?.kernels) available.wasm = checkedKernels(wasm.kernels);

/** Backends ready to use now (those with a loader join once `initBackend` has loaded them). */
export function backendNames(): string[] {
  return Object.keys(available);
}

/** Backends registered with a loader that has not run yet. */
export function backendLoaderNames(): string[] {
  return [...loaders.keys()].filter((n) => !(n in available));
}

/** The name of the active backend. */
export function activeBackend(): string | null {
  return activeName;
}

/** Activate a backend by name (one that is ready: see `initBackend` for those with a loader). */
export function useBackend(name: string): Kernels {
  const k = available[name];
  if (k === undefined) {
    const later = loaders.has(name) ? ` ('${name}' has a loader: await initBackend('${name}') first)` : '';
    throw new Error(`VERA_BACKEND: unknown backend '${name}' (available: ${backendNames().join(', ')})${later}`);
  }
  setKernels(k);
  activeName = name;
  return k;
}

function checkName(name: string, what: string): void {
  if (typeof name !== 'string' || !/^[a-z][a-z0-9_-]*$/.test(name)) throw new Error(`${what}: backend name must be lowercase letters, digits, '-' or '_', got ${JSON.stringify(name)}`);
  if (name in available) throw new Error(`${what}: a backend named '${name}' is already registered`);
}

/** Registers a ready backend (it runs behind the same argument checks as the built-in ones); it is not activated. */
export function registerBackend(name: string, kernels: Kernels): void {
  checkName(name, 'registerBackend');
  available[name] = checkedKernels(kernels);
  loaders.delete(name);
}

/** Registers a backend whose kernels need asynchronous setup (compiling WebAssembly, requesting a GPU device); `initBackend` runs it. */
export function registerBackendLoader(name: string, load: (options: BackendOptions) => Promise<Kernels>): void {
  checkName(name, 'registerBackendLoader');
  loaders.set(name, load);
}

async function ready(name: string, options: BackendOptions = {}): Promise<Kernels> {
  const k = available[name];
  if (k !== undefined) return k;
  const load = loaders.get(name);
  if (load === undefined) throw new Error(`initBackend: unknown backend '${name}' (available: ${[...backendNames(), ...backendLoaderNames()].join(', ')})`);
  const loaded = checkedKernels(await load(options));
  // a second initBackend while the first was loading keeps the first result
  available[name] ??= loaded;
  loaders.delete(name);
  return available[name];
}

/**
 * Activates `name` (running its loader first if it has one), or without a name the first of
 * native, webgpu, wasm, ts that is ready or loads (VERA_BACKEND under Node, when set, is the name).
 * Resolves to the name activated; a named backend that fails to load rejects with its reason.
 * `options` go to the loader, if the backend has one that has not run yet.
 */
export async function initBackend(name: string | undefined = wanted, options: BackendOptions = {}): Promise<string> {
  if (name !== undefined) {
    await ready(name, options);
    useBackend(name);
    return name;
  }
  const reasons: string[] = [];
  const order = [...PREFERENCE, ...backendNames(), ...loaders.keys()];
  for (const n of new Set(order)) {
    if (!(n in available) && !loaders.has(n)) continue;
    try {
      await ready(n, options);
      useBackend(n);
      return n;
    } catch (e) {
      reasons.push(`${n}: ${(e as Error).message}`);
    }
  }
  throw new Error(`initBackend: no backend could be loaded (${reasons.join('; ')})`);
}

export { tsKernels };

// Backends loaded on demand (a page: WebAssembly, WebGPU)
if (!('wasm' in available)) registerBackendLoader('wasm', (o) => import('./wasm/index.js').then((m) => m.loadWasmKernels({ threads: o.threads })));
registerBackendLoader('webgpu', () => import('./webgpu/index.js').then((m) => m.loadWebGpuKernels()));

if (!hasKernels()) {
  const fallback = 'native' in available ? 'native' : 'wasm' in available ? 'wasm' : 'ts';
  if (native && native.addon === null && wanted !== 'wasm') {
    const using = fallback === 'wasm' ? 'the WebAssembly backend' : `the TypeScript backend${wasm?.reason ? ` (WebAssembly: ${wasm.reason})` : ''}`;
    writeStderr(`vera: native backend not available (${native.reason}); using ${using}`);
  } else if (wanted && !(wanted in available)) writeStderr(`vera: VERA_BACKEND=${wanted} is not available here (have: ${backendNames().join(', ')}); using ${fallback}`);
  useBackend(wanted && wanted in available ? wanted : fallback);
}
