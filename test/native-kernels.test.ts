// Every kernel of the native addon against the TypeScript reference (the shared conformance suite,
// test/conformance/kernel-suite.ts: odd sizes, tails, transposes, batch strides, accumulation,
// masks, GQA, quantized weights, VeRA, ragged attention), then what only the native backend has:
// thread counts, the AVX-512 and AVX2 GEMM paths, machinePeak, freed storages. Skipped (with the
// reason) when the addon was not built.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

import { tsKernels } from '../src/backends/index.js';
import { loadAddon, nativeKernels } from '../src/backends/native/index.js';
import { Rng } from '../src/tensor/index.js';
import type { Kernels, MatmulParams } from '../src/tensor/index.js';
import { kernelSuiteCases, runKernelSuite } from './conformance/kernel-suite.js';

const load = loadAddon();
const skip = load.addon === null ? `native addon not built (${load.reason})` : false;
const native: Kernels | null = load.addon ? nativeKernels(load.addon) : null;

const rng = new Rng(20240601);
const randn = (n: number, std = 1): Float32Array => rng.fillNormal(new Float32Array(n), 0, std);
const smallRng = new Rng(20250117);
const srandn = (n: number): Float32Array => smallRng.fillNormal(new Float32Array(n), 0, 1);

describe('native kernels match the TypeScript reference (conformance suite)', { skip }, () => {
  // one suite run, one test per case so a failure names its case
  const results = skip ? null : runKernelSuite(native!, tsKernels);
  for (const name of kernelSuiteCases) {
    test(name, async () => {
      const r = (await results!).find((x) => x.name === name);
      assert.ok(r, `${name}: not run`);
      assert.ok(r.ok, `${name}: ${r.message}`);
    });
  }
});

test('the addon reports its thread pool and GEMM micro-kernel', { skip }, () => {
  assert.ok(load.addon!.numThreads() >= 1);
  assert.match(load.addon!.gemmKernel(), /^(avx512|avx2-fma|portable)$/);
  if (process.env.VERA_NO_AVX512) assert.notEqual(load.addon!.gemmKernel(), 'avx512');
  if (process.env.VERA_NO_AVX2) assert.equal(load.addon!.gemmKernel(), 'portable');
});

test('the AVX-512 and AVX2 GEMM kernels give the same bits (one FMA chain per element per slab; A read in place or packed; rows against a weight as Cᵀ), the few-row ones too (4-row tiles in 32 registers and rows packed in pairs in zmm registers against 3-row ones)', { skip: skip || load.addon?.gemmKernel() !== 'avx512' }, () => {
  // the AVX2 path runs in a child with VERA_NO_AVX512=1; shapes with edge tiles, several slabs, transposes, accumulation
  const script = `
    const { loadAddon, nativeKernels } = await import(${JSON.stringify(new URL('../src/backends/native/index.js', import.meta.url).href)});
    const k = nativeKernels(loadAddon().addon);
    const out = [];
    for (const [m, n, kk, tA, tB, acc] of [[203, 190, 530, false, true, false], [97, 301, 257, true, false, true], [300, 300, 300, false, false, false], [13, 70, 1100, false, false, true], [16, 77, 576, false, true, false], [5, 40, 1537, false, true, true], [64, 33, 900, false, true, false], [2, 19, 100, false, true, false], [65, 77, 576, false, true, false], [130, 1031, 1536, false, true, true], [203, 190, 1024, false, false, true], [512, 96, 520, false, false, true], [800, 300, 600, false, false, true], [100, 200, 530, false, true, true], [7, 50, 301, true, true, true], [33, 61, 777, false, true, true], [64, 256, 576, false, true, true]]) {
      const a = Float32Array.from({ length: m * kk }, (_, i) => Math.sin(i * 0.37));
      const b = Float32Array.from({ length: kk * n }, (_, i) => Math.cos(i * 0.11));
      const c = Float32Array.from({ length: m * n }, (_, i) => (i % 7) * 0.25);
      k.matmul(a, b, c, { batch: 1, m, n, k: kk, transA: tA, transB: tB, strideA: 0, strideB: 0, accumulate: acc });
      out.push((await import('node:crypto')).createHash('sha256').update(new Uint8Array(c.buffer)).digest('hex'));
    }
    process.stdout.write(JSON.stringify(out));`;
  const run = (env: NodeJS.ProcessEnv): string[] => {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, ...env }, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as string[];
  };
  const wide = run({});
  const avx2 = run({ VERA_NO_AVX512: '1' });
  for (let i = 0; i < wide.length; i++) assert.ok(wide[i] === avx2[i], `case ${i}: AVX-512 and AVX2 results differ`);
});

