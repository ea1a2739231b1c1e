// What wasm/vera.wasm is built from (scripts/build-wasm.mjs) and the hash that says whether the
// committed binary is current: SHA-256 over the flags and every source and header file, which
// test/wasm-kernels.test.ts recomputes without any toolchain.
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

/** The kernel files of the native addon, plus the WebAssembly entry points, GEMM kernel and (serial) pool. */
export const SOURCES = [
  'native/kernels.cc', 'native/gemm.cc', 'native/attention.cc', 'native/vera.cc', 'native/ragged.cc',
  'native/quant.cc', 'native/quant_avx512.cc',
  'native/gemm_wasm.cc', 'native/thread_pool_wasm.cc', 'native/wasm_main.cc',
];

export const EXPORTS = [
  'vera_slots', 'vera_max_args', 'vera_binding_count', 'vera_binding_name', 'vera_call',
  'vera_result_number', 'vera_result_string', 'vera_error', 'vera_gemm_kernel', 'vera_malloc', 'vera_calloc', 'vera_free',
];

// SIMD128 (no relaxed SIMD: Node 20 runs it only behind a flag); C++ exceptions as WebAssembly
// exceptions, so a kernel's argument error comes back as a message instead of a trap
export const COMPILE_FLAGS = ['-O3', '-msimd128', '-fwasm-exceptions', '-std=c++17', '-fno-math-errno'];
// no JavaScript glue (Debian's emcc 3.1.6 fails in its JS optimizer when it emits some): a
// standalone module that src/backends/wasm instantiates itself
export const LINK_FLAGS = [
  '-O3', '-msimd128', '-fwasm-exceptions', '--no-entry', '-s', 'STANDALONE_WASM=1', '-s', 'FILESYSTEM=0',
  '-s', 'ALLOW_MEMORY_GROWTH=1', '-s', 'MAXIMUM_MEMORY=4GB', '-s', `EXPORTED_FUNCTIONS=${EXPORTS.map((e) => '_' + e).join(',')}`,
];

/** Every file the hash covers: the sources above and all headers in native/. */
export function hashedFiles(root) {
  const headers = readdirSync(join(root, 'native')).filter((f) => f.endsWith('.h')).sort().map((f) => `native/${f}`);
  return [...SOURCES, ...headers];
}

export function sourcesHash(root) {
  const h = createHash('sha256');
  h.update(JSON.stringify({ compile: COMPILE_FLAGS, link: LINK_FLAGS }));
  for (const f of hashedFiles(root)) {
    h.update(`\0${f}\0`);
    h.update(readFileSync(join(root, f)));
  }
  return h.digest('hex');
}
