// WGSL for the WebGPU kernels. Each entry is a Dispatch: its bindings (after the uniform block of
// parameters at binding 0, read with pi/pu/pf) and the body of `main`, which sees `group` (the flat
// workgroup index, 2-D past 65535 groups), `lid`, `wg` and `nwg`. Semantics follow the TypeScript
// backend; sums run in f32 (the reference sums some rows in double), and NaN/inf cases are
// handled explicitly because WGSL's max/min leave NaN undefined.
import type { BinaryOp, QuantFormat, UnaryOp } from '../../tensor/kernels.js';
import type { Binding, Dispatch } from './runtime.js';

const cache = new Map<string, Dispatch>();

function def(key: string, bindings: Binding[], workgroupSize: number, body: string, helpers = ''): Dispatch {
  let d = cache.get(key);
  if (!d) {
    d = { key, bindings, workgroupSize, body: () => body, helpers: () => helpers };
    cache.set(key, d);
  }
  return d;
}

const r = (name: string, type: 'f32' | 'i32' | 'u32' = 'f32'): Binding => ({ name, type });
const w = (name: string, type: 'f32' | 'i32' = 'f32'): Binding => ({ name, type, write: true });

/** Elementwise prologue: `i` is this thread's element, pu(0) the count. */
const EACH = `  let i = group * 256u + lid;\n  if (i >= pu(0u)) { return; }\n`;

const MATH = /* wgsl */ `
const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const INV_SQRT_2: f32 = 0.7071067811865476;
const INV_SQRT_2PI: f32 = 0.3989422804014327;
// tanh without the overflow of exp(2x) for large |x|; the builtin near 0, where it is accurate
fn tanh_(v: f32) -> f32 {
  let e = exp(-2.0 * abs(v));
  let t = (1.0 - e) / (1.0 + e);
  return select(tanh(v), select(-t, t, v >= 0.0), abs(v) > 0.5);
}
// d/dv of GELU's tanh form, its tanh computed once
fn gelu_tanh_d(v: f32) -> f32 {
  let t = tanh_(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v));
  return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * v * v);
}
// the reference's erf (Chebyshev-fitted erfc, float32-accurate)
fn erf_(x: f32) -> f32 {
  let z = abs(x);
  let t = 1.0 / (1.0 + 0.5 * z);
  let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
    t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return select(r - 1.0, 1.0 - r, x >= 0.0);
}
`;

const UNARY: Record<UnaryOp, string> = {
  neg: '-v', exp: 'exp(v)', log: 'log(v)', tanh: 'tanh_(v)', sqrt: 'sqrt(v)', rsqrt: '1.0 / sqrt(v)',
  sigmoid: '1.0 / (1.0 + exp(-v))', abs: 'abs(v)', square: 'v * v', relu: 'select(0.0, v, v > 0.0)',
  silu: 'v / (1.0 + exp(-v))',
  gelu_tanh: '0.5 * v * (1.0 + tanh_(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)))',
  gelu_erf: '0.5 * v * (1.0 + erf_(v * INV_SQRT_2))',
};

const UNARY_BACK: Record<UnaryOp, string> = {
  neg: '-g', exp: 'g * y', log: 'g / v', tanh: 'g * (1.0 - y * y)', sqrt: 'g * 0.5 / y', rsqrt: 'g * -0.5 * y * y * y',
  sigmoid: 'g * y * (1.0 - y)', abs: 'g * sign(v)', square: 'g * 2.0 * v', relu: 'select(0.0, g, v > 0.0)',
  silu: 'g * (1.0 / (1.0 + exp(-v))) * (1.0 + v * (1.0 - 1.0 / (1.0 + exp(-v))))',
  gelu_tanh: 'g * gelu_tanh_d(v)',
  gelu_erf: 'g * (0.5 * (1.0 + erf_(v * INV_SQRT_2)) + v * INV_SQRT_2PI * exp(-0.5 * v * v))',
};

const BINARY: Record<BinaryOp, string> = {
  add: 'x + y', sub: 'x - y', mul: 'x * y', div: 'x / y',
  max: 'select(max(x, y), nan_(), isnan_(x) || isnan_(y))',
  min: 'select(min(x, y), nan_(), isnan_(x) || isnan_(y))',
};

export const fill = (): Dispatch => def('fill', [w('out')], 256, `${EACH}  out[i] = pf(0u);`);

export const unary = (op: UnaryOp): Dispatch =>
  def(`unary.${op}`, [r('x'), w('out')], 256, `${EACH}  let v = x[i];\n  out[i] = ${UNARY[op]};`, MATH);

export const unaryBackward = (op: UnaryOp): Dispatch =>
  def(`unaryBackward.${op}`, [r('x'), r('yv'), r('gy'), w('gx')], 256,
    `${EACH}  let v = x[i];\n  let y = yv[i];\n  let g = gy[i];\n  gx[i] = ${UNARY_BACK[op]};`, MATH);

// ints: n, nd, shape[nd], aStrides[nd], bStrides[nd]
export const binary = (op: BinaryOp): Dispatch =>
  def(`binary.${op}`, [r('a'), r('b'), w('out')], 256, `${EACH}
  let nd = pi(1u);
  var rem = i;
  var oa = 0;
  var ob = 0;
  for (var d = nd - 1; d >= 0; d--) {
    let s = pu(2u + u32(d));
    let idx = i32(rem % s);
    rem = rem / s;
    oa += idx * pi(2u + u32(nd + d));
    ob += idx * pi(2u + u32(2 * nd + d));
  }
  let x = a[oa];
  let y = b[ob];
  out[i] = ${BINARY[op]};`);

// floats: mul, add
export const affine = (): Dispatch => def('affine', [r('x'), w('out')], 256, `${EACH}  out[i] = x[i] * pf(0u) + pf(1u);`);

