// Per-user adapters on real text: for each category held out of the embedded model's pretraining,
// VeRA (the compact F16 form: vectors only, A and B regenerated from the key) and LoRA at equal
// rank (8) and at about equal trainable parameters (VeRA r 256 ≈ LoRA r 1 on this model), with
// held-out perplexity before and after, trainable parameters, adapter bytes, training time and
// sampled text.
import { ADAPTER_WEIGHTS, loraConfig, veraConfig, type BasePeftConfig } from '../src/peft/index.js';
import { generate, type LlamaForCausalLM } from '../src/models/index.js';
import { noGrad } from '../src/tensor/index.js';
import { barChart } from '../src/plot/index.js';
import { commandLine, fmtMeanStd, meanStd } from './stats.js';
import { evaluateBase, loadBase, loadUserData, trainAdapter, USERS, type TextData } from './text.js';
import type { Experiment, ExperimentContext } from './types.js';
import { BATCH, LORA_LR, TARGETS, VERA_LR } from './lm-common.js';

/** 48 runs (4 users × 4 adapters × 3 seeds) of this many steps keep a full run within ~15 min on 2 cores. */
const STEPS = 30;

export interface Method {
  label: string;
  lr: number;
  config: () => BasePeftConfig;
}

const METHODS: Method[] = [
  { label: 'VeRA r 256', lr: VERA_LR, config: () => veraConfig({ targetModules: [...TARGETS], r: 256, saveProjection: false }) },
  { label: 'VeRA r 8', lr: VERA_LR, config: () => veraConfig({ targetModules: [...TARGETS], r: 8, saveProjection: false }) },
  { label: 'LoRA r 8', lr: LORA_LR, config: () => loraConfig({ targetModules: [...TARGETS], r: 8, loraAlpha: 8 }) },
  { label: 'LoRA r 1', lr: LORA_LR, config: () => loraConfig({ targetModules: [...TARGETS], r: 1, loraAlpha: 1 }) },
];

export type Row = { user: string; method: string; params: number; bytes: number; before: number; after: number[]; seconds: number[] };

export interface UsersRun {
  steps: number;
  batchSize: number;
  users: readonly string[];
  rows: Row[];
  texts: Record<string, Record<string, string[]>>;
}

/**
 * Every (user, method, seed): an adapter trained from a fresh base, its held-out perplexity, bytes
 * (F16) and time; sampled text from the base and, for seed 0, from the methods named in `sampled`.
 */
export async function runUsers(ctx: ExperimentContext, methods: readonly Method[], sampled: readonly string[]): Promise<UsersRun> {
  const steps = ctx.tiny ? 2 : STEPS;
  const batchSize = ctx.tiny ? 2 : BATCH;
  const evalLimit = ctx.tiny ? 2 : undefined;
  const users = ctx.tiny ? USERS.slice(0, 1) : USERS;
  const nSamples = ctx.tiny ? 1 : 2;
  const maxNewTokens = ctx.tiny ? 4 : 48;
  const rows: Row[] = [];
  const texts: Record<string, Record<string, string[]>> = {};
  for (const user of users) {
    const data = await loadUserData(ctx, user);
    const before = evaluateBase(ctx, data, evalLimit).user.perplexity;
    texts[user] = { base: samples(loadBase(ctx), data, nSamples, maxNewTokens) };
    for (const m of methods) {
      const row: Row = { user, method: m.label, params: 0, bytes: 0, before, after: [], seconds: [] };
      for (const seed of ctx.seeds) {
        ctx.log(`  ${user} ${m.label} seed ${seed}`);
        const run = trainAdapter(ctx, data, { config: m.config(), steps, lr: m.lr, seed, batchSize, evalLimit });
        row.params = run.trainable;
        row.bytes = (run.peft.adapterFiles({ dtype: 'f16' })[ADAPTER_WEIGHTS] as Uint8Array).byteLength;
        row.after.push(run.user.perplexity);
        row.seconds.push(run.seconds);
        if (seed === ctx.seeds[0] && sampled.includes(m.label)) texts[user][m.label] = samples(run.base, data, nSamples, maxNewTokens);
      }
      rows.push(row);
    }
  }
  return { steps, batchSize, users, rows, texts };
}

