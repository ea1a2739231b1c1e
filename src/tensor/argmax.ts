// The argmax every backend and the host agree on: the first maximum, NaNs skipped, 0 for a run
// with no number (greedy decoding picks it; the argmaxRows kernel computes it on the device).

/** Index (from `start`) of the first maximum of values[start, start + n), NaNs skipped; 0 when there is none. */
export function argmaxOf(values: ArrayLike<number>, start = 0, n = values.length - start): number {
  let best = 0;
  let bv = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = values[start + i];
    if (v > bv) {
      bv = v;
      best = i;
    }
  }
  return best;
}