// floats: p; the exponents models use are exact; others as |x|^p with the sign of an odd integer p
export const powScalar = (): Dispatch => def('powScalar', [r('x'), w('out')], 256, `${EACH}
  let v = x[i];
  let p = pf(0u);
  var o: f32;
  if (p == 0.0) { o = 1.0; }
  else if (p == 1.0) { o = v; }
  else if (p == 2.0) { o = v * v; }
  else if (p == 3.0) { o = v * v * v; }
  else if (p == 0.5) { o = sqrt(v); }
  else if (p == -0.5) { o = 1.0 / sqrt(v); }
  else if (p == -1.0) { o = 1.0 / v; }
  else if (p == -2.0) { o = 1.0 / (v * v); }
  else {
    let isInt = floor(p) == p;
    if (v < 0.0 && !isInt) { o = nan_(); }
    else {
      let mag = select(exp2(p * log2(abs(v))), select(0.0, pinf(), p < 0.0), v == 0.0);
      let odd = isInt && (abs(p) % 2.0) == 1.0;
      o = select(mag, -mag, v < 0.0 && odd);
    }
  }
  out[i] = o;`);

// floats: alpha
// ints: n, heads, dim, transpose; x (rows, heads, dim), cos/sin (rows, dim): RotaryParams
export const rotary = (): Dispatch => def('rotary', [r('x'), r('cs'), r('sn'), w('out')], 256, `${EACH}
  let dim = pu(2u);
  let h = dim / 2u;
  let c = i % dim;
  let t = (i / dim / pu(1u)) * dim;
  let tr = pu(3u) == 1u;
  if (c < h) {
    let a = x[i] * cs[t + c];
    let b = x[i + h] * sn[t + select(c, c + h, tr)];
    out[i] = select(a - b, a + b, tr);
  } else {
    let a = x[i] * cs[t + c];
    let b = x[i - h] * sn[t + select(c, c - h, tr)];
    out[i] = select(a + b, a - b, tr);
  }`);

export const axpy = (): Dispatch => def('axpy', [r('a'), r('b'), w('out')], 256, `${EACH}  out[i] = a[i] + pf(0u) * b[i];`);

// ints: n, nd, offset, shape[nd], strides[nd]
export const gather = (): Dispatch => def('gather', [r('src'), w('out')], 256, `${EACH}
  let nd = pi(1u);
  var rem = i;
  var o = pi(2u);
  for (var d = nd - 1; d >= 0; d--) {
    let s = pu(3u + u32(d));
    o += i32(rem % s) * pi(3u + u32(nd + d));
    rem = rem / s;
  }
  out[i] = src[o];`);

// One thread per destination: dims with out-stride 0 (a broadcast being summed back) are walked
// inside the thread, so no two threads write one element and no atomics are needed.
// ints: nKept (elements), nk, nr, offset, accumulate, then (shape, outStride, srcStride) per kept dim, per reduced dim
export const scatter = (): Dispatch => def('scatter', [r('src'), w('out')], 256, `${EACH}
  let nk = pi(1u);
  let nr = pi(2u);
  var rem = i;
  var o = pi(3u);
  var sb = 0;
  for (var d = nk - 1; d >= 0; d--) {
    let at = 5u + 3u * u32(d);
    let s = pu(at);
    let idx = i32(rem % s);
    rem = rem / s;
    o += idx * pi(at + 1u);
    sb += idx * pi(at + 2u);
  }
  var nred = 1u;
  for (var d = 0; d < nr; d++) { nred *= pu(5u + 3u * u32(nk + d)); }
  var acc = 0.0;
  var last = 0.0;
  for (var t = 0u; t < nred; t++) {
    var rr = t;
    var so = sb;
    for (var d = nr - 1; d >= 0; d--) {
      let at = 5u + 3u * u32(nk + d);
      let s = pu(at);
      so += i32(rr % s) * pi(at + 2u);
      rr = rr / s;
    }
    last = src[so];
    acc += last;
  }
  if (pi(4u) != 0) { out[o] += acc; } else { out[o] = last; }`);

/**
 * Workgroup tree reductions over `size` threads (a power of two) into the workgroup array `red`:
 * `fn NAME(v, lid)` combines one value per thread with `step` (WGSL updating red[lid] from
 * red[lid + s]) and gives every thread the (uniform) result.
 */
function workgroupReduce(size: number, fns: readonly [name: string, step: string][]): string {
  return fns.map(([name, step]) => `fn ${name}(v: f32, lid: u32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = ${size / 2}u; s > 0u; s >>= 1u) {
    if (lid < s) { ${step} }
    workgroupBarrier();
  }
  let res = workgroupUniformLoad(&red[0]);
  workgroupBarrier();
  return res;
}
`).join('');
}

const REDUCE = /* wgsl */ `
var<workgroup> red: array<f32, 256>;
// workgroup sum/max of one value per thread; every thread gets the (uniform) result; wmaxPlain is
// max as the reference's row max (x > m: a NaN is skipped)
${workgroupReduce(256, [
    ['wsum', 'red[lid] += red[lid + s];'],
    ['wmax', 'red[lid] = nmax(red[lid], red[lid + s]);'],
    ['wmaxPlain', 'if (red[lid + s] > red[lid]) { red[lid] = red[lid + s]; }'],
  ])}`;

/** Row prologue: one workgroup of 256 per row; pu(0) rows, pu(1) cols. */
const ROW = `  let row = group;\n  if (row >= pu(0u)) { return; }\n  let cols = pu(1u);\n  let base = row * cols;\n`;

// sumReduce/maxReduce: inner == 1 → one workgroup per outer row; else one thread per output
export const reduceRows = (kind: 'sum' | 'max'): Dispatch => def(`reduceRows.${kind}`, [r('x'), w('out')], 256, `${ROW}
  var acc = ${kind === 'sum' ? '0.0' : 'ninf()'};
  for (var j = lid; j < cols; j += 256u) { ${kind === 'sum' ? 'acc += x[base + j];' : 'acc = nmax(acc, x[base + j]);'} }
  let res = ${kind === 'sum' ? 'wsum' : 'wmax'}(acc, lid);
  if (lid == 0u) { out[row] = res; }`, REDUCE);

// the first maximum of each row, NaNs skipped (x > m), 0 for a row with no number: the row max,
// then the smallest index holding it; as a float
export const argmaxRows = (): Dispatch => def('argmaxRows', [r('x'), w('out')], 256, `${ROW}
  var acc = ninf();
  for (var j = lid; j < cols; j += 256u) { let v = x[base + j]; if (v > acc) { acc = v; } }
  let m = wmaxPlain(acc, lid);
  var first = 0xffffffffu;
  if (m > ninf()) {
    for (var j = lid; j < cols; j += 256u) { if (x[base + j] == m) { first = j; break; } }
  }
  redi[lid] = first;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (lid < s) { redi[lid] = min(redi[lid], redi[lid + s]); }
    workgroupBarrier();
  }
  if (lid == 0u) { out[row] = select(f32(redi[0]), 0.0, redi[0] == 0xffffffffu); }`, `${REDUCE}\nvar<workgroup> redi: array<u32, 256>;\n`);

