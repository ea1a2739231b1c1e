import { test, describe, mock } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { syncBuiltinESMExports } from 'node:module';

import { VeraError } from '../src/io/errors.js';
import { writeFileAtomic, writeDirAtomic, readJsonFile } from '../src/io/atomic.js';
import {
  SafetensorsFile,
  serializeSafetensors,
  writeSafetensors,
  loadCheckpointTensors,
  float16ToFloat32,
  float32ToFloat16Bits,
  bfloat16ToFloat32,
  float32ToBfloat16Bits,
} from '../src/io/safetensors.js';

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'vera-st-'));
}

function withTmp(fn: (dir: string) => void): void {
  const dir = tmpDir();
  try {
    fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Asserts fn throws a one-line VeraError naming `file` and matching `re`. */
function assertVeraError(fn: () => unknown, file: string, re: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof VeraError, `expected VeraError, got ${String(err)}`);
    assert.ok(err.message.includes(file), `message should name ${file}: ${err.message}`);
    assert.match(err.message, re);
    assert.ok(!err.message.includes('\n'), 'message must be one line');
    return true;
  });
}

/** Temporarily replaces an fs function (seen by ESM named imports too). */
function withFsMock<K extends 'fsyncSync' | 'renameSync'>(
  name: K,
  impl: (...args: Parameters<(typeof fs)[K]>) => ReturnType<(typeof fs)[K]>,
  fn: () => void,
): void {
  const m = mock.method(fs, name, impl as never);
  syncBuiltinESMExports();
  try {
    fn();
  } finally {
    m.mock.restore();
    syncBuiltinESMExports();
  }
}

const f32 = (x: number): number => Math.fround(x);

describe('float16 conversion', () => {
  test('known bit patterns encode exactly', () => {
    const cases: [number, number][] = [
      [1.0, 0x3c00],
      [-2.0, 0xc000],
      [65504, 0x7bff],
      [2 ** -24, 0x0001],
      [1023 * 2 ** -24, 0x03ff],
      [2 ** -14, 0x0400],
      [0, 0x0000],
      [-0, 0x8000],
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
      [65519, 0x7bff], // just below the overflow threshold
      [65520, 0x7c00], // halfway to 65536: ties to even = inf
      [1e6, 0x7c00],
      [-1e6, 0xfc00],
      [1 + 2 ** -11, 0x3c00], // tie between 0x3C00 and 0x3C01 -> even
      [1 + 3 * 2 ** -11, 0x3c02], // tie between 0x3C01 and 0x3C02 -> even
      [f32(1 + 2 ** -11 + 2 ** -20), 0x3c01], // just above a tie rounds up
      [2 ** -25, 0x0000], // subnormal tie -> even (zero)
      [-(2 ** -25), 0x8000],
      [3 * 2 ** -25, 0x0002], // subnormal tie between 1 and 2 -> 2
      [f32(2 ** -25 * 1.0001), 0x0001],
      [2 ** -30, 0x0000],
      [2047 * 2 ** -25, 0x0400], // rounds up out of the subnormal range
    ];
    for (const [x, bits] of cases) {
      assert.equal(float32ToFloat16Bits(x), bits, `encode ${x}`);
    }
    const nan = float32ToFloat16Bits(NaN);
    assert.equal(nan & 0x7c00, 0x7c00);
    assert.notEqual(nan & 0x3ff, 0);
  });

  test('known bit patterns decode exactly', () => {
    assert.equal(float16ToFloat32(0x3c00), 1);
    assert.equal(float16ToFloat32(0x7bff), 65504);
    assert.equal(float16ToFloat32(0x0001), 2 ** -24);
    assert.equal(float16ToFloat32(0x03ff), 1023 * 2 ** -24);
    assert.equal(float16ToFloat32(0x0400), 2 ** -14);
    assert.equal(float16ToFloat32(0xc000), -2);
    assert.equal(float16ToFloat32(0x7c00), Infinity);
    assert.equal(float16ToFloat32(0xfc00), -Infinity);
    assert.ok(Object.is(float16ToFloat32(0x8000), -0));
    assert.ok(Number.isNaN(float16ToFloat32(0x7e00)));
    assert.ok(Number.isNaN(float16ToFloat32(0xfc01)));
  });

  test('every float16 value survives decode+encode', () => {
    for (let h = 0; h < 65536; h++) {
      const x = float16ToFloat32(h);
      if (Number.isNaN(x)) assert.ok(Number.isNaN(float16ToFloat32(float32ToFloat16Bits(x))));
      else assert.equal(float32ToFloat16Bits(x), h, `bits 0x${h.toString(16)}`);
    }
  });

  test('encoding matches a brute-force nearest-even reference', () => {
    // Positive finite f16 values in increasing order; 65536 stands in for inf.
    const vals = new Float64Array(0x7c01);
    for (let h = 0; h < 0x7c00; h++) vals[h] = float16ToFloat32(h);
    vals[0x7c00] = 65536;
    const ref = (x: number): number => {
      let lo = 0;
      let hi = 0x7c00;
      if (x >= 65536) return 0x7c00;
      while (hi - lo > 1) {
        const mid = (lo + hi) >> 1;
        if (vals[mid]! <= x) lo = mid;
        else hi = mid;
      }
      const dl = x - vals[lo]!;
      const dh = vals[hi]! - x;
      if (dl < dh) return lo;
      if (dh < dl) return hi;
      return lo % 2 === 0 ? lo : hi;
    };
    const u32 = new Uint32Array(1);
    const fl = new Float32Array(u32.buffer);
    let seed = 12345;
    for (let i = 0; i < 200_000; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      // Exponents 90..150 cover underflow, subnormals, normals and overflow.
      const exp = 90 + (seed % 61);
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      u32[0] = (exp << 23) | (seed & 0x7fffff);
      const x = fl[0]!;
      assert.equal(float32ToFloat16Bits(x), ref(x), `x=${x}`);
      assert.equal(float32ToFloat16Bits(-x), ref(x) | 0x8000, `x=${-x}`);
    }
  });
});

