// What the embedded-model experiments of the ablation / analysis group share (table6-ablations,
// table7-projections, fig3-d-norms, appd-similarity, seed000-forgetting): the adapted modules, the
// users, the budgets of a full and a --tiny run, the configs per seed, and where in the model a
// parameter or adapted layer sits; and the per-user grid of VeRA variants table6 and table7 both train.
import * as path from 'node:path';
import type { LlamaForCausalLM } from '../src/models/index.js';
import { AdapterLayer, loraConfig, veraConfig, type LoraConfig, type PeftModel, type VeraConfigInit, type VeraConfig } from '../src/peft/index.js';
import { evaluateCausalLm, type LmEvaluation } from '../src/train/index.js';
import { loadBase, loadUserData, trainAdapter, type TextData, type User } from './text.js';
import { fmtMeanStd } from './stats.js';
import type { ExperimentContext } from './types.js';

/** The model folder as the tables show it: relative to the working directory when inside it (no machine paths in committed results). */
function modelLabel(ctx: ExperimentContext): string {
  const rel = path.relative(process.cwd(), ctx.textModel);
  return rel.startsWith('..') || path.isAbsolute(rel) ? ctx.textModel : rel;
}

/** Every linear layer of a Llama block, as the brief's default VeRA placement. */
export const TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type ModuleType = (typeof TARGETS)[number];

/**
 * The learning rates, one per method, for every experiment of this group (constant lr, AdamW with
 * the library's default weight decay 0.01, gradient norm clipped at 1, as experiments/text.ts trains).
 * Chosen by a short probe on data/fortune-llama (startrek, 30 steps, batch 8, seed 0; held-out
 * perplexity from 138.2): VeRA r 256 at 1e-2 / 2e-2 / 5e-2 / 1e-1 / 2e-1 → 96.6 / 69.0 / 51.5 / 47.5 /
 * 54.9 (zippy, from 166.7: 5e-2 → 120.7, 1e-1 → 123.7); LoRA r 8 at 1e-3 / 3e-3 / 1e-2 → 59.9 / 47.0 /
 * 50.7 (zippy 3e-3 → 116.9). The budgets here run 20–100 steps, so the lower end of each method's best
 * range: VeRA 5e-2, LoRA 3e-3 (stable at LoRA r 1 and 64 and VeRA r 64 and 1024 too). VeRA needing
 * a ~10× larger lr than LoRA matches the paper (Tables 8–11).
 */
export const VERA_LR = 5e-2;
export const LORA_LR = 3e-3;

/** Sequences per optimizer step. */
export const BATCH = 8;

/** The budget of one run: full runs as sized for ~5–10 min per experiment on 2 cores; tiny for npm test. */
export interface Budget {
  steps: number;
  batchSize: number;
  /** Evaluate on at most this many user sequences (undefined: the whole eval split). */
  evalLimit: number | undefined;
  /** Sequences of the pretraining categories' eval split used to measure forgetting. */
  generalLimit: number;
  /** Tokens per sequence at most. */
  seqLen: number;
}

export function budget(ctx: ExperimentContext, steps: number): Budget {
  if (ctx.tiny) return { steps: 1, batchSize: 1, evalLimit: 1, generalLimit: 1, seqLen: 8 };
  return { steps, batchSize: BATCH, evalLimit: undefined, generalLimit: 100, seqLen: 128 };
}

/** The held-out users the experiments train on: two (which keeps full runs within budget); `tinyCount` of them in --tiny. */
export function users(ctx: ExperimentContext, tinyCount = 1): User[] {
  return (['startrek', 'zippy'] as User[]).slice(0, ctx.tiny ? tinyCount : 2);
}

export async function userData(ctx: ExperimentContext, user: User, b: Budget): Promise<TextData> {
  return loadUserData(ctx, user, b.seqLen);
}

/** VeRA on TARGETS; seed s draws the projections from projection_prng_key s. */
export function veraFor(seed: number, init: VeraConfigInit = {}): VeraConfig {
  return veraConfig({ r: 256, targetModules: [...TARGETS], projectionPrngKey: seed, saveProjection: false, ...init });
}

/** LoRA on TARGETS with alpha = 2r (scaling 2 at every rank); A is drawn from manualSeed(seed) in trainAdapter. */
export function loraFor(r: number): LoraConfig {
  return loraConfig({ r, loraAlpha: 2 * r, targetModules: [...TARGETS] });
}

/** Where an adapted layer or one of its parameters sits: "model.layers.3.mlp.up_proj…" → layer 3, up_proj. */
export function locate(path: string): { layer: number; module: ModuleType } | null {
  const m = /(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)(?:\.|$)/.exec(path);
  return m ? { layer: Number(m[1]), module: m[2] as ModuleType } : null;
}

/** Perplexity on the first `limit` sequences of the pretraining categories' eval split (forgetting). */
export function evaluateGeneral(model: LlamaForCausalLM, data: TextData, limit: number): LmEvaluation {
  return evaluateCausalLm(model, data.general.slice(0, limit), 8, data.eosId);
}

export interface VeraNorms {
  layer: number;
  module: ModuleType;
  /** ‖λd‖ */
  d: number;
  /** ‖λb‖ (λb starts at 0, so this is also how far it moved) */
  b: number;
  /** ‖λd − d_initial‖: how far λd moved */
  dChange: number;
}

