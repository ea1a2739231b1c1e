// Entry of `npm run experiments -- NAME|all [--tiny] [--seeds 0,1,2] [--out DIR]`: runs the paper's
// experiments at laptop scale and writes NAME.md (tables), NAME.json (raw numbers) and NAME*.svg
// (plots) under docs/experiments/.
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { mkdirSync } from 'node:fs';
import { writeFileAtomic } from '../src/io/atomic.js';
import '../src/index.js';
import { EXPERIMENTS } from './registry.js';
import type { ExperimentContext } from './types.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function seedList(v: string): number[] {
  const out = v.split(',').map((s) => Number(s.trim()));
  if (out.length === 0 || out.some((n) => !Number.isSafeInteger(n) || n < 0)) throw new InvalidArgumentError(`--seeds must be a comma list of integers ≥ 0, got '${v}'`);
  return out;
}

async function main(): Promise<void> {
  const names = EXPERIMENTS.map((e) => e.name);
  const program = new Command('experiments')
    .argument('<name>', `one of: ${names.join(', ')}, or all`)
    .option('--tiny', 'a few steps and one seed (what npm test runs; the numbers mean nothing)')
    .option('--seeds <list>', 'seeds to run (default 0,1,2)', seedList, [0, 1, 2])
    .option('--out <dir>', 'output folder', path.join(ROOT, 'docs', 'experiments'))
    .option('--model <dir>', 'the embedded text model', path.join(ROOT, 'data', 'fortune-llama'))
    .option('--quiet', 'no progress lines')
    .showHelpAfterError();
  program.parse();
  const [name] = program.args as [string];
  const o = program.opts<{ tiny?: boolean; seeds: number[]; out: string; model: string; quiet?: boolean }>();
  const chosen = name === 'all' ? EXPERIMENTS : EXPERIMENTS.filter((e) => e.name === name);
  if (chosen.length === 0) throw new InvalidArgumentError(`unknown experiment '${name}' (experiments: ${names.join(', ')}, all)`);
  const ctx: ExperimentContext = {
    outDir: path.resolve(o.out),
    tiny: o.tiny === true,
    seeds: o.tiny ? o.seeds.slice(0, 1) : o.seeds,
    textModel: path.resolve(o.model),
    dataDir: path.join(ROOT, 'data'),
    log: (line) => {
      if (!o.quiet) process.stderr.write(`${line}\n`);
    },
  };
  for (const e of chosen) {
    const t0 = performance.now();
    ctx.log(`experiment ${e.name}: ${e.title}`);
    const result = await e.run(ctx);
    const files: Record<string, string> = {
      [`${e.name}.md`]: result.markdown.endsWith('\n') ? result.markdown : `${result.markdown}\n`,
      [`${e.name}.json`]: `${JSON.stringify(result.data, null, 2)}\n`,
    };
    for (const [file, svg] of Object.entries(result.plots)) files[file] = svg;
    // each file replaced atomically on its own: the folder holds every experiment's outputs
    mkdirSync(ctx.outDir, { recursive: true });
    for (const [file, text] of Object.entries(files)) writeFileAtomic(path.join(ctx.outDir, file), text);
    ctx.log(`experiment ${e.name}: done in ${((performance.now() - t0) / 1000).toFixed(0)} s → ${path.join(ctx.outDir, `${e.name}.md`)}`);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`experiments: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