// ints: n (= outer·inner), reduce, inner
export const reduceStrided = (kind: 'sum' | 'max'): Dispatch => def(`reduceStrided.${kind}`, [r('x'), w('out')], 256, `${EACH}
  let red = pu(1u);
  let inner = pu(2u);
  let o = i / inner;
  let ii = i % inner;
  var acc = ${kind === 'sum' ? '0.0' : 'ninf()'};
  for (var k = 0u; k < red; k++) {
    let v = x[(o * red + k) * inner + ii];
    ${kind === 'sum' ? 'acc += v;' : 'acc = nmax(acc, v);'}
  }
  out[i] = acc;`);

// B's element at a flat index: float32, or a compact weight dequantized on load (as quant.ts's
// dequantizeRange, with the same float32 roundings). ints 10, 11: int8's cols, nf4's block size.
const LOAD_B: Record<'f32' | QuantFormat, string> = {
  f32: 'fn loadB(i: u32) -> f32 { return b[i]; }',
  bf16: 'fn loadB(i: u32) -> f32 { let wd = bq[i >> 1u]; return bitcast<f32>(select(wd << 16u, wd & 0xffff0000u, (i & 1u) == 1u)); }',
  int8: `fn loadB(i: u32) -> f32 {
  let v = bitcast<i32>(((bq[i >> 2u] >> (8u * (i & 3u))) & 0xffu) << 24u) >> 24u;
  return (f32(v) * qscales[i / pu(10u)]) * ${'7.874015718698502e-3'};
}`,
  nf4: `fn loadB(i: u32) -> f32 {
  let byte = (bq[i >> 3u] >> (8u * ((i >> 1u) & 3u))) & 0xffu;
  let c = select(byte >> 4u, byte & 15u, (i & 1u) == 1u);
  return qcode[c] * qscales[i / pu(11u)];
}`,
};

// GEMM without workgroup memory or barriers: 4×4 outputs per thread straight from global memory,
// 8×8 threads per 32×32 tile. For CPU adapters (SwiftShader), where barriers cost more than the
// loads they save. Same grid layout as matmul with 32-wide tiles; same ints.
export const matmulDirect = (transA: boolean, transB: boolean, bFormat: 'f32' | QuantFormat = 'f32'): Dispatch => def(`matmulDirect.${transA ? 't' : 'n'}${transB ? 't' : 'n'}.${bFormat}`,
  bFormat === 'f32' ? [r('a'), r('b'), w('c')] : [r('a'), r('bq', 'u32'), w('c'), r('qscales'), r('qcode')], 64, `
  let m = pu(0u);
  let n = pu(1u);
  let k = pu(2u);
  let lda = pu(3u);
  let ldb = pu(4u);
  let bz = wg.z;
  let aBase = pu(7u) + bz * pu(5u);
  let bBase = pu(8u) + bz * pu(6u);
  let i0 = wg.y * 32u + (lid / 8u) * 4u;
  let j0 = wg.x * 32u + (lid % 8u) * 4u;
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  let im = vec4<u32>(min(i0, m - 1u), min(i0 + 1u, m - 1u), min(i0 + 2u, m - 1u), min(i0 + 3u, m - 1u));
  let jn = vec4<u32>(min(j0, n - 1u), min(j0 + 1u, n - 1u), min(j0 + 2u, n - 1u), min(j0 + 3u, n - 1u));
  for (var kk = 0u; kk < k; kk++) {
    ${transA
    ? 'let av = vec4<f32>(a[aBase + kk * lda + im.x], a[aBase + kk * lda + im.y], a[aBase + kk * lda + im.z], a[aBase + kk * lda + im.w]);'
    : 'let av = vec4<f32>(a[aBase + im.x * lda + kk], a[aBase + im.y * lda + kk], a[aBase + im.z * lda + kk], a[aBase + im.w * lda + kk]);'}
    ${transB
    ? 'let bv = vec4<f32>(loadB(bBase + jn.x * ldb + kk), loadB(bBase + jn.y * ldb + kk), loadB(bBase + jn.z * ldb + kk), loadB(bBase + jn.w * ldb + kk));'
    : 'let bv = vec4<f32>(loadB(bBase + kk * ldb + jn.x), loadB(bBase + kk * ldb + jn.y), loadB(bBase + kk * ldb + jn.z), loadB(bBase + kk * ldb + jn.w));'}
    acc0 += av.x * bv;
    acc1 += av.y * bv;
    acc2 += av.z * bv;
    acc3 += av.w * bv;
  }
  let accumulate = pi(9u) != 0;
  for (var rr = 0u; rr < 4u; rr++) {
    let ii = i0 + rr;
    if (ii >= m) { continue; }
    var o = acc0;
    if (rr == 1u) { o = acc1; } else if (rr == 2u) { o = acc2; } else if (rr == 3u) { o = acc3; }
    for (var cc = 0u; cc < 4u; cc++) {
      let jj = j0 + cc;
      if (jj >= n) { continue; }
      let at = bz * m * n + ii * n + jj;
      if (accumulate) { c[at] += o[cc]; } else { c[at] = o[cc]; }
    }
  }`, LOAD_B[bFormat]);

