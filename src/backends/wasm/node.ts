// Loading the WebAssembly backend in Node, synchronously, from the package's wasm/vera.wasm (or
// VERA_WASM_MODULE): what the registry uses where the native addon could not be built, and for
// VERA_BACKEND=wasm. A missing or unloadable module is reported, not thrown.
import { nodeBuiltin } from '../../io/node.js';
import type { Kernels } from '../../tensor/kernels.js';
import { defaultWasmUrl, wasmKernels } from './index.js';
import { WA } from './wasm-api.js';

export function defaultWasmPath(): string {
  return process.env.VERA_WASM_MODULE || nodeBuiltin('node:url').fileURLToPath(defaultWasmUrl());
}

/** The WebAssembly kernels from `path` (default: the package's wasm/vera.wasm); throws when it cannot load. */
export function loadWasmKernelsSync(path = defaultWasmPath()): Kernels {
  return wasmKernels(new WA.Module(nodeBuiltin('node:fs').readFileSync(path)));
}

export type WasmLoad = { kernels: Kernels; reason?: undefined } | { kernels: null; reason: string };

export function tryLoadWasm(path = defaultWasmPath()): WasmLoad {
  if (!nodeBuiltin('node:fs').existsSync(path)) return { kernels: null, reason: `${path} not found` };
  try {
    return { kernels: loadWasmKernelsSync(path) };
  } catch (e) {
    return { kernels: null, reason: `${path}: ${e instanceof Error ? e.message : String(e)}` };
  }
}
