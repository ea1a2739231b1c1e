// The WebGPU bench: bundles bench/webgpu-page.ts, opens it in Chromium (test/browser/chromium.ts;
// WebGPU on the GPU when Chromium finds one, else SwiftShader) and reports GEMM GFLOP/s and VeRA
// training steps. Node has no WebGPU, so this is the only way in. `npm run bench` runs it as its
// `webgpu` section (in a child: node dist/bench/webgpu.js SPEC, the JSON result on the last line);
// alone: node dist/bench/webgpu.js [--quick].
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { bundlePage } from '../test/browser/page-bundle.js';
import { openPage, withPage } from '../test/browser/chromium.js';
import { median } from './stats.js';
import type { WebGpuBenchResult, WebGpuBenchSpec } from './webgpu-types.js';

export type { WebGpuBenchResult, WebGpuBenchSpec } from './webgpu-types.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export function webGpuSpec(quick: boolean): WebGpuBenchSpec {
  const small = { layers: 2, width: 128, vocab: 2048, batch: 2, seq: 32, r: 64 };
  return {
    sizes: quick ? [256, 512] : [256, 512, 1024, 2048, 4096],
    runs: quick ? 3 : 5,
    steps: quick ? 2 : 3,
    train: quick ? small : { layers: 12, width: 768, vocab: 50257, batch: 8, seq: 128, r: 256 },
    small,
  };
}

declare const veraBench: { run(spec: WebGpuBenchSpec): Promise<WebGpuBenchResult> };

export async function runWebGpuBench(spec: WebGpuBenchSpec): Promise<WebGpuBenchResult> {
  const root = await bundlePage(join(ROOT, 'bench', 'webgpu-page.ts'), 'vera webgpu bench');
  const session = await openPage(root);
  return withPage('webgpu-bench', session, async (s) => {
    await s.page.waitForFunction('globalThis.veraReady === true', undefined, { timeout: 60_000 });
    return s.page.evaluate((sp) => veraBench.run(sp), spec);
  });
}

/** Human-readable lines of a result. */
export function describeWebGpu(r: WebGpuBenchResult): string[] {
  const lines = [`WebGPU adapter: ${r.adapter}`];
  if (r.swiftshader) lines.push('(SwiftShader is Chromium\'s CPU fallback: these figures are not GPU speed, only a check that the path works)');
  for (const g of r.gemm) lines.push(`GEMM ${g.n}³: ${((2 * g.n ** 3) / median(g.seconds) / 1e9).toFixed(1)} GFLOP/s`);
  const t = r.train;
  const sec = median(t.stepSeconds);
  lines.push(`VeRA step, GPT-2 ${t.shape.layers}x${t.shape.width} vocab ${t.shape.vocab}, ${t.shape.batch}×${t.shape.seq} tokens, r ${t.shape.r}: ${(1000 * sec).toFixed(0)} ms (${((t.shape.batch * t.shape.seq) / sec).toFixed(0)} tokens/s); losses ${t.losses.map((l) => l.toFixed(3)).join(', ')}`);
  return lines;
}

async function main(): Promise<void> {
  const arg = process.argv[2];
  const spec = arg === undefined || arg === '--quick' ? webGpuSpec(arg === '--quick') : (JSON.parse(arg) as WebGpuBenchSpec);
  const r = await runWebGpuBench(spec);
  for (const line of describeWebGpu(r)) process.stderr.write(`${line}\n`);
  process.stdout.write(`${JSON.stringify(r)}\n`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    process.stderr.write(`webgpu bench: ${(e as Error).message.split('\n')[0]}\n`);
    process.exit(1);
  });
}