// Tiled GEMM: 64×64 output tiles, 16-deep k slices in workgroup memory, 4×4 outputs per thread.
// grid (ceil(n/64), ceil(m/64), batch). ints: m, n, k, lda, ldb, strideA, strideB, offA, offB, accumulate
export const matmul = (transA: boolean, transB: boolean, bFormat: 'f32' | QuantFormat = 'f32'): Dispatch => def(`matmul.${transA ? 't' : 'n'}${transB ? 't' : 'n'}.${bFormat}`,
  bFormat === 'f32' ? [r('a'), r('b'), w('c')] : [r('a'), r('bq', 'u32'), w('c'), r('qscales'), r('qcode')], 256, `
  let m = pu(0u);
  let n = pu(1u);
  let k = pu(2u);
  let lda = pu(3u);
  let ldb = pu(4u);
  let bz = wg.z;
  let row0 = wg.y * 64u;
  let col0 = wg.x * 64u;
  let aBase = pu(7u) + bz * pu(5u);
  let bBase = pu(8u) + bz * pu(6u);
  let tx = lid % 16u;
  let ty = lid / 16u;
  // one vec4 accumulator per output row of the thread (registers, not an indexed array)
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  for (var k0 = 0u; k0 < k; k0 += 16u) {
    for (var q = 0u; q < 4u; q++) {
      let e = lid + q * 256u;
      ${transA
    ? 'let ii = e % 64u; let kk = e / 64u; let ok = row0 + ii < m && k0 + kk < k; let at = aBase + (k0 + kk) * lda + row0 + ii;'
    : 'let kk = e % 16u; let ii = e / 16u; let ok = row0 + ii < m && k0 + kk < k; let at = aBase + (row0 + ii) * lda + k0 + kk;'}
      As4[kk * 16u + ii / 4u][ii % 4u] = select(0.0, a[select(0u, at, ok)], ok);
      ${transB
    ? 'let kb = e % 16u; let jj = e / 16u; let okb = col0 + jj < n && k0 + kb < k; let bt = bBase + (col0 + jj) * ldb + k0 + kb;'
    : 'let jj = e % 64u; let kb = e / 64u; let okb = col0 + jj < n && k0 + kb < k; let bt = bBase + (k0 + kb) * ldb + col0 + jj;'}
      Bs4[kb * 16u + jj / 4u][jj % 4u] = select(0.0, loadB(select(0u, bt, okb)), okb);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk++) {
      let av = As4[kk * 16u + ty];
      let bv = Bs4[kk * 16u + tx];
      acc0 += av.x * bv;
      acc1 += av.y * bv;
      acc2 += av.z * bv;
      acc3 += av.w * bv;
    }
    workgroupBarrier();
  }
  let accumulate = pi(9u) != 0;
  for (var rr = 0u; rr < 4u; rr++) {
    let ii = row0 + ty * 4u + rr;
    if (ii >= m) { continue; }
    var o = acc0;
    if (rr == 1u) { o = acc1; } else if (rr == 2u) { o = acc2; } else if (rr == 3u) { o = acc3; }
    for (var cc = 0u; cc < 4u; cc++) {
      let jj = col0 + tx * 4u + cc;
      if (jj >= n) { continue; }
      let at = bz * m * n + ii * n + jj;
      if (accumulate) { c[at] += o[cc]; } else { c[at] = o[cc]; }
    }
  }`, `var<workgroup> As4: array<vec4<f32>, 256>;\nvar<workgroup> Bs4: array<vec4<f32>, 256>;\n${LOAD_B[bFormat]}`);

export const softmax = (): Dispatch => def('softmax', [r('x'), w('out')], 256, `${ROW}
  var m = ninf();
  for (var j = lid; j < cols; j += 256u) { m = max(m, x[base + j]); }
  m = wmaxPlain(m, lid);
  var s = 0.0;
  for (var j = lid; j < cols; j += 256u) { s += exp(x[base + j] - m); }
  let inv = 1.0 / wsum(s, lid);
  for (var j = lid; j < cols; j += 256u) { out[base + j] = exp(x[base + j] - m) * inv; }`, REDUCE);

export const softmaxBackward = (): Dispatch => def('softmaxBackward', [r('y'), r('gy'), w('gx')], 256, `${ROW}
  var s = 0.0;
  for (var j = lid; j < cols; j += 256u) { s += y[base + j] * gy[base + j]; }
  let dot = wsum(s, lid);
  for (var j = lid; j < cols; j += 256u) { gx[base + j] = y[base + j] * (gy[base + j] - dot); }`, REDUCE);

export const logSoftmax = (): Dispatch => def('logSoftmax', [r('x'), w('out')], 256, `${ROW}
  var m = ninf();
  for (var j = lid; j < cols; j += 256u) { m = max(m, x[base + j]); }
  m = wmaxPlain(m, lid);
  var s = 0.0;
  for (var j = lid; j < cols; j += 256u) { s += exp(x[base + j] - m); }
  let lse = m + log(wsum(s, lid));
  for (var j = lid; j < cols; j += 256u) { out[base + j] = x[base + j] - lse; }`, REDUCE);

export const logSoftmaxBackward = (): Dispatch => def('logSoftmaxBackward', [r('y'), r('gy'), w('gx')], 256, `${ROW}
  var s = 0.0;
  for (var j = lid; j < cols; j += 256u) { s += gy[base + j]; }
  let tot = wsum(s, lid);
  for (var j = lid; j < cols; j += 256u) { gx[base + j] = gy[base + j] - exp(y[base + j]) * tot; }`, REDUCE);

// ints: rows, cols, ignoreIndex
export const crossEntropy = (): Dispatch => def('crossEntropy', [r('x'), r('targets', 'i32'), w('loss'), w('lse')], 256, `${ROW}
  var m = ninf();
  for (var j = lid; j < cols; j += 256u) { m = max(m, x[base + j]); }
  m = wmaxPlain(m, lid);
  var s = 0.0;
  for (var j = lid; j < cols; j += 256u) { s += exp(x[base + j] - m); }
  let l = m + log(wsum(s, lid));
  if (lid == 0u) {
    lse[row] = l;
    let t = targets[row];
    if (t == pi(2u)) { loss[row] = 0.0; }
    else if (t < 0 || u32(t) >= cols) { loss[row] = nan_(); }
    else { loss[row] = l - x[base + u32(t)]; }
  }`, REDUCE);

export const crossEntropyBackward = (): Dispatch => def('crossEntropyBackward', [r('x'), r('lse'), r('targets', 'i32'), r('gLoss'), w('gx')], 256, `${ROW}
  let t = targets[row];
  let ignored = t == pi(2u);
  let g = gLoss[row];
  let l = lse[row];
  for (var j = lid; j < cols; j += 256u) {
    var v = 0.0;
    if (!ignored) {
      v = g * exp(x[base + j] - l);
      if (i32(j) == t) { v -= g; }
    }
    gx[base + j] = v;
  }`);

