// `vera demo`: what VeRA is for, on the embedded text model (data/fortune-llama, a small Llama
// pretrained here on the Unix fortunes). One held-out category of fortunes plays a user: their
// adapter trains in seconds, and the demo shows the user's held-out perplexity and sampled text
// before and after, the adapter's bytes next to LoRA's, and that merged weights answer as the
// unmerged adapter. `vera demo fashion-mnist` is the image walk-through (demo-fashion.ts).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Option, type Command } from 'commander';
import { loadTokenizer, type Tokenizer } from '../../data/tokenizer.js';
import { readJsonFile, writeDirAtomic } from '../../io/atomic.js';
import { fail, VeraError } from '../../io/errors.js';
import { ADAPTER_WEIGHTS, getPeftModel, loraConfig, veraConfig, type PeftModel } from '../../peft/index.js';
import { generate, loadPretrained, type LlamaForCausalLM } from '../../models/index.js';
import { manualSeed, noGrad } from '../../tensor/index.js';
import { AdamW, causalLmTask, evaluateCausalLm, train } from '../../train/index.js';
import { nonNegativeInt, positiveInt, positiveNumber } from '../options.js';
import { OVERWRITE_HELP, prepareOut } from '../out.js';
import { demoDataDir, requireDemoData } from './demo-data.js';
import { registerFashionDemo } from './demo-fashion.js';

export const defaultTextModelDir = (): string => join(demoDataDir(), 'fortune-llama');
export const defaultUsersDir = (): string => join(demoDataDir(), 'fortunes', 'users');

/** Every linear layer of a Llama block: the adapters the demo and the experiments train. */
export const LLAMA_LINEAR = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export interface TextDemoOptions {
  model: string;
  users: string;
  user: string;
  r: number;
  steps: number;
  lr: number;
  batchSize: number;
  seed: number;
  samples: number;
  maxNewTokens: number;
  out: string | null;
  overwrite?: boolean;
  quiet: boolean;
}

export interface TextDemoResult {
  user: string;
  perplexityBefore: number;
  perplexityAfter: number;
  samplesBefore: string[];
  samplesAfter: string[];
  trainableParams: number;
  veraBytes: number;
  loraBytes: { r: number; params: number; bytes: number }[];
  mergeMaxAbsDiff: number;
  trainSeconds: number;
  seconds: number;
}

function readTexts(file: string): string[] {
  if (!existsSync(file)) fail(`${file}: not found`);
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l, i) => {
    const obj = JSON.parse(l) as { text?: unknown };
    if (typeof obj.text !== 'string') fail(`${file}:${i + 1}: expected {"text": "..."}`);
    return obj.text;
  });
}

/** Fresh samples from the start of a text (the eos token is also the start token), one seed each. */
function sample(model: LlamaForCausalLM, tokenizer: Tokenizer, eosId: number, o: TextDemoOptions): string[] {
  return Array.from({ length: o.samples }, (_, i) =>
    noGrad(() => generate(model, [eosId], {
      doSample: true, temperature: 0.8, topK: 40, seed: o.seed * 1000 + i, maxNewTokens: o.maxNewTokens, eosTokenIds: [eosId],
      decode: (ids) => tokenizer.decode(ids),
    })).text?.trim() ?? '');
}

function indent(text: string): string {
  return text.split('\n').map((l) => `      ${l}`).join('\n');
}

