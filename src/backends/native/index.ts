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

export function nativeKernels(n: NativeAddon): Kernels {
  return {
    ...bindingKernels(n),
    // Node's allocator without its zero-fill (never the shared pool of Buffer.allocUnsafe: `free`
    // detaches a storage's whole ArrayBuffer). The bytes are this process's freed memory, so only
    // outputs their kernel writes in full take it (ops.ts's `unset`); test/unset-storage.test.ts
    // checks that with poisoned fills.
    allocUnset: (length) => {
      const bytes = Buffer.allocUnsafeSlow(length * 4);
      const out = new Float32Array(bytes.buffer, bytes.byteOffset, length);
      if (unsetFill !== null) out.fill(unsetFill);
      return out;
    },
  };
}