describe('bfloat16 conversion', () => {
  test('known values', () => {
    assert.equal(float32ToBfloat16Bits(1), 0x3f80);
    assert.equal(float32ToBfloat16Bits(-2), 0xc000);
    assert.equal(float32ToBfloat16Bits(-0), 0x8000);
    assert.equal(float32ToBfloat16Bits(Infinity), 0x7f80);
    assert.equal(float32ToBfloat16Bits(1 + 2 ** -8), 0x3f80); // tie -> even
    assert.equal(float32ToBfloat16Bits(1 + 3 * 2 ** -8), 0x3f82); // tie -> even
    assert.equal(float32ToBfloat16Bits(f32(1 + 2 ** -8 + 2 ** -20)), 0x3f81);
    assert.equal(float32ToBfloat16Bits(3.4028234663852886e38), 0x7f80); // FLT_MAX overflows
    assert.ok(Number.isNaN(bfloat16ToFloat32(float32ToBfloat16Bits(NaN))));
    assert.equal(bfloat16ToFloat32(0x4049), 3.140625);
    assert.equal(bfloat16ToFloat32(0x0001), 2 ** -133);
    assert.ok(Object.is(bfloat16ToFloat32(0x8000), -0));
    for (let h = 0; h < 65536; h++) {
      const x = bfloat16ToFloat32(h);
      if (!Number.isNaN(x)) assert.equal(float32ToBfloat16Bits(x), h);
    }
  });
});

