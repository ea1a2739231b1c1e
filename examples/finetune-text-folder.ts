// Finetune a causal LM on a folder of .txt files with VeRA, with the Trainer: a held-out split,
// its perplexity evaluated during training, early stopping, and the best and last adapters saved;
// then the best adapter is loaded onto a fresh base and generates a sample.
//
//   node dist/examples/finetune-text-folder.js [--data DIR] [--model DIR] [--out DIR] [--steps N] [--r N]
//
// Examples: each paragraph of each .txt file (text between blank lines; a file without blank lines
// is one example), files in name order, each example tokenized and ended with eos so the model
// learns to stop. Every --eval-every-th example (default 5th) is held out for evaluation.
// Without --data, --fortunes N fortunes of the --user category (default startrek, which
// fortune-llama never saw) are written as one .txt file each into a temporary folder.
// --out (default: a temporary folder) receives best/ and last/ (PEFT layout; last/ also holds
// training_log.json, best/ best.json).
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  AutoModelForCausalLM, AutoTokenizer, PeftModel, Trainer, causalLmBatchLoss, causalLmCollator, evaluateCausalLm,
  getPeftModel, pipeline, veraConfig, type LmExample,
} from 'vera';
import { FORTUNE_LLAMA } from './shared.js';

const { values: args } = parseArgs({
  options: {
    model: { type: 'string', default: FORTUNE_LLAMA },
    data: { type: 'string' },
    user: { type: 'string', default: 'startrek' },
    fortunes: { type: 'string', default: '60' },
    out: { type: 'string' },
    steps: { type: 'string', default: '30' },
    'eval-every': { type: 'string', default: '10' },
    patience: { type: 'string', default: '3' },
    'holdout-every': { type: 'string', default: '5' },
    'batch-size': { type: 'string', default: '8' },
    'seq-len': { type: 'string', default: '64' },
    r: { type: 'string', default: '64' },
    lr: { type: 'string', default: '5e-2' },
    prompt: { type: 'string', default: 'Captain, ' },
    'max-new-tokens': { type: 'string', default: '24' },
  },
});

const tempDir = mkdtempSync(join(tmpdir(), 'vera-example-'));
try {
  // 1. the folder: the one given, or fortunes written one per file
  let dataDir = args.data;
  if (dataDir === undefined) {
    dataDir = join(tempDir, 'texts');
    mkdirSync(dataDir);
    const file = fileURLToPath(new URL(`../../data/fortunes/users/${args.user}/train.jsonl`, import.meta.url));
    const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '').slice(0, Number(args.fortunes));
    lines.forEach((line, i) => {
      const row: unknown = JSON.parse(line);
      const text = typeof row === 'object' && row !== null && 'text' in row && typeof row.text === 'string' ? row.text : '';
      writeFileSync(join(dataDir ?? '', `${String(i).padStart(4, '0')}.txt`), `${text}\n`);
    });
    console.log(`wrote ${lines.length} ${args.user} fortunes as .txt files into ${dataDir}`);
  }
  const files = readdirSync(dataDir).filter((f) => f.endsWith('.txt')).sort();
  const paragraphs = files.flatMap((f) => readFileSync(join(dataDir ?? '', f), 'utf8').split(/\n\s*\n/).map((p) => p.trim()).filter((p) => p !== ''));

  // 2. the base and its tokenizer; each paragraph → tokens + eos (cut to --seq-len); every n-th held out
  const model = AutoModelForCausalLM.fromPretrained(args.model);
  const tokenizer = await AutoTokenizer.fromPretrained(args.model);
  const eos = model.eosTokenIds[0];
  const seqLen = Number(args['seq-len']);
  const examples: LmExample[] = paragraphs.map((p) => ({ ids: Int32Array.from([...tokenizer.encode(p), eos].slice(0, seqLen)), labels: null }));
  const every = Number(args['holdout-every']);
  const trainRows = examples.filter((_, i) => i % every !== every - 1);
  const evalRows = examples.filter((_, i) => i % every === every - 1);
  const evalSeqs = evalRows.map((e) => e.ids);
  console.log(`${files.length} files, ${paragraphs.length} paragraphs: ${trainRows.length} for training, ${evalRows.length} held out`);
  const before = evaluateCausalLm(model, evalSeqs, 8, eos).perplexity;
  console.log(`held-out perplexity before: ${before.toFixed(2)}`);

  // 3. VeRA and the Trainer: evaluation every --eval-every steps, early stopping, best/ and last/ in --out
  const peft = getPeftModel(model, veraConfig({ r: Number(args.r), targetModules: ['q_proj', 'v_proj'] }));
  peft.printTrainableParameters();
  const outDir = args.out ?? join(tempDir, 'run');
  const trainer = new Trainer({
    model: peft,
    trainDataset: trainRows,
    evalDataset: evalRows,
    collator: causalLmCollator(eos),
    loss: (m, batch) => causalLmBatchLoss(m, batch),
    computeMetrics: (m, rows) => {
      const { loss, perplexity } = evaluateCausalLm(m, rows.map((r) => r.ids), 8, eos);
      return { loss, perplexity };
    },
    unit: 'tokens',
    args: {
      steps: Number(args.steps), batchSize: Number(args['batch-size']), lr: Number(args.lr), evalEvery: Number(args['eval-every']),
      seed: 0, progress: false, outputDir: outDir, saveBest: { metric: 'eval_loss' },
    },
    earlyStopping: { metric: 'eval_loss', patience: Number(args.patience) },
    callbacks: {
      onEval: (m, step) => console.log(`step ${step}: held-out perplexity ${(m['eval_perplexity'] ?? NaN).toFixed(2)}`),
      onSave: (e) => { if (e.kind !== 'checkpoint') console.log(`  saved ${e.kind} adapter (step ${e.step}) to ${e.dir}`); },
    },
  });
  const log = await trainer.train();
  const after = evaluateCausalLm(peft, evalSeqs, 8, eos).perplexity;
  console.log(`trained ${log.steps} of ${trainer.steps} steps${log.stoppedEarly ? ' (stopped early)' : ''}`);
  console.log(`held-out perplexity after: ${after.toFixed(2)} (before: ${before.toFixed(2)})`);
  const best = log.bestMetric;
  if (best !== null) console.log(`best: eval_loss ${best.value.toFixed(4)} (perplexity ${Math.exp(best.value).toFixed(2)}) at step ${best.step}`);

  // 4. the best adapter on a fresh base: its perplexity is the one recorded, and it writes
  const bestDir = log.bestDir ?? join(outDir, 'last');
  const reloaded = PeftModel.fromPretrained(AutoModelForCausalLM.fromPretrained(args.model), bestDir);
  const reloadedPerplexity = evaluateCausalLm(reloaded, evalSeqs, 8, eos).perplexity;
  console.log(`reloaded ${bestDir}: held-out perplexity ${reloadedPerplexity.toFixed(2)}`);
  const generator = pipeline('text-generation', reloaded, tokenizer);
  const sample = await generator.generate(args.prompt, { maxNewTokens: Number(args['max-new-tokens']), doSample: true, temperature: 0.8, seed: 1 });
  console.log(`sample: ${JSON.stringify(args.prompt + sample.text)} (${sample.finishReason})`);
  if (!(after < before) || (best !== null && Math.abs(Math.log(reloadedPerplexity) - best.value) > 1e-4)) process.exitCode = 1;
} finally {
  rmSync(tempDir, { recursive: true, force: true });
}