test('machinePeak measures a register-only FMA loop on every thread', { skip: skip || load.addon?.gemmKernel() === 'portable' }, () => {
  const g = load.addon!.machinePeak(0.05);
  assert.ok(Number.isFinite(g) && g > 0, `${g}`);
});

test('results do not depend on the thread count (bit for bit)', { skip }, () => {
  const addon = load.addon!;
  const before = addon.numThreads();
  const [m, n, k] = [203, 190, 410];
  const a = randn(m * k);
  const b = randn(k * n);
  const x = randn(64 * 3000);
  const run = (threads: number): [Float32Array, Float32Array, number] => {
    addon.setNumThreads(threads);
    assert.equal(addon.numThreads(), threads);
    const c = new Float32Array(m * n);
    native!.matmul(a, b, c, { batch: 1, m, n, k, transA: false, transB: true, strideA: 0, strideB: 0, accumulate: false });
    const sums = new Float32Array(3000);
    native!.sumReduce(x, 1, 64, 3000, sums);
    return [c, sums, native!.sumSquares(x)];
  };
  try {
    const one = run(1);
    const three = run(3);
    assert.deepEqual(three, one);
  } finally {
    addon.setNumThreads(before);
  }
});

test('few-row matmuls do not depend on the thread count or on the other rows (bit for bit)', { skip }, () => {
  const addon = load.addon!;
  const before = addon.numThreads();
  // large enough to be split between threads; n and k leave tails
  const [n, k] = [1003, 301];
  const run = (threads: number, p: MatmulParams, a: Float32Array, b: Float32Array, c0: Float32Array): Float32Array => {
    addon.setNumThreads(threads);
    const c = c0.slice();
    native!.matmul(a, b, c, p);
    return c;
  };
  try {
    for (const transB of [false, true]) {
      for (const m of [1, 3, 7, 16, 24]) {
        for (const accumulate of [false, true]) {
          for (const batch of [1, 2]) {
            const p: MatmulParams = { batch, m, n, k, transA: false, transB, strideA: m * k, strideB: batch === 1 ? 0 : k * n, accumulate };
            const a = srandn(batch * m * k);
            const b = srandn((batch === 1 ? 1 : batch) * k * n);
            const c0 = srandn(batch * m * n);
            const one = run(1, p, a, b, c0);
            assert.deepEqual(run(3, p, a, b, c0), one, `transB ${transB}, m ${m}, accumulate ${accumulate}, batch ${batch}`);
            assert.deepEqual(run(2, p, a, b, c0), one);
          }
        }
      }
      // each row of a 16-row product is the 1-row product of that row alone (decoding batched or
      // not), also when k is long enough to be cut into slabs
      addon.setNumThreads(before);
      // (with SIMD, up to 256 rows of a weight laid out (out, in) take the few-row path: 130 rows
      // go through it in three passes)
      for (const [kk, m] of [[k, 16], [1001, 16], ...(transB && addon.gemmKernel() !== 'portable' ? [[k, 130]] : [])]) {
        const a = srandn(m * kk);
        const b = srandn(kk * n);
        const all = new Float32Array(m * n);
        native!.matmul(a, b, all, { batch: 1, m, n, k: kk, transA: false, transB, strideA: 0, strideB: 0, accumulate: false });
        for (const i of [0, 5, m - 1]) {
          const row = new Float32Array(n);
          native!.matmul(a.subarray(i * kk, (i + 1) * kk), b, row, { batch: 1, m: 1, n, k: kk, transA: false, transB, strideA: 0, strideB: 0, accumulate: false });
          assert.deepEqual(row, all.subarray(i * n, (i + 1) * n), `row ${i}, k ${kk}, transB ${transB}`);
        }
      }
    }
  } finally {
    addon.setNumThreads(before);
  }
});

