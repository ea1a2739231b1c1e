// The WebAssembly backend: the C++ kernels of native/ compiled to WebAssembly (SIMD128, by
// scripts/build-wasm.mjs), for browsers and for Node where the native addon could not be built:
// wasm/vera.wasm runs one thread; wasm/vera-threads.wasm runs parallel_for on workers over a shared
// memory (./threads.ts), where shared memory exists (Node; a cross-origin isolated page).
// Storages are ranges of the module's linear memory; every kernel is one call through the same
// binding table as the native addon (native/wasm_main.cc), so the kernel mapping is the addon's
// (../native/bindings.ts). Host arguments (ids, masks, quantized weights) are copied in for the
// call. No Node imports: the Node-only synchronous loader is in ./node.ts.
import type { Kernels, Storage } from '../../tensor/kernels.js';
import type { NativeAddon } from '../native/addon.js';
import { bindingKernels } from '../native/bindings.js';
import { WA, type WasmImports, type WasmInstance, type WasmMemory, type WasmModule } from './wasm-api.js';
import {
  isThreadedModule, sharedMemory, spawnBrowserWorker, veraImports, type SpawnWorker, type ThreadExports, type WorkerHandle,
} from './threads.js';

/** `length` floats at byte address `ptr` of the module's memory. */
class WasmStorage implements Storage {
  constructor(public ptr: number, readonly length: number) {}
  freed = false;
}

/** The WebAssembly kernels, with their threads. */
export interface WasmKernels extends Kernels {
  /** Threads kernels run on, the caller included (1 for wasm/vera.wasm). */
  readonly threads: number;
  /** Uses at most `n` of the threads started (at least 1); returns how many are used now. */
  setThreads(n: number): number;
  /** Terminates the workers (the kernels keep working, on one thread). */
  dispose(): void;
  /**
   * Settles once every worker has instantiated the module (or failed to: it is then not counted).
   * Kernels may run before: the workers join the jobs published after they are up.
   */
  readonly whenReady: Promise<void>;
  /** Chunks of parallel work the workers have run so far (the rest ran on the calling thread; 0 without workers). */
  readonly workerChunks: number;
}

interface VeraExports {
  memory: WasmMemory;
  _initialize(): void;
  vera_slots(): number;
  vera_max_args(): number;
  vera_binding_count(): number;
  vera_binding_name(i: number): number;
  vera_call(index: number, argc: number): number;
  vera_result_number(): number;
  vera_result_string(): number;
  vera_error(): number;
  vera_gemm_kernel(): number;
  vera_malloc(bytes: number): number;
  vera_calloc(bytes: number): number;
  vera_free(ptr: number): void;
}

// Slot layout of native/wasm_args.h: { f64 num; u32 tag, ptr, len, pad } = 24 bytes
const TAG = { null: 0, number: 1, bool: 2, f32: 3, i32: 4, u8: 5, numbers: 6, f32list: 7 } as const;

/** Most threads started by default: the GEMM gains little past this many. */
export const DEFAULT_MAX_THREADS = 8;

export interface WasmThreadOptions {
  /** Threads to run, the caller included; 1 = no workers. */
  threads: number;
  /** Starts one worker (a page's Worker, Node's worker_threads). */
  spawn: SpawnWorker;
  /** Whether the calling thread may block on an atomic (a page's main thread may not). */
  canBlock: boolean;
}

type Instantiate<R> = (imports: WasmImports) => R;

/**
 * Instantiates a compiled vera module and returns its kernels: wasm/vera.wasm as it is;
 * wasm/vera-threads.wasm over a new shared memory, with `threads.threads - 1` workers started
 * (none when `threads` is null). `instantiate` makes the instance: synchronously in Node,
 * asynchronously in a page.
 */