// ints: rows, cols, hasWeight, hasBias; floats: eps
export const layerNorm = (): Dispatch => def('layerNorm', [r('x'), r('wt'), r('bs'), w('out'), w('mean'), w('rstd')], 256, `${ROW}
  var s = 0.0;
  for (var j = lid; j < cols; j += 256u) { s += x[base + j]; }
  let mu = wsum(s, lid) / f32(cols);
  var v = 0.0;
  for (var j = lid; j < cols; j += 256u) { let d = x[base + j] - mu; v += d * d; }
  let rs = 1.0 / sqrt(wsum(v, lid) / f32(cols) + pf(0u));
  if (lid == 0u) { mean[row] = mu; rstd[row] = rs; }
  for (var j = lid; j < cols; j += 256u) {
    var y = (x[base + j] - mu) * rs;
    if (pi(2u) != 0) { y *= wt[j]; }
    if (pi(3u) != 0) { y += bs[j]; }
    out[base + j] = y;
  }`, REDUCE);

// ints: rows, cols, hasWeight
export const layerNormBackwardX = (): Dispatch => def('layerNormBackwardX', [r('x'), r('wt'), r('mean'), r('rstd'), r('gy'), w('gx')], 256, `${ROW}
  let mu = mean[row];
  let rs = rstd[row];
  let hw = pi(2u) != 0;
  var sg = 0.0;
  var sgx = 0.0;
  for (var j = lid; j < cols; j += 256u) {
    let xh = (x[base + j] - mu) * rs;
    let gw = select(gy[base + j], gy[base + j] * wt[j], hw);
    sg += gw;
    sgx += gw * xh;
  }
  let mG = wsum(sg, lid) / f32(cols);
  let mGX = wsum(sgx, lid) / f32(cols);
  for (var j = lid; j < cols; j += 256u) {
    let xh = (x[base + j] - mu) * rs;
    let gw = select(gy[base + j], gy[base + j] * wt[j], hw);
    gx[base + j] = rs * (gw - mG - xh * mGX);
  }`, REDUCE);

// one thread per column, rows in order. ints: n (= cols), rows, hasGW, hasGB, rms
export const normBackwardW = (): Dispatch => def('normBackwardW', [r('x'), r('mean'), r('rstd'), r('gy'), w('gw'), w('gb')], 256, `${EACH}
  let cols = pu(0u);
  let rows = pu(1u);
  let rms = pi(4u) != 0;
  var sw = 0.0;
  var sb = 0.0;
  for (var rr = 0u; rr < rows; rr++) {
    let g = gy[rr * cols + i];
    let xv = x[rr * cols + i];
    sw += select(g * (xv - mean[rr]) * rstd[rr], g * xv * rstd[rr], rms);
    sb += g;
  }
  if (pi(2u) != 0) { gw[i] += sw; }
  if (pi(3u) != 0) { gb[i] += sb; }`);

// ints: rows, cols, hasWeight; floats: eps
export const rmsNorm = (): Dispatch => def('rmsNorm', [r('x'), r('wt'), w('out'), w('rstd')], 256, `${ROW}
  var s = 0.0;
  for (var j = lid; j < cols; j += 256u) { s += x[base + j] * x[base + j]; }
  let rs = 1.0 / sqrt(wsum(s, lid) / f32(cols) + pf(0u));
  if (lid == 0u) { rstd[row] = rs; }
  for (var j = lid; j < cols; j += 256u) { out[base + j] = select(x[base + j] * rs, x[base + j] * rs * wt[j], pi(2u) != 0); }`, REDUCE);

export const rmsNormBackwardX = (): Dispatch => def('rmsNormBackwardX', [r('x'), r('wt'), r('rstd'), r('gy'), w('gx')], 256, `${ROW}
  let rs = rstd[row];
  let hw = pi(2u) != 0;
  var s = 0.0;
  for (var j = lid; j < cols; j += 256u) { s += select(gy[base + j], gy[base + j] * wt[j], hw) * x[base + j]; }
  let c = wsum(s, lid) * rs * rs * rs / f32(cols);
  for (var j = lid; j < cols; j += 256u) {
    gx[base + j] = select(gy[base + j], gy[base + j] * wt[j], hw) * rs - x[base + j] * c;
  }`, REDUCE);

// ints: n (= ids·dim), dim
export const embedding = (): Dispatch => def('embedding', [r('wt'), r('ids', 'i32'), w('out')], 256, `${EACH}
  let dim = pu(1u);
  out[i] = wt[u32(ids[i / dim]) * dim + i % dim];`);

// one thread per column, ids in order (repeated ids add up without races). ints: n (= dim), count
export const embeddingBackward = (): Dispatch => def('embeddingBackward', [r('gy'), r('ids', 'i32'), w('gw')], 256, `${EACH}
  let dim = pu(0u);
  for (var t = 0u; t < pu(1u); t++) { gw[u32(ids[t]) * dim + i] += gy[t * dim + i]; }`);

const ATT = /* wgsl */ `
var<workgroup> qs: array<f32, 256>;
var<workgroup> sc: array<f32, 64>;
var<workgroup> sc2: array<f32, 64>;
var<workgroup> red: array<f32, 64>;
${workgroupReduce(64, [['wsum64', 'red[lid] += red[lid + s];'], ['wmax64', 'red[lid] = nmax(red[lid], red[lid + s]);']])}`;

