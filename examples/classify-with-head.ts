// Image classification with VeRA and a trained classifier head: the head is in the adapter's
// `modulesToSave` (trained fully beside the VeRA vectors and saved with the adapter, as PEFT saves
// modules_to_save, and as `vera train --task img-cls` does for a ViT), trained with the Trainer on
// Fashion-MNIST; then the adapter is saved, loaded onto a fresh copy of the base, and its accuracy
// checked against the trained model's.
//
//   node dist/examples/classify-with-head.js [--model DIR] [--train N] [--test N] [--steps N] [--r N] [--out DIR]
//
// --model: a ViT folder (image_size 28, num_channels 1) whose head gets Fashion-MNIST's 10 labels.
// Without it a tiny ViT (2 layers, hidden 32, 7×7 patches) is built from a config in memory and saved
// to a temporary folder; it stands for a pretrained base (its weights are random, so the head and the
// adapter do all the learning). --out: where the adapter goes (default: a temporary folder).
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  AutoModelForImageClassification, F, FASHION_MNIST_CLASSES, PeftModel, SafetensorsFile, Tensor, Trainer, getPeftModel,
  loadFashionMnist, manualSeed, modelConfigJson, noGrad, savePretrained, veraConfig,
  type ImageClassificationModel,
} from 'vera';

const { values: args } = parseArgs({
  options: {
    model: { type: 'string' },
    data: { type: 'string', default: fileURLToPath(new URL('../../data/fashion-mnist', import.meta.url)) },
    train: { type: 'string', default: '2000' },
    test: { type: 'string', default: '500' },
    steps: { type: 'string', default: '150' },
    'batch-size': { type: 'string', default: '32' },
    'eval-every': { type: 'string', default: '50' },
    r: { type: 'string', default: '64' },
    lr: { type: 'string', default: '1e-2' },
    out: { type: 'string' },
  },
});

/** One image and its class. */
interface Row { pixels: Float32Array; label: number }
interface Batch { pixels: Tensor; labels: Int32Array }

/** The first `n` images of a Fashion-MNIST split, pixels in [0, 1]. */
function rows(split: 'train' | 'test', n: number): Row[] {
  const set = loadFashionMnist(args.data, split);
  const px = set.rows * set.cols;
  return Array.from({ length: Math.min(n, set.count) }, (_, i) => ({ pixels: set.images.slice(i * px, (i + 1) * px), label: set.labels[i] }));
}

/** Images (N, 1, 28, 28) and their labels. */
function collate(batch: readonly Row[]): Batch {
  const x = new Float32Array(batch.length * 28 * 28);
  batch.forEach((r, i) => x.set(r.pixels, i * 28 * 28));
  return { pixels: Tensor.fromArray(x, [batch.length, 1, 28, 28]), labels: Int32Array.from(batch, (r) => r.label) };
}

/** Accuracy and mean loss of `model` on `data`, 100 images at a time. */
function evaluate(model: ImageClassificationModel, data: readonly Row[]): { accuracy: number; loss: number } {
  let hits = 0;
  let loss = 0;
  noGrad(() => {
    for (let i = 0; i < data.length; i += 100) {
      const b = collate(data.slice(i, i + 100));
      const logits = model.forward(b.pixels);
      loss += F.crossEntropy(logits, b.labels).item() * b.labels.length;
      F.argmax(logits).forEach((p, k) => (hits += p === b.labels[k] ? 1 : 0));
    }
  });
  return { accuracy: hits / data.length, loss: loss / data.length };
}

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
const tempDir = mkdtempSync(join(tmpdir(), 'vera-example-'));
try {
  // 1. the base: a ViT folder, its head sized for Fashion-MNIST's labels
  const labels = [...FASHION_MNIST_CLASSES];
  let baseDir = args.model;
  if (baseDir === undefined) {
    baseDir = join(tempDir, 'tiny-vit');
    const config = {
      model_type: 'vit', hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 64,
      image_size: 28, patch_size: 7, num_channels: 1,
    };
    manualSeed(0);
    const built = AutoModelForImageClassification.fromConfig(config, { labels });
    savePretrained(baseDir, built, modelConfigJson(built));
  }
  const model = AutoModelForImageClassification.fromPretrained(baseDir, { labels });
  const trainRows = rows('train', Number(args.train));
  const testRows = rows('test', Number(args.test));
  console.log(`base: ${baseDir} (${model.modelType}); ${trainRows.length} training images, ${testRows.length} test images`);
  console.log(`before training: test accuracy ${pct(evaluate(model, testRows).accuracy)}`);

  // 2. VeRA on the attention's query and value; the classifier head trains whole and is saved with the adapter
  const peft = getPeftModel(model, veraConfig({ r: Number(args.r), targetModules: ['query', 'value'], modulesToSave: ['classifier'] }));
  peft.printTrainableParameters();

  // 3. the Trainer: rows, a collator, a loss; accuracy on the test images every --eval-every steps
  const trainer = new Trainer({
    model: peft,
    trainDataset: trainRows,
    evalDataset: testRows,
    collator: collate,
    loss: (m, batch) => ({ loss: F.crossEntropy(m.forward(batch.pixels), batch.labels), items: batch.labels.length }),
    computeMetrics: (m, data) => evaluate(m, data),
    args: { steps: Number(args.steps), batchSize: Number(args['batch-size']), lr: Number(args.lr), evalEvery: Number(args['eval-every']), seed: 0, progress: false },
    callbacks: { onEval: (metrics, step) => console.log(`step ${step}: test accuracy ${pct(metrics['eval_accuracy'] ?? NaN)}, loss ${(metrics['eval_loss'] ?? NaN).toFixed(4)}`) },
  });
  const log = await trainer.train();
  const trained = evaluate(model, testRows);
  console.log(`trained ${log.steps} steps: test accuracy ${pct(trained.accuracy)} (${trained.accuracy})`);

  // 4. save, in PEFT's layout: the VeRA vectors and the head (saved under the module's own name,
  // base_model.model.classifier.*, as PEFT saves modules_to_save)
  const adapterDir = args.out ?? join(tempDir, 'adapter');
  peft.saveAdapter(adapterDir);
  const keys = SafetensorsFile.open(join(adapterDir, 'adapter_model.safetensors')).keys();
  const headKeys = keys.filter((k) => k.includes('classifier'));
  const sizes = readdirSync(adapterDir).sort().map((f) => `${f} (${statSync(join(adapterDir, f)).size.toLocaleString('en-US')} B)`);
  console.log(`adapter: ${adapterDir}: ${sizes.join(', ')}`);
  console.log(`head tensors in the adapter: ${headKeys.join(', ')}`);

  // 5. a fresh base from its folder, the adapter (and head) on it: the same accuracy
  const reloaded = PeftModel.fromPretrained(AutoModelForImageClassification.fromPretrained(baseDir, { labels }), adapterDir);
  const again = evaluate(reloaded.model, testRows);
  const same = again.accuracy === trained.accuracy;
  console.log(`reloaded on a fresh base: test accuracy ${pct(again.accuracy)} (${again.accuracy}); equal: ${same ? 'yes' : 'NO'}`);
  if (!same || headKeys.length === 0) process.exitCode = 1;
} finally {
  rmSync(tempDir, { recursive: true, force: true });
}