describe('safetensors round trip', () => {
  const tensors = {
    scalar: { data: new Float32Array([3.5]), shape: [] },
    empty: { data: new Float32Array(0), shape: [0, 4] },
    'layers.0.w': { data: new Float32Array([1, -2, 3.25, 0.1, -0, 1e-8]), shape: [2, 3] },
    half: { data: new Float32Array([1, 0.1, 65504, 1e-7, -3, 70000]), shape: [6], dtype: 'F16' as const },
    halfScalar: { data: new Float32Array([0.333]), shape: [], dtype: 'F16' as const },
    brain: { data: new Float32Array([1, 3.14159, -1e30, 1e-40]), shape: [2, 2], dtype: 'BF16' as const },
    emptyHalf: { data: new Float32Array(0), shape: [3, 0], dtype: 'F16' as const },
    '0': { data: new Float32Array([7]), shape: [1, 1] },
  };

  function expected(name: keyof typeof tensors): Float32Array {
    const t = tensors[name];
    const dtype = 'dtype' in t ? t.dtype : 'F32';
    if (dtype === 'F16') return t.data.map((v) => float16ToFloat32(float32ToFloat16Bits(v)));
    if (dtype === 'BF16') return t.data.map((v) => bfloat16ToFloat32(float32ToBfloat16Bits(v)));
    return t.data;
  }

  function check(st: SafetensorsFile): void {
    assert.deepEqual(st.keys().sort(), Object.keys(tensors).sort());
    assert.deepEqual(st.metadata, { format: 'pt', note: 'héllo' });
    for (const name of Object.keys(tensors) as (keyof typeof tensors)[]) {
      const t = tensors[name];
      const info = st.info(name);
      assert.deepEqual(info.shape, t.shape, name);
      assert.equal(info.dtype, 'dtype' in t ? t.dtype : 'F32');
      const got = st.getFloat32(name);
      assert.deepEqual(Array.from(got), Array.from(expected(name)), name);
    }
  }

  test('in memory, with aligned header and layout', () => {
    const bytes = serializeSafetensors(tensors, { format: 'pt', note: 'héllo' });
    const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    assert.equal(n % 8, 0, 'header padded to 8 bytes');
    const st = SafetensorsFile.fromBytes(bytes, 'mem.safetensors');
    check(st);
    // Larger elements first, so every tensor is aligned to its element size.
    const header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + n)).toString('utf8')) as Record<
      string,
      { dtype: string; data_offsets: [number, number] }
    >;
    for (const [name, e] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      assert.equal(e.data_offsets[0] % (e.dtype === 'F32' ? 4 : 2), 0, name);
    }
    assert.ok(Object.is(st.getFloat32('layers.0.w')[4], -0));
    assert.equal(st.getFloat32('half')[5], Infinity);
  });

  test('through a file', () => {
    withTmp((dir) => {
      const file = path.join(dir, 'sub', 'adapter.safetensors');
      writeSafetensors(file, tensors, { format: 'pt', note: 'héllo' });
      assert.deepEqual(fs.readdirSync(path.dirname(file)), ['adapter.safetensors']);
      check(SafetensorsFile.open(file));
    });
  });

  test('no metadata gives null; returned arrays are independent copies', () => {
    const bytes = serializeSafetensors({ a: { data: new Float32Array([1, 2]), shape: [2] } });
    const st = SafetensorsFile.fromBytes(bytes, 'x');
    assert.equal(st.metadata, null);
    st.getFloat32('a')[0] = 99;
    assert.equal(st.getFloat32('a')[0], 1);
  });

  test('writer rejects mismatched shapes', () => {
    assertVeraError(
      () => serializeSafetensors({ w: { data: new Float32Array(5), shape: [2, 3] } }),
      '"w"',
      /shape \[2, 3\] has 6 elements but data has 5/,
    );
    assertVeraError(() => serializeSafetensors({ w: { data: new Float32Array(1), shape: [-1] } }), '"w"', /shape/);
  });

  test('a 4M-element F16 tensor converts quickly', () => {
    const n = 1 << 22;
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = Math.sin(i) * 100;
    const bytes = serializeSafetensors({ big: { data, shape: [n], dtype: 'F16' } });
    const t0 = performance.now();
    const got = SafetensorsFile.fromBytes(bytes, 'big').getFloat32('big');
    const ms = performance.now() - t0;
    assert.equal(got.length, n);
    assert.equal(got[12345], float16ToFloat32(float32ToFloat16Bits(data[12345]!)));
    assert.ok(ms < 2000, `decode took ${ms} ms`);
  });
});

/** Builds a safetensors image byte by byte, independent of the writer. */
function handBuilt(header: string, data: number[]): Uint8Array {
  const h = [...header].map((c) => {
    const code = c.charCodeAt(0);
    assert.ok(code < 128);
    return code;
  });
  const n = h.length;
  const prefix = [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff, 0, 0, 0, 0];
  return Uint8Array.from([...prefix, ...h, ...data]);
}