// Attention forward, one workgroup of 64 per query row: pass 1 finds the row max (and the visible
// count) over the keys, pass 2 walks the keys 64 at a time, each thread scoring one into
// workgroup memory and then adding the chunk's weighted values into its output columns.
// ints: rows, heads, kvHeads, tq, tk, d, causal, causalOffset, hasMask, kvStride, ragged, past, start, keyStride; floats: scale
// Ragged (per sequence): rows = n·heads, query (start + i, h), keys 0..past+i at j·keyStride + kvh·d, no lse.
export const attention = (): Dispatch => def('attention', [r('q'), r('k'), r('v'), r('mask'), w('out'), w('lse')], 64, `
  let row = group;
  if (row >= pu(0u)) { return; }
  let heads = pu(1u);
  let d = pu(5u);
  let ragged = pi(10u) != 0;
  let scale = pf(0u);
  var qBase: u32;
  var kvBase: u32;
  var limit: u32;
  var b = 0u;
  var ks = d;
  if (ragged) {
    let i = row / heads;
    let h = row % heads;
    qBase = (pu(12u) * heads + row) * d;
    kvBase = (h / (heads / pu(2u))) * d;
    limit = pu(11u) + i + 1u;
    ks = pu(13u);
  } else {
    let tq = pu(3u);
    let tk = pu(4u);
    let i = row % tq;
    let bh = row / tq;
    let h = bh % heads;
    b = bh / heads;
    qBase = row * d;
    kvBase = (b * pu(2u) + h / (heads / pu(2u))) * pu(9u) * d;
    limit = tk;
    if (pi(6u) != 0) { limit = u32(clamp(i32(i) + pi(7u) + 1, 0, i32(tk))); }
  }
  let hasMask = pi(8u) != 0;
  let tk = pu(4u);
  for (var c = lid; c < d; c += 64u) { qs[c] = q[qBase + c]; }
  workgroupBarrier();
  var m = ninf();
  var vis = 0.0;
  for (var j = lid; j < limit; j += 64u) {
    if (hasMask && mask[b * tk + j] == 0.0) { continue; }
    vis += 1.0;
    var dot = 0.0;
    let kb = kvBase + j * ks;
    for (var c = 0u; c < d; c++) { dot += qs[c] * k[kb + c]; }
    m = nmax(m, dot * scale);
  }
  m = wmax64(m, lid);
  vis = wsum64(vis, lid);
  if (vis == 0.0) {
    for (var c = lid; c < d; c += 64u) { out[qBase + c] = 0.0; }
    if (lid == 0u && !ragged) { lse[row] = ninf(); }
    return;
  }
  if (!isfinite_(m)) {
    for (var c = lid; c < d; c += 64u) { out[qBase + c] = nan_(); }
    if (lid == 0u && !ragged) { lse[row] = nan_(); }
    return;
  }
  var acc: array<f32, 4>;
  for (var t = 0u; t < 4u; t++) { acc[t] = 0.0; }
  var sum = 0.0;
  for (var j0 = 0u; j0 < limit; j0 += 64u) {
    let j = j0 + lid;
    var e = 0.0;
    if (j < limit && !(hasMask && mask[b * tk + j] == 0.0)) {
      var dot = 0.0;
      let kb = kvBase + j * ks;
      for (var c = 0u; c < d; c++) { dot += qs[c] * k[kb + c]; }
      e = exp(dot * scale - m);
    }
    sc[lid] = e;
    workgroupBarrier();
    let cnt = min(64u, limit - j0);
    for (var jj = 0u; jj < cnt; jj++) {
      let ej = sc[jj];
      sum += ej;
      let vb = kvBase + (j0 + jj) * ks;
      for (var t = 0u; t < 4u; t++) {
        let c = lid + t * 64u;
        if (c < d) { acc[t] += ej * v[vb + c]; }
      }
    }
    workgroupBarrier();
  }
  let inv = 1.0 / sum;
  for (var t = 0u; t < 4u; t++) {
    let c = lid + t * 64u;
    if (c < d) { out[qBase + c] = acc[t] * inv; }
  }
  if (lid == 0u && !ragged) { lse[row] = m + log(sum); }`, ATT);

// stats[2·row] = lse, stats[2·row+1] = D = gO·O (the softmax-backward row constant). ints: n (= rows), d
export const attentionStats = (): Dispatch => def('attentionStats', [r('o'), r('lse'), r('go'), w('stats')], 256, `${EACH}
  let d = pu(1u);
  var s = 0.0;
  for (var c = 0u; c < d; c++) { s += go[i * d + c] * o[i * d + c]; }
  stats[2u * i] = lse[i];
  stats[2u * i + 1u] = s;`);

// gq, one workgroup per query row: ds_j = p_j·(gO·V_j − D)·scale, gq = Σ_j ds_j K_j. ints as attention
export const attentionBackwardQ = (): Dispatch => def('attentionBackwardQ', [r('q'), r('k'), r('v'), r('stats'), r('go'), r('mask'), w('gq')], 64, `
  let row = group;
  if (row >= pu(0u)) { return; }
  let heads = pu(1u);
  let tq = pu(3u);
  let tk = pu(4u);
  let d = pu(5u);
  let scale = pf(0u);
  let i = row % tq;
  let bh = row / tq;
  let h = bh % heads;
  let b = bh / heads;
  let qBase = row * d;
  let kvBase = (b * pu(2u) + h / (heads / pu(2u))) * pu(9u) * d;
  var limit = tk;
  if (pi(6u) != 0) { limit = u32(clamp(i32(i) + pi(7u) + 1, 0, i32(tk))); }
  let hasMask = pi(8u) != 0;
  let l = stats[2u * row];
  let D = stats[2u * row + 1u];
  let live = l != ninf();
  for (var c = lid; c < d; c += 64u) { qs[c] = q[qBase + c]; }
  workgroupBarrier();
  var acc: array<f32, 4>;
  for (var t = 0u; t < 4u; t++) { acc[t] = 0.0; }
  for (var j0 = 0u; j0 < limit; j0 += 64u) {
    let j = j0 + lid;
    var ds = 0.0;
    if (live && j < limit && !(hasMask && mask[b * tk + j] == 0.0)) {
      let kb = kvBase + j * d;
      var dot = 0.0;
      var dp = 0.0;
      for (var c = 0u; c < d; c++) { dot += qs[c] * k[kb + c]; dp += go[qBase + c] * v[kb + c]; }
      ds = exp(dot * scale - l) * (dp - D) * scale;
    }
    sc[lid] = ds;
    workgroupBarrier();
    let cnt = min(64u, limit - j0);
    for (var jj = 0u; jj < cnt; jj++) {
      let dj = sc[jj];
      let kb = kvBase + (j0 + jj) * d;
      for (var t = 0u; t < 4u; t++) {
        let c = lid + t * 64u;
        if (c < d) { acc[t] += dj * k[kb + c]; }
      }
    }
    workgroupBarrier();
  }
  for (var t = 0u; t < 4u; t++) {
    let c = lid + t * 64u;
    if (c < d) { gq[qBase + c] = acc[t]; }
  }`, ATT);