export async function runTextDemo(o: TextDemoOptions, log: (line: string) => void): Promise<TextDemoResult> {
  const t0 = performance.now();
  requireDemoData('the demo model', o.model, '--model');
  requireDemoData("the demo users' fortunes", o.users, '--users');
  const write = o.out === null ? null : prepareOut('--out', o.out, [['--model', o.model]], o.overwrite === true);
  const users = existsSync(o.users) ? readdirSync(o.users).filter((u) => existsSync(join(o.users, u, 'train.jsonl'))).sort() : [];
  if (!users.includes(o.user)) fail(`--user ${o.user}: no such user in ${o.users} (users: ${users.join(', ') || 'none'})`);
  if (!existsSync(join(o.model, 'config.json'))) fail(`--model ${o.model}: no config.json (the embedded model is data/fortune-llama in the repository)`);

  const { model: loaded } = loadPretrained(o.model, { log: () => {} });
  const model = loaded as LlamaForCausalLM;
  model.eval();
  const tokenizer = await loadTokenizer(o.model);
  if (tokenizer === null) fail(`--model ${o.model}: no tokenizer.json`);
  const eosId = model.eosTokenIds[0];
  if (eosId === undefined) fail(`--model ${o.model}: config.json has no eos_token_id`);
  const maxLen = Math.min(128, model.contextLength ?? 128);
  const encode = (texts: string[]): Int32Array[] => texts.map((t) => Int32Array.from([...tokenizer.encode(t), eosId].slice(0, maxLen)));
  const trainSet = encode(readTexts(join(o.users, o.user, 'train.jsonl')));
  const evalSet = encode(readTexts(join(o.users, o.user, 'eval.jsonl')));
  const baseParams = model.parameters().reduce((a, t) => a + t.size, 0);
  const card = readJsonFile(join(o.model, 'config.json'), 'model config') as Record<string, unknown>;
  log(`base model: ${o.model} (${card['model_type']}, ${card['num_hidden_layers']} layers × ${card['hidden_size']}, ${(baseParams / 1e6).toFixed(1)}M parameters, pretrained on fortunes without the "${o.user}" category)`);
  log(`user "${o.user}": ${trainSet.length} fortunes to train on, ${evalSet.length} held out`);

  const before = evaluateCausalLm(model, evalSet, 16, eosId);
  const samplesBefore = sample(model, tokenizer, eosId, o);
  log('');
  log(`1. the base model on ${o.user}'s held-out fortunes: perplexity ${before.perplexity.toFixed(2)}`);
  samplesBefore.forEach((s, i) => log(`   sample ${i + 1}:\n${indent(s)}`));

  // 2. the user's adapter: VeRA on every linear layer, only λd and λb train
  const config = veraConfig({ targetModules: LLAMA_LINEAR, r: o.r, projectionPrngKey: 0, saveProjection: false, dInitial: 0.1 });
  manualSeed(o.seed);
  const peft: PeftModel<LlamaForCausalLM> = getPeftModel(model, config);
  const params = peft.trainableParameters();
  const trainable = params.reduce((a, [, t]) => a + t.size, 0);
  log('');
  log(`2. VeRA adapter (r=${o.r} on ${LLAMA_LINEAR.join(', ')}): ${trainable.toLocaleString('en-US')} trainable parameters, ${o.steps} steps of ${o.batchSize} fortunes`);
  const optimizer = new AdamW([{ lr: o.lr, params: params.map(([, t]) => t) }]);
  model.train();
  const result = train(params, optimizer, causalLmTask(model, trainSet, o.batchSize, eosId), {
    steps: o.steps, seed: o.seed, maxGradNorm: 1, schedule: 'cosine', warmupSteps: Math.ceil(o.steps / 20), progress: !o.quiet, throughputUnit: 'tokens', logEvery: Math.max(1, Math.floor(o.steps / 4)),
  });
  model.eval();
  log(`   trained in ${result.seconds.toFixed(1)} s (${result.itemsPerSecond.toFixed(0)} tokens/s), final train loss ${result.finalLoss.toFixed(3)}`);

  const after = evaluateCausalLm(model, evalSet, 16, eosId);
  const samplesAfter = sample(model, tokenizer, eosId, o);
  log('');
  log(`3. with ${o.user}'s adapter: held-out perplexity ${before.perplexity.toFixed(2)} → ${after.perplexity.toFixed(2)} (same sampling seeds)`);
  samplesAfter.forEach((s, i) => log(`   sample ${i + 1}:\n${indent(s)}`));

  // 4. bytes on disk: the compact VeRA form (F16 vectors, projections regenerated from the key) vs LoRA in F16
  const veraFiles = peft.adapterFiles({ dtype: 'f16' });
  const veraBytes = (veraFiles[ADAPTER_WEIGHTS] as Uint8Array).byteLength;
  const loraBytes = [8, o.r].map((r) => {
    const lora = getPeftModel(loadPretrained(o.model, { log: () => {} }).model as LlamaForCausalLM, loraConfig({ targetModules: LLAMA_LINEAR, r, loraAlpha: r }));
    const files = lora.adapterFiles({ dtype: 'f16' });
    return { r, params: lora.getNbTrainableParameters().trainable, bytes: (files[ADAPTER_WEIGHTS] as Uint8Array).byteLength };
  });
  log('');
  log(`4. adapter files (F16): VeRA r=${o.r}: ${veraBytes.toLocaleString('en-US')} bytes (${trainable.toLocaleString('en-US')} parameters; A and B come from the seed)`);
  for (const l of loraBytes) log(`   LoRA r=${l.r}: ${l.bytes.toLocaleString('en-US')} bytes (${l.params.toLocaleString('en-US')} parameters, ${(l.bytes / veraBytes).toFixed(1)}× VeRA)`);

  // 5. merging folds ΔW into W0: the merged model must give the adapted model's logits
  const probe = evalSet.slice(0, 4).map((s) => s.subarray(0, Math.min(32, s.length)));
  const width = Math.min(...probe.map((s) => s.length));
  const ids = new Int32Array(probe.length * width);
  probe.forEach((s, i) => ids.set(s.subarray(0, width), i * width));
  const logits = (): Float32Array => noGrad(() => model.forward(ids, [probe.length, width])).toFloat32Array();
  const unmerged = logits();
  peft.merge(undefined, { safe: true });
  const merged = logits();
  peft.unmerge();
  let mergeMaxAbsDiff = 0;
  for (let i = 0; i < merged.length; i++) mergeMaxAbsDiff = Math.max(mergeMaxAbsDiff, Math.abs(merged[i] - unmerged[i]));
  log('');
  log(`5. merged vs unmerged logits: max |diff| = ${mergeMaxAbsDiff.toExponential(2)} ${mergeMaxAbsDiff < 1e-4 ? '(agree)' : '(DISAGREE)'}`);
  if (o.out !== null) {
    writeDirAtomic(o.out, veraFiles, write ?? {});
    log(`   adapter written to ${o.out} (load it with \`vera generate --model ${o.model} --adapter ${o.out}\`)`);
  }
  const seconds = (performance.now() - t0) / 1000;
  log(`done in ${seconds.toFixed(1)} s`);
  if (!(mergeMaxAbsDiff < 1e-4)) throw new VeraError(`demo: merged and unmerged outputs disagree (max |diff| ${mergeMaxAbsDiff})`);
  return {
    user: o.user, perplexityBefore: before.perplexity, perplexityAfter: after.perplexity, samplesBefore, samplesAfter, trainableParams: trainable,
    veraBytes, loraBytes, mergeMaxAbsDiff, trainSeconds: result.seconds, seconds,
  };
}