describe('hand-built safetensors', () => {
  const header =
    '{"__metadata__":{"format":"pt"},' +
    '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' +
    '"b":{"dtype":"F16","shape":[],"data_offsets":[8,10]},' +
    '"c":{"dtype":"BF16","shape":[1,1],"data_offsets":[10,12]},' +
    '"d":{"dtype":"I32","shape":[1],"data_offsets":[12,16]},' +
    '"e":{"dtype":"F64","shape":[1],"data_offsets":[16,24]},' +
    '"f":{"dtype":"F16","shape":[2],"data_offsets":[24,28]},' +
    '"z":{"dtype":"F32","shape":[0],"data_offsets":[28,28]}}';
  const data = [
    0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0, // a: 1.0, -2.5
    0x00, 0x3c, // b: 1.0 as f16
    0x49, 0x40, // c: 3.140625 as bf16
    0x07, 0x00, 0x00, 0x00, // d: 7
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0, 0x3f, // e: 0.5
    0x01, 0x00, 0x00, 0xfc, // f: 2^-24, -inf
  ];

  function check(st: SafetensorsFile): void {
    assert.deepEqual(st.keys(), ['a', 'b', 'c', 'd', 'e', 'f', 'z']);
    assert.deepEqual(st.metadata, { format: 'pt' });
    assert.deepEqual(Array.from(st.getFloat32('a')), [1, -2.5]);
    assert.deepEqual(Array.from(st.getFloat32('b')), [1]);
    assert.deepEqual(st.info('b'), { dtype: 'F16', shape: [], byteLength: 2 });
    assert.deepEqual(Array.from(st.getFloat32('c')), [3.140625]);
    assert.deepEqual(Array.from(st.getFloat32('d')), [7]);
    assert.deepEqual(Array.from(st.getFloat32('e')), [0.5]);
    assert.deepEqual(Array.from(st.getFloat32('f')), [2 ** -24, -Infinity]);
    assert.deepEqual(Array.from(st.getFloat32('z')), []);
    assert.deepEqual(Array.from(st.getRaw('b')), [0x00, 0x3c]);
    assert.ok(st.has('a') && !st.has('q'));
    assertVeraError(() => st.getFloat32('q'), st.name, /no tensor named "q"/);
  }

  test('odd-length header (unaligned data section)', () => {
    // Trailing spaces are legal; an odd length misaligns every tensor.
    const odd = header.length % 2 === 1 ? header : header + ' ';
    check(SafetensorsFile.fromBytes(handBuilt(odd, data), 'hand.safetensors'));
  });

  test('space-padded header, read from disk', () => {
    withTmp((dir) => {
      const padded = header + ' '.repeat(8 - (header.length % 8));
      const file = path.join(dir, 'hand.safetensors');
      fs.writeFileSync(file, handBuilt(padded, data));
      check(SafetensorsFile.open(file));
    });
  });

  test('data section inside a larger, offset buffer', () => {
    const inner = handBuilt(header, data);
    const outer = new Uint8Array(inner.length + 3);
    outer.set(inner, 3);
    check(SafetensorsFile.fromBytes(outer.subarray(3), 'sliced'));
  });
});

