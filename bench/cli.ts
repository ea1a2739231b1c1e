// Entry of `npm run bench [-- options]`; `--help` lists the options.
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';
import { VeraError } from '../src/io/errors.js';
import { SECTIONS, runBench, type BenchOptions, type ModelShape, type Section } from './main.js';
import { renderMarkdown } from './report.js';
import { SMOLLM_135M } from './decode.js';
import { LLAMA2_7B } from './qlora.js';
import { webGpuSpec } from './webgpu.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function positiveInt(flag: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${flag} must be a positive integer, got '${v}'`);
    return n;
  };
}

function intList(flag: string) {
  return (v: string): number[] => v.split(',').map((s) => positiveInt(flag)(s.trim()));
}

function parseSections(v: string): Section[] {
  const out = v.split(',').map((s) => s.trim());
  for (const s of out) if (!(SECTIONS as readonly string[]).includes(s)) throw new InvalidArgumentError(`--only: unknown section '${s}' (sections: ${SECTIONS.join(', ')})`);
  return out as Section[];
}

function parseModels(v: string): ModelShape[] {
  return v.split(',').map((s) => {
    const m = /^(\d+)x(\d+)$/.exec(s.trim());
    if (!m || Number(m[1]) < 1 || Number(m[2]) < 1) throw new InvalidArgumentError(`--models: '${s}' is not LAYERSxWIDTH (e.g. 12x768)`);
    const shape = { layers: Number(m[1]), width: Number(m[2]) };
    const heads = Math.max(1, Math.floor(shape.width / 64));
    if (shape.width % heads !== 0) throw new InvalidArgumentError(`--models: width ${shape.width} is not divisible by its ${heads} heads (width/64)`);
    return shape;
  });
}

