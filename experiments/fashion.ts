// The experiments' image side: the Fashion-MNIST subset in data/fashion-mnist and the walk-through
// CNN of `vera demo fashion-mnist`. A base CNN is trained on five classes (once per seed, cached),
// then each adapter run starts from a fresh copy of it and adapts its linear layers to the other
// five classes while the base stays frozen; the result is the accuracy on the new classes' test images.
import * as path from 'node:path';
import { loadFashionMnist } from '../src/data/fashion-mnist.js';
import { CNN } from '../src/models/index.js';
import { getPeftModel, type BasePeftConfig } from '../src/peft/index.js';
import { F, Rng, manualSeed, type Tensor } from '../src/tensor/index.js';
import { AdamW, train } from '../src/train/index.js';
import { LINEAR, batchOf, perClassAccuracy, subset, type Split } from '../src/cli/commands/demo-fashion.js';
import type { ExperimentContext } from './types.js';

export { LINEAR as CNN_LINEAR };

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

/** The demo's training loop: AdamW (no weight decay), cosine schedule with 5% warm-up, cross-entropy. */
export function fitCnn(model: CNN, params: [string, Tensor][], split: Split, o: FitOptions): void {
  const optimizer = new AdamW([{ params: params.map(([, t]) => t), lr: o.lr }], { weightDecay: 0 });
  model.train();
  train(params, optimizer, {
    nextBatch: (rng) => batchOf(split, rng, o.batchSize),
    loss: (b) => ({ loss: F.crossEntropy(model.forward(b.x), b.y), items: b.x.shape[0] }),
  }, { steps: o.steps, seed: o.seed, schedule: 'cosine', warmupSteps: Math.floor(o.steps / 20), progress: false });
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
  trainable: number;
  /** Mean per-class test accuracy over NEW_CLASSES (argmax over all ten logits). */
  newAccuracy: number;
  /** The same over BASE_CLASSES (what the adapted model still knows). */
  baseAccuracy: number;
  seconds: number;
}

/** Trains one adapter (config) on NEW_CLASSES from the seed's base CNN; the base stays frozen. */
export function trainCnnAdapter(ctx: ExperimentContext, config: BasePeftConfig, base: FitOptions, o: FitOptions): CnnAdapterRun {
  const d = loadFashion(ctx);
  const model = baseCnn(ctx, base);
  manualSeed(o.seed); // LoRA's A draws from the global generator
  const peft = getPeftModel(model, config);
  const params = peft.trainableParameters();
  const t0 = performance.now();
  fitCnn(model, params, d.newTrain, o);
  const seconds = (performance.now() - t0) / 1000;
  const acc = perClassAccuracy(model, d.test);
  return { trainable: params.reduce((a, [, t]) => a + t.size, 0), newAccuracy: mean(acc, NEW_CLASSES), baseAccuracy: mean(acc, BASE_CLASSES), seconds };
}
