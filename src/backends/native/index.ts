// The native backend: the C++ addon in native/ (N-API), multithreaded, AVX2/FMA GEMM. Storages
// are plain Float32Arrays whose ArrayBuffer memory the addon reads and writes in place, so data
// stays put between ops and `read` is a view; `free` detaches the buffer to release it at once.
// The kernel mapping itself is in bindings.ts (shared with the WebAssembly backend).
import type { Kernels } from '../../tensor/kernels.js';
import type { NativeAddon } from './addon.js';
import { bindingKernels } from './bindings.js';

export { loadAddon, defaultAddonPath, type NativeAddon, type AddonLoad } from './addon.js';

let unsetFill: number | null = null;

/**
 * For tests: fill every storage handed out by `allocUnset` with `value` (null: leave it as the
 * allocator gave it). Zero gives the reference; NaN or a huge finite value then shows an element
 * that an op's kernel left unwritten as a changed result.
 */
export function fillUnsetStorage(value: number | null): void {
  unsetFill = value;
}

/**
 * Storages of at least this many floats start on a 64-byte boundary. Node's allocator aligns to
 * 16, so a GEMM's 32- and 64-byte loads and stores could straddle cache lines (rows stay aligned
 * when their length is a multiple of 16 floats): aligned operands made the products of a 64-row
 * decode step 3–6% faster and a 2048² product 2–4% (Zen 4, paused machine). Smaller storages skip
 * the extra call into the addon.
 */
const ALIGNED_FROM = 1024;

/** A storage of `length` floats, zeroed or not (`unset`), aligned where the addon can say how. */
function storage(n: NativeAddon, length: number, unset: boolean): Float32Array {
  const aligned = n.alignOffset !== undefined && length >= ALIGNED_FROM;
  const bytes = length * 4 + (aligned ? 60 : 0);
  // Node's allocator without its zero-fill: never the shared pool of Buffer.allocUnsafe (`free`
  // detaches a storage's whole ArrayBuffer)
  const buffer = unset ? Buffer.allocUnsafeSlow(bytes).buffer : new ArrayBuffer(bytes);
  if (!aligned) return new Float32Array(buffer, 0, length);
  const offset = n.alignOffset!(buffer);
  if (offset % 4 !== 0) return new Float32Array(buffer, 0, length); // (malloc aligns to 16 at least)
  // the padding around the view is zeroed: `.buffer` of a storage never shows old process memory
  if (unset) {
    new Uint8Array(buffer, 0, offset).fill(0);
    new Uint8Array(buffer, offset + length * 4).fill(0);
  }
  return new Float32Array(buffer, offset, length);
}

export function nativeKernels(n: NativeAddon): Kernels {
  return {
    ...bindingKernels(n),
    alloc: (length) => storage(n, length, false),
    fromArray: (data) => {
      const out = storage(n, data.length, true);
      out.set(data);
      return out;
    },
    // The bytes are this process's freed memory, so only outputs their kernel writes in full take
    // this (ops.ts's `unset`); test/unset-storage.test.ts checks that with poisoned fills.
    allocUnset: (length) => {
      const out = storage(n, length, true);
      if (unsetFill !== null) out.fill(unsetFill);
      return out;
    },
  };
}
