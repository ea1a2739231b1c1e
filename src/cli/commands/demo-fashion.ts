// `vera demo fashion-mnist`: the walk-through experiment (seed 001) on real Fashion-MNIST. A CNN is trained on
// five classes, then VeRA adapts its five linear layers to the other five while the base stays
// frozen. Prints per-class accuracy before and after, the adapter's size next to LoRA's at the same
// rank, and checks that the merged model answers as the unmerged one.
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { FASHION_MNIST_CLASSES, loadFashionMnist } from '../../data/fashion-mnist.js';
import { writeDirAtomic } from '../../io/atomic.js';
import { VeraError } from '../../io/errors.js';
import { CNN } from '../../models/index.js';
import { getPeftModel, loraConfig, veraConfig, type PeftModel } from '../../peft/index.js';
import { F, Rng, Tensor, manualSeed, noGrad } from '../../tensor/index.js';
import { AdamW, train } from '../../train/index.js';
import { nonNegativeInt, positiveInt, positiveNumber } from '../options.js';
import { OVERWRITE_HELP, prepareOut } from '../out.js';
import { demoDataDir, requireDemoData } from './demo-data.js';

export interface FashionDemoOptions {
  data: string;
  baseSteps: number;
  veraSteps: number;
  r: number;
  batchSize: number;
  lr: number;
  veraLr: number;
  seed: number;
  out: string | null;
  /** Replace a non-empty `out` (as a whole). */
  overwrite?: boolean;
  quiet: boolean;
}

export interface FashionDemoResult {
  before: number[];
  after: number[];
  disabled: number[];
  baseClasses: number[];
  newClasses: number[];
  trainableParams: number;
  veraBytes: number;
  veraBytesWithProjections: number;
  loraBytes: number;
  loraParams: number;
  mergeMaxAbsDiff: number;
  seconds: number;
}

export const LINEAR = ['fc1', 'fc2', 'fc3', 'fc4', 'fc5'];

export interface Split {
  images: Float32Array;
  labels: Int32Array;
  count: number;
}

export function subset(split: Split, classes: number[]): Split {
  const keep: number[] = [];
  for (let i = 0; i < split.count; i++) if (classes.includes(split.labels[i])) keep.push(i);
  const images = new Float32Array(keep.length * 784);
  const labels = new Int32Array(keep.length);
  keep.forEach((src, dst) => {
    images.set(split.images.subarray(src * 784, src * 784 + 784), dst * 784);
    labels[dst] = split.labels[src];
  });
  return { images, labels, count: keep.length };
}

export function batchOf(split: Split, rng: Rng, size: number): { x: Tensor; y: Int32Array } {
  const x = new Float32Array(size * 784);
  const y = new Int32Array(size);
  for (let i = 0; i < size; i++) {
    const j = rng.int(split.count);
    x.set(split.images.subarray(j * 784, j * 784 + 784), i * 784);
    y[i] = split.labels[j];
  }
  return { x: Tensor.fromArray(x, [size, 1, 28, 28]), y };
}

/** Accuracy per class over the whole split. */
export function perClassAccuracy(model: CNN, split: Split): number[] {
  const correct = new Array<number>(10).fill(0);
  const total = new Array<number>(10).fill(0);
  noGrad(() => {
    for (let start = 0; start < split.count; start += 250) {
      const n = Math.min(250, split.count - start);
      const x = Tensor.fromArray(split.images.subarray(start * 784, (start + n) * 784), [n, 1, 28, 28]);
      const predicted = F.argmax(model.forward(x));
      for (let i = 0; i < n; i++) {
        const label = split.labels[start + i];
        total[label]++;
        if (predicted[i] === label) correct[label]++;
      }
    }
  });
  return correct.map((c, i) => (total[i] === 0 ? NaN : c / total[i]));
}

function fit(model: CNN, params: [string, Tensor][], data: Split, steps: number, lr: number, o: FashionDemoOptions): void {
  const optimizer = new AdamW([{ params: params.map(([, t]) => t), lr }], { weightDecay: 0 });
  model.train();
  train(params, optimizer, {
    nextBatch: (rng) => batchOf(data, rng, o.batchSize),
    loss: (b) => ({ loss: F.crossEntropy(model.forward(b.x), b.y), items: b.x.shape[0] }),
  }, { steps, seed: o.seed, schedule: 'cosine', warmupSteps: Math.floor(steps / 20), progress: !o.quiet, throughputUnit: 'images', logEvery: Math.max(1, Math.floor(steps / 4)) });
  model.eval();
}

