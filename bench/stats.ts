// Small helpers shared by the bench's measurement and report code.

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export function best(xs: readonly number[]): number {
  return xs.length === 0 ? NaN : Math.min(...xs);
}

/** Wall-clock seconds of `fn`. */
export function timed(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return (performance.now() - t0) / 1000;
}

/** Peak resident set size of this process in KiB (Linux reports maxRSS in KiB). */
export function maxRssKiB(): number {
  return process.resourceUsage().maxRSS;
}