/** Bars per user: the base and each method's mean perplexity (± std over seeds). */
export async function perplexityBars(title: string, methods: readonly Method[], run: Pick<UsersRun, 'users' | 'rows'>): Promise<string> {
  const { users, rows } = run;
  const after = (u: string, m: Method) => meanStd(rows.find((r) => r.user === u && r.method === m.label)!.after);
  return barChart({
    title,
    categoryAxis: { label: 'user' },
    valueAxis: { label: 'perplexity' },
    categories: [...users],
    series: [
      { name: 'base', values: users.map((u) => rows.find((r) => r.user === u)!.before) },
      ...methods.map((m) => ({ name: m.label, values: users.map((u) => after(u, m).mean), errors: users.map((u) => after(u, m).std) })),
    ],
  });
}

function samples(model: LlamaForCausalLM, data: TextData, n: number, maxNewTokens: number): string[] {
  return Array.from({ length: n }, (_, i) =>
    (noGrad(() => generate(model, [data.eosId], { doSample: true, temperature: 0.8, topK: 40, seed: i, maxNewTokens, eosTokenIds: [data.eosId], decode: (ids) => data.tokenizer.decode(ids) })).text ?? '').trim());
}

export const usersExperiment: Experiment = {
  name: 'users',
  title: 'per-user adapters on the held-out fortune categories: VeRA and LoRA, perplexity, bytes, time, samples',
  async run(ctx: ExperimentContext) {
    const { steps, batchSize, users, rows, texts } = await runUsers(ctx, METHODS, ['VeRA r 256', 'LoRA r 8']);

    const md: string[] = [
      '# Per-user adapters on real text',
      '',
      `\`${commandLine(ctx, 'users')}\` — seeds ${ctx.seeds.join(', ')}; each adapter trained from the embedded model (data/fortune-llama) on one held-out category's train split for ${steps} steps of ${batchSize} fortunes (AdamW, constant lr: VeRA ${VERA_LR}, LoRA ${LORA_LR} as the other experiments (experiments/lm-common.ts), gradient norm clipped at 1; fortunes cut to 128 tokens), adapters on ${TARGETS.join(', ')}; perplexity per fortune (eos included) on the category's eval split. Bytes: adapter_model.safetensors in F16 (VeRA without A and B: they are regenerated from projection_prng_key). Time: the training loop on this machine, 2 cores shared.`,
      '',
      '| user | adapter | trainable params | bytes (F16) | perplexity before | after (mean ± std) | train time (s) |',
      '|---|---|---:|---:|---:|---:|---:|',
      ...rows.map((r) => `| ${r.user} | ${r.method} | ${r.params.toLocaleString('en-US')} | ${r.bytes.toLocaleString('en-US')} | ${r.before.toFixed(2)} | ${fmtMeanStd(r.after, 4)} | ${meanStd(r.seconds).mean.toFixed(1)} |`),
      '',
      '## Samples (seed 0; temperature 0.8, top-k 40, from the start token)',
      '',
    ];
    for (const [user, byModel] of Object.entries(texts)) {
      md.push(`### ${user}`, '');
      for (const [who, list] of Object.entries(byModel)) {
        md.push(`**${who}**`, '');
        for (const s of list) md.push('```', s, '```', '');
      }
    }
    md.push('The paper (Table 2–4) reports VeRA matching LoRA with about 10× fewer trainable parameters on GLUE, E2E and instruction tuning; here the comparison is at laptop scale on one small model, see the table.');

    const plot = await perplexityBars('Held-out perplexity after one user\'s adapter (lower is better)', METHODS, { users, rows });
    return { markdown: md.join('\n'), plots: { 'users.svg': plot }, data: { seeds: ctx.seeds, steps, batchSize, lr: { vera: VERA_LR, lora: LORA_LR }, rows, samples: texts } };
  },
};
