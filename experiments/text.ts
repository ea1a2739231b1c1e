// The experiments' text side: the embedded model (data/fortune-llama), a user's held-out fortunes
// as token sequences, and one adapter trained on them through the library (getPeftModel + the
// trainer), with perplexity on the user's eval split and on the pretraining categories' eval split
// (forgetting). Every run loads a fresh base, so runs are independent and seeded.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { loadTokenizer, type Tokenizer } from '../src/data/tokenizer.js';
import { loadPretrained, type LlamaForCausalLM } from '../src/models/index.js';
import { getPeftModel, type BasePeftConfig, type PeftModel } from '../src/peft/index.js';
import { manualSeed } from '../src/tensor/index.js';
import { AdamW, causalLmTask, evaluateCausalLm, train, type LmEvaluation } from '../src/train/index.js';
import { AdapterLayer } from '../src/peft/tuner.js';
import type { ExperimentContext } from './types.js';

/** The held-out categories shipped in data/fortunes/users. */
export const USERS = ['startrek', 'zippy', 'riddles', 'tao'] as const;
export type User = (typeof USERS)[number];

export interface TextData {
  tokenizer: Tokenizer;
  eosId: number;
  /** Each fortune's ids followed by eos, cut to seqLen. */
  train: Int32Array[];
  eval: Int32Array[];
  /** The pretraining categories' held-out fortunes (for forgetting). */
  general: Int32Array[];
}

const cache = new Map<string, TextData>();

function readJsonlTexts(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => (JSON.parse(l) as { text: string }).text);
}

/** A user's fortunes, tokenized with the embedded model's tokenizer (cached per process). */
export async function loadUserData(ctx: ExperimentContext, user: User, seqLen = 128): Promise<TextData> {
  const key = `${ctx.textModel}|${user}|${seqLen}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const tokenizer = await loadTokenizer(ctx.textModel);
  if (tokenizer === null) throw new Error(`${ctx.textModel}: no tokenizer.json`);
  const eosId = tokenizer.tokenToId('<|endoftext|>');
  if (eosId === undefined || eosId === null) throw new Error(`${ctx.textModel}: the tokenizer has no <|endoftext|>`);
  const encode = (texts: string[]): Int32Array[] => texts.map((t) => Int32Array.from([...tokenizer.encode(t), eosId].slice(0, seqLen)));
  const dir = path.join(ctx.dataDir, 'fortunes');
  const data: TextData = {
    tokenizer,
    eosId,
    train: encode(readJsonlTexts(path.join(dir, 'users', user, 'train.jsonl'))),
    eval: encode(readJsonlTexts(path.join(dir, 'users', user, 'eval.jsonl'))),
    general: encode(readJsonlTexts(path.join(dir, 'general', 'eval.jsonl'))),
  };
  cache.set(key, data);
  return data;
}

/** A fresh copy of the embedded base model (frozen, eval mode). */
export function loadBase(ctx: ExperimentContext): LlamaForCausalLM {
  const { model } = loadPretrained(ctx.textModel, { log: () => {} });
  model.eval();
  return model as LlamaForCausalLM;
}

export interface AdapterRun {
  peft: PeftModel<LlamaForCausalLM>;
  base: LlamaForCausalLM;
  trainable: number;
  seconds: number;
  trainLoss: number;
  user: LmEvaluation;
  /** Perplexity on the pretraining categories (only when asked: it costs an eval pass). */
  general: LmEvaluation | null;
}

export interface AdapterRunOptions {
  config: BasePeftConfig;
  steps: number;
  lr: number;
  batchSize?: number;
  seed: number;
  /** Also evaluate on the pretraining categories. */
  general?: boolean;
  /** Evaluate on at most this many eval sequences (tiny runs). */
  evalLimit?: number;
}

/** Trains one adapter on the user's train split from a fresh base; returns it with its evaluation. */
export function trainAdapter(ctx: ExperimentContext, data: TextData, o: AdapterRunOptions): AdapterRun {
  const base = loadBase(ctx);
  manualSeed(o.seed); // LoRA's A and dropout draw from the global generator
  const peft = getPeftModel(base, o.config);
  const params = peft.trainableParameters();
  const optimizer = new AdamW([{ lr: o.lr, params: params.map(([, t]) => t) }]);
  const task = causalLmTask(base, data.train, o.batchSize ?? 8, data.eosId);
  base.train();
  const result = train(params, optimizer, task, { steps: o.steps, seed: o.seed, progress: false, maxGradNorm: 1 });
  base.eval();
  const evalSet = o.evalLimit ? data.eval.slice(0, o.evalLimit) : data.eval;
  const generalSet = o.evalLimit ? data.general.slice(0, o.evalLimit) : data.general;
  return {
    peft,
    base,
    trainable: params.reduce((a, [, t]) => a + t.size, 0),
    seconds: result.seconds,
    trainLoss: result.finalLoss,
    user: evaluateCausalLm(base, evalSet, 8, data.eosId),
    general: o.general ? evaluateCausalLm(base, generalSet, 8, data.eosId) : null,
  };
}

/** Perplexities of the untouched base (the "before" of every table). */
export function evaluateBase(ctx: ExperimentContext, data: TextData, evalLimit?: number): { user: LmEvaluation; general: LmEvaluation } {
  const base = loadBase(ctx);
  return {
    user: evaluateCausalLm(base, evalLimit ? data.eval.slice(0, evalLimit) : data.eval, 8, data.eosId),
    general: evaluateCausalLm(base, evalLimit ? data.general.slice(0, evalLimit) : data.general, 8, data.eosId),
  };
}

/** ΔW of every adapted layer (module path → (out, in) row-major), for the similarity and spectrum experiments. */
export function deltaWeights(peft: PeftModel<LlamaForCausalLM>, adapter = 'default'): Map<string, { rows: number; cols: number; data: Float32Array }> {
  const out = new Map<string, { rows: number; cols: number; data: Float32Array }>();
  for (const [p, m] of peft.model.namedModules()) {
    if (!(m instanceof AdapterLayer)) continue;
    const d = m.deltaWeight(adapter);
    const [rows, cols] = d.shape as [number, number];
    out.set(p, { rows, cols, data: d.data() });
  }
  return out;
}
