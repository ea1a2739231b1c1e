// Threads for the WebAssembly backend, made by hand: wasm/vera-threads.wasm is linked without
// emscripten's JavaScript glue (emcc 3.1.6 cannot emit it here), so this file does the glue's part
// for pthreads. The module imports one shared memory; its pool (native/thread_pool_wasm_threads.cc)
// calls pthread_create, whose JavaScript half (__pthread_create_js, below) starts a worker that
// instantiates the same module over the same memory (the start function initialises the data
// segments only once), sets its own stack pointer to the stack libc's caller allocated, and enters
// vera_thread_main, which sets up its thread state and TLS and never returns: it sleeps on an
// atomic between jobs. The caller takes part in every job and spins (a browser's main thread may
// not block), so work never waits for a worker that has not started. No Node imports: Node's worker
// spawner is in ./node.ts.
import { WA, type WasmImports, type WasmMemory, type WasmModule } from './wasm-api.js';

/** What a worker gets: the module, the memory, its libc thread (struct pthread*) and start block. */
export interface WorkerInit {
  module: WasmModule;
  memory: WasmMemory;
  pthread: number;
  start: number;
  stackTop: number;
}

/** A started worker: `ready` settles once it has instantiated the module (true) or failed (false). */
export interface WorkerHandle {
  ready: Promise<boolean>;
  terminate(): void;
}

export type SpawnWorker = (init: WorkerInit) => WorkerHandle;

// The threaded module's memory import: 16 MB initially (--initial-memory), 4 GB at most (--max-memory)
export const SHARED_PAGES = { initial: 256, maximum: 65536 } as const;

/** The shared memory a threaded module imports; throws where shared memory cannot be made. */
export function sharedMemory(): WasmMemory {
  const M = (WA as unknown as { Memory: new (d: { initial: number; maximum: number; shared: boolean }) => WasmMemory }).Memory;
  return new M({ ...SHARED_PAGES, shared: true });
}

/** True for a module built with threads: it imports its memory. */
export function isThreadedModule(module: WasmModule): boolean {
  return WA.Module.imports(module).some((i) => i.kind === 'memory');
}

// A worker's whole program, as source (a page makes it a Blob URL, Node evaluates it): plain
// JavaScript so that no bundler or compiler touches it. `veraWorker(init, ready)` builds the
// module's imports as veraImports does below (stubs and a clock), instantiates, moves its stack
// pointer to its own stack, says it is ready and runs the pool's worker loop.
export const WORKER_SOURCE = String.raw`
function veraWorker(d, ready) {
  var imports = {};
  var now = function () { return typeof performance !== 'undefined' ? performance.now() : Date.now(); };
  WebAssembly.Module.imports(d.module).forEach(function (imp) {
    var m = imports[imp.module] || (imports[imp.module] = {});
    if (imp.kind === 'memory') m[imp.name] = d.memory;
    else if (imp.name === 'clock_time_get') m[imp.name] = function (id, precision, ptr) {
      var ns = id === 0 ? Date.now() * 1e6 : now() * 1e6;
      new DataView(d.memory.buffer).setBigUint64(ptr, BigInt(Math.round(ns)), true);
      return 0;
    };
    else if (imp.name === 'proc_exit') m[imp.name] = function (code) { throw new Error('vera-threads.wasm: a worker exited (' + code + ')'); };
    else if (imp.name === '_emscripten_default_pthread_stack_size') m[imp.name] = function () { return 4 << 20; };
    else if (imp.name === 'emscripten_unwind_to_js_event_loop') m[imp.name] = function () { throw new Error('vera-threads.wasm: unwind'); };
    else m[imp.name] = function () { return 0; };
  });
  var ex = new WebAssembly.Instance(d.module, imports).exports;
  ex.stackRestore(d.stackTop);
  ready();
  ex.vera_thread_main(d.pthread, d.start);
}
`;

/** A Worker from WORKER_SOURCE in a page (module-free classic worker from a Blob URL). */
export function spawnBrowserWorker(init: WorkerInit): WorkerHandle {
  const g = globalThis as unknown as {
    Worker: new (url: string) => BrowserWorker;
    Blob: new (parts: string[], o: { type: string }) => unknown;
    URL: { createObjectURL(b: unknown): string; revokeObjectURL(u: string): void };
  };
  const url = g.URL.createObjectURL(new g.Blob([`${WORKER_SOURCE}\nself.onmessage = function (e) { self.onmessage = null; veraWorker(e.data, function () { self.postMessage('ready'); }); };\n`], { type: 'text/javascript' }));
  const w = new g.Worker(url);
  const ready = new Promise<boolean>((resolve) => {
    w.onmessage = () => resolve(true);
    w.onerror = (e) => {
      e.preventDefault?.();
      resolve(false);
    };
  });
  void ready.then(() => g.URL.revokeObjectURL(url));
  w.postMessage(init);
  return { ready, terminate: () => w.terminate() };
}

interface BrowserWorker {
  postMessage(m: unknown): void;
  terminate(): void;
  onmessage: ((e: unknown) => void) | null;
  onerror: ((e: { preventDefault?(): void }) => void) | null;
}

/** Exports of the threaded module beyond the kernels' (native/thread_pool_wasm_threads.cc). */
export interface ThreadExports {
  vera_threads_start(n: number): number;
  vera_thread_init_main(pthread: number, canBlock: number): void;
  vera_set_num_threads(n: number): number;
  vera_worker_chunks(): number;
}

/**
 * The imports of a compiled vera module: its memory when it imports one, stubs for the system calls
 * it does not need (no files or environment), a clock, and for the threaded module the two hooks of
 * emscripten's pthread glue, which reach the instance through `hooks` once it exists.
 */
export function veraImports(module: WasmModule, memory: WasmMemory | null, hooks: {
  memory(): WasmMemory;
  initMainThread(pthread: number): void;
  createThread(pthread: number, start: number): number;
}): WasmImports {
  const out: Record<string, Record<string, unknown>> = {};
  const now = (): number => (typeof performance !== 'undefined' ? performance.now() : Date.now());
  for (const imp of WA.Module.imports(module)) {
    const m = (out[imp.module] ??= {});
    if (imp.kind === 'memory') {
      if (memory === null) throw new Error(`vera.wasm: unexpected memory import ${imp.module}.${imp.name}`);
      m[imp.name] = memory;
      continue;
    }
    if (imp.kind !== 'function') throw new Error(`vera.wasm: unexpected ${imp.kind} import ${imp.module}.${imp.name}`);
    m[imp.name] = {
      proc_exit: (code: number): never => { throw new Error(`vera.wasm: the module exited (${code})`); },
      emscripten_notify_memory_growth: (): void => {},
      clock_time_get: (id: number, _precision: bigint, ptr: number): number => {
        const ns = id === 0 ? Date.now() * 1e6 : now() * 1e6;
        new DataView(hooks.memory().buffer).setBigUint64(ptr, BigInt(Math.round(ns)), true);
        return 0;
      },
      __emscripten_init_main_thread_js: (pthread: number): void => hooks.initMainThread(pthread),
      __pthread_create_js: (pthread: number, _attr: number, _entry: number, start: number): number => hooks.createThread(pthread, start),
      _emscripten_default_pthread_stack_size: (): number => 4 << 20,
      emscripten_check_blocking_allowed: (): void => {},
      emscripten_unwind_to_js_event_loop: (): never => { throw new Error('vera.wasm: unwind to the event loop'); },
    }[imp.name] ?? ((): number => 52); // ENOSYS
  }
  return out as WasmImports;
}
