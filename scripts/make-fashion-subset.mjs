#!/usr/bin/env node
// Builds the small Fashion-MNIST subset shipped in data/fashion-mnist/.
//
// Takes the first PER_CLASS_TRAIN training images of each class and the first
// PER_CLASS_TEST test images of each class (original order kept among the chosen
// ones) and writes them as standard gzipped IDX files.
//
// Usage: node scripts/make-fashion-subset.mjs [sourceDir] [outDir]
//   sourceDir defaults to /work/shared/datasets/fashion-mnist
//   outDir    defaults to <repo>/data/fashion-mnist
//
// Uses only node:fs, node:path, node:url and node:zlib.
import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';

const PER_CLASS_TRAIN = 1000;
const PER_CLASS_TEST = 200;
const NUM_CLASSES = 10;

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const srcDir = resolve(process.argv[2] ?? '/work/shared/datasets/fashion-mnist');
const outDir = resolve(process.argv[3] ?? join(repoRoot, 'data', 'fashion-mnist'));

function fail(msg) {
  console.error(`make-fashion-subset: ${msg}`);
  process.exit(1);
}

/** Reads a (possibly gzipped) ubyte IDX file; returns { dims, data }. */
function readIdx(path) {
  let buf = readFileSync(path);
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) buf = gunzipSync(buf);
  if (buf.length < 4 || buf[0] !== 0 || buf[1] !== 0 || buf[2] !== 0x08) {
    fail(`${path}: not a ubyte IDX file`);
  }
  const ndim = buf[3];
  const dims = [];
  for (let i = 0; i < ndim; i++) dims.push(buf.readUInt32BE(4 + 4 * i));
  const offset = 4 + 4 * ndim;
  const expected = dims.reduce((a, b) => a * b, 1);
  if (buf.length - offset !== expected) {
    fail(`${path}: expected ${expected} data bytes, found ${buf.length - offset}`);
  }
  return { dims, data: buf.subarray(offset) };
}

/** Encodes a ubyte IDX file (uncompressed). */
function encodeIdx(dims, data) {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header[2] = 0x08;
  header[3] = dims.length;
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([header, Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

function subset(prefix, perClass) {
  const images = readIdx(join(srcDir, `${prefix}-images-idx3-ubyte.gz`));
  const labels = readIdx(join(srcDir, `${prefix}-labels-idx1-ubyte.gz`));
  const [n, rows, cols] = images.dims;
  if (images.dims.length !== 3 || labels.dims.length !== 1 || labels.dims[0] !== n) {
    fail(`${prefix}: image/label dimensions disagree (${images.dims} vs ${labels.dims})`);
  }
  const pixels = rows * cols;
  const taken = new Array(NUM_CLASSES).fill(0);
  const chosen = [];
  for (let i = 0; i < n && chosen.length < perClass * NUM_CLASSES; i++) {
    const c = labels.data[i];
    if (c >= NUM_CLASSES) fail(`${prefix}: label ${c} out of range at index ${i}`);
    if (taken[c] < perClass) {
      taken[c]++;
      chosen.push(i);
    }
  }
  if (chosen.length !== perClass * NUM_CLASSES) {
    fail(`${prefix}: only ${chosen.length} images found (per class: ${taken.join(',')})`);
  }
  const outImages = new Uint8Array(chosen.length * pixels);
  const outLabels = new Uint8Array(chosen.length);
  chosen.forEach((src, dst) => {
    outImages.set(images.data.subarray(src * pixels, (src + 1) * pixels), dst * pixels);
    outLabels[dst] = labels.data[src];
  });
  const write = (name, dims, data) => {
    const path = join(outDir, name);
    const gz = gzipSync(encodeIdx(dims, data), { level: 9 });
    writeFileSync(path, gz);
    console.log(`wrote ${path} (${gz.length} bytes)`);
  };
  write(`${prefix}-images-idx3-ubyte.gz`, [chosen.length, rows, cols], outImages);
  write(`${prefix}-labels-idx1-ubyte.gz`, [chosen.length], outLabels);
}

if (!existsSync(srcDir)) fail(`source directory ${srcDir} does not exist`);
mkdirSync(outDir, { recursive: true });
subset('train', PER_CLASS_TRAIN);
subset('t10k', PER_CLASS_TEST);
// Write the contents (not copyFileSync) so a read-only source mode is not copied.
writeFileSync(join(outDir, 'COPYRIGHT'), readFileSync(join(srcDir, 'COPYRIGHT')));
console.log(`copied COPYRIGHT to ${outDir}`);
