// The native backend: the C++ addon in native/ (N-API), multithreaded, AVX2/FMA GEMM. Storages
// are plain Float32Arrays whose ArrayBuffer memory the addon reads and writes in place, so data
// stays put between ops and `read` is a view; `free` detaches the buffer to release it at once.
// The kernel mapping itself is in bindings.ts (shared with the WebAssembly backend).
import type { Kernels } from '../../tensor/kernels.js';
import type { NativeAddon } from './addon.js';
import { bindingKernels } from './bindings.js';

export { loadAddon, defaultAddonPath, type NativeAddon, type AddonLoad } from './addon.js';

export function nativeKernels(n: NativeAddon): Kernels {
  return bindingKernels(n);
}
