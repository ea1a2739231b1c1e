// Cache-blocked single-precision GEMM in plain TypeScript: C (m×n) (+)= op(A) · op(B).
// Rows of C are updated four k-steps at a time so each pass over a C row does four multiply-adds
// per load/store; B is packed into a contiguous (kc × nc) panel that stays in cache while every
// row of A streams past it. Arithmetic is in double, stored as float32.

const KC = 128; // k-panel depth
const NC = 1024; // panel width (floats)

let panel = new Float32Array(KC * NC);

export function gemm(
  a: Float32Array, aOff: number, b: Float32Array, bOff: number, c: Float32Array, cOff: number,
  m: number, n: number, k: number, transA: boolean, transB: boolean, accumulate: boolean,
): void {
  if (!accumulate) c.fill(0, cOff, cOff + m * n);
  if (m === 0 || n === 0 || k === 0) return;
  if (panel.length < KC * NC) panel = new Float32Array(KC * NC);
  // A(i, p) lives at aOff + i*ra + p*ca
  const ra = transA ? 1 : k;
  const ca = transA ? m : 1;
  for (let j0 = 0; j0 < n; j0 += NC) {
    const nc = Math.min(NC, n - j0);
    for (let p0 = 0; p0 < k; p0 += KC) {
      const kc = Math.min(KC, k - p0);
      packB(b, bOff, panel, p0, kc, j0, nc, n, k, transB);
      for (let i = 0; i < m; i++) {
        const cRow = cOff + i * n + j0;
        const aRow = aOff + i * ra + p0 * ca;
        let p = 0;
        for (; p + 4 <= kc; p += 4) {
          const a0 = a[aRow + p * ca];
          const a1 = a[aRow + (p + 1) * ca];
          const a2 = a[aRow + (p + 2) * ca];
          const a3 = a[aRow + (p + 3) * ca];
          const r0 = p * nc;
          const r1 = r0 + nc;
          const r2 = r1 + nc;
          const r3 = r2 + nc;
          for (let j = 0; j < nc; j++) {
            c[cRow + j] += a0 * panel[r0 + j] + a1 * panel[r1 + j] + a2 * panel[r2 + j] + a3 * panel[r3 + j];
          }
        }
        for (; p < kc; p++) {
          const a0 = a[aRow + p * ca];
          const r0 = p * nc;
          for (let j = 0; j < nc; j++) c[cRow + j] += a0 * panel[r0 + j];
        }
      }
    }
  }
}

/** Copy op(B)[p0:p0+kc, j0:j0+nc] into a dense row-major panel. */
function packB(b: Float32Array, bOff: number, out: Float32Array, p0: number, kc: number, j0: number, nc: number, n: number, k: number, transB: boolean): void {
  if (!transB) {
    for (let p = 0; p < kc; p++) {
      const src = bOff + (p0 + p) * n + j0;
      out.set(b.subarray(src, src + nc), p * nc);
    }
  } else {
    // B stored (n, k): element (p, j) at j*k + p
    for (let j = 0; j < nc; j++) {
      const src = bOff + (j0 + j) * k + p0;
      for (let p = 0; p < kc; p++) out[p * nc + j] = b[src + p];
    }
  }
}