export function instantiateKernels(module: WasmModule, threads: WasmThreadOptions | null, instantiate: Instantiate<WasmInstance>): WasmKernels;
export function instantiateKernels(module: WasmModule, threads: WasmThreadOptions | null, instantiate: Instantiate<Promise<WasmInstance>>): Promise<WasmKernels>;
export function instantiateKernels(module: WasmModule, threads: WasmThreadOptions | null, instantiate: Instantiate<WasmInstance | Promise<WasmInstance>>): WasmKernels | Promise<WasmKernels> {
  const memory = isThreadedModule(module) ? sharedMemory() : null;
  let ex: (VeraExports & Partial<ThreadExports>) | undefined;
  const workers: WorkerHandle[] = [];
  const imports = veraImports(module, memory, {
    memory: () => memory ?? ex!.memory,
    initMainThread: (pthread) => ex!.vera_thread_init_main!(pthread, threads === null || threads.canBlock ? 1 : 0),
    createThread: (pthread, start) => {
      if (threads === null || memory === null) return 6; // EAGAIN
      try {
        const stackTop = new Uint32Array(memory.buffer, start, 1)[0];
        workers.push(threads.spawn({ module, memory, pthread, start, stackTop }));
        return 0;
      } catch {
        return 6;
      }
    },
  });
  const finish = (instance: WasmInstance): WasmKernels => {
    ex = instance.exports as unknown as VeraExports & Partial<ThreadExports>;
    if (memory !== null) ex = { ...ex, memory };
    ex._initialize();
    const started = ex.vera_threads_start?.(threads === null ? 1 : Math.max(1, Math.floor(threads.threads))) ?? 1;
    return kernelsOf(ex, started, workers);
  };
  const made = instantiate(imports);
  return made instanceof Promise ? made.then(finish) : finish(made);
}

/** Where the modules are looked for by default: wasm/ of the package, next to dist/. */
export function defaultWasmUrl(threaded = false): URL {
  return new URL(`../../../../wasm/${threaded ? 'vera-threads.wasm' : 'vera.wasm'}`, import.meta.url);
}

async function fetchBytes(url: string | URL): Promise<ArrayBuffer> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`vera.wasm: fetching ${String(url)} gave HTTP ${res.status}`);
  return res.arrayBuffer();
}

export interface LoadWasmOptions {
  /** The single-threaded module's bytes (instead of fetching `url`). */
  bytes?: ArrayBuffer | Uint8Array;
  /** The single-threaded module (default: the package's wasm/vera.wasm beside dist/). */
  url?: string | URL;
  /** The threaded module's bytes (instead of fetching `threadsUrl`). */
  threadsBytes?: ArrayBuffer | Uint8Array;
  /** The threaded module (default: vera-threads.wasm beside `url`, else the package's). */
  threadsUrl?: string | URL;
  /**
   * Threads, the caller included (default: navigator.hardwareConcurrency, at most
   * DEFAULT_MAX_THREADS). More than 1 needs shared memory and workers, which a page has when it is
   * cross-origin isolated; elsewhere, or when the threaded module cannot be fetched, one thread.
   */
  threads?: number;
}

/**
 * Loads the WebAssembly backend in a page (or anywhere with fetch): the threaded module when more
 * than one thread is wanted and the page can share memory (crossOriginIsolated), resolving once
 * its workers are up; else the single-threaded one.
 */
export async function loadWasmKernels(opts: LoadWasmOptions = {}): Promise<WasmKernels> {
  if (opts.threads !== undefined && !(Number.isInteger(opts.threads) && opts.threads >= 1)) throw new Error(`loadWasmKernels: threads must be an integer >= 1, got ${opts.threads}`);
  const g = globalThis as { document?: unknown; crossOriginIsolated?: boolean; SharedArrayBuffer?: unknown; Worker?: unknown; navigator?: { hardwareConcurrency?: number }; location?: { href: string } };
  const threads = opts.threads ?? Math.max(1, Math.min(g.navigator?.hardwareConcurrency ?? 1, DEFAULT_MAX_THREADS));
  if (threads > 1 && g.crossOriginIsolated === true && g.SharedArrayBuffer !== undefined && g.Worker !== undefined) {
    let bytes: ArrayBuffer | Uint8Array | null = opts.threadsBytes ?? null;
    if (bytes === null && opts.bytes === undefined) {
      const url = opts.threadsUrl ?? (opts.url !== undefined ? new URL('vera-threads.wasm', new URL(opts.url, g.location?.href)) : defaultWasmUrl(true));
      bytes = await fetchBytes(url).catch(() => null); // not there: one thread
    }
    if (bytes !== null) {
      const module = await WA.compile(bytes);
      // a shared memory of 4 GB at most may not be had (a 32-bit browser): one thread then
      const k = await instantiateKernels(module, { threads, spawn: spawnBrowserWorker, canBlock: g.document === undefined }, (imports) => WA.instantiate(module, imports)).catch(() => null);
      if (k !== null) {
        await k.whenReady;
        return k;
      }
    }
  }
  const module = await WA.compile(opts.bytes ?? (await fetchBytes(opts.url ?? defaultWasmUrl())));
  return instantiateKernels(module, null, (imports) => WA.instantiate(module, imports));
}