describe('corrupted safetensors', () => {
  const name = 'broken.safetensors';
  const entry = (dtype: string, shape: unknown, offsets: unknown): string =>
    JSON.stringify({ dtype, shape, data_offsets: offsets });
  const bad = (header: string, dataLen: number): Uint8Array => handBuilt(header, new Array<number>(dataLen).fill(0));
  const cases: [string, () => Uint8Array, RegExp][] = [
    ['too short', () => new Uint8Array([1, 0, 0]), /too short/],
    [
      'header longer than file',
      () => Uint8Array.from([200, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0x7d]),
      /header length 200 exceeds the file size/,
    ],
    ['absurd header length', () => Uint8Array.from([0, 0, 0, 0, 1, 0, 0, 0, 0x7b, 0x7d]), /too large/],
    ['not JSON', () => bad('{"a":', 0), /not valid JSON/],
    ['not an object', () => bad('[1,2]', 0), /must be a JSON object/],
    ['bad UTF-8', () => Uint8Array.from([3, 0, 0, 0, 0, 0, 0, 0, 0x22, 0xff, 0x22]), /UTF-8/],
    ['entry not an object', () => bad('{"t":5}', 0), /"t".*must be an object/],
    ['unknown dtype', () => bad(`{"t":${entry('Q7', [1], [0, 4])}}`, 4), /"t".*dtype "Q7"/],
    ['missing dtype', () => bad('{"t":{"shape":[1],"data_offsets":[0,4]}}', 4), /"t".*dtype missing/],
    ['negative shape', () => bad(`{"t":${entry('F32', [-1], [0, 4])}}`, 4), /"t".*shape/],
    ['fractional shape', () => bad(`{"t":${entry('F32', [1.5], [0, 4])}}`, 4), /"t".*shape/],
    ['shape not array', () => bad(`{"t":${entry('F32', 4, [0, 4])}}`, 4), /"t".*shape/],
    ['offsets wrong arity', () => bad(`{"t":${entry('F32', [1], [0, 4, 8])}}`, 4), /"t".*data_offsets/],
    ['offsets not ints', () => bad(`{"t":${entry('F32', [1], [0, '4'])}}`, 4), /"t".*data_offsets/],
    ['begin > end', () => bad(`{"t":${entry('F32', [0], [4, 0])}}`, 4), /"t".*begin > end/],
    ['end beyond data', () => bad(`{"t":${entry('F32', [2], [0, 8])}}`, 4), /"t".*beyond the data section/],
    [
      'length mismatch',
      () => bad(`{"t":${entry('F32', [3], [0, 8])}}`, 8),
      /"t".*byte length 8 does not match shape \[3\]/,
    ],
    [
      'absurd shape',
      () => bad(`{"t":${entry('F32', [1e9, 1e9, 1e9], [0, 8])}}`, 8),
      /"t".*does not match shape/,
    ],
    [
      'overlap',
      () => bad(`{"a":${entry('F32', [2], [0, 8])},"b":${entry('F32', [1], [4, 8])}}`, 8),
      /overlap/,
    ],
    [
      'gap',
      () => bad(`{"a":${entry('F32', [1], [0, 4])},"b":${entry('F32', [1], [8, 12])}}`, 12),
      /gap of 4 unindexed bytes.*"b"/,
    ],
    ['trailing bytes', () => bad(`{"a":${entry('F32', [1], [0, 4])}}`, 6), /2 trailing unindexed bytes/],
    ['metadata value not string', () => bad('{"__metadata__":{"k":1}}', 0), /__metadata__.*"k".*string/],
    ['metadata not object', () => bad('{"__metadata__":[1]}', 0), /__metadata__ must be an object/],
  ];

  for (const [label, make, re] of cases) {
    test(label, () => {
      assertVeraError(() => SafetensorsFile.fromBytes(make(), name), name, re);
    });
  }

  test('same checks apply to files on disk', () => {
    withTmp((dir) => {
      for (const [label, make, re] of cases) {
        const file = path.join(dir, `case.safetensors`);
        fs.writeFileSync(file, make());
        assert.doesNotThrow(() => assertVeraError(() => SafetensorsFile.open(file), file, re), label);
      }
      assertVeraError(() => SafetensorsFile.open(path.join(dir, 'nope.safetensors')), 'nope.safetensors', /ENOENT/);
    });
  });

  test('a file replaced after open is detected', () => {
    withTmp((dir) => {
      const file = path.join(dir, 'w.safetensors');
      writeSafetensors(file, { a: { data: new Float32Array([1]), shape: [1] } });
      const st = SafetensorsFile.open(file);
      writeSafetensors(file, { a: { data: new Float32Array([1, 2]), shape: [2] } });
      assertVeraError(() => st.getFloat32('a'), file, /changed/);
    });
  });
});