test('a freed storage (and any view sharing it) is refused with an error, not dereferenced', { skip }, () => {
  const k = native!;
  const s = k.fromArray(Float32Array.from([1, 2, 3, 4]));
  const view = s; // a reshape shares its storage
  const out = k.alloc(4);
  k.free!(s);
  assert.throws(() => k.unary('neg', view, out), /freed/);
  assert.throws(() => k.matmul(view, view, out, { batch: 1, m: 2, n: 2, k: 2, transA: false, transB: false, strideA: 0, strideB: 0, accumulate: false }), /freed/);
});

test('storages of 1024 floats or more start on a 64-byte boundary (alloc, allocUnset, fromArray), their padding is zero, and free still releases them', { skip }, () => {
  const k = native!;
  const addon = load.addon!;
  // the addon is built from this tree: both functions must be there
  assert.equal(typeof addon.alignOffset, 'function');
  assert.equal(typeof addon.addressMod64, 'function');
  // alignOffset against known addresses: WebAssembly memory is page-aligned; 16 bytes in is 48 short of a line
  const Memory = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number }) => { buffer: ArrayBuffer } } }).WebAssembly.Memory;
  const page = new Memory({ initial: 1 }).buffer;
  assert.equal(addon.alignOffset!(page), 0);
  assert.equal(addon.addressMod64!(new Uint8Array(page, 16)), 16);
  assert.throws(() => addon.alignOffset!(new Float32Array(4) as unknown as ArrayBuffer), /ArrayBuffer/);
  const before = new Float32Array(8);
  assert.equal(addon.addressMod64!(before) % 4, 0);
  for (const length of [1024, 1031, 4096, 64 * 576, 1 << 20]) {
    const made = [k.alloc(length), k.allocUnset!(length), k.fromArray(Float32Array.from({ length }, (_, i) => i))] as Float32Array[];
    for (const s of made) {
      assert.equal(s.length, length);
      // the address itself, read through the typed array (not through alignOffset)
      assert.equal(addon.addressMod64!(s), 0, `length ${length}: the first element sits ${addon.addressMod64!(s)} bytes into a line`);
      const whole = new Uint8Array(s.buffer);
      assert.ok(whole.subarray(0, s.byteOffset).every((b) => b === 0), 'padding before the view is zero');
      assert.ok(whole.subarray(s.byteOffset + s.byteLength).every((b) => b === 0), 'padding after the view is zero');
    }
    assert.equal(made[0][length - 1], 0);
    assert.equal(made[2][length - 1], length - 1);
    for (const s of made) {
      k.free!(s);
      assert.equal(s.buffer.byteLength, 0, 'detached');
    }
  }
});

test('GEMM results do not depend on where the operands start (backend storages against views 4, 8 and 12 bytes past a 16-byte boundary, bit for bit)', { skip }, () => {
  const k = native!;
  // few-row (nt and nn), packed, A in place, Cᵀ against a weight; with tails in k and n
  const shapes: [number, number, number, boolean][] = [[1, 300, 577, true], [7, 130, 576, true], [64, 200, 256, true], [16, 100, 300, false], [200, 190, 530, false], [100, 1031, 600, true]];
  for (const [m, n, kk, transB] of shapes) {
    const a = srandn(m * kk);
    const b = srandn(kk * n);
    const p: MatmulParams = { batch: 1, m, n, k: kk, transA: false, transB, strideA: 0, strideB: 0, accumulate: true };
    const c0 = srandn(m * n);
    const ref = k.fromArray(c0) as Float32Array;
    k.matmul(k.fromArray(a), k.fromArray(b), ref, p);
    for (const shift of [1, 2, 3]) {
      const at = (x: Float32Array): Float32Array => {
        const v = new Float32Array(new ArrayBuffer((x.length + 16) * 4), shift * 4, x.length);
        v.set(x);
        return v;
      };
      const c = at(c0);
      k.matmul(at(a), at(b), c, p);
      assert.deepEqual(new Uint32Array(c.slice().buffer), new Uint32Array(Float32Array.from(ref).buffer), `${m}×${n}×${kk} shifted ${shift * 4} bytes`);
    }
  }
});
