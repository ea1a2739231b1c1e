// The WebAssembly backend against the TypeScript reference: the shared conformance suite, one test
// per case, on wasm/vera.wasm (one thread) and on wasm/vera-threads.wasm at 2 threads; then what is
// particular to it: the committed binaries are built from the current sources, the threaded module
// gives the single-threaded one's results bit for bit (GEMMs, a training step), its workers leave
// with dispose and never keep Node alive, storages survive memory growth, a freed storage is
// refused, a kernel's argument error comes back as a one-line message, and the registry selects it
// with VERA_BACKEND=wasm.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { tsKernels } from '../src/backends/ts/index.js';
import { loadWasmKernelsSync } from '../src/backends/wasm/node.js';
import { loadWasmKernels } from '../src/backends/wasm/index.js';
import { kernelSuiteCases, runKernelSuite } from './conformance/kernel-suite.js';
import { threadAgreement } from './conformance/thread-agreement.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const SINGLE = join(root, 'wasm', 'vera.wasm');
const THREADED = join(root, 'wasm', 'vera-threads.wasm');
const wasm = loadWasmKernelsSync(SINGLE, 1);
const threaded = loadWasmKernelsSync(THREADED, 2);
// the workers start in the background: the tests below are about 2 threads, so they wait for them
await threaded.whenReady;

for (const [label, k] of [['wasm/vera.wasm', wasm], ['wasm/vera-threads.wasm at 2 threads', threaded]] as const) {
  describe(`wasm kernels match the TypeScript reference (conformance suite, ${label})`, () => {
    const results = runKernelSuite(k, tsKernels);
    for (const name of kernelSuiteCases) {
      test(name, async () => {
        const r = (await results).find((x) => x.name === name);
        assert.ok(r, `${name}: not run`);
        assert.ok(r.ok, `${name}: ${r.message}`);
      });
    }
  });
}

test('the threaded module runs 2 threads and gives the single-threaded results bit for bit (GEMMs, a VeRA training step)', () => {
  assert.equal(wasm.threads, 1);
  assert.equal(threaded.threads, 2);
  const chunks = threaded.workerChunks;
  const r = threadAgreement(wasm, threaded);
  // the worker took part
  assert.ok(threaded.workerChunks > chunks, `the worker ran ${threaded.workerChunks - chunks} chunks`);
  assert.deepEqual(r.differences, []);
  assert.ok(r.compared >= 10 && Number.isFinite(r.loss), `${r.compared} comparisons, loss ${r.loss}`);
  // and at one thread of the threaded module
  assert.equal(threaded.setThreads(1), 1);
  try {
    assert.deepEqual(threadAgreement(wasm, threaded).differences, []);
  } finally {
    assert.equal(threaded.setThreads(8), 2, 'at most the threads started');
  }
});

test('dispose ends the workers; the kernels go on on one thread', async () => {
  const k = loadWasmKernelsSync(THREADED, 3);
  await k.whenReady;
  assert.equal(k.threads, 3);
  const a = k.fromArray(Float32Array.from({ length: 400 * 400 }, (_, i) => (i % 7) - 3));
  const c = k.alloc(400 * 400);
  const p = { batch: 1, m: 400, n: 400, k: 400, transA: false, transB: false, strideA: 0, strideB: 0, accumulate: false };
  k.matmul(a, a, c, p);
  const before = k.read(c).slice();
  k.dispose();
  assert.equal(k.threads, 1);
  k.fill(c, 0);
  k.matmul(a, a, c, p);
  assert.deepEqual(k.read(c).slice(), before);
  assert.throws(() => k.setThreads(0), /setThreads: 0 is not an integer >= 1/);
});

test('Node: VERA_NUM_THREADS chooses the module and its threads; the workers never keep the process alive', () => {
  const node = join(root, 'dist', 'src', 'backends', 'wasm', 'node.js');
  const script = `const m = await import(${JSON.stringify(node)}); const k = m.loadWasmKernelsSync(); await k.whenReady; const a = k.fromArray(new Float32Array(90000).fill(1)); const c = k.alloc(90000); k.matmul(a, a, c, { batch: 1, m: 300, n: 300, k: 300, transA: false, transB: false, strideA: 0, strideB: 0, accumulate: false }); console.log(k.threads, m.defaultWasmPath().split('/').pop(), k.read(c)[0]);`;
  for (const [threads, file] of [['1', 'vera.wasm'], ['3', 'vera-threads.wasm']]) {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, VERA_NUM_THREADS: threads }, encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    // every worker came up (under --input-type=module too), and exit did not wait for them
    assert.equal(r.stdout.trim(), `${threads} ${file} 300`);
    assert.equal(r.stderr, '');
  }
  const bad = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, VERA_NUM_THREADS: 'two' }, encoding: 'utf8', timeout: 60_000 });
  assert.match(bad.stderr, /VERA_NUM_THREADS must be an integer >= 1, got 'two'/);
});

