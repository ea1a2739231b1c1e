// npm test: the whole suite once per backend — the TypeScript reference, then the native addon
// when it was built — so both must give the same numerics. Exits non-zero if either run fails.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const testDir = join(root, 'dist', 'test');
const files = readdirSync(testDir).filter((f) => f.endsWith('.test.js')).sort().map((f) => join(testDir, f));
const addon = process.env.VERA_NATIVE_ADDON || join(root, 'build', 'Release', 'vera_native.node');
const backends = ['ts', ...(existsSync(addon) ? ['native'] : [])];
if (backends.length === 1) console.log('vera: native backend not built; testing the TypeScript backend only');

// Files whose subject is not the Node backend (a browser page, the WebAssembly module, WebGPU in
// Chromium): they run in the first pass only, since a second would repeat them (over a minute each).
const ONCE = /^(browser-|web-demo|webgpu|wasm-)/;

let failed = false;
for (const [pass, backend] of backends.entries()) {
  console.log(`\n=== VERA_BACKEND=${backend} ===`);
  const these = pass === 0 ? files : files.filter((f) => !ONCE.test(f.slice(testDir.length + 1)));
  const r = spawnSync(process.execPath, ['--test', '--test-concurrency=2', ...process.argv.slice(2), ...these], {
    stdio: 'inherit',
    env: { ...process.env, VERA_BACKEND: backend },
  });
  if (r.status !== 0) failed = true;
}
if (backends.includes('native')) {
  // the portable (non-AVX2) GEMM and vector paths, kernel by kernel against the reference, every
  // output they are given unset written in full, and the routed VeRA product's bits (its λb store
  // is in each small-m kernel)
  const pathTests = ['native-kernels.test.js', 'unset-storage.test.js', 'vera-routed.test.js'].map((f) => join(testDir, f));
  console.log('\n=== VERA_BACKEND=native VERA_NO_AVX2=1 (native-kernels, unset-storage, vera-routed) ===');
  const r = spawnSync(process.execPath, ['--test', ...pathTests], {
    stdio: 'inherit',
    env: { ...process.env, VERA_BACKEND: 'native', VERA_NO_AVX2: '1' },
  });
  if (r.status !== 0) failed = true;
  // where the CPU has AVX-512, the AVX2 6×16 GEMM path too (the default there is the 12×32 kernel)
  console.log('\n=== VERA_BACKEND=native VERA_NO_AVX512=1 (native-kernels, unset-storage, vera-routed) ===');
  const r2 = spawnSync(process.execPath, ['--test', ...pathTests], {
    stdio: 'inherit',
    env: { ...process.env, VERA_BACKEND: 'native', VERA_NO_AVX512: '1' },
  });
  if (r2.status !== 0) failed = true;
}
process.exit(failed ? 1 : 0);
