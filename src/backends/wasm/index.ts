// The WebAssembly backend: the C++ kernels of native/ compiled to wasm/vera.wasm (SIMD128, by
// scripts/build-wasm.mjs), for browsers and for Node where the native addon could not be built.
// Storages are ranges of the module's linear memory; every kernel is one call through the same
// binding table as the native addon (native/wasm_main.cc), so the kernel mapping is the addon's
// (../native/bindings.ts). Host arguments (ids, masks, quantized weights) are copied in for the
// call. One thread. No Node imports: the Node-only synchronous loader is in ./node.ts.
import type { Kernels, Storage } from '../../tensor/kernels.js';
import type { NativeAddon } from '../native/addon.js';
import { bindingKernels } from '../native/bindings.js';
import { WA, type WasmImports, type WasmInstance, type WasmMemory, type WasmModule } from './wasm-api.js';

/** `length` floats at byte address `ptr` of the module's memory. */
class WasmStorage implements Storage {
  constructor(public ptr: number, readonly length: number) {}
  freed = false;
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

/** The module's imports: nothing it needs at run time (no files, clock or environment); stubs for the rest. */
function imports(module: WasmModule): WasmImports {
  const out: WasmImports = {};
  for (const imp of WA.Module.imports(module)) {
    if (imp.kind !== 'function') throw new Error(`vera.wasm: unexpected ${imp.kind} import ${imp.module}.${imp.name}`);
    const fn = imp.name === 'proc_exit'
      ? (code: number): never => { throw new Error(`vera.wasm: the module exited (${code})`); }
      : imp.name === 'emscripten_notify_memory_growth' ? (): void => {} : (): number => 52; // ENOSYS
    (out[imp.module] ??= {})[imp.name] = fn;
  }
  return out;
}

/** Instantiates a compiled vera.wasm and returns its kernels. */
export function wasmKernels(module: WasmModule): Kernels {
  return kernelsOf(new WA.Instance(module, imports(module)));
}

/** Where the module is looked for by default: wasm/vera.wasm of the package, next to dist/. */
export function defaultWasmUrl(): URL {
  return new URL('../../../../wasm/vera.wasm', import.meta.url);
}

/**
 * Loads the WebAssembly backend in a browser (or anywhere with fetch): from `bytes`, else from
 * `url` (default: the package's wasm/vera.wasm beside dist/). `threads` is accepted for the
 * interface's sake; this build runs one thread whatever it says.
 */
export async function loadWasmKernels(opts: { bytes?: ArrayBuffer | Uint8Array; url?: string | URL; threads?: number } = {}): Promise<Kernels> {
  let bytes = opts.bytes;
  if (bytes === undefined) {
    const url = opts.url ?? defaultWasmUrl();
    const res = await fetch(url);
    if (!res.ok) throw new Error(`vera.wasm: fetching ${String(url)} gave HTTP ${res.status}`);
    bytes = await res.arrayBuffer();
  }
  const module = await WA.compile(bytes);
  const instance = await WA.instantiate(module, imports(module));
  return kernelsOf(instance);
}

function kernelsOf(instance: WasmInstance): Kernels {
  const ex = instance.exports as unknown as VeraExports;
  ex._initialize();
  const mem = ex.memory;
  // addresses are stable; typed-array views are not (memory.grow detaches them), so views are
  // made afresh after anything that may allocate, never kept
  const slots = ex.vera_slots();
  const maxArgs = ex.vera_max_args();
  const cstring = (ptr: number): string => {
    const bytes = new Uint8Array(mem.buffer);
    let end = ptr;
    while (bytes[end] !== 0) end++;
    return new TextDecoder().decode(bytes.subarray(ptr, end));
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
  const allocate = (length: number, zero: boolean): WasmStorage => {
    if (!(Number.isInteger(length) && length >= 0)) throw new Error(`wasm: alloc: length ${length} is not an integer >= 0`);
    const bytes = Math.max(16, length * 4);
    if (bytes > 0xffffffff) throw new Error(`wasm: alloc: ${length} floats do not fit in 4 GB of WebAssembly memory`);
    const p = zero ? ex.vera_calloc(bytes) : ex.vera_malloc(bytes);
    if (p === 0) throw new Error(`wasm: out of memory allocating ${length} floats (the module's memory holds at most 4 GB)`);
    return new WasmStorage(p, length);
  };

  const kernels = bindingKernels(addon);
  return {
    ...kernels,
    name: 'wasm',
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
      ex.vera_free(w.ptr);
    },
  };
}
