// temporary (not committed)
import '../src/backends/index.js';
import { Rng, kernels, Tensor, F } from '../src/tensor/index.js';
const k = kernels();
const rng = new Rng(1);
const shapes: [number, number][] = [[576, 576], [192, 576], [1536, 576], [576, 1536], [49152, 576]];
const reps = Number(process.argv[2] ?? 50);
for (const [out, inp] of shapes) {
  // many distinct weights so nothing stays in cache (L3 32 MB)
  const copies = Math.max(1, Math.ceil(64e6 / (out * inp * 4)));
  const ws = Array.from({ length: copies }, () => Tensor.fromArray(rng.fillNormal(new Float32Array(out * inp), 0, 1), [out, inp]));
  const x = Tensor.fromArray(rng.fillNormal(new Float32Array(inp), 0, 1), [1, inp]);
  let tm = 0, ts = 0;
  for (let r = 0; r < reps; r++) {
    const w = ws[r % copies];
    let t0 = performance.now(); F.linear(x, w, null); tm += performance.now() - t0;
    const w2 = ws[(r + 1) % copies];
    t0 = performance.now(); k.sumSquares(w2.storage); ts += performance.now() - t0;
  }
  const bytes = out * inp * 4;
  console.log(`${out}x${inp}: gemv ${(bytes / (tm / reps) / 1e6).toFixed(1)} GB/s, sumSquares ${(bytes / (ts / reps) / 1e6).toFixed(1)} GB/s, ratio ${(ts / tm).toFixed(2)}`);
}