// gk/gv, one workgroup per key (b, kvh, j) over the queries of its head group that see it.
// ints as attention plus hasGK (14), hasGV (15)
export const attentionBackwardKV = (): Dispatch => def('attentionBackwardKV', [r('q'), r('k'), r('v'), r('stats'), r('go'), r('mask'), w('gk'), w('gv')], 64, `
  let heads = pu(1u);
  let kvHeads = pu(2u);
  let tq = pu(3u);
  let tk = pu(4u);
  let d = pu(5u);
  let scale = pf(0u);
  let key = group;
  if (key >= pu(0u)) { return; }
  let j = key % tk;
  let bk = key / tk;
  let kvh = bk % kvHeads;
  let b = bk / kvHeads;
  let grp = heads / kvHeads;
  let kb = (b * kvHeads + kvh) * pu(9u) * d + j * d;
  let hasMask = pi(8u) != 0;
  let causal = pi(6u) != 0;
  let off = pi(7u);
  let keyLive = !(hasMask && mask[b * tk + j] == 0.0);
  for (var c = lid; c < d; c += 64u) { qs[c] = k[kb + c]; }
  workgroupBarrier();
  var ak: array<f32, 4>;
  var av: array<f32, 4>;
  for (var t = 0u; t < 4u; t++) { ak[t] = 0.0; av[t] = 0.0; }
  let total = grp * tq;
  for (var r0 = 0u; r0 < total; r0 += 64u) {
    let rr = r0 + lid;
    var p = 0.0;
    var ds = 0.0;
    if (keyLive && rr < total) {
      let h = kvh * grp + rr / tq;
      let i = rr % tq;
      let row = (b * heads + h) * tq + i;
      let l = stats[2u * row];
      let sees = !causal || i32(j) < min(i32(tk), i32(i) + off + 1);
      if (sees && l != ninf()) {
        var dot = 0.0;
        var dp = 0.0;
        for (var c = 0u; c < d; c++) { dot += q[row * d + c] * qs[c]; dp += go[row * d + c] * v[kb + c]; }
        p = exp(dot * scale - l);
        ds = p * (dp - stats[2u * row + 1u]) * scale;
      }
    }
    sc[lid] = p;
    sc2[lid] = ds;
    workgroupBarrier();
    let cnt = min(64u, total - r0);
    for (var t2 = 0u; t2 < cnt; t2++) {
      let rq = r0 + t2;
      let row = (b * heads + kvh * grp + rq / tq) * tq + rq % tq;
      let pj = sc[t2];
      let dj = sc2[t2];
      for (var t = 0u; t < 4u; t++) {
        let c = lid + t * 64u;
        if (c < d) { av[t] += pj * go[row * d + c]; ak[t] += dj * q[row * d + c]; }
      }
    }
    workgroupBarrier();
  }
  for (var t = 0u; t < 4u; t++) {
    let c = lid + t * 64u;
    if (c < d) {
      if (pi(14u) != 0) { gk[kb + c] = ak[t]; }
      if (pi(15u) != 0) { gv[kb + c] = av[t]; }
    }
  }`, ATT);

// ints: n (= out size), cin, h, w, cout, kh, kw, stride, pad, oh, ow, hasBias
export const conv2d = (): Dispatch => def('conv2d', [r('x'), r('wt'), r('bias'), w('out')], 256, `${EACH}
  let cin = pu(1u); let h = pu(2u); let wd = pu(3u); let cout = pu(4u); let kh = pu(5u); let kw = pu(6u);
  let st = i32(pu(7u)); let pad = i32(pu(8u)); let oh = pu(9u); let ow = pu(10u);
  let oj = i % ow; let oi = (i / ow) % oh; let co = (i / (ow * oh)) % cout; let nn = i / (ow * oh * cout);
  var s = 0.0;
  for (var c = 0u; c < cin; c++) {
    for (var ki = 0u; ki < kh; ki++) {
      let ii = i32(oi) * st - pad + i32(ki);
      if (ii < 0 || ii >= i32(h)) { continue; }
      for (var kj = 0u; kj < kw; kj++) {
        let jj = i32(oj) * st - pad + i32(kj);
        if (jj < 0 || jj >= i32(wd)) { continue; }
        s += wt[((co * cin + c) * kh + ki) * kw + kj] * x[((nn * cin + c) * h + u32(ii)) * wd + u32(jj)];
      }
    }
  }
  if (pi(11u) != 0) { s += bias[co]; }
  out[i] = s;`);

// gx (overwritten), one thread per input element. ints as conv2d with n = input size
export const conv2dBackwardX = (): Dispatch => def('conv2dBackwardX', [r('wt'), r('gy'), w('gx')], 256, `${EACH}
  let cin = pu(1u); let h = pu(2u); let wd = pu(3u); let cout = pu(4u); let kh = pu(5u); let kw = pu(6u);
  let st = i32(pu(7u)); let pad = i32(pu(8u)); let oh = i32(pu(9u)); let ow = i32(pu(10u));
  let jj = i32(i % wd); let ii = i32((i / wd) % h); let c = (i / (wd * h)) % cin; let nn = i / (wd * h * cin);
  var s = 0.0;
  for (var co = 0u; co < cout; co++) {
    for (var ki = 0u; ki < kh; ki++) {
      let t = ii + pad - i32(ki);
      if (t < 0 || t % st != 0 || t / st >= oh) { continue; }
      let oi = t / st;
      for (var kj = 0u; kj < kw; kj++) {
        let u = jj + pad - i32(kj);
        if (u < 0 || u % st != 0 || u / st >= ow) { continue; }
        s += wt[((co * cin + c) * kh + ki) * kw + kj] * gy[((nn * cout + co) * u32(oh) + u32(oi)) * u32(ow) + u32(u / st)];
      }
    }
  }
  gx[i] = s;`);

