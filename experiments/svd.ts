// Singular values of a small dense matrix (ΔW of one layer, at most a few hundred on a side), by
// one-sided Jacobi (Hestenes): rotate pairs of columns until every pair is orthogonal; the column
// norms are then the singular values. In float64; accurate to a small multiple of ε·σ₁ (it never
// forms AᵀA, so small singular values are not lost to squaring). O(sweeps · n² · m) for m × n, n ≤ m;
// 10–20 sweeps for ΔW of a low-rank adapter (its float32 round-off is a cluster of tiny values), about
// 0.4 s for 256 × 256 and 1 s for 688 × 256 on one core.

/** The singular values of the rows × cols row-major matrix `a`, largest first (min(rows, cols) of them). */
export function singularValues(a: ArrayLike<number>, rows: number, cols: number, opts: { tol?: number; maxSweeps?: number } = {}): Float64Array {
  if (!(Number.isInteger(rows) && Number.isInteger(cols) && rows >= 0 && cols >= 0)) throw new Error(`singularValues: bad shape ${rows} × ${cols}`);
  if (a.length !== rows * cols) throw new Error(`singularValues: ${a.length} values for a ${rows} × ${cols} matrix`);
  const maxSweeps = opts.maxSweeps ?? 60;
  // the n vectors to orthogonalize (length m): the columns, or the rows when there are fewer of them
  const byCols = cols <= rows;
  const n = byCols ? cols : rows;
  const m = byCols ? rows : cols;
  // a pair counts as orthogonal when |cos| ≤ m·ε: a dot product over m terms cannot resolve better (LAPACK's criterion)
  const tol = opts.tol ?? Math.max(1e-15, m * Number.EPSILON);
  const v = new Float64Array(n * m); // vector j at [j·m, (j+1)·m)
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const x = a[i * cols + j]!;
      if (!Number.isFinite(x)) throw new Error(`singularValues: non-finite entry ${x} at (${i}, ${j})`);
      if (byCols) v[j * m + i] = x;
      else v[i * m + j] = x;
    }
  }
  const norm2 = new Float64Array(n);
  const dot = (p: number, q: number): number => {
    let s = 0;
    const op = p * m;
    const oq = q * m;
    for (let k = 0; k < m; k++) s += v[op + k]! * v[oq + k]!;
    return s;
  };
  for (let sweep = 0; sweep < maxSweeps; sweep++) {
    for (let j = 0; j < n; j++) norm2[j] = dot(j, j); // exact norms at the start of every sweep (the updates below drift)
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const alpha = norm2[p]!;
        const beta = norm2[q]!;
        if (alpha === 0 || beta === 0) continue;
        const gamma = dot(p, q);
        if (Math.abs(gamma) <= tol * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        // the rotation that zeroes the (p, q) entry of the 2 × 2 Gram matrix [[α, γ], [γ, β]]
        const zeta = (beta - alpha) / (2 * gamma);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        const op = p * m;
        const oq = q * m;
        for (let k = 0; k < m; k++) {
          const xp = v[op + k]!;
          const xq = v[oq + k]!;
          v[op + k] = c * xp - s * xq;
          v[oq + k] = s * xp + c * xq;
        }
        norm2[p] = Math.max(0, alpha - t * gamma);
        norm2[q] = Math.max(0, beta + t * gamma);
      }
    }
    if (!rotated) break;
  }
  const out = new Float64Array(n);
  for (let j = 0; j < n; j++) out[j] = Math.sqrt(dot(j, j));
  return out.sort().reverse();
}

/** Stable rank ‖M‖²_F / σ₁² (1 for a rank-one matrix, n for n equal singular values). */
export function stableRank(sv: ArrayLike<number>): number {
  let f = 0;
  for (let i = 0; i < sv.length; i++) f += sv[i]! * sv[i]!;
  return sv.length === 0 || sv[0] === 0 ? 0 : f / (sv[0]! * sv[0]!);
}

/** Effective rank exp(H(p)), p_i = σ_i / Σσ (Roy & Vetterli, 2007): k for k equal non-zero singular values. */
export function effectiveRank(sv: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < sv.length; i++) sum += sv[i]!;
  if (sum === 0) return 0;
  let h = 0;
  for (let i = 0; i < sv.length; i++) {
    const p = sv[i]! / sum;
    if (p > 0) h -= p * Math.log(p);
  }
  return Math.exp(h);
}

/** Cosine similarity of two flattened matrices (0 when either is zero). */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`cosine: lengths ${a.length} and ${b.length} differ`);
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
  return aa === 0 || bb === 0 ? 0 : ab / Math.sqrt(aa * bb);
}
