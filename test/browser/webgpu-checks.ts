// Every WebGPU kernel against the TypeScript backend at awkward sizes (odd m/n/k, tails past a
// workgroup, transposes, broadcasting, masks, GQA, KV strides, accumulation). Runs in the page:
// the same host inputs go to both backends and every output buffer is compared.
import type { Kernels, Storage } from '../../src/tensor/kernels.js';

export interface CheckResult { name: string; ok: boolean; message: string }

type Async = Kernels & { readAsync(s: Storage): Promise<Float32Array> };

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function rand(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * r();
  return a;
}

function compare(a: Float32Array, b: Float32Array, tol: number): string | null {
  if (a.length !== b.length) return `length ${a.length} vs ${b.length}`;
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    const y = b[i];
    if (Number.isNaN(x) && Number.isNaN(y)) continue;
    if (x === y) continue;
    if (!(Math.abs(x - y) <= tol * (1 + Math.abs(y)))) return `at ${i}: webgpu ${x}, ts ${y}`;
  }
  return null;
}

/**
 * `body` runs once per backend on storages made from the same host arrays (`inputs`), returning
 * the storages to compare (inputs it wrote to included).
 */
type Body = (k: Kernels, s: Storage[]) => Storage[];

export async function runWebGpuChecks(gpu: Async, ref: Kernels): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  async function check(name: string, inputs: Float32Array[], body: Body, tol = 2e-5): Promise<void> {
    try {
      const outG = body(gpu, inputs.map((x) => gpu.fromArray(x)));
      const outR = body(ref, inputs.map((x) => ref.fromArray(x)));
      for (let i = 0; i < outG.length; i++) {
        const a = await gpu.readAsync(outG[i]);
        const b = ref.read(outR[i]);
        const err = compare(a, b, tol);
        if (err) {
          results.push({ name, ok: false, message: `output ${i}: ${err}` });
          return;
        }
      }
      results.push({ name, ok: true, message: '' });
    } catch (e) {
      results.push({ name, ok: false, message: (e as Error).message });
    }
  }

  // memory
  await check('fill/write', [new Float32Array(1000)], (k, [x]) => {
    k.fill(x, 2.5);
    k.write(x, rand(7, 1), 993);
    const y = k.alloc(5);
    k.fill(y, -0);
    return [x, y];
  });

  // elementwise
  const ops = ['neg', 'exp', 'log', 'tanh', 'sqrt', 'rsqrt', 'sigmoid', 'abs', 'square', 'relu', 'silu', 'gelu_tanh', 'gelu_erf'] as const;
  for (const op of ops) {
    const pos = op === 'log' || op === 'sqrt' || op === 'rsqrt';
    const x = rand(1029, 2, pos ? 0.05 : -6, 6);
    await check(`unary ${op}`, [x], (k, [a]) => {
      const out = k.alloc(a.length);
      k.unary(op, a, out);
      return [out];
    }, 1e-5);
    await check(`unaryBackward ${op}`, [x, rand(1029, 3)], (k, [a, gy]) => {
      const y = k.alloc(a.length);
      k.unary(op, a, y);
      const gx = k.alloc(a.length);
      k.unaryBackward(op, a, y, gy, gx);
      return [gx];
    }, 1e-4);
  }
  for (const op of ['add', 'sub', 'mul', 'div', 'max', 'min'] as const) {
    // (3, 1, 5) ⊕ (1, 7, 5) → (3, 7, 5), and a strided (transposed) operand
    await check(`binary ${op} broadcast`, [rand(15, 4), rand(35, 5, 0.5, 2)], (k, [a, b]) => {
      const out = k.alloc(105);
      k.binary(op, a, [5, 0, 1], b, [0, 5, 1], out, [3, 7, 5]);
      const t = k.alloc(15);
      k.binary(op, a, [1, 5], a, [3, 1], t, [5, 3]);
      return [out, t];
    });
  }
  await check('binary in place, scalar', [rand(300, 6), rand(1, 7)], (k, [a, b]) => {
    k.binary('mul', a, [1], b, [0], a, [300]);
    const s = k.alloc(1);
    k.binary('add', b, [], b, [], s, []);
    return [a, s];
  });
  await check('affine/powScalar/axpy', [rand(777, 8, 0.1, 3), rand(777, 9)], (k, [a, b]) => {
    const o1 = k.alloc(777);
    k.affine(a, 1.5, -0.25, o1);
    const outs = [o1];
    for (const p of [2, 0.5, -1, 3, 1.7, 0]) {
      const o = k.alloc(777);
      k.powScalar(a, p, o);
      outs.push(o);
    }
    const neg = k.alloc(777);
    k.powScalar(b, 3, neg);
    k.axpy(b, -0.75, a, b); // out aliases a
    return [...outs, neg, b];
  }, 1e-5);

  // layout
  await check('gather strided', [rand(2 * 3 * 4 * 5, 10)], (k, [x]) => {
    const out = k.alloc(5 * 3 * 2);
    k.gather(x, [5, 3, 2], [1, 20, 60], 0, out); // a permute
    const sl = k.alloc(2 * 2 * 3);
    k.gather(x, [2, 2, 3], [60, 5, 2], 6, sl); // a strided slice
    const bc = k.alloc(4 * 7);
    k.gather(x, [4, 7], [1, 0], 3, bc); // broadcast
    const sc = k.alloc(1);
    k.gather(x, [], [], 17, sc);
    return [out, sl, bc, sc];
  });
  await check('scatter (set, accumulate, broadcast sum)', [rand(30, 11), rand(120, 12), rand(28, 13)], (k, [src, dst, b]) => {
    k.scatter(src, [5, 3, 2], [1, 20, 60], 0, dst, false);
    k.scatter(src, [5, 3, 2], [2, 10, 1], 7, dst, true);
    const red = k.alloc(7);
    k.scatter(b, [4, 7], [0, 1], 0, red, true); // sum over a broadcast dim
    const red2 = k.alloc(4);
    k.scatter(b, [4, 7], [1, 0], 0, red2, true);
    return [dst, red, red2];
  });

  // reductions
  await check('sumReduce/maxReduce', [rand(3 * 517 * 5, 14), rand(1300, 15)], (k, [x, y]) => {
    const s1 = k.alloc(15);
    k.sumReduce(x, 3, 517, 5, s1);
    const m1 = k.alloc(15);
    k.maxReduce(x, 3, 517, 5, m1);
    const s2 = k.alloc(2);
    k.sumReduce(y, 2, 650, 1, s2);
    const m2 = k.alloc(2);
    k.maxReduce(y, 2, 650, 1, m2);
    return [s1, m1, s2, m2];
  }, 1e-5);

  // matmul: every transpose pair, batch strides incl. broadcast, accumulate, odd sizes
  for (const [tA, tB] of [[false, false], [true, false], [false, true], [true, true]] as const) {
    const m = 67;
    const n = 45;
    const kk = 33;
    await check(`matmul ${tA ? 'T' : 'N'}${tB ? 'T' : 'N'} batched`, [rand(3 * m * kk, 16), rand(kk * n, 17), rand(3 * m * n, 18)], (k, [a, b, c]) => {
      k.matmul(a, b, c, { batch: 3, m, n, k: kk, transA: tA, transB: tB, strideA: m * kk, strideB: 0, accumulate: true });
      const d = k.alloc(m * n);
      k.matmul(a, b, d, { batch: 1, m, n, k: kk, transA: tA, transB: tB, strideA: 0, strideB: 0, accumulate: false });
      return [c, d];
    }, 1e-5);
  }
  await check('matmul 1x1xk and m=1', [rand(130, 19), rand(130 * 3, 20)], (k, [a, b]) => {
    const c = k.alloc(3);
    k.matmul(a, b, c, { batch: 1, m: 1, n: 3, k: 130, transA: false, transB: false, strideA: 0, strideB: 0, accumulate: false });
    return [c];
  }, 1e-5);

  // row ops
  const R = 7;
  const C = 301;
  await check('softmax/logSoftmax (+backward)', [rand(R * C, 21, -5, 5), rand(R * C, 22)], (k, [x, gy]) => {
    const y = k.alloc(R * C);
    k.softmax(x, R, C, y);
    const gx = k.alloc(R * C);
    k.softmaxBackward(y, gy, R, C, gx);
    const ly = k.alloc(R * C);
    k.logSoftmax(x, R, C, ly);
    const lgx = k.alloc(R * C);
    k.logSoftmaxBackward(ly, gy, R, C, lgx);
    return [y, gx, ly, lgx];
  }, 1e-5);
  await check('crossEntropy (+backward, ignore)', [rand(R * C, 23, -4, 4), rand(R, 24)], (k, [x, gl]) => {
    const targets = Int32Array.from([0, 300, -100, 17, 5, -100, 299]);
    const loss = k.alloc(R);
    const lse = k.alloc(R);
    k.crossEntropy(x, targets, R, C, -100, loss, lse);
    const gx = k.alloc(R * C);
    k.crossEntropyBackward(x, lse, targets, gl, R, C, -100, gx);
    return [loss, lse, gx];
  }, 1e-5);
  await check('layerNorm (+backward, with/without affine)', [rand(R * C, 25, -3, 3), rand(C, 26), rand(C, 27), rand(R * C, 28), rand(C, 29), rand(C, 30)],
    (k, [x, wt, b, gy, gw, gb]) => {
      const out = k.alloc(R * C);
      const mean = k.alloc(R);
      const rstd = k.alloc(R);
      k.layerNorm(x, wt, b, R, C, 1e-5, out, mean, rstd);
      const gx = k.alloc(R * C);
      k.layerNormBackward(x, wt, mean, rstd, gy, R, C, gx, gw, gb);
      const out2 = k.alloc(R * C);
      k.layerNorm(x, null, null, R, C, 1e-5, out2, mean, rstd);
      const gx2 = k.alloc(R * C);
      k.layerNormBackward(x, null, mean, rstd, gy, R, C, gx2, null, null);
      return [out, mean, rstd, gx, gw, gb, out2, gx2];
    }, 1e-4);
  await check('rmsNorm (+backward)', [rand(R * C, 31, -3, 3), rand(C, 32), rand(R * C, 33), rand(C, 34)], (k, [x, wt, gy, gw]) => {
    const out = k.alloc(R * C);
    const rstd = k.alloc(R);
    k.rmsNorm(x, wt, R, C, 1e-6, out, rstd);
    const gx = k.alloc(R * C);
    k.rmsNormBackward(x, wt, rstd, gy, R, C, gx, gw);
    const out2 = k.alloc(R * C);
    k.rmsNorm(x, null, R, C, 1e-6, out2, rstd);
    return [out, rstd, gx, gw, out2];
  }, 1e-4);

  // lookups
  await check('embedding (+backward, repeated ids)', [rand(11 * 13, 35), rand(6 * 13, 36), rand(11 * 13, 37)], (k, [wt, gy, gw]) => {
    const ids = Int32Array.from([3, 0, 10, 3, 3, 7]);
    const out = k.alloc(6 * 13);
    k.embedding(wt, ids, 13, out);
    k.embeddingBackward(gy, ids, 13, gw);
    return [out, gw];
  });

  // attention: GQA, causal with offset, key mask (a fully masked row), kvStride > tk
  const B = 2, H = 4, KVH = 2, TQ = 5, TK = 70, D = 24, KS = 73;
  const mask = new Float32Array(B * TK).fill(1);
  for (let j = 0; j < TK; j += 3) mask[j] = 0;
  for (let j = 0; j < TK; j++) if (j < 68) mask[TK + j] = 0; // batch 1 sees only keys 68, 69
  for (const [causal, withMask] of [[true, false], [false, true], [true, true]] as const) {
    const p = { batch: B, heads: H, kvHeads: KVH, tq: TQ, tk: TK, headDim: D, scale: 0.3, causal, causalOffset: causal && withMask ? 60 : TK - TQ, keyMask: withMask ? mask : null, kvStride: KS };
    await check(`attention causal=${causal} mask=${withMask} (+backward)`,
      [rand(B * H * TQ * D, 38), rand(B * KVH * KS * D, 39), rand(B * KVH * KS * D, 40), rand(B * H * TQ * D, 41)], (k, [q, kk, v, go]) => {
        const out = k.alloc(B * H * TQ * D);
        const lse = k.alloc(B * H * TQ);
        k.attention(q, kk, v, p, out, lse);
        const gq = k.alloc(B * H * TQ * D);
        const gk = k.alloc(B * KVH * KS * D);
        const gv = k.alloc(B * KVH * KS * D);
        k.attentionBackward(q, kk, v, out, lse, go, p, gq, gk, gv);
        return [out, lse, gq, gk, gv];
      }, 1e-4);
  }
  await check('raggedAttention', [rand(6 * 4 * 16, 42), rand(6 * 2 * 16, 43), rand(6 * 2 * 16, 44), rand(9 * 32, 45), rand(9 * 32, 46), rand(5 * 32, 47), rand(5 * 32, 48)],
    (k, [q, kn, vn, kc0, vc0, kc1, vc1]) => {
      const out = k.alloc(6 * 4 * 16);
      k.raggedAttention(q, kn, vn, [kc0, kc1], [vc0, vc1], { heads: 4, kvHeads: 2, headDim: 16, scale: 0.25, tokens: Int32Array.from([4, 2]), past: Int32Array.from([5, 3]) }, out);
      return [out, kc0, vc0, kc1, vc1];
    }, 1e-5);

  // images
  const cp = { n: 2, cin: 3, h: 9, w: 8, cout: 4, kh: 3, kw: 2, stride: 2, pad: 1, oh: 5, ow: 5 };
  await check('conv2d (+backward)', [rand(2 * 3 * 9 * 8, 49), rand(4 * 3 * 3 * 2, 50), rand(4, 51), rand(2 * 4 * 5 * 5, 52), rand(24 * 3, 53), rand(4, 54)],
    (k, [x, wt, b, gy, gw, gb]) => {
      const out = k.alloc(2 * 4 * 25);
      k.conv2d(x, wt, b, cp, out);
      const gx = k.alloc(x.length);
      k.conv2dBackward(x, wt, gy, cp, gx, gw, gb);
      return [out, gx, gw, gb];
    }, 1e-5);
  const pp = { n: 2, c: 3, h: 7, w: 6, k: 3, stride: 2, oh: 3, ow: 2 };
  await check('maxPool2d (+backward, overlapping windows)', [rand(2 * 3 * 7 * 6, 55), rand(2 * 3 * 3 * 2, 56)], (k, [x, gy]) => {
    const out = k.alloc(36);
    const argmax = new Int32Array(36);
    k.maxPool2d(x, pp, out, argmax);
    const gx = k.alloc(x.length);
    k.maxPool2dBackward(gy, argmax, pp, gx);
    return [out, gx];
  });

  // optimizer
  await check('adamw', [rand(1000, 57), rand(1000, 58), rand(1000, 59), rand(1000, 60, 0, 1)], (k, [p, gr, m, v]) => {
    k.adamw(p, gr, m, v, { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 3 });
    k.adamw(p, gr, m, v, { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 4 });
    return [p, m, v];
  }, 1e-5);

  // VeRA: A read in place with lda > in, B taller than out
  const vp = { rows: 9, inFeatures: 21, outFeatures: 19, rank: 6, lda: 25 };
  await check('veraForward/veraBackward', [rand(9 * 21, 61), rand(6 * 25, 62), rand(23 * 6, 63), rand(6, 64), rand(19, 65), rand(9 * 19, 66), rand(9 * 21, 67), rand(6, 68), rand(19, 69)],
    (k, [x, a, b, ld, lb, gy, gx, gld, glb]) => {
      const out = k.alloc(9 * 19);
      const ax = k.alloc(9 * 6);
      k.veraForward(x, a, b, ld, lb, vp, out, ax);
      k.veraBackward(a, b, ld, lb, ax, gy, vp, gx, true, gld, glb);
      const gx2 = k.alloc(9 * 21);
      k.veraBackward(a, b, ld, lb, ax, gy, vp, gx2, false, null, null);
      return [out, ax, gx, gld, glb, gx2];
    }, 1e-5);
  const rp = { rows: 7, inFeatures: 21, outFeatures: 19, rank: 6, lda: 25, numSlots: 3 };
  await check('veraRoutedForward (accumulate, overwrite, shared)', [rand(7 * 21, 70), rand(6 * 25, 71), rand(23 * 6, 72), rand(3 * 6, 73), rand(3 * 19, 74), rand(7 * 19, 75)],
    (k, [x, a, b, ld, lb, out]) => {
      const slots = Int32Array.from([2, -1, 0, 0, 1, -1, 2]);
      k.veraRoutedForward(x, a, b, ld, lb, slots, rp, out, true);
      const o2 = k.alloc(7 * 19);
      k.fill(o2, 5);
      const ax = k.alloc(7 * 6);
      k.veraRoutedForward(x, a, b, ld, lb, slots, rp, o2, false, { ax, ready: false });
      const o3 = k.alloc(7 * 19);
      k.veraRoutedForward(x, a, b, ld, lb, Int32Array.from([1, 1, -1, 2, 0, 0, 0]), rp, o3, false, { ax, ready: true });
      return [out, o2, ax, o3];
    }, 1e-5);

  // a tensor past 65535 workgroups of 256 (2-D dispatch)
  await check('2-D dispatch (17M elements)', [rand(17_000_000, 76)], (k, [x]) => {
    const out = k.alloc(x.length);
    k.affine(x, 2, 1, out);
    return [out];
  });
  return results;
}
