// Paper Fig. 2: quality against trainable parameters as the rank grows, VeRA (r 1…1024) against
// LoRA (r 1…64). (a) Text: the embedded model adapted to one held-out user's fortunes (adapters
// on q, k, v, o, gate, up, down of every block), held-out perplexity. (b) Images: the
// walk-through CNN trained on five Fashion-MNIST classes (once per seed), adapted on its five
// linear layers to the other five; test accuracy on those five. Mean ± std over seeds.
import { lineChart } from '../src/plot/index.js';
import { loraConfig, veraConfig, type BasePeftConfig } from '../src/peft/index.js';
import { CNN_LINEAR, trainCnnAdapter, type FitOptions } from './fashion.js';
import { evaluateCausalLm } from '../src/train/index.js';
import { loadBase, loadUserData, trainAdapter, type User } from './text.js';
import { commandLine, fmtMeanStd, meanStd } from './stats.js';
import type { Experiment, ExperimentContext, ExperimentResult } from './types.js';

const VERA_RANKS = [1, 4, 16, 64, 256, 1024];
const LORA_RANKS = [1, 2, 4, 8, 16, 32, 64];
/** Every linear layer of a Llama block (lm_head, tied to the embeddings, stays frozen). */
export const LLAMA_LINEAR = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

type Method = 'VeRA' | 'LoRA';

interface Row {
  method: Method;
  r: number;
  trainable: number;
  lr: number;
  /** One value per seed. */
  values: number[];
  mean: number;
  std: number;
}

function config(method: Method, r: number, targets: string[], seed: number): BasePeftConfig {
  return method === 'VeRA'
    ? veraConfig({ targetModules: targets, r, projectionPrngKey: seed, saveProjection: false })
    : loraConfig({ targetModules: targets, r, loraAlpha: r });
}

function grid(ctx: ExperimentContext): [Method, number][] {
  const vera = ctx.tiny ? [4] : VERA_RANKS;
  const lora = ctx.tiny ? [4] : LORA_RANKS;
  return [...vera.map((r): [Method, number] => ['VeRA', r]), ...lora.map((r): [Method, number] => ['LoRA', r])];
}

function table(rows: Row[], metric: string, digits: number): string[] {
  return [
    `| method | r | trainable params | lr | ${metric} (mean ± std) | per seed |`,
    '|---|---:|---:|---:|---:|---|',
    ...rows.map((r) => `| ${r.method} | ${r.r} | ${r.trainable.toLocaleString('en-US')} | ${r.lr} | ${fmtMeanStd(r.values, digits, true)} | ${r.values.map((v) => v.toFixed(digits)).join(', ')} |`),
  ];
}

function chart(rows: Row[], title: string, y: string): Promise<string> {
  return lineChart({
    title,
    x: { label: 'trainable parameters', log: true },
    y: { label: y },
    series: (['VeRA', 'LoRA'] as const).map((m) => ({
      name: m,
      points: rows.filter((r) => r.method === m).map((r) => ({ x: r.trainable, y: r.mean, err: r.std })),
    })),
  });
}