function kernelsOf(ex: VeraExports & Partial<ThreadExports>, started: number, workers: WorkerHandle[]): WasmKernels {
  const mem = ex.memory;
  // addresses are stable; typed-array views are not (memory.grow detaches them), so views are
  // made afresh after anything that may allocate, never kept
  const slots = ex.vera_slots();
  const maxArgs = ex.vera_max_args();
  const cstring = (ptr: number): string => {
    const bytes = new Uint8Array(mem.buffer);
    let end = ptr;
    while (bytes[end] !== 0) end++;
    // a copy: TextDecoder refuses views of a shared memory
    return new TextDecoder().decode(bytes.slice(ptr, end));
  };
  const malloc = (bytes: number, what: string): number => {
    const p = ex.vera_malloc(bytes);
    if (p === 0) throw new Error(`wasm: out of memory (${bytes} bytes for ${what}; the module's memory holds at most 4 GB)`);
    return p;
  };

  // quantized weights are frozen host arrays used call after call: their copy in the module is
  // kept while the array lives (and freed after it is collected)
  const kept = new WeakMap<Uint8Array, number>();
  const release = new FinalizationRegistry<number>((ptr) => ex.vera_free(ptr));

  const index = new Map<string, number>();
  for (let i = 0; i < ex.vera_binding_count(); i++) index.set(cstring(ex.vera_binding_name(i)), i);

  function call(name: string, args: readonly unknown[]): unknown {
    const at = index.get(name);
    if (at === undefined) throw new Error(`wasm: vera.wasm has no kernel '${name}'`);
    if (args.length > maxArgs) throw new Error(`wasm: ${name}: ${args.length} arguments, at most ${maxArgs}`);
    // first everything that may allocate (and grow memory), then the writes through fresh views
    const temps: number[] = [];
    const rows: [tag: number, num: number, ptr: number, len: number][] = [];
    const copies: [ptr: number, data: Float32Array | Int32Array | Uint8Array | Float64Array | Uint32Array][] = [];
    const back: [ptr: number, host: Int32Array][] = [];
    const temp = (bytes: number, what: string): number => {
      const p = malloc(bytes, what);
      temps.push(p);
      return p;
    };
    const live = (s: WasmStorage, i: number): WasmStorage => {
      if (s.freed) throw new Error(`wasm: ${name}: argument ${i} is a freed storage`);
      return s;
    };
    try {
      args.forEach((a, i) => {
        if (a === null || a === undefined) rows.push([TAG.null, 0, 0, 0]);
        else if (typeof a === 'number') rows.push([TAG.number, a, 0, 0]);
        else if (typeof a === 'boolean') rows.push([TAG.bool, a ? 1 : 0, 0, 0]);
        else if (a instanceof WasmStorage) rows.push([TAG.f32, 0, live(a, i).ptr, a.length]);
        else if (a instanceof Float32Array) {
          const p = temp(a.byteLength, name);
          copies.push([p, a]);
          rows.push([TAG.f32, 0, p, a.length]);
        } else if (a instanceof Int32Array) {
          const p = temp(a.byteLength, name);
          copies.push([p, a]);
          back.push([p, a]);
          rows.push([TAG.i32, 0, p, a.length]);
        } else if (a instanceof Uint8Array) {
          let p = kept.get(a);
          if (p === undefined) {
            p = malloc(a.byteLength, name);
            new Uint8Array(mem.buffer, p, a.length).set(a);
            kept.set(a, p);
            release.register(a, p);
          }
          rows.push([TAG.u8, 0, p, a.length]);
        } else if (Array.isArray(a) && a.every((e) => e instanceof WasmStorage)) {
          const pairs = Uint32Array.from(a.flatMap((e: WasmStorage) => [live(e, i).ptr, e.length]));
          const p = temp(Math.max(8, pairs.byteLength), name);
          copies.push([p, pairs]);
          rows.push([a.length === 0 ? TAG.numbers : TAG.f32list, 0, p, a.length]);
        } else if (Array.isArray(a) && a.every((e) => typeof e === 'number')) {
          const p = temp(Math.max(8, a.length * 8), name);
          copies.push([p, Float64Array.from(a as number[])]);
          rows.push([TAG.numbers, 0, p, a.length]);
        } else throw new Error(`wasm: ${name}: argument ${i} has a type no kernel takes`);
      });
      for (const [p, data] of copies) {
        const Ctor = data.constructor as { new (b: ArrayBuffer, o: number, n: number): typeof data };
        new Ctor(mem.buffer, p, data.length).set(data as never);
      }
      const f64 = new Float64Array(mem.buffer, slots, maxArgs * 3);
      const u32 = new Uint32Array(mem.buffer, slots, maxArgs * 6);
      rows.forEach(([tag, num, ptr, len], i) => {
        f64[i * 3] = num;
        u32[i * 6 + 2] = tag;
        u32[i * 6 + 3] = ptr;
        u32[i * 6 + 4] = len;
      });
      const r = ex.vera_call(at, args.length);
      if (r < 0) throw new Error(cstring(ex.vera_error()));
      for (const [p, host] of back) host.set(new Int32Array(mem.buffer, p, host.length));
      return r === 1 ? ex.vera_result_number() : r === 2 ? cstring(ex.vera_result_string()) : undefined;
    } finally {
      for (const p of temps) ex.vera_free(p);
    }
  }

  // an object with the addon's functions, each one call into the module
  const fns = new Map<string, (...args: unknown[]) => unknown>();
  const addon = new Proxy({}, {
    get: (_t, prop) => {
      if (typeof prop !== 'string') return undefined;
      let fn = fns.get(prop);
      if (fn === undefined) fns.set(prop, (fn = (...args: unknown[]) => call(prop, args)));
      return fn;
    },
  }) as NativeAddon;
  const st = (s: Storage): WasmStorage => {
    if (!(s instanceof WasmStorage)) throw new Error('wasm: a storage of another backend');
    if (s.freed) throw new Error('wasm: the storage was freed');
    return s;
  };
  // The tensor layer frees few storages itself and leaves the rest to the garbage collector, which
  // knows nothing of linear memory: a storage whose object is collected gives its memory back
  // through this registry. Its callbacks run as tasks, so code that never yields to the event loop
  // (a synchronous loop of training steps) keeps everything it allocated until it does; the
  // trainers yield after every step.
  const collected = new FinalizationRegistry<number>((ptr) => ex.vera_free(ptr));
  const allocate = (length: number, zero: boolean): WasmStorage => {
    if (!(Number.isInteger(length) && length >= 0)) throw new Error(`wasm: alloc: length ${length} is not an integer >= 0`);
    const bytes = Math.max(16, length * 4);
    if (bytes > 0xffffffff) throw new Error(`wasm: alloc: ${length} floats do not fit in 4 GB of WebAssembly memory`);
    const p = zero ? ex.vera_calloc(bytes) : ex.vera_malloc(bytes);
    if (p === 0) throw new Error(`wasm: out of memory allocating ${length} floats (the module's memory holds at most 4 GB)`);
    const s = new WasmStorage(p, length);
    collected.register(s, p, s);
    return s;
  };

  const kernels = bindingKernels(addon);
  let threads = started;
  let disposed = false;
  // a worker that failed to start never joins a job; it is only not counted
  const whenReady = Promise.all(workers.map((w) => w.ready)).then((up) => {
    const failed = up.filter((ok) => !ok).length;
    if (failed > 0 && !disposed) threads = ex.vera_set_num_threads?.(Math.min(threads, started - failed)) ?? 1;
  });
  return {
    ...kernels,
    name: 'wasm',
    get threads() {
      return threads;
    },
    get workerChunks() {
      return ex.vera_worker_chunks?.() ?? 0;
    },
    setThreads: (n) => {
      if (!(Number.isInteger(n) && n >= 1)) throw new Error(`wasm: setThreads: ${n} is not an integer >= 1`);
      if (!disposed) threads = ex.vera_set_num_threads?.(n) ?? 1;
      return threads;
    },
    dispose: () => {
      if (disposed) return;
      disposed = true;
      threads = ex.vera_set_num_threads?.(1) ?? 1;
      for (const w of workers) w.terminate();
    },
    whenReady,
    alloc: (length) => allocate(length, true),
    fromArray: (data) => {
      const s = allocate(data.length, false);
      new Float32Array(mem.buffer, s.ptr, data.length).set(data);
      return s;
    },
    // a fresh view each time: valid until the next allocation (which may grow memory and detach it)
    read: (s) => new Float32Array(mem.buffer, st(s).ptr, s.length),
    write: (s, data, offset) => {
      const w = st(s);
      if (!(Number.isInteger(offset) && offset >= 0 && offset + data.length <= w.length)) {
        throw new Error(`wasm: write: ${data.length} values at offset ${offset} do not fit in a storage of ${w.length}`);
      }
      new Float32Array(mem.buffer, w.ptr, w.length).set(data, offset);
    },
    free: (s) => {
      const w = s as WasmStorage;
      if (!(w instanceof WasmStorage) || w.freed) return;
      w.freed = true;
      collected.unregister(w);
      ex.vera_free(w.ptr);
    },
  };
}