function dirBytes(dir: string): number {
  return statSync(join(dir, 'adapter_model.safetensors')).size + statSync(join(dir, 'adapter_config.json')).size;
}

/** Every file under `root`, by path relative to it. */
function readTree(root: string, rel = ''): Record<string, Uint8Array> {
  const files: Record<string, Uint8Array> = {};
  for (const e of readdirSync(join(root, rel), { withFileTypes: true })) {
    const r = rel === '' ? e.name : `${rel}/${e.name}`;
    if (e.isDirectory()) Object.assign(files, readTree(root, r));
    else files[r] = readFileSync(join(root, r));
  }
  return files;
}

export function runFashionDemo(o: FashionDemoOptions, log: (line: string) => void): FashionDemoResult {
  const t0 = performance.now();
  requireDemoData('Fashion-MNIST', o.data, '--data');
  const write = o.out === null ? null : prepareOut('--out', o.out, [['--data', o.data]], o.overwrite === true);
  const trainSet = loadFashionMnist(o.data, 'train');
  const testSet = loadFashionMnist(o.data, 'test');
  const baseClasses = [0, 1, 2, 3, 4];
  const newClasses = [5, 6, 7, 8, 9];
  log(`Fashion-MNIST from ${o.data}: ${trainSet.count} train / ${testSet.count} test images`);

  manualSeed(o.seed);
  const model = new CNN({ numClasses: 10 }, new Rng(o.seed));
  log(`1. base CNN trained on ${baseClasses.map((c) => FASHION_MNIST_CLASSES[c]).join(', ')} (${o.baseSteps} steps, all ${model.parameters().reduce((a, t) => a + t.size, 0).toLocaleString('en-US')} parameters)`);
  fit(model, model.namedParameters(), subset(trainSet, baseClasses), o.baseSteps, o.lr, o);
  const before = perClassAccuracy(model, testSet);

  const config = veraConfig({ targetModules: LINEAR, r: o.r, projectionPrngKey: o.seed, saveProjection: false });
  const peft: PeftModel<CNN> = getPeftModel(model, config);
  const trainable = peft.getNbTrainableParameters().trainable;
  log(`2. VeRA (r=${o.r}) on ${LINEAR.join(', ')}, convolutions frozen, finetuned on ${newClasses.map((c) => FASHION_MNIST_CLASSES[c]).join(', ')} (${o.veraSteps} steps)`);
  peft.printTrainableParameters((l) => log(`   ${l}`));
  fit(model, peft.trainableParameters(), subset(trainSet, newClasses), o.veraSteps, o.veraLr, o);
  const after = perClassAccuracy(model, testSet);
  // the base is untouched: switching the adapter off gives the base model back
  const disabled = peft.withAdaptersDisabled(() => perClassAccuracy(model, testSet));

  // adapter sizes on disk: VeRA as vectors + seed, VeRA with projections, LoRA at the same rank
  // the adapters are saved to a scratch folder first, then copied into --out in one atomic step
  const dir = mkdtempSync(join(tmpdir(), 'vera-demo-'));
  let veraBytes: number;
  let veraBytesWithProjections: number;
  let loraBytes: number;
  let loraParams: number;
  try {
    peft.saveAdapter(join(dir, 'vera-adapter'));
    veraBytes = dirBytes(join(dir, 'vera-adapter'));
    peft.peftConfig.set('default', { ...config, saveProjection: true } as typeof config);
    peft.saveAdapter(join(dir, 'vera-adapter-with-projections'));
    peft.peftConfig.set('default', config);
    veraBytesWithProjections = dirBytes(join(dir, 'vera-adapter-with-projections'));
    const lora = getPeftModel(new CNN({ numClasses: 10 }, new Rng(o.seed)), loraConfig({ targetModules: LINEAR, r: o.r, loraAlpha: o.r }));
    loraParams = lora.getNbTrainableParameters().trainable;
    lora.saveAdapter(join(dir, 'lora-adapter'));
    loraBytes = dirBytes(join(dir, 'lora-adapter'));
    if (o.out !== null) writeDirAtomic(o.out, readTree(dir), write ?? {});
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  // merging folds ΔW into W0: the merged model must answer as the adapted one
  const probe = Tensor.fromArray(testSet.images.subarray(0, 64 * 784), [64, 1, 28, 28]);
  const unmerged = noGrad(() => model.forward(probe)).toFloat32Array();
  peft.merge(undefined, { safe: true });
  const merged = noGrad(() => model.forward(probe)).toFloat32Array();
  peft.unmerge();
  let mergeMaxAbsDiff = 0;
  for (let i = 0; i < merged.length; i++) mergeMaxAbsDiff = Math.max(mergeMaxAbsDiff, Math.abs(merged[i] - unmerged[i]));

  const pct = (v: number): string => `${(100 * v).toFixed(1).padStart(5)}%`;
  log('');
  log('class          base trained on   before VeRA   after VeRA');
  for (let c = 0; c < 10; c++) {
    log(`${String(c).padStart(1)} ${FASHION_MNIST_CLASSES[c].padEnd(12)} ${baseClasses.includes(c) ? 'yes' : 'no '}               ${pct(before[c])}       ${pct(after[c])}`);
  }
  const mean = (xs: number[], cs: number[]): number => cs.reduce((a, c) => a + xs[c], 0) / cs.length;
  log(`finetuned classes: ${pct(mean(before, newClasses))} → ${pct(mean(after, newClasses))}; base classes: ${pct(mean(before, baseClasses))} → ${pct(mean(after, baseClasses))}`);
  log(`adapter disabled: base classes ${pct(mean(disabled, baseClasses))}, finetuned classes ${pct(mean(disabled, newClasses))} (the frozen base, unchanged)`);
  log('');
  log(`VeRA adapter: ${trainable.toLocaleString('en-US')} trainable params, ${veraBytes.toLocaleString('en-US')} bytes on disk (vectors + seed; ${veraBytesWithProjections.toLocaleString('en-US')} with the projections saved)`);
  log(`LoRA adapter at r=${o.r}: ${loraParams.toLocaleString('en-US')} trainable params, ${loraBytes.toLocaleString('en-US')} bytes on disk (${(loraBytes / veraBytes).toFixed(1)}× VeRA)`);
  log(`merged vs unmerged logits: max |diff| = ${mergeMaxAbsDiff.toExponential(2)} ${mergeMaxAbsDiff < 1e-4 ? '(agree)' : '(DISAGREE)'}`);
  if (o.out !== null) log(`adapters written under ${o.out}`);
  const seconds = (performance.now() - t0) / 1000;
  log(`done in ${seconds.toFixed(1)} s`);
  if (!(mergeMaxAbsDiff < 1e-4)) throw new VeraError(`demo: merged and unmerged outputs disagree (max |diff| ${mergeMaxAbsDiff})`);
  return { before, after, disabled, baseClasses, newClasses, trainableParams: trainable, veraBytes, veraBytesWithProjections, loraBytes, loraParams, mergeMaxAbsDiff, seconds };
}

/** Adds `fashion-mnist` under the `demo` command. */
export function registerFashionDemo(demo: Command): void {
  demo
    .command('fashion-mnist')
    .description('Fashion-MNIST: train a CNN on 5 classes, VeRA-finetune it on the other 5, compare per-class accuracy and adapter sizes')
    .option('--data <dir>', 'Fashion-MNIST folder (IDX files)', join(demoDataDir(), 'fashion-mnist'))
    .option('--base-steps <n>', 'optimizer steps for the base CNN', positiveInt, 400)
    .option('--vera-steps <n>', 'optimizer steps for the VeRA finetune', positiveInt, 400)
    .option('--r <n>', 'VeRA rank', positiveInt, 64)
    .option('--batch-size <n>', 'images per step', positiveInt, 32)
    .option('--lr <x>', 'learning rate of the base training', positiveNumber, 2e-3)
    .option('--vera-lr <x>', 'learning rate of the VeRA vectors', positiveNumber, 2e-2)
    .option('--seed <n>', 'random seed', nonNegativeInt, 0)
    .option('--out <dir>', 'keep the saved adapters in this folder')
    .option('--overwrite', OVERWRITE_HELP)
    .option('--quiet', 'no progress bars')
    .action((opts: Omit<FashionDemoOptions, 'out' | 'quiet'> & { out?: string; quiet?: boolean }) => {
      runFashionDemo({ ...opts, out: opts.out ?? null, quiet: opts.quiet ?? false }, (l) => console.log(l));
    });
}
