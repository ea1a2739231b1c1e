// What wasm/vera.wasm and wasm/vera-threads.wasm are built from (scripts/build-wasm.mjs) and the
// hash that says whether the committed binaries are current: SHA-256 over the flags of both builds
// and every source and header file, which test/wasm-kernels.test.ts recomputes without any toolchain.
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

/** The kernel files of the native addon, plus the WebAssembly entry points and GEMM kernel. */
const KERNELS = [
  'native/kernels.cc', 'native/gemm.cc', 'native/attention.cc', 'native/vera.cc', 'native/ragged.cc', 'native/lora.cc',
  'native/quant.cc', 'native/quant_avx512.cc',
  'native/gemm_wasm.cc', 'native/wasm_main.cc',
];
/** The single-threaded module: the serial pool. */
export const SOURCES = [...KERNELS, 'native/thread_pool_wasm.cc'];
/** The threaded module: the pool over JavaScript-started workers. */
export const THREAD_SOURCES = [...KERNELS, 'native/thread_pool_wasm_threads.cc'];

export const EXPORTS = [
  'vera_slots', 'vera_max_args', 'vera_binding_count', 'vera_binding_name', 'vera_call',
  'vera_result_number', 'vera_result_string', 'vera_error', 'vera_gemm_kernel', 'vera_malloc', 'vera_calloc', 'vera_free',
];
/** What the threaded module exports besides EXPORTS: the pool's entry points and the stack setter its workers call first. */
export const THREAD_EXPORTS = ['vera_threads_start', 'vera_set_num_threads', 'vera_worker_chunks', 'vera_thread_main', 'vera_thread_init_main', 'stackRestore'];

// SIMD128 (no relaxed SIMD: Node 20 runs it only behind a flag); C++ exceptions as WebAssembly
// exceptions, so a kernel's argument error comes back as a message instead of a trap
export const COMPILE_FLAGS = ['-O3', '-msimd128', '-fwasm-exceptions', '-std=c++17', '-fno-math-errno'];
// no JavaScript glue (Debian's emcc 3.1.6 fails in its JS optimizer when it emits some): a
// standalone module that src/backends/wasm instantiates itself
export const LINK_FLAGS = [
  '-O3', '-msimd128', '-fwasm-exceptions', '--no-entry', '-s', 'STANDALONE_WASM=1', '-s', 'FILESYSTEM=0',
  '-s', 'ALLOW_MEMORY_GROWTH=1', '-s', 'MAXIMUM_MEMORY=4GB', '-s', `EXPORTED_FUNCTIONS=${EXPORTS.map((e) => '_' + e).join(',')}`,
];

// The threaded module: atomics, bulk memory and emscripten's thread-safe libraries (-pthread).
// emcc refuses STANDALONE_WASM with pthreads, so build-wasm.mjs links it with wasm-ld itself, with
// what emcc passes for the single-threaded module plus a shared, imported memory, and optimizes it
// with binaryen's wasm-opt as emcc would.
// -fPIC: clang 14 addresses __wasm_lpad_context (the C++ exception landing pad's state, which
// libunwind defines thread-local) as a plain global, so once a thread's TLS block is set up,
// catch clauses stop matching; through the GOT, the linker gives it the thread-local address
export const THREAD_COMPILE_FLAGS = [...COMPILE_FLAGS, '-pthread', '-fPIC'];
/** Libraries of emscripten's sysroot (lib/wasm32-emscripten), threaded variants, in emcc's order. */
export const THREAD_LIBS = [
  'crt1_reactor.o', 'crtbegin.o', '-lstandalonewasm-memgrow', '-lstubs', '-lnoexit', '-lc-mt', '-ldlmalloc-mt', '-lcompiler_rt-mt',
  '-lc++-mt-except', '-lc++abi-mt-except', '-lunwind-mt-except', '-lsockets-mt',
];
export const THREAD_LD_FLAGS = [
  '-mllvm', '-combiner-global-alias-analysis=false', '-mllvm', '-disable-lsr', '-mllvm', '-wasm-enable-eh', '-mllvm', '-exception-model=wasm',
  '--import-undefined', '--strip-debug', '--entry=_initialize', '-z', 'stack-size=5242880', '--global-base=1024',
  '--initial-memory=16777216', '--max-memory=4294967296', '--shared-memory', '--import-memory',
  ...[...EXPORTS, ...THREAD_EXPORTS, '_initialize'].map((e) => `--export=${e}`),
];
export const THREAD_OPT_FLAGS = [
  '--strip-dwarf', '--post-emscripten', '-O3', '--low-memory-unused', '--strip-debug', '--strip-producers',
  '--mvp-features', '--enable-simd', '--enable-exception-handling', '--enable-threads', '--enable-bulk-memory', '--enable-mutable-globals', '--enable-sign-ext',
];

/** Every file the hash covers: the sources above and all headers in native/. */
export function hashedFiles(root) {
  const headers = readdirSync(join(root, 'native')).filter((f) => f.endsWith('.h')).sort().map((f) => `native/${f}`);
  return [...new Set([...SOURCES, ...THREAD_SOURCES]), ...headers];
}

export function sourcesHash(root) {
  const h = createHash('sha256');
  h.update(JSON.stringify({
    compile: COMPILE_FLAGS, link: LINK_FLAGS,
    threads: { compile: THREAD_COMPILE_FLAGS, libs: THREAD_LIBS, ld: THREAD_LD_FLAGS, opt: THREAD_OPT_FLAGS },
  }));
  for (const f of hashedFiles(root)) {
    h.update(`\0${f}\0`);
    h.update(readFileSync(join(root, f)));
  }
  return h.digest('hex');
}