describe('atomic writes', () => {
  test('writeFileAtomic replaces the target and leaves no temp files', () => {
    withTmp((dir) => {
      const file = path.join(dir, 'nested', 'out.json');
      writeFileAtomic(file, '{"v":1}');
      writeFileAtomic(file, new Uint8Array([0x7b, 0x7d]));
      assert.equal(fs.readFileSync(file, 'utf8'), '{}');
      assert.deepEqual(fs.readdirSync(path.dirname(file)), ['out.json']);
    });
  });

  test('writeFileAtomic failure leaves the target untouched', () => {
    withTmp((dir) => {
      const file = path.join(dir, 'out.json');
      fs.writeFileSync(file, 'old');
      withFsMock(
        'fsyncSync',
        () => {
          throw new Error('simulated disk failure');
        },
        () => assert.throws(() => writeFileAtomic(file, 'new contents'), /simulated disk failure/),
      );
      assert.equal(fs.readFileSync(file, 'utf8'), 'old');
      assert.deepEqual(fs.readdirSync(dir), ['out.json']);

      // A target that cannot be replaced (a non-empty directory): rename fails.
      const blocker = path.join(dir, 'blocked');
      fs.mkdirSync(blocker);
      fs.writeFileSync(path.join(blocker, 'keep'), 'x');
      assert.throws(() => writeFileAtomic(blocker, 'data'));
      assert.deepEqual(fs.readdirSync(dir).sort(), ['blocked', 'out.json']);
      assert.deepEqual(fs.readdirSync(blocker), ['keep']);
    });
  });

  test('writeDirAtomic creates a new directory in one step', () => {
    withTmp((dir) => {
      const target = path.join(dir, 'a', 'adapter');
      writeDirAtomic(target, { 'adapter_config.json': '{"r":8}', 'weights.bin': new Uint8Array([1, 2, 3]), 'sub/x.txt': 'x' });
      assert.deepEqual(fs.readdirSync(path.join(dir, 'a')), ['adapter']);
      assert.deepEqual(fs.readdirSync(target).sort(), ['adapter_config.json', 'sub', 'weights.bin']);
      assert.equal(fs.readFileSync(path.join(target, 'adapter_config.json'), 'utf8'), '{"r":8}');
      assert.deepEqual([...fs.readFileSync(path.join(target, 'weights.bin'))], [1, 2, 3]);
      assert.equal(fs.readFileSync(path.join(target, 'sub', 'x.txt'), 'utf8'), 'x');
    });
  });

  test('writeDirAtomic into an existing directory replaces files and keeps others', () => {
    withTmp((dir) => {
      fs.writeFileSync(path.join(dir, 'a.json'), 'old');
      fs.writeFileSync(path.join(dir, 'unrelated'), 'keep');
      writeDirAtomic(dir, { 'a.json': 'new', 'b.json': 'b' });
      assert.deepEqual(fs.readdirSync(dir).sort(), ['a.json', 'b.json', 'unrelated']);
      assert.equal(fs.readFileSync(path.join(dir, 'a.json'), 'utf8'), 'new');
      assert.equal(fs.readFileSync(path.join(dir, 'unrelated'), 'utf8'), 'keep');
    });
  });

  test('writeDirAtomic failure leaves nothing partial', () => {
    withTmp((dir) => {
      const fresh = path.join(dir, 'fresh');
      fs.writeFileSync(path.join(dir, 'a.json'), 'old-a');
      fs.writeFileSync(path.join(dir, 'b.json'), 'old-b');
      let calls = 0;
      const realFsync = fs.fsyncSync;
      withFsMock(
        'fsyncSync',
        (fd) => {
          if (++calls === 2) throw new Error('simulated failure on second file');
          realFsync(fd);
        },
        () => {
          assert.throws(() => writeDirAtomic(fresh, { 'a.json': 'A', 'b.json': 'B' }), /simulated/);
          calls = 0;
          assert.throws(() => writeDirAtomic(dir, { 'a.json': 'A', 'b.json': 'B' }), /simulated/);
        },
      );
      assert.deepEqual(fs.readdirSync(dir).sort(), ['a.json', 'b.json']);
      assert.equal(fs.readFileSync(path.join(dir, 'a.json'), 'utf8'), 'old-a');
      assert.equal(fs.readFileSync(path.join(dir, 'b.json'), 'utf8'), 'old-b');
    });
  });

  test('writeDirAtomic rejects names that escape the directory', () => {
    withTmp((dir) => {
      const target = path.join(dir, 'out');
      assertVeraError(() => writeDirAtomic(target, { '../evil': 'x' }), target, /invalid output file name/);
      assertVeraError(() => writeDirAtomic(target, { '/abs': 'x' }), target, /invalid output file name/);
      assert.deepEqual(fs.readdirSync(dir), []);
    });
  });

  test('readJsonFile reports missing files and bad JSON on one line', () => {
    withTmp((dir) => {
      const missing = path.join(dir, 'config.json');
      assertVeraError(() => readJsonFile(missing, 'model config'), missing, /cannot read model config \(ENOENT\)/);
      const badFile = path.join(dir, 'adapter_config.json');
      fs.writeFileSync(badFile, '{"r": 8,,}');
      assertVeraError(() => readJsonFile(badFile, 'adapter config'), badFile, /invalid JSON/);
      fs.writeFileSync(badFile, '\ufeff{"r": 8}');
      assert.deepEqual(readJsonFile(badFile, 'adapter config'), { r: 8 });
    });
  });
});