// gw (accumulated), one thread per weight. ints as conv2d with n = weight size, batch at 11
export const conv2dBackwardW = (): Dispatch => def('conv2dBackwardW', [r('x'), r('gy'), w('gw')], 256, `${EACH}
  let cin = pu(1u); let h = i32(pu(2u)); let wd = i32(pu(3u)); let cout = pu(4u); let kh = pu(5u); let kw = pu(6u);
  let st = i32(pu(7u)); let pad = i32(pu(8u)); let oh = pu(9u); let ow = pu(10u); let batch = pu(11u);
  let kj = i % kw; let ki = (i / kw) % kh; let c = (i / (kw * kh)) % cin; let co = i / (kw * kh * cin);
  var s = 0.0;
  for (var nn = 0u; nn < batch; nn++) {
    for (var oi = 0u; oi < oh; oi++) {
      let ii = i32(oi) * st - pad + i32(ki);
      if (ii < 0 || ii >= h) { continue; }
      for (var oj = 0u; oj < ow; oj++) {
        let jj = i32(oj) * st - pad + i32(kj);
        if (jj < 0 || jj >= wd) { continue; }
        s += gy[((nn * cout + co) * oh + oi) * ow + oj] * x[((nn * cin + c) * u32(h) + u32(ii)) * u32(wd) + u32(jj)];
      }
    }
  }
  gw[i] += s;`);

// gb (accumulated), one thread per output channel. ints: n (= cout), batch, plane
export const conv2dBackwardB = (): Dispatch => def('conv2dBackwardB', [r('gy'), w('gb')], 256, `${EACH}
  let cout = pu(0u); let batch = pu(1u); let plane = pu(2u);
  var s = 0.0;
  for (var nn = 0u; nn < batch; nn++) { for (var t = 0u; t < plane; t++) { s += gy[(nn * cout + i) * plane + t]; } }
  gb[i] += s;`);

// ints: n (= out size), h, w, k, stride, oh, ow
export const maxPool2d = (): Dispatch => def('maxPool2d', [r('x'), w('out'), w('argmax', 'i32')], 256, `${EACH}
  let h = pu(1u); let wd = pu(2u); let k = pu(3u); let st = pu(4u); let oh = pu(5u); let ow = pu(6u);
  let oj = i % ow; let oi = (i / ow) % oh; let nc = i / (ow * oh);
  let xb = nc * h * wd;
  var best = ninf();
  var at = xb + oi * st * wd + oj * st;
  for (var ki = 0u; ki < k; ki++) {
    let rb = xb + (oi * st + ki) * wd + oj * st;
    for (var kj = 0u; kj < k; kj++) {
      let v = x[rb + kj];
      if (v > best) { best = v; at = rb + kj; }
    }
  }
  out[i] = best;
  argmax[i] = i32(at);`);

// gx (overwritten), one thread per input element over the windows that hold it. ints: n (= input size), h, w, k, stride, oh, ow
export const maxPool2dBackward = (): Dispatch => def('maxPool2dBackward', [r('gy'), r('argmax', 'i32'), w('gx')], 256, `${EACH}
  let h = pu(1u); let wd = pu(2u); let k = i32(pu(3u)); let st = i32(pu(4u)); let oh = i32(pu(5u)); let ow = i32(pu(6u));
  let jj = i32(i % wd); let ii = i32((i / wd) % h); let nc = i32(i / (wd * h));
  var s = 0.0;
  let oi0 = max(0, (ii - k + st) / st);
  let oj0 = max(0, (jj - k + st) / st);
  for (var oi = oi0; oi <= min(oh - 1, ii / st); oi++) {
    for (var oj = oj0; oj <= min(ow - 1, jj / st); oj++) {
      let o = (nc * oh + oi) * ow + oj;
      if (argmax[o] == i32(i)) { s += gy[o]; }
    }
  }
  gx[i] = s;`);

// floats: lr·… precomputed on the host: decay, stepSize, beta1, beta2, eps, bc2Sqrt
export const adamw = (): Dispatch => def('adamw', [r('g'), w('p'), w('m'), w('v')], 256, `${EACH}
  let gi = g[i];
  let b1 = pf(2u);
  let b2 = pf(3u);
  let mi = b1 * m[i] + (1.0 - b1) * gi;
  let vi = b2 * v[i] + (1.0 - b2) * gi * gi;
  m[i] = mi;
  v[i] = vi;
  p[i] = p[i] * pf(0u) - (pf(1u) * mi) / (sqrt(vi) / pf(5u) + pf(4u));`);

// out (rows × cols) = x scaled by v per column (byCol) or per row. ints: n, cols, byCol
export const scaleBy = (): Dispatch => def('scaleBy', [r('x'), r('vec'), w('out')], 256, `${EACH}
  let cols = pu(1u);
  out[i] = x[i] * select(vec[i / cols], vec[i % cols], pi(2u) != 0);`);

// acc[o] += Σ_j a[o·r + j]·b[o·r + j] (byRow) or acc[j] += Σ_o a[o·r + j]·b[o·r + j]. ints: n (outputs), r, other, byRow
export const dotAcc = (): Dispatch => def('dotAcc', [r('a'), r('b'), w('acc')], 256, `${EACH}
  let rk = pu(1u);
  let other = pu(2u);
  var s = 0.0;
  if (pi(3u) != 0) { for (var j = 0u; j < other; j++) { s += a[i * rk + j] * b[i * rk + j]; } }
  else { for (var o = 0u; o < other; o++) { s += a[o * rk + i] * b[o * rk + i]; } }
  acc[i] += s;`);

// u[t, j] = ax[rows[t]·rank + j]·λd[slot[t]·rank + j]. ints: n, rank
export const routedPack = (): Dispatch => def('routedPack', [r('ax'), r('ld'), r('rowsOf', 'i32'), r('slotOf', 'i32'), w('u')], 256, `${EACH}
  let rk = pu(1u);
  let t = i / rk;
  let j = i % rk;
  u[i] = ax[u32(rowsOf[t]) * rk + j] * ld[u32(slotOf[t]) * rk + j];`);

// out[rows[t]·o + c] += λb[slot[t]·o + c]·tt[t·o + c]. ints: n, outFeatures
export const routedUnpack = (): Dispatch => def('routedUnpack', [r('tt'), r('lb'), r('rowsOf', 'i32'), r('slotOf', 'i32'), w('out')], 256, `${EACH}
  let nOut = pu(1u);
  let t = i / nOut;
  let c = i % nOut;
  out[u32(rowsOf[t]) * nOut + c] += lb[u32(slotOf[t]) * nOut + c] * tt[i];`);
