import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join, sep } from 'node:path';
import { gzipSync } from 'node:zlib';
import { readIdx, parseIdx } from '../src/data/idx.js';
import {
  loadFashionMnist,
  defaultFashionMnistDir,
  FASHION_MNIST_CLASSES,
} from '../src/data/fashion-mnist.js';
import { VeraError } from '../src/io/errors.js';
import { withTmp } from './helpers.js';

/** Builds an uncompressed ubyte IDX file. */
function encodeIdx(dims: number[], data: ArrayLike<number>): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header[2] = 0x08;
  header[3] = dims.length;
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([header, Buffer.from(Array.from(data))]);
}


/** Asserts fn throws a one-line VeraError whose message names `file` and matches `re`. */
function assertVeraError(fn: () => unknown, file: string, re: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof VeraError, `expected VeraError, got ${String(err)}`);
    assert.ok(err.message.includes(file), `message should name ${file}: ${err.message}`);
    assert.match(err.message, re);
    assert.ok(!err.message.includes('\n'), `message should be one line: ${err.message}`);
    return true;
  });
}

function classCounts(labels: Int32Array): number[] {
  const counts = new Array<number>(10).fill(0);
  for (const l of labels) counts[l]!++;
  return counts;
}

function checkPixels(images: Float32Array): void {
  let min = Infinity;
  let max = -Infinity;
  for (const v of images) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  assert.ok(min >= 0 && max <= 1, `pixels in [0,1], got [${min}, ${max}]`);
  assert.equal(min, 0);
  assert.equal(max, 1);
}

test('defaultFashionMnistDir points at the shipped data', () => {
  const dir = defaultFashionMnistDir();
  assert.ok(dir.endsWith(`data${sep}fashion-mnist`), dir);
  assert.ok(existsSync(join(dir, 'train-images-idx3-ubyte.gz')));
  assert.ok(existsSync(join(dir, 'COPYRIGHT')));
});

test('class names', () => {
  assert.equal(FASHION_MNIST_CLASSES.length, 10);
  assert.equal(FASHION_MNIST_CLASSES[0], 'T-shirt/top');
  assert.equal(FASHION_MNIST_CLASSES[9], 'Ankle boot');
  assert.ok(Object.isFrozen(FASHION_MNIST_CLASSES));
});

test('shipped train subset: 10000 images, 1000 per class', () => {
  const s = loadFashionMnist(defaultFashionMnistDir(), 'train');
  assert.equal(s.count, 10000);
  assert.equal(s.rows, 28);
  assert.equal(s.cols, 28);
  assert.equal(s.images.length, 10000 * 28 * 28);
  assert.equal(s.labels.length, 10000);
  assert.deepEqual(classCounts(s.labels), new Array(10).fill(1000));
  checkPixels(s.images);
  // Original order is kept: the original training set starts with labels 9, 0, 0, 3.
  assert.deepEqual(Array.from(s.labels.subarray(0, 4)), [9, 0, 0, 3]);
});

test('shipped test subset: 2000 images, 200 per class', () => {
  const s = loadFashionMnist(defaultFashionMnistDir(), 'test');
  assert.equal(s.count, 2000);
  assert.equal(s.rows, 28);
  assert.equal(s.cols, 28);
  assert.equal(s.images.length, 2000 * 28 * 28);
  assert.deepEqual(classCounts(s.labels), new Array(10).fill(200));
  checkPixels(s.images);
  // The original test set starts with labels 9, 2, 1, 1.
  assert.deepEqual(Array.from(s.labels.subarray(0, 4)), [9, 2, 1, 1]);
});

test('raw readIdx of the shipped labels', () => {
  const { dims, data } = readIdx(join(defaultFashionMnistDir(), 't10k-labels-idx1-ubyte.gz'));
  assert.deepEqual(dims, [2000]);
  assert.equal(data.length, 2000);
});

test('reads a hand-built tiny uncompressed IDX file', () => {
  withTmp((dir) => {
    const path = join(dir, 'tiny.idx');
    writeFileSync(path, encodeIdx([2, 3], [0, 1, 2, 253, 254, 255]));
    const { dims, data } = readIdx(path);
    assert.deepEqual(dims, [2, 3]);
    assert.ok(data instanceof Uint8Array);
    assert.deepEqual(Array.from(data), [0, 1, 2, 253, 254, 255]);

    // Same content gzipped (file name does not matter: gzip is detected by magic).
    const gzPath = join(dir, 'tiny-gz.idx');
    writeFileSync(gzPath, gzipSync(encodeIdx([2, 3], [0, 1, 2, 253, 254, 255])));
    const gz = readIdx(gzPath);
    assert.deepEqual(gz.dims, [2, 3]);
    assert.deepEqual(Array.from(gz.data), [0, 1, 2, 253, 254, 255]);

    // Zero-length leading dimension is valid.
    const emptyPath = join(dir, 'empty.idx');
    writeFileSync(emptyPath, encodeIdx([0, 28, 28], []));
    assert.deepEqual(readIdx(emptyPath).dims, [0, 28, 28]);
  });
});