/** ‖λd‖, ‖λb‖ and ‖λd − d_initial‖ of every VeRA layer of adapter `name`, by layer and module type. */
export function veraNorms(peft: PeftModel<LlamaForCausalLM>, dInitial: number, name = 'default'): VeraNorms[] {
  const byLayer = new Map<string, VeraNorms>();
  for (const [p, t] of peft.model.namedParameters()) {
    const which = p.endsWith(`.vera_lambda_d.${name}`) ? 'd' : p.endsWith(`.vera_lambda_b.${name}`) ? 'b' : null;
    const at = which ? locate(p) : null;
    if (!which || !at) continue;
    const key = `${at.layer}.${at.module}`;
    const row = byLayer.get(key) ?? { ...at, d: NaN, b: NaN, dChange: NaN };
    const data = t.data();
    let s = 0;
    let moved = 0;
    for (let i = 0; i < data.length; i++) {
      s += data[i]! * data[i]!;
      moved += (data[i]! - dInitial) ** 2;
    }
    row[which] = Math.sqrt(s);
    if (which === 'd') row.dChange = Math.sqrt(moved);
    byLayer.set(key, row);
  }
  return [...byLayer.values()].sort((a, b) => a.layer - b.layer || TARGETS.indexOf(a.module) - TARGETS.indexOf(b.module));
}

/** The lines every result's Markdown starts with after its title. */
export function budgetLines(ctx: ExperimentContext, b: Budget, us: readonly string[], extra: string[] = []): string[] {
  return [
    `Seeds: ${ctx.seeds.join(', ')} (seed s: the data order, LoRA's A via manualSeed(s), VeRA's projection_prng_key s). Model: the embedded fortune Llama (\`${modelLabel(ctx)}\`). Users: ${us.join(', ')} (held-out fortune categories; train on the train split, perplexity on the eval split${b.evalLimit ? `, first ${b.evalLimit} sequences` : ''}).`,
    `Budget per run: ${b.steps} steps, batch ${b.batchSize} sequences (≤ ${b.seqLen} tokens), constant lr (VeRA ${VERA_LR}, LoRA ${LORA_LR}), AdamW (weight decay 0.01), gradient norm clipped at 1; a fresh base per run. Adapted: ${TARGETS.join(', ')} of every block.${ctx.tiny ? ' **--tiny: a smoke test, the numbers mean nothing.**' : ''}`,
    ...extra,
  ];
}

/** ΔW (out × in, row-major) of the adapted layers `keep` accepts only (each ΔW of a rank-1024 VeRA costs a 1024-deep matmul). */
export function deltaWeightsOf(peft: PeftModel<LlamaForCausalLM>, keep: (at: { layer: number; module: ModuleType }) => boolean, name = 'default'): { layer: number; module: ModuleType; rows: number; cols: number; data: Float32Array }[] {
  const out: { layer: number; module: ModuleType; rows: number; cols: number; data: Float32Array }[] = [];
  for (const [p, m] of peft.model.namedModules()) {
    const at = m instanceof AdapterLayer ? locate(p) : null;
    if (!at || !keep(at)) continue;
    const d = (m as AdapterLayer).deltaWeight(name);
    const [rows, cols] = d.shape as [number, number];
    out.push({ ...at, rows, cols, data: d.data() });
  }
  return out;
}

/** One VeRA variant on one user: its held-out perplexity, final train loss and time per seed. */
export interface VariantCell {
  variant: string;
  user: User;
  trainable: number;
  /** Held-out perplexity per seed. */
  perplexity: number[];
  trainLoss: number[];
  seconds: number[];
}

/**
 * The grid table6 and table7 share: per user, the base model's held-out perplexity, then every
 * variant (VeRA r `r` with its init fields) trained once per seed at VERA_LR within budget `b`.
 */
export async function veraVariantGrid(ctx: ExperimentContext, b: Budget, us: readonly User[], r: number, variants: readonly { id: string; init: VeraConfigInit }[]): Promise<{ base: Record<string, number>; cell: (variant: string, user: string) => VariantCell; cells: VariantCell[] }> {
  const cells: VariantCell[] = [];
  const base: Record<string, number> = {};
  for (const user of us) {
    const data = await userData(ctx, user, b);
    base[user] = evaluateCausalLm(loadBase(ctx), b.evalLimit ? data.eval.slice(0, b.evalLimit) : data.eval, 8, data.eosId).perplexity;
    ctx.log(`  ${user}: base perplexity ${base[user]!.toFixed(2)}`);
    for (const v of variants) {
      const cell: VariantCell = { variant: v.id, user, trainable: 0, perplexity: [], trainLoss: [], seconds: [] };
      for (const seed of ctx.seeds) {
        const run = trainAdapter(ctx, data, { config: veraFor(seed, { r, ...v.init }), steps: b.steps, lr: VERA_LR, batchSize: b.batchSize, seed, evalLimit: b.evalLimit });
        cell.trainable = run.trainable;
        cell.perplexity.push(run.user.perplexity);
        cell.trainLoss.push(run.trainLoss);
        cell.seconds.push(run.seconds);
      }
      ctx.log(`  ${user} ${v.id}: perplexity ${fmtMeanStd(cell.perplexity, 2, true)}`);
      cells.push(cell);
    }
  }
  return { base, cells, cell: (variant, user) => cells.find((c) => c.variant === variant && c.user === user)! };
}