export function registerDemo(program: Command): void {
  const demo = program
    .command('demo')
    .description("the embedded text model: train one user's VeRA adapter in seconds, compare perplexity, text and adapter bytes (see also: demo fashion-mnist)")
    .option('--model <dir>', 'the base model folder', defaultTextModelDir())
    .option('--users <dir>', 'folder of users (each a folder with train.jsonl and eval.jsonl)', defaultUsersDir())
    .option('--user <name>', 'whose fortunes to adapt to', 'startrek')
    .option('--r <n>', 'VeRA rank', positiveInt, 256)
    .option('--steps <n>', 'optimizer steps', positiveInt, 150)
    .option('--lr <x>', 'learning rate of the VeRA vectors', positiveNumber, 2e-2)
    .option('--batch-size <n>', 'fortunes per step', positiveInt, 8)
    .option('--seed <n>', 'random seed (training order and sampling)', nonNegativeInt, 0)
    .option('--samples <n>', 'texts sampled before and after', positiveInt, 3)
    .option('--max-new-tokens <n>', 'tokens per sample at most', positiveInt, 60)
    .option('--out <dir>', "keep the user's adapter in this folder")
    .option('--overwrite', OVERWRITE_HELP)
    .addOption(new Option('--quiet', 'no progress bars'))
    .action(async (opts: Omit<TextDemoOptions, 'out' | 'quiet'> & { out?: string; quiet?: boolean }) => {
      await runTextDemo({ ...opts, out: opts.out ?? null, quiet: opts.quiet ?? false }, (l) => console.log(l));
    });
  registerFashionDemo(demo);
}
