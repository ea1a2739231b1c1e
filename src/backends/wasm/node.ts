// Loading the WebAssembly backend in Node, synchronously: what the registry uses where the native
// addon could not be built, and for VERA_BACKEND=wasm. With more than one thread (VERA_NUM_THREADS,
// default the machine's cores up to DEFAULT_MAX_THREADS) the package's wasm/vera-threads.wasm on
// worker_threads (unref'd: they never keep the process alive), else wasm/vera.wasm; VERA_WASM_MODULE
// names another module (threaded or not, as it was built). A missing or unloadable module is
// reported, not thrown.
import { nodeBuiltin, writeStderr } from '../../io/node.js';
import { DEFAULT_MAX_THREADS, defaultWasmUrl, instantiateKernels, type WasmKernels } from './index.js';
import { WORKER_SOURCE, type WorkerHandle, type WorkerInit } from './threads.js';
import { WA } from './wasm-api.js';

/** Threads from VERA_NUM_THREADS, else the machine's cores (at most DEFAULT_MAX_THREADS). */
export function defaultWasmThreads(): number {
  const env = process.env.VERA_NUM_THREADS;
  if (env !== undefined && env !== '') {
    const n = Number(env);
    if (!(Number.isInteger(n) && n >= 1)) throw new Error(`VERA_NUM_THREADS must be an integer >= 1, got '${env}'`);
    return n;
  }
  return Math.max(1, Math.min(nodeBuiltin('node:os').availableParallelism(), DEFAULT_MAX_THREADS));
}

export function defaultWasmPath(threads = defaultWasmThreads()): string {
  return process.env.VERA_WASM_MODULE || nodeBuiltin('node:url').fileURLToPath(defaultWasmUrl(threads > 1));
}

// an ES module from a data: URL, not `eval: true`: an eval'd worker inherits the parent's
// --input-type=module and then has no require
const WORKER_URL = `data:text/javascript,${encodeURIComponent(`import { workerData, parentPort } from 'node:worker_threads';\n${WORKER_SOURCE}\nveraWorker(workerData, () => parentPort.postMessage('ready'));\n`)}`;
let warned = false;

/** One worker thread running WORKER_SOURCE; unref'd, so it never keeps the process alive. */
export function spawnNodeWorker(init: WorkerInit): WorkerHandle {
  const { Worker } = nodeBuiltin('node:worker_threads');
  const w = new Worker(new URL(WORKER_URL), { workerData: init });
  w.unref();
  const ready = new Promise<boolean>((resolve) => {
    w.once('message', () => resolve(true));
    // a worker that fails (or is terminated before it is up) is only not counted
    w.once('error', (e) => {
      if (!warned) writeStderr(`vera: a WebAssembly worker thread failed (${e.message}); the wasm backend runs on fewer threads`);
      warned = true;
      resolve(false);
    });
    w.once('exit', () => resolve(false));
  });
  return { ready, terminate: () => void w.terminate() };
}

/**
 * The WebAssembly kernels from `path` (default: the package's module for `threads`); throws when
 * it cannot load. `threads` (default VERA_NUM_THREADS, else the cores up to DEFAULT_MAX_THREADS)
 * applies to a threaded module only.
 */
export function loadWasmKernelsSync(path?: string, threads = defaultWasmThreads()): WasmKernels {
  const module = new WA.Module(nodeBuiltin('node:fs').readFileSync(path ?? defaultWasmPath(threads)));
  return instantiateKernels(module, { threads, spawn: spawnNodeWorker, canBlock: true }, (imports) => new WA.Instance(module, imports));
}

export type WasmLoad = { kernels: WasmKernels; reason?: undefined } | { kernels: null; reason: string };

let registry: WasmKernels | null = null;

/** The kernels tryLoadWasm loaded for the registry (its 'wasm' backend), if any: their threads, whenReady. */
export function registryWasmKernels(): WasmKernels | null {
  return registry;
}

/** Loads the module for the registry; a missing or unloadable module is the reason, not a throw. */
export function tryLoadWasm(path?: string): WasmLoad {
  let file = path ?? '';
  try {
    const threads = defaultWasmThreads();
    file = path ?? defaultWasmPath(threads);
    if (!nodeBuiltin('node:fs').existsSync(file)) return { kernels: null, reason: `${file} not found` };
    registry = loadWasmKernelsSync(file, threads);
    return { kernels: registry };
  } catch (e) {
    return { kernels: null, reason: `${file}: ${e instanceof Error ? e.message : String(e)}` };
  }
}
