// The image-classification task: vera_cnn / vera_mlp / ViT on IDX images (Fashion-MNIST);
// evaluation: loss and accuracy.
import { fs } from '../../io/node.js';
import { loadFashionMnist } from '../../data/fashion-mnist.js';
import { readIdx } from '../../data/idx.js';
import { sequentialBatches } from '../../data/jsonl.js';
import { fail } from '../../io/errors.js';
import { loadPretrained, type CNN, type MLP, type ViTForImageClassification } from '../../models/index.js';
import { labelSmoothedCrossEntropy } from '../../nn/index.js';
import { F, Tensor } from '../../tensor/index.js';
import { inEvalMode, type PreparedTask, type TaskOptions } from './common.js';


export interface ImageSet {
  /** count·channels·rows·cols in [0, 1]. */
  images: Float32Array;
  labels: Int32Array;
  count: number;
  rows: number;
  cols: number;
  source: string;
}

/**
 * `fashion-mnist:DIR` (the train split, or for evaluation the t10k test split, of the standard
 * gzipped IDX files) or `IMAGES,LABELS` (two IDX files, gzipped or not).
 */
export function readImages(spec: string, split: 'train' | 'test', flag: string): ImageSet {
  if (spec.startsWith('fashion-mnist:')) {
    const dir = spec.slice('fashion-mnist:'.length);
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) fail(`${flag} ${spec}: ${dir} is not a folder`);
    const s = loadFashionMnist(dir, split);
    return { ...s, source: `${dir} (${split} split)` };
  }
  const parts = spec.split(',');
  if (parts.length !== 2) fail(`${flag} ${spec}: expected fashion-mnist:DIR or IMAGES,LABELS (two IDX files)`);
  const [imagesFile, labelsFile] = parts;
  const img = readIdx(imagesFile);
  if (img.dims.length !== 3) fail(`${imagesFile}: expected 3 dimensions (count x rows x cols), found ${img.dims.length}`);
  const lab = readIdx(labelsFile);
  if (lab.dims.length !== 1) fail(`${labelsFile}: expected 1 dimension (count), found ${lab.dims.length}`);
  const [count, rows, cols] = img.dims;
  if (lab.dims[0] !== count) fail(`${labelsFile}: ${lab.dims[0]} labels for the ${count} images of ${imagesFile}`);
  const images = Float32Array.from(img.data, (v) => v / 255);
  return { images, labels: Int32Array.from(lab.data), count, rows, cols, source: spec };
}

type ImageModel = CNN | MLP | ViTForImageClassification;

export async function prepareImgCls(o: TaskOptions): Promise<PreparedTask> {
  const loaded = loadPretrained(o.model, { log: o.log });
  if (loaded.modelType !== 'vera_cnn' && loaded.modelType !== 'vera_mlp' && loaded.modelType !== 'vit') {
    const hint = loaded.modelType === 'gpt2' ? 'causal-lm' : 'seq-cls';
    fail(`${o.model}: model_type "${loaded.modelType}" is not an image classifier; --task img-cls trains vera_cnn, vera_mlp or vit (use --task ${hint})`);
  }
  const model: ImageModel = loaded.model;
  const numClasses = model.modelType === 'vit' ? model.config.numLabels : model.config.numClasses;
  if (o.seqLen !== undefined) fail('--seq-len is for text tasks, not --task img-cls');

  const train = readImages(o.data, 'train', '--data');
  const evalSet = o.evalData !== undefined ? readImages(o.evalData, 'test', '--eval-data') : null;
  for (const set of [train, evalSet]) {
    if (!set) continue;
    const bad = set.labels.findIndex((l) => l < 0 || l >= numClasses);
    if (bad >= 0) fail(`${set.source}: label ${set.labels[bad]} of image ${bad} is outside the model's ${numClasses} classes`);
    if (model.modelType === 'vera_cnn' && (set.rows !== 28 || set.cols !== 28)) fail(`${set.source}: images are ${set.rows}x${set.cols}; vera_cnn takes 28x28`);
    if (model.modelType === 'vera_mlp' && set.rows * set.cols !== model.config.inputSize) fail(`${set.source}: images have ${set.rows * set.cols} pixels; the MLP's input_size is ${model.config.inputSize}`);
    if (model.modelType === 'vit' && (set.rows !== model.config.imageSize || set.cols !== model.config.imageSize)) {
      fail(`${set.source}: images are ${set.rows}x${set.cols}; the ViT's image_size is ${model.config.imageSize} (images are not resized)`);
    }
  }

  /** The model's input for images `indices` of `set`: (N, 1, H, W), (N, H·W), or (N, C, H, W) with the grey channel repeated for ViT. */
  const input = (set: ImageSet, indices: readonly number[]): Tensor => {
    const px = set.rows * set.cols;
    const channels = model.modelType === 'vit' ? model.config.numChannels : 1;
    const x = new Float32Array(indices.length * channels * px);
    indices.forEach((idx, n) => {
      const image = set.images.subarray(idx * px, (idx + 1) * px);
      for (let ch = 0; ch < channels; ch++) x.set(image, (n * channels + ch) * px);
    });
    return model.modelType === 'vera_mlp' ? Tensor.fromArray(x, [indices.length, px]) : Tensor.fromArray(x, [indices.length, channels, set.rows, set.cols]);
  };
  const lossOf = (logits: Tensor, labels: Int32Array): Tensor => (model.modelType === 'vit' ? model.loss(logits, labels) : F.crossEntropy(logits, labels));

  const evaluate = (set: ImageSet) => (): Record<string, number> =>
    inEvalMode(model, () => {
      let lossSum = 0;
      let hits = 0;
      const all = Array.from({ length: set.count }, (_, i) => i);
      for (const idx of sequentialBatches(all, o.batchSize)) {
        const logits = model.forward(input(set, idx));
        const labels = Int32Array.from(idx, (i) => set.labels[i]);
        lossSum += lossOf(logits, labels).item() * idx.length;
        const predicted = F.argmax(logits);
        idx.forEach((_, n) => (hits += predicted[n] === labels[n] ? 1 : 0));
      }
      return { loss: lossSum / set.count, accuracy: hits / set.count };
    });

  const dataLog = (s: ImageSet): Record<string, unknown> => ({ source: s.source, format: 'idx', images: s.count, rows: s.rows, cols: s.cols });
  return {
    model,
    peftTaskType: null,
    headModules: model.modelType === 'vit' ? ['classifier'] : [],
    size: train.count,
    unit: 'samples',
    loss(indices) {
      const logits = model.forward(input(train, indices));
      const labels = Int32Array.from(indices, (i) => train.labels[i]);
      return { loss: o.labelSmoothing ? labelSmoothedCrossEntropy(logits, labels, o.labelSmoothing) : lossOf(logits, labels), items: indices.length };
    },
    evaluate: evalSet ? evaluate(evalSet) : null,
    seqLen: null,
    pretrained: null,
    packed: false,
    counts: { examples: train.count, skipped: 0, truncated: 0, evalExamples: evalSet?.count ?? null },
    dataLog: dataLog(train),
    evalDataLog: evalSet ? dataLog(evalSet) : null,
  };
}