export const fig2RankScaling: Experiment = {
  name: 'fig2-rank-scaling',
  title: 'Paper Fig. 2: quality against trainable parameters for VeRA and LoRA at growing rank (text perplexity, Fashion-MNIST accuracy)',
  async run(ctx: ExperimentContext): Promise<ExperimentResult> {
    // ---- (a) text: the embedded model on one held-out user
    const user: User = 'startrek';
    const text = ctx.tiny
      ? { steps: 2, batchSize: 2, seqLen: 32, evalLimit: 2, lr: { VeRA: 2e-2, LoRA: 2e-3 } }
      : { steps: 40, batchSize: 8, seqLen: 64, evalLimit: undefined, lr: { VeRA: 2e-2, LoRA: 2e-3 } };
    const data = await loadUserData(ctx, user, text.seqLen);
    const evalSet = text.evalLimit ? data.eval.slice(0, text.evalLimit) : data.eval;
    const base = evaluateCausalLm(loadBase(ctx), evalSet, 8, data.eosId);
    ctx.log(`  text: base model perplexity on ${user} ${base.perplexity.toFixed(2)}`);
    const textRows: Row[] = [];
    for (const [method, r] of grid(ctx)) {
      const values: number[] = [];
      let trainable = 0;
      for (const seed of ctx.seeds) {
        const run = trainAdapter(ctx, data, { config: config(method, r, LLAMA_LINEAR, seed), steps: text.steps, lr: text.lr[method], batchSize: text.batchSize, seed, evalLimit: text.evalLimit });
        trainable = run.trainable;
        values.push(run.user.perplexity);
      }
      textRows.push({ method, r, trainable, lr: text.lr[method], values, ...meanStd(values) });
      ctx.log(`  text ${method} r=${r}: ${trainable} params, perplexity ${fmtMeanStd(values, 2, true)}`);
    }

    // ---- (b) images: the walk-through CNN on Fashion-MNIST
    const image = ctx.tiny
      ? { base: { steps: 10, lr: 2e-3, batchSize: 16 }, steps: 5, batchSize: 16, lr: { VeRA: 5e-2, LoRA: 1e-2 } }
      : { base: { steps: 400, lr: 2e-3, batchSize: 32 }, steps: 500, batchSize: 32, lr: { VeRA: 5e-2, LoRA: 1e-2 } };
    const imageRows: Row[] = [];
    for (const [method, r] of grid(ctx)) {
      const values: number[] = [];
      let trainable = 0;
      for (const seed of ctx.seeds) {
        const baseFit: FitOptions = { ...image.base, seed };
        const run = trainCnnAdapter(ctx, config(method, r, CNN_LINEAR, seed), baseFit, { steps: image.steps, lr: image.lr[method], batchSize: image.batchSize, seed });
        trainable = run.trainable;
        values.push(100 * run.newAccuracy);
      }
      imageRows.push({ method, r, trainable, lr: image.lr[method], values, ...meanStd(values) });
      ctx.log(`  Fashion-MNIST ${method} r=${r}: ${trainable} params, accuracy ${fmtMeanStd(values, 1, true)}%`);
    }

    const plots = {
      'fig2-rank-scaling-text.svg': await chart(textRows, `Held-out perplexity on '${user}' against trainable parameters`, 'perplexity (mean ± std)'),
      'fig2-rank-scaling-fashion.svg': await chart(imageRows, 'Fashion-MNIST new-class accuracy against trainable parameters', 'accuracy % (mean ± std)'),
    };
    const markdown = [
      `# ${this.title}`,
      '',
      `Regenerate: \`${commandLine(ctx, this.name, true)}\``,
      '',
      `Seeds: ${ctx.seeds.join(', ')} (per seed: VeRA projection_prng_key, LoRA's A, batch order; for images also the base CNN). VeRA ranks ${grid(ctx).filter(([m]) => m === 'VeRA').map(([, r]) => r).join(', ')}; LoRA ranks ${grid(ctx).filter(([m]) => m === 'LoRA').map(([, r]) => r).join(', ')} (alpha = r).`,
      '',
      `## (a) Text: the embedded model on the held-out user '${user}'`,
      '',
      `Adapters on ${LLAMA_LINEAR.join(', ')} of every block; ${data.train.length} training fortunes (each cut to ${text.seqLen} tokens), ${text.steps} steps of batch ${text.batchSize}, AdamW (weight decay 0.01), constant lr ${text.lr.VeRA} (VeRA) / ${text.lr.LoRA} (LoRA), gradient norm clipped at 1. Perplexity on ${evalSet.length} held-out fortunes of the user; the base model's is ${base.perplexity.toFixed(2)}.`,
      '',
      ...table(textRows, 'perplexity', 2),
      '',
      '![perplexity against trainable parameters](fig2-rank-scaling-text.svg)',
      '',
      '## (b) Fashion-MNIST: the walk-through CNN',
      '',
      `Base CNN trained from scratch on classes 0–4 (${image.base.steps} steps, batch ${image.base.batchSize}, lr ${image.base.lr}, once per seed), then frozen; adapters on ${CNN_LINEAR.join(', ')}, trained on classes 5–9 for ${image.steps} steps of batch ${image.batchSize}, AdamW (no weight decay), cosine schedule with 5% warm-up, lr ${image.lr.VeRA} (VeRA) / ${image.lr.LoRA} (LoRA), gradient norm clipped at 1. Accuracy: mean per-class test accuracy over classes 5–9 (argmax over all ten logits).`,
      '',
      ...table(imageRows, 'accuracy %', 1),
      '',
      '![accuracy against trainable parameters](fig2-rank-scaling-fashion.svg)',
      '',
      'Paper (Fig. 2, RoBERTa-large on RTE): VeRA is markedly more parameter-efficient; at the same number of trainable parameters the higher-rank VeRA beats LoRA by about 4 accuracy points.',
    ].join('\n');
    return {
      markdown,
      plots,
      data: { seeds: ctx.seeds, text: { user, ...text, basePerplexity: base.perplexity, rows: textRows }, image: { ...image, rows: imageRows } },
    };
  },
};
