/**
 * Loader for Fashion-MNIST in its standard (gzipped) IDX form, plus the location of the
 * class-balanced subset that ships with the repository in `data/fashion-mnist/`.
 */
import { fs, path, url } from '../io/node.js';
import { VeraError } from '../io/errors.js';
import { readIdx } from './idx.js';

/** Class names, indexed by label. */
export const FASHION_MNIST_CLASSES: readonly string[] = Object.freeze([
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
]);

export interface FashionMnistSplit {
  /** count*rows*cols pixels, row-major per image, scaled to [0, 1]. */
  images: Float32Array;
  /** count labels in [0, 10). */
  labels: Int32Array;
  count: number;
  rows: number;
  cols: number;
}

const FILE_PREFIX = { train: 'train', test: 't10k' } as const;

/**
 * Loads one split from `dir`, which must hold `<prefix>-images-idx3-ubyte.gz` and
 * `<prefix>-labels-idx1-ubyte.gz` (prefix `train` or `t10k`). Uncompressed files with the
 * same names minus `.gz` are used when the gzipped ones are absent.
 */
export function loadFashionMnist(dir: string, split: 'train' | 'test'): FashionMnistSplit {
  const prefix = FILE_PREFIX[split];
  if (prefix === undefined) throw new VeraError(`unknown Fashion-MNIST split '${String(split)}' (expected train or test)`);
  const imagesPath = pick(path.join(dir, `${prefix}-images-idx3-ubyte`));
  const labelsPath = pick(path.join(dir, `${prefix}-labels-idx1-ubyte`));

  const img = readIdx(imagesPath);
  if (img.dims.length !== 3) {
    throw new VeraError(`${imagesPath}: expected 3 dimensions (count x rows x cols), found ${img.dims.length}`);
  }
  const lab = readIdx(labelsPath);
  if (lab.dims.length !== 1) {
    throw new VeraError(`${labelsPath}: expected 1 dimension (count), found ${lab.dims.length}`);
  }
  const [count, rows, cols] = img.dims as [number, number, number];
  if (lab.dims[0] !== count) {
    throw new VeraError(`${dir}: ${split} split has ${count} images but ${lab.dims[0]} labels`);
  }

  const images = new Float32Array(img.data.length);
  const scale = 1 / 255;
  for (let i = 0; i < images.length; i++) images[i] = img.data[i]! * scale;

  const labels = new Int32Array(count);
  const numClasses = FASHION_MNIST_CLASSES.length;
  for (let i = 0; i < count; i++) {
    const l = lab.data[i]!;
    if (l >= numClasses) throw new VeraError(`${labelsPath}: label ${l} at index ${i} is out of range 0..${numClasses - 1}`);
    labels[i] = l;
  }
  return { images, labels, count, rows, cols };
}

/** Prefers `<base>.gz`; falls back to the uncompressed `<base>` if only that exists. */
function pick(base: string): string {
  const gz = `${base}.gz`;
  if (!fs.existsSync(gz) && fs.existsSync(base)) return base;
  return gz;
}

/**
 * The repository's shipped subset, `<package root>/data/fashion-mnist`, where the package
 * root is the nearest ancestor of this module's folder containing `package.json`
 * (works from both `src/data/` and the compiled `dist/src/data/`).
 */
export function defaultFashionMnistDir(): string {
  const start = path.dirname(url.fileURLToPath(import.meta.url));
  let dir = start;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return path.join(dir, 'data', 'fashion-mnist');
    const parent = path.dirname(dir);
    if (parent === dir) throw new VeraError(`cannot locate the package root (no package.json above ${start})`);
    dir = parent;
  }
}