describe('checkpoint folders', () => {
  const shard1 = 'model-00001-of-00002.safetensors';
  const shard2 = 'model-00002-of-00002.safetensors';

  function makeSharded(dir: string, weightMap?: Record<string, string>): void {
    writeSafetensors(path.join(dir, shard1), {
      'embed.weight': { data: new Float32Array([1, 2, 3, 4]), shape: [2, 2] },
      'layer.0.w': { data: new Float32Array([0.5]), shape: [], dtype: 'BF16' },
    });
    writeSafetensors(path.join(dir, shard2), {
      'layer.1.w': { data: new Float32Array([-1, 1]), shape: [2], dtype: 'F16' },
    });
    const index = {
      metadata: { total_size: 22 },
      weight_map: weightMap ?? { 'embed.weight': shard1, 'layer.0.w': shard1, 'layer.1.w': shard2 },
    };
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
  }

  test('sharded index loads lazily', () => {
    withTmp((dir) => {
      makeSharded(dir);
      const ckpt = loadCheckpointTensors(dir);
      assert.deepEqual(ckpt.names, ['embed.weight', 'layer.0.w', 'layer.1.w']);
      assert.deepEqual(ckpt.files, [path.join(dir, shard1), path.join(dir, shard2)]);
      const t = ckpt.get('layer.1.w');
      assert.equal(t.dtype, 'F16');
      assert.deepEqual(t.shape, [2]);
      assert.equal(t.file, path.join(dir, shard2));
      assert.deepEqual(Array.from(t.data()), [-1, 1]);
      assert.deepEqual(Array.from(ckpt.get('embed.weight').data()), [1, 2, 3, 4]);
      assert.deepEqual(Array.from(ckpt.get('layer.0.w').data()), [0.5]);
      assert.ok(ckpt.has('layer.0.w') && !ckpt.has('nope'));
      assertVeraError(() => ckpt.get('nope'), dir, /no tensor named "nope"/);
    });
  });

  test('single model.safetensors (folder or file path)', () => {
    withTmp((dir) => {
      const file = path.join(dir, 'model.safetensors');
      writeSafetensors(file, { b: { data: new Float32Array([2]), shape: [1] }, a: { data: new Float32Array([1]), shape: [] } });
      for (const ckpt of [loadCheckpointTensors(dir), loadCheckpointTensors(file)]) {
        assert.deepEqual(ckpt.names, ['a', 'b']);
        assert.deepEqual(ckpt.files, [file]);
        assert.deepEqual(Array.from(ckpt.get('b').data()), [2]);
      }
    });
  });

  test('clear errors for missing files and lying indexes', () => {
    withTmp((dir) => {
      assertVeraError(() => loadCheckpointTensors(dir), dir, /no model\.safetensors or model\.safetensors\.index\.json/);
      assertVeraError(() => loadCheckpointTensors(path.join(dir, 'absent')), 'absent', /does not exist/);

      makeSharded(dir, { 'embed.weight': shard1, 'layer.1.w': shard1 });
      const lying = loadCheckpointTensors(dir);
      assertVeraError(() => lying.get('layer.1.w'), 'model.safetensors.index.json', /does not contain/);

      makeSharded(dir, { 'embed.weight': shard1, x: 'model-00003-of-00003.safetensors' });
      assertVeraError(() => loadCheckpointTensors(dir), 'model-00003-of-00003.safetensors', /missing/);

      makeSharded(dir, { x: '../escape.safetensors' });
      assertVeraError(() => loadCheckpointTensors(dir), 'index.json', /invalid shard file name/);

      fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{"weight_map": 3}');
      assertVeraError(() => loadCheckpointTensors(dir), 'index.json', /weight_map/);

      fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), 'not json');
      assertVeraError(() => loadCheckpointTensors(dir), 'index.json', /invalid JSON/);
    });
  });
});
