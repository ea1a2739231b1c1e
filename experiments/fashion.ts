// The experiments' image side: the Fashion-MNIST subset in data/fashion-mnist and the walk-through
// CNN of `vera demo fashion-mnist`. A base CNN is trained on five classes (once per seed, cached),
// then each adapter run starts from a fresh copy of it and adapts it to the other five classes; the
// result is the accuracy on the new classes' test images. As in the paper's image experiments, the
// classification head (fc5) can be trained fully next to the adapters (`headLr`), with its own
// learning rate, and is counted apart from the adapter's parameters.
import * as path from 'node:path';
import { loadFashionMnist } from '../src/data/fashion-mnist.js';
import { CNN } from '../src/models/index.js';
import { getPeftModel, type BasePeftConfig } from '../src/peft/index.js';
import { F, Rng, manualSeed, type Tensor } from '../src/tensor/index.js';
import { AdamW, train } from '../src/train/index.js';
import { LINEAR, batchOf, perClassAccuracy, subset, type Split } from '../src/cli/commands/demo-fashion.js';
import type { ExperimentContext } from './types.js';

export { LINEAR as CNN_LINEAR };
/** The CNN's classification head. */
export const CNN_HEAD = 'fc5';

/** As the demo: the base learns the first five classes, the adapter the other five. */
export const BASE_CLASSES = [0, 1, 2, 3, 4];
export const NEW_CLASSES = [5, 6, 7, 8, 9];

export interface FashionData {
  train: Split;
  test: Split;
  baseTrain: Split;
  newTrain: Split;
}

let data: FashionData | null = null;

export function loadFashion(ctx: ExperimentContext): FashionData {
  if (data) return data;
  const dir = path.join(ctx.dataDir, 'fashion-mnist');
  const train = loadFashionMnist(dir, 'train');
  const test = loadFashionMnist(dir, 'test');
  data = { train, test, baseTrain: subset(train, BASE_CLASSES), newTrain: subset(train, NEW_CLASSES) };
  return data;
}

export interface FitOptions {
  steps: number;
  lr: number;
  batchSize: number;
  seed: number;
}

/**
 * The demo's training loop: AdamW (no weight decay), cosine schedule with 5% warm-up, cross-entropy;
 * `head` (a subset of `params`) gets its own lr when given; the gradient norm is clipped when `maxGradNorm` is set.
 */
export function fitCnn(model: CNN, params: [string, Tensor][], split: Split, o: FitOptions & { maxGradNorm?: number; head?: { names: Set<string>; lr: number } }): void {
  const head = o.head;
  const groups = head
    ? [
        { name: 'adapter', params: params.filter(([n]) => !head.names.has(n)).map(([, t]) => t), lr: o.lr },
        { name: 'head', params: params.filter(([n]) => head.names.has(n)).map(([, t]) => t), lr: head.lr },
      ].filter((g) => g.params.length > 0)
    : [{ params: params.map(([, t]) => t), lr: o.lr }];
  const optimizer = new AdamW(groups, { weightDecay: 0 });
  model.train();
  train(params, optimizer, {
    nextBatch: (rng) => batchOf(split, rng, o.batchSize),
    loss: (b) => ({ loss: F.crossEntropy(model.forward(b.x), b.y), items: b.x.shape[0] }),
  }, { steps: o.steps, seed: o.seed, schedule: 'cosine', warmupSteps: Math.floor(o.steps / 20), progress: false, maxGradNorm: o.maxGradNorm ?? null });
  model.eval();
}

const bases = new Map<string, Float32Array[]>();

/** The base CNN's weights after training on BASE_CLASSES (cached per seed and budget). */
function baseWeights(ctx: ExperimentContext, o: FitOptions): Float32Array[] {
  const key = JSON.stringify(o);
  const hit = bases.get(key);
  if (hit) return hit;
  const d = loadFashion(ctx);
  manualSeed(o.seed);
  const model = new CNN({ numClasses: 10 }, new Rng(o.seed));
  fitCnn(model, model.namedParameters(), d.baseTrain, o);
  const weights = model.namedParameters().map(([, t]) => t.toFloat32Array());
  bases.set(key, weights);
  return weights;
}

/** A fresh copy of the seed's base CNN (trained on BASE_CLASSES), in eval mode. */
export function baseCnn(ctx: ExperimentContext, o: FitOptions): CNN {
  const weights = baseWeights(ctx, o);
  const model = new CNN({ numClasses: 10 }, new Rng(o.seed));
  model.namedParameters().forEach(([, t], i) => t.copyFrom(weights[i]!));
  model.eval();
  return model;
}

const mean = (xs: number[], classes: number[]): number => classes.reduce((a, c) => a + xs[c]!, 0) / classes.length;

export interface CnnAdapterRun {
  /** The adapter's trainable parameters (the head's not included). */
  trainable: number;
  /** The fully trained head's parameters (0 when the head is not trained). */
  headParams: number;
  /** Mean per-class test accuracy over NEW_CLASSES (argmax over all ten logits). */
  newAccuracy: number;
  /** The same over BASE_CLASSES (what the adapted model still knows). */
  baseAccuracy: number;
  seconds: number;
}

export interface CnnAdapterOptions extends FitOptions {
  /** Train the head (fc5) fully at this lr (the config must list it in modulesToSave, or be null: head only). */
  headLr?: number;
  maxGradNorm?: number;
}

function result(model: CNN, params: [string, Tensor][], head: Set<string>, seconds: number, ctx: ExperimentContext): CnnAdapterRun {
  const acc = perClassAccuracy(model, loadFashion(ctx).test);
  const count = (keep: (n: string) => boolean): number => params.filter(([n]) => keep(n)).reduce((a, [, t]) => a + t.size, 0);
  return { trainable: count((n) => !head.has(n)), headParams: count((n) => head.has(n)), newAccuracy: mean(acc, NEW_CLASSES), baseAccuracy: mean(acc, BASE_CLASSES), seconds };
}

/**
 * Trains one adapter (config) on NEW_CLASSES from the seed's base CNN, the base frozen; with
 * `headLr` the head trains fully too (config.modulesToSave must hold CNN_HEAD). A null config
 * trains the head alone (the paper's "Head" baseline).
 */
export function trainCnnAdapter(ctx: ExperimentContext, config: BasePeftConfig | null, base: FitOptions, o: CnnAdapterOptions): CnnAdapterRun {
  const d = loadFashion(ctx);
  const model = baseCnn(ctx, base);
  manualSeed(o.seed); // LoRA's A draws from the global generator
  let params: [string, Tensor][];
  let head: Set<string>;
  if (config === null) {
    if (o.headLr === undefined) throw new Error('trainCnnAdapter: without an adapter config there is only the head to train: give headLr');
    for (const [n, t] of model.namedParameters()) t.requiresGrad = n.startsWith(`${CNN_HEAD}.`);
    params = model.namedParameters().filter(([, t]) => t.requiresGrad);
    head = new Set(params.map(([n]) => n));
  } else {
    params = getPeftModel(model, config).trainableParameters();
    head = new Set(o.headLr === undefined ? [] : params.filter(([n]) => n.startsWith(`${CNN_HEAD}.`)).map(([n]) => n));
    if (o.headLr !== undefined && head.size === 0) throw new Error(`trainCnnAdapter: headLr given but ${CNN_HEAD} is not trained (add it to modulesToSave)`);
  }
  const t0 = performance.now();
  fitCnn(model, params, d.newTrain, { ...o, head: o.headLr === undefined ? undefined : { names: head, lr: o.headLr } });
  return result(model, params, head, (performance.now() - t0) / 1000, ctx);
}
