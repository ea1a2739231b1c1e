// The truncated SVD that add_weighted_adapter's "svd" combination needs, for a matrix given as a
// product of thin factors: ΔW = L·R with L (out × k) and R (k × in), k = Σ ranks (small). PEFT runs
// torch.linalg.svd on the dense out × in ΔW; here ΔW is never formed:
//
//   L = Q_L·T_L, Rᵀ = Q_R·T_R (thin QR, Gram–Schmidt twice)  ⇒  ΔW = Q_L·(T_L·T_Rᵀ)·Q_Rᵀ
//   T_L·T_Rᵀ = U'·Σ·V'ᵀ (one-sided Jacobi on a k × k matrix)  ⇒  U = Q_L·U', V = Q_R·V'
//
// O((out + in)·k² + k³) in float64, instead of O(out·in·min(out, in)) for the dense SVD. The
// singular values equal the dense SVD's; each singular pair's sign is fixed so that the
// largest-magnitude entry of its U column is positive (LAPACK's signs are arbitrary; the product
// U·Σ·Vᵀ is the same either way).

export interface ThinSvd {
  /** out × k, row-major. */
  U: Float64Array;
  /** Singular values, largest first (k of them; zeros where ΔW's rank is below k). */
  S: Float64Array;
  /** in × k, row-major (the right singular vectors as columns). */
  V: Float64Array;
  k: number;
}

/** Thin QR by modified Gram–Schmidt, applied twice for orthogonality: a (m × k, row-major) → Q (m × k), T (k × k). Dependent columns get a zero q. */
function thinQr(a: Float64Array, m: number, k: number): { Q: Float64Array; T: Float64Array } {
  const Q = Float64Array.from(a);
  const T = new Float64Array(k * k);
  let scale = 0;
  for (let i = 0; i < a.length; i++) scale = Math.max(scale, Math.abs(a[i]));
  const tiny = scale * 1e-13 * Math.sqrt(m);
  for (let j = 0; j < k; j++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let p = 0; p < j; p++) {
        let d = 0;
        for (let i = 0; i < m; i++) d += Q[i * k + p] * Q[i * k + j];
        for (let i = 0; i < m; i++) Q[i * k + j] -= d * Q[i * k + p];
        T[p * k + j] += d;
      }
    }
    let n = 0;
    for (let i = 0; i < m; i++) n += Q[i * k + j] ** 2;
    n = Math.sqrt(n);
    if (n <= tiny) {
      for (let i = 0; i < m; i++) Q[i * k + j] = 0;
      T[j * k + j] = 0;
    } else {
      for (let i = 0; i < m; i++) Q[i * k + j] /= n;
      T[j * k + j] = n;
    }
  }
  return { Q, T };
}

/** SVD of a small k × k matrix by one-sided Jacobi: returns U (k × k), S, V (k × k), unsorted. */
function jacobiSvd(mIn: Float64Array, k: number): { U: Float64Array; S: Float64Array; V: Float64Array } {
  const W = Float64Array.from(mIn); // columns rotated until orthogonal: W = U·Σ
  const V = new Float64Array(k * k);
  for (let i = 0; i < k; i++) V[i * k + i] = 1;
  const col = (p: number, q: number): number => {
    let s = 0;
    for (let i = 0; i < k; i++) s += W[i * k + p] * W[i * k + q];
    return s;
  };
  for (let sweep = 0; sweep < 80; sweep++) {
    let rotated = false;
    for (let p = 0; p < k - 1; p++) {
      for (let q = p + 1; q < k; q++) {
        const alpha = col(p, p);
        const beta = col(q, q);
        const gamma = col(p, q);
        if (alpha === 0 || beta === 0 || Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        for (const M of [W, V]) {
          for (let i = 0; i < k; i++) {
            const xp = M[i * k + p];
            const xq = M[i * k + q];
            M[i * k + p] = c * xp - s * xq;
            M[i * k + q] = s * xp + c * xq;
          }
        }
      }
    }
    if (!rotated) break;
  }
  const S = new Float64Array(k);
  const U = new Float64Array(k * k);
  for (let j = 0; j < k; j++) {
    S[j] = Math.sqrt(col(j, j));
    if (S[j] > 0) for (let i = 0; i < k; i++) U[i * k + j] = W[i * k + j] / S[j];
  }
  return { U, S, V };
}

/** The SVD of L·R (L: out × k, R: k × in, row-major), with the sign convention above. */
export function lowRankSvd(L: Float64Array, R: Float64Array, out: number, inF: number, k: number): ThinSvd {
  const Rt = new Float64Array(inF * k);
  for (let i = 0; i < k; i++) for (let j = 0; j < inF; j++) Rt[j * k + i] = R[i * inF + j];
  const ql = thinQr(L, out, k);
  const qr = thinQr(Rt, inF, k);
  const core = new Float64Array(k * k); // T_L · T_Rᵀ
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) {
    let s = 0;
    for (let p = 0; p < k; p++) s += ql.T[i * k + p] * qr.T[j * k + p];
    core[i * k + j] = s;
  }
  const { U: u, S: s, V: v } = jacobiSvd(core, k);
  const order = [...s.keys()].sort((a, b) => s[b] - s[a]);
  const U = new Float64Array(out * k);
  const V = new Float64Array(inF * k);
  const S = new Float64Array(k);
  order.forEach((src, dst) => {
    S[dst] = s[src];
    for (let i = 0; i < out; i++) {
      let acc = 0;
      for (let p = 0; p < k; p++) acc += ql.Q[i * k + p] * u[p * k + src];
      U[i * k + dst] = acc;
    }
    for (let i = 0; i < inF; i++) {
      let acc = 0;
      for (let p = 0; p < k; p++) acc += qr.Q[i * k + p] * v[p * k + src];
      V[i * k + dst] = acc;
    }
    // sign: the largest-|.| entry of U's column positive (flip U's column and V's together)
    let best = 0;
    for (let i = 0; i < out; i++) if (Math.abs(U[i * k + dst]) > Math.abs(best)) best = U[i * k + dst];
    if (best < 0) {
      for (let i = 0; i < out; i++) U[i * k + dst] = -U[i * k + dst];
      for (let i = 0; i < inF; i++) V[i * k + dst] = -V[i * k + dst];
    }
  });
  return { U, S, V, k };
}

/** torch.quantile(values, q) (linear interpolation between the closest ranks). */
export function quantile(values: ArrayLike<number>, q: number): number {
  const v = Float64Array.from(values).sort();
  const pos = q * (v.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}