test('loadFashionMnist on a hand-built uncompressed split', () => {
  withTmp((dir) => {
    const pixels = Array.from({ length: 3 * 2 * 2 }, (_, i) => (i * 23) % 256);
    writeFileSync(join(dir, 'train-images-idx3-ubyte'), encodeIdx([3, 2, 2], pixels));
    writeFileSync(join(dir, 'train-labels-idx1-ubyte'), encodeIdx([3], [4, 0, 9]));
    const s = loadFashionMnist(dir, 'train');
    assert.equal(s.count, 3);
    assert.equal(s.rows, 2);
    assert.equal(s.cols, 2);
    assert.deepEqual(Array.from(s.labels), [4, 0, 9]);
    s.images.forEach((v, i) => assert.ok(Math.abs(v - pixels[i]! / 255) < 1e-7));
  });
});

test('rejects a file with bad magic', () => {
  withTmp((dir) => {
    const path = join(dir, 'x.idx');
    writeFileSync(path, Buffer.from('PK\x03\x04 definitely not IDX', 'latin1'));
    assertVeraError(() => readIdx(path), path, /not an IDX file \(bad magic 0x504b0304\)/);

    // A gzip stream containing a gzip stream: the inner magic is reported.
    const nested = join(dir, 'nested.gz');
    writeFileSync(nested, gzipSync(gzipSync(encodeIdx([1], [7]))));
    assertVeraError(() => readIdx(nested), nested, /bad magic 0x1f8b0800/);

    const tiny = join(dir, 'tiny.idx');
    writeFileSync(tiny, Buffer.from([0, 0]));
    assertVeraError(() => readIdx(tiny), tiny, /not an IDX file/);

    const float = join(dir, 'float.idx');
    const buf = encodeIdx([1], [0]);
    buf[2] = 0x0d;
    writeFileSync(float, buf);
    assertVeraError(() => readIdx(float), float, /unsupported IDX data type 0x0d/);
  });
});

test('rejects truncated data, header and gzip stream', () => {
  withTmp((dir) => {
    const full = encodeIdx([4, 5], Array.from({ length: 20 }, (_, i) => i));

    const data = join(dir, 'data.idx');
    writeFileSync(data, full.subarray(0, full.length - 3));
    assertVeraError(() => readIdx(data), data, /truncated IDX data \(dims 4x5 need 20 bytes, found 17\)/);

    const trailing = join(dir, 'trailing.idx');
    writeFileSync(trailing, Buffer.concat([full, Buffer.from([1])]));
    assertVeraError(() => readIdx(trailing), trailing, /trailing bytes/);

    const header = join(dir, 'header.idx');
    writeFileSync(header, full.subarray(0, 9));
    assertVeraError(() => readIdx(header), header, /truncated IDX header/);

    const gz = gzipSync(full);
    const gzPath = join(dir, 'cut.gz');
    writeFileSync(gzPath, gz.subarray(0, gz.length - 10));
    assertVeraError(() => readIdx(gzPath), gzPath, /corrupt gzip data/);

    // The shipped labels file, truncated.
    const shipped = readFileSync(join(defaultFashionMnistDir(), 'train-labels-idx1-ubyte.gz'));
    const cut = join(dir, 'train-labels-idx1-ubyte.gz');
    writeFileSync(cut, shipped.subarray(0, shipped.length >> 1));
    assertVeraError(() => readIdx(cut), cut, /corrupt gzip data/);
  });
});

test('missing file is a VeraError naming the file', () => {
  withTmp((dir) => {
    const path = join(dir, 'nope.idx');
    assertVeraError(() => readIdx(path), path, /file not found/);
  });
});

test('parseIdx names the source it was given', () => {
  assertVeraError(() => parseIdx(new Uint8Array([1, 2, 3, 4]), 'mem.bin'), 'mem.bin', /bad magic 0x01020304/);
});

test('loadFashionMnist rejects mismatched image/label counts', () => {
  withTmp((dir) => {
    writeFileSync(join(dir, 't10k-images-idx3-ubyte.gz'), gzipSync(encodeIdx([2, 1, 1], [0, 255])));
    writeFileSync(join(dir, 't10k-labels-idx1-ubyte.gz'), gzipSync(encodeIdx([3], [0, 1, 2])));
    assertVeraError(() => loadFashionMnist(dir, 'test'), dir, /2 images but 3 labels/);

    writeFileSync(join(dir, 't10k-labels-idx1-ubyte.gz'), gzipSync(encodeIdx([2], [0, 10])));
    assertVeraError(() => loadFashionMnist(dir, 'test'), 't10k-labels-idx1-ubyte.gz', /label 10 at index 1/);

    writeFileSync(join(dir, 't10k-images-idx3-ubyte.gz'), gzipSync(encodeIdx([2, 1], [0, 255])));
    assertVeraError(() => loadFashionMnist(dir, 'test'), 't10k-images-idx3-ubyte.gz', /expected 3 dimensions/);
  });
});