/** `arg` as a POSIX shell word, for the report's command line. */
function shellQuote(arg: string): string {
  return /^[\w./:=,@+-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

interface Flags {
  quick?: boolean;
  only?: Section[];
  out: string;
  json?: string;
  torch: boolean;
  python?: string;
  threads?: number;
  sizes?: number[];
  models?: ModelShape[];
  batch?: number;
  seq?: number;
  vocab?: number;
  steps?: number;
  runs?: number;
  note?: string;
}

export function optionsFromArgv(argv: string[]): BenchOptions {
  const program = new Command('npm run bench --')
    .description('Our runtime against PyTorch on this machine: GEMM (and the machine\'s FMA peak), VeRA / LoRA training steps on GPT-2 shapes, multi-adapter decoding on a SmolLM-135M shape, the compact weight formats (quant: GEMM, batch-1 decoding, accuracy), a VeRA step on a Llama-2-7B shape in nf4 (qlora), the WebAssembly backend against TF.js and jax-js (wasm), and the WebGPU backend in headless Chromium (webgpu: GEMM, VeRA steps); writes BENCHMARKS.md')
    .addOption(new Option('--quick', 'small shapes and few runs, for smoke testing (under a minute)'))
    .addOption(new Option('--only <sections>', `comma-separated subset of: ${SECTIONS.join(', ')}`).argParser(parseSections))
    .option('--out <file>', 'markdown report to write', path.join(ROOT, 'BENCHMARKS.md'))
    .option('--json <file>', 'also write the raw results as JSON')
    .option('--no-torch', 'do not look for PyTorch (ours only, ratios n/a)')
    .option('--python <exe>', 'Python with torch (default: python3, then /usr/bin/python3)')
    .addOption(new Option('--threads <n>', "our backend's threads (VERA_NUM_THREADS); PyTorch gets the same (default: the backend's, all cores for native)").argParser(positiveInt('--threads')))
    .addOption(new Option('--sizes <list>', 'GEMM sizes (default 256,512,1024,2048; quick 256,512)').argParser(intList('--sizes')))
    .addOption(new Option('--models <list>', 'LAYERSxWIDTH list (default 2x128,6x384,12x768; quick 2x128)').argParser(parseModels))
    .addOption(new Option('--batch <n>', 'sequences per step (default 8; quick 2)').argParser(positiveInt('--batch')))
    .addOption(new Option('--seq <n>', 'tokens per sequence (default 128; quick 64)').argParser(positiveInt('--seq')))
    .addOption(new Option('--vocab <n>', "vocabulary size (default GPT-2's 50257)").argParser(positiveInt('--vocab')))
    .addOption(new Option('--steps <n>', 'timed training steps after one warm-up (default 3; quick 2)').argParser(positiveInt('--steps')))
    .addOption(new Option('--runs <n>', 'timed GEMM runs after one warm-up (default 5; quick 3)').argParser(positiveInt('--runs')))
    .option('--note <text>', 'a remark for the report (e.g. that other jobs were using the CPU)')
    .exitOverride()
    .configureOutput({ writeErr: () => {} }); // errors are printed once, by main()
  program.parse(argv, { from: 'user' });
  const f = program.opts<Flags>();
  const quick = f.quick === true;
  const seq = f.seq ?? (quick ? 64 : 128);
  const positions = Math.max(1024, seq);
  if (f.python !== undefined && !f.torch) throw new VeraError('--python and --no-torch contradict each other');
  return {
    sections: f.only ?? [...SECTIONS],
    quick,
    out: path.resolve(f.out),
    jsonOut: f.json === undefined ? null : path.resolve(f.json),
    pythons: !f.torch ? [] : f.python !== undefined ? [f.python] : ['python3', '/usr/bin/python3'],
    threads: f.threads ?? null,
    gemm: { sizes: f.sizes ?? (quick ? [256, 512] : [256, 512, 1024, 2048]), warmup: 1, runs: f.runs ?? (quick ? 3 : 5), minSeconds: quick ? 0.2 : 1 },
    models: f.models ?? (quick ? [{ layers: 2, width: 128 }] : [{ layers: 2, width: 128 }, { layers: 6, width: 384 }, { layers: 12, width: 768 }]),
    batch: f.batch ?? (quick ? 2 : 8),
    seq,
    vocab: f.vocab ?? 50257,
    positions,
    veraR: 256,
    loraR: 8,
    loraAlpha: 8,
    warmup: 1,
    steps: f.steps ?? (quick ? 2 : 3),
    decode: quick
      ? { shape: { vocab: 2048, hidden: 128, intermediate: 256, layers: 4, heads: 4, kvHeads: 2 }, prompt: 8, newTokens: 6, batch: 4, mixed: 8, wide: 12, prefill: 40, veraR: 16, loraR: 8, loopTokens: 3, registry: 1000, runs: 1 }
      : { shape: SMOLLM_135M, prompt: 32, newTokens: 16, batch: 16, mixed: 64, wide: 128, prefill: 512, veraR: 256, loraR: 8, loopTokens: 8, registry: 10_000, runs: 3 },
    quant: {
      sizes: quick ? [256, 512] : [512, 1024, 2048],
      runs: f.runs ?? (quick ? 3 : 5),
      minSeconds: quick ? 0.2 : 1,
      decode: quick
        ? { shape: { vocab: 2048, hidden: 128, intermediate: 256, layers: 4, heads: 4, kvHeads: 2 }, prompt: 8, newTokens: 6, runs: 1 }
        : { shape: SMOLLM_135M, prompt: 32, newTokens: 16, runs: 2 },
      accuracy: { model: path.join(ROOT, 'data', 'fortune-llama'), evalFile: path.join(ROOT, 'data', 'fortunes', 'general', 'eval.jsonl'), fortunes: quick ? 20 : 150, logitTokens: 128 },
    },
    qlora: quick
      ? { shape: { vocab: 2048, hidden: 256, intermediate: 688, layers: 2, heads: 4 }, seq: 32, r: 16, steps: 2 }
      : { shape: LLAMA2_7B, seq: 128, r: 256, steps: 2 },
    wasm: {
      gemm: { sizes: f.sizes ?? [256, 512, 1024], warmup: 1, runs: f.runs ?? 3, minSeconds: quick ? 0.1 : 0.3 },
      train: { method: 'vera', layers: 2, width: 128, vocab: f.vocab ?? 50257, positions, batch: 2, seq: 64, r: 256, alpha: 8, warmup: 1, steps: 2 },
    },
    webgpu: webGpuSpec(quick),
    command: ['npm run bench', ...(argv.length > 0 ? ['--', ...argv.map(shellQuote)] : [])].join(' '),
    note: f.note ?? null,
    log: (line) => process.stdout.write(`${line}\n`),
  };
}

function main(): void {
  let options: BenchOptions;
  try {
    options = optionsFromArgv(process.argv.slice(2));
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.help' || code === 'commander.version') process.exit(0);
    process.stderr.write(`bench: ${(err as Error).message.replace(/^error: /, '')}\n`);
    process.exit(2);
  }
  const results = runBench(options);
  process.stdout.write(`\n${renderMarkdown(results)}`);
  if (options.out !== null) process.stdout.write(`\nwrote ${options.out}\n`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main();