test('wasm/vera.wasm and wasm/vera-threads.wasm are built from the current native/ sources and flags', async () => {
  const recipe = (await import(pathToFileURL(join(root, 'scripts', 'wasm-recipe.mjs')).href)) as { sourcesHash(root: string): string };
  const recorded = readFileSync(join(root, 'wasm', 'vera.wasm.sources.sha256'), 'utf8').trim();
  assert.ok(recorded === recipe.sourcesHash(root), 'wasm/ is stale (native/ or the build flags changed): run `node scripts/build-wasm.mjs` and commit wasm/');
});

for (const [label, k] of [['wasm/vera.wasm', wasm], ['wasm/vera-threads.wasm', threaded]] as const) {
  test(`storages stay valid when the module memory grows; read gives a fresh view each time (${label})`, () => {
    const a = k.fromArray(Float32Array.from({ length: 1000 }, (_, i) => i));
    const before = k.read(a);
    // 64 MB more than any earlier allocation: the memory must grow
    const big = k.alloc(16 << 20);
    k.fill(big, 1);
    assert.equal(k.read(a)[999], 999);
    assert.equal(k.read(big)[(16 << 20) - 1], 1);
    assert.ok(before.length === 0 || before[999] === 999);
    const out = k.alloc(1000);
    k.affine(a, 2, 1, out);
    assert.equal(k.read(out)[999], 1999);
    k.free!(big);
    k.free!(a);
    k.free!(out);
  });
}

test('the threaded module: memory grown by a worker (its first GEMM buffers) is seen by the caller', async () => {
  const k = loadWasmKernelsSync(THREADED, 2);
  await k.whenReady;
  // fill what the memory holds now, so that the worker's first allocations must grow it
  const fillers = [];
  for (let i = 0; i < 4; i++) fillers.push(k.alloc(3 << 20));
  const n = 512;
  const a = k.fromArray(Float32Array.from({ length: n * n }, (_, i) => (i % 5) - 2));
  const c = k.alloc(n * n);
  const ref = wasm.fromArray(k.read(a).slice());
  const refC = wasm.alloc(n * n);
  const p = { batch: 1, m: n, n, k: n, transA: false, transB: false, strideA: 0, strideB: 0, accumulate: false };
  for (let i = 0; i < 3; i++) k.matmul(a, a, c, p);
  wasm.matmul(ref, ref, refC, p);
  const tail = k.alloc(8 << 20); // past whatever the worker grew
  k.fill(tail, 2);
  assert.deepEqual(k.read(c).slice(), wasm.read(refC).slice());
  assert.equal(k.read(tail)[(8 << 20) - 1], 2);
  k.dispose();
});

test('a freed storage is refused with an error, not dereferenced', () => {
  const s = wasm.fromArray(Float32Array.from([1, 2, 3, 4]));
  const out = wasm.alloc(4);
  wasm.free!(s);
  assert.throws(() => wasm.unary('neg', s, out), /freed/);
  assert.throws(() => wasm.read(s), /freed/);
  assert.throws(() => wasm.matmul(s, s, out, { batch: 1, m: 2, n: 2, k: 2, transA: false, transB: false, strideA: 0, strideB: 0, accumulate: false }), /freed/);
});

test('an argument error inside a kernel comes back as its one-line message', () => {
  const x = wasm.alloc(4);
  const out = wasm.alloc(2);
  // unchecked backend: the C++ bounds check answers (as the native addon's does)
  assert.throws(() => wasm.unary('neg', x, out), /^Error: unary: out holds 2 elements, 4 needed$/);
  // the module is still usable afterwards
  wasm.fill(x, 3);
  assert.deepEqual([...wasm.read(x)], [3, 3, 3, 3]);
});

test('loadWasmKernels (the browser loader) instantiates from bytes', async () => {
  const k = await loadWasmKernels({ bytes: readFileSync(join(root, 'wasm', 'vera.wasm')) });
  const a = k.fromArray(Float32Array.from([1, 2, 3, 4, 5, 6]));
  const b = k.fromArray(Float32Array.from([1, 0, 0, 1, 1, 1]));
  const c = k.alloc(4);
  k.matmul(a, b, c, { batch: 1, m: 2, n: 2, k: 3, transA: false, transB: false, strideA: 0, strideB: 0, accumulate: false });
  assert.deepEqual([...k.read(c)], [4, 5, 10, 11]);
  assert.equal(k.name, 'wasm');
});

test('VERA_BACKEND=wasm selects the WebAssembly backend in Node', () => {
  const script = `await import(${JSON.stringify(join(root, 'dist', 'src', 'backends', 'index.js'))}); const t = await import(${JSON.stringify(join(root, 'dist', 'src', 'tensor', 'index.js'))}); const x = t.Tensor.fromArray(Float32Array.from([1, 2]), [2]); console.log(t.kernels().name, t.F.mul(x, x).toFloat32Array().join(','));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, VERA_BACKEND: 'wasm' }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'wasm 1,4');
  assert.equal(r.stderr, '');
});
