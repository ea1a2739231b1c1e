/**
 * The safetensors format: an 8-byte little-endian u64 header length N, N bytes
 * of UTF-8 JSON header (possibly space padded), then the byte buffer that the
 * header's `data_offsets` index into.
 *
 * Validation policy (mirrors the reference implementation): every tensor must
 * lie inside the byte buffer, tensors must not overlap, and the buffer must be
 * covered exactly — holes between tensors and trailing unindexed bytes are
 * rejected as corruption, since no conforming writer produces them.
 */
import { fs, path } from './node.js';
import { writeFileAtomic, readJsonFile } from './atomic.js';
import { fail } from './errors.js';
import { readBytes, readJson, sourcePath, type BytesLike, type FileSource } from './source.js';

// ---------------------------------------------------------------------------
// dtypes

const DTYPE_SIZES = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
} as const;

/** Element types this module can read (all convertible to float32). */
export type Dtype = keyof typeof DTYPE_SIZES;
/** Element types the writer produces. */
export type WriteDtype = 'F32' | 'F16' | 'BF16';

export function isDtype(s: string): s is Dtype {
  return Object.prototype.hasOwnProperty.call(DTYPE_SIZES, s);
}

export function dtypeSize(dtype: Dtype): number {
  return DTYPE_SIZES[dtype];
}

// Same header limit as the reference implementation; a larger value means a
// corrupt or hostile file, and we would otherwise try to allocate it.
const MAX_HEADER_BYTES = 100_000_000;

// the byte order typed arrays use here (no os.endianness(): this module runs in browsers too)
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// ---------------------------------------------------------------------------
// Scalar float conversions. A shared scratch buffer reinterprets bits.

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

function f32Bits(x: number): number {
  scratchF32[0] = x;
  return scratchU32[0]!;
}

function bitsToF32(bits: number): number {
  scratchU32[0] = bits >>> 0;
  return scratchF32[0]!;
}

/** Bits of the float32 equal to the given float16 (exact; keeps NaN payloads). */
function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal: mant * 2^-24 is exactly representable as a normal float32.
  return (sign | f32Bits(mant * 2 ** -24)) >>> 0;
}

/** Decodes IEEE binary16 bits to a number (exact, incl. subnormals, ±0, ±inf, NaN). */
export function float16ToFloat32(bits: number): number {
  return bitsToF32(f16BitsToF32Bits(bits & 0xffff));
}

/**
 * Encodes a number as IEEE binary16 bits: the value is first rounded to
 * float32 (the tensor element type), then to float16 with round-to-nearest-even.
 * Overflow gives ±inf, underflow gives subnormals or ±0, NaN stays NaN.
 */
export function float32ToFloat16Bits(x: number): number {
  return f32BitsToF16Bits(f32Bits(x));
}

function f32BitsToF16Bits(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) {
    // Keep the top payload bits and force the quiet bit so NaN never becomes inf.
    return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  }
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Below 2^-25 everything rounds to zero (exactly 2^-25 ties to even = 0).
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e; // 14..24: aligns to units of 2^-24
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) === 1)) h++;
    return sign | h; // a carry into bit 10 correctly yields the smallest normal
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++; // carry may reach inf: correct
  return sign | h;
}

/** Decodes bfloat16 bits to a number (exact: bf16 is the top half of a float32). */
export function bfloat16ToFloat32(bits: number): number {
  return bitsToF32((bits & 0xffff) << 16);
}

/** Encodes a number as bfloat16 bits (via float32, round-to-nearest-even). */
export function float32ToBfloat16Bits(x: number): number {
  const b = f32Bits(x);
  if ((b & 0x7fffffff) > 0x7f800000) return (b >>> 16) | 0x0040; // quiet NaN, never inf
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

// Table lookups make bulk F16 decoding a single indexed load per element.
let f16Table: Uint32Array | undefined;
function f16ToF32BitsTable(): Uint32Array {
  if (!f16Table) {
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32Bits(h);
  }
  return f16Table;
}

let e4m3Table: Float32Array | undefined;
/** float8 e4m3fn: bias 7, no infinities, S.1111.111 is NaN. */
function e4m3ToF32Table(): Float32Array {
  if (!e4m3Table) {
    e4m3Table = new Float32Array(256);
    for (let b = 0; b < 256; b++) {
      const s = b & 0x80 ? -1 : 1;
      const e = (b >>> 3) & 0xf;
      const m = b & 7;
      if (e === 15 && m === 7) e4m3Table[b] = NaN;
      else if (e === 0) e4m3Table[b] = s * m * 2 ** -9;
      else e4m3Table[b] = s * (1 + m / 8) * 2 ** (e - 7);
    }
  }
  return e4m3Table;
}

// ---------------------------------------------------------------------------
// Bulk conversions

/** Float32 values → float16 bits (round-to-nearest-even). */
export function float32ArrayToFloat16(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToF16Bits(bits[i]!);
  return out;
}

/** Float32 values → bfloat16 bits (round-to-nearest-even). */
export function float32ArrayToBfloat16(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const b = bits[i]!;
    out[i] =
      (b & 0x7fffffff) > 0x7f800000 ? (b >>> 16) | 0x0040 : ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return out;
}

/** float16 bits → float32 values (exact). */
export function float16ArrayToFloat32(src: Uint16Array): Float32Array {
  const table = f16ToF32BitsTable();
  const out = new Float32Array(src.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) outBits[i] = table[src[i]!]!;
  return out;
}

/** bfloat16 bits → float32 values (exact). */
export function bfloat16ArrayToFloat32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) outBits[i] = src[i]! << 16;
  return out;
}

/** Reverses each `size`-byte element in place (only used on big-endian hosts). */
function swapBytes(bytes: Uint8Array, size: number): void {
  if (size === 1) return;
  for (let i = 0; i < bytes.length; i += size) {
    for (let a = i, b = i + size - 1; a < b; a++, b--) {
      const t = bytes[a]!;
      bytes[a] = bytes[b]!;
      bytes[b] = t;
    }
  }
}

/**
 * Converts little-endian element bytes to float32. `raw` must start at offset 0
 * of an ArrayBuffer the caller owns: it may be swapped in place or reused as
 * the result (zero-copy for F32).
 */
function decodeToFloat32(raw: Uint8Array, dtype: Dtype, count: number): Float32Array {
  if (!LITTLE_ENDIAN_HOST) swapBytes(raw, dtypeSize(dtype));
  const buf = raw.buffer;
  switch (dtype) {
    case 'F32':
      return new Float32Array(buf, 0, count);
    case 'F16':
      return float16ArrayToFloat32(new Uint16Array(buf, 0, count));
    case 'BF16':
      return bfloat16ArrayToFloat32(new Uint16Array(buf, 0, count));
    case 'F64':
      return Float32Array.from(new Float64Array(buf, 0, count));
    case 'F8_E5M2': {
      // e5m2 is exactly the top byte of a float16.
      const table = f16ToF32BitsTable();
      const out = new Float32Array(count);
      const outBits = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) outBits[i] = table[raw[i]! << 8]!;
      return out;
    }
    case 'F8_E4M3': {
      const table = e4m3ToF32Table();
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = table[raw[i]!]!;
      return out;
    }
    case 'I64':
    case 'U64': {
      const src = dtype === 'I64' ? new BigInt64Array(buf, 0, count) : new BigUint64Array(buf, 0, count);
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = Number(src[i]!);
      return out;
    }
    case 'I32':
      return Float32Array.from(new Int32Array(buf, 0, count));
    case 'U32':
      return Float32Array.from(new Uint32Array(buf, 0, count));
    case 'I16':
      return Float32Array.from(new Int16Array(buf, 0, count));
    case 'U16':
      return Float32Array.from(new Uint16Array(buf, 0, count));
    case 'I8':
      return Float32Array.from(new Int8Array(buf, 0, count));
    case 'U8':
      return Float32Array.from(raw.subarray(0, count));
    case 'BOOL': {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = raw[i] !== 0 ? 1 : 0;
      return out;
    }
  }
}

// ---------------------------------------------------------------------------
// Reader

export interface TensorInfo {
  dtype: Dtype;
  shape: number[];
  byteLength: number;
}

interface Entry extends TensorInfo {
  name: string;
  begin: number;
  end: number;
}

/** Where tensor bytes come from: an in-memory buffer or positional file reads. */
interface ByteSource {
  /** Copies `length` bytes at data-section offset `offset` into `dest`. */
  readInto(dest: Uint8Array, offset: number): void;
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Element count, stopping early once it exceeds `cap` (avoids overflow on absurd shapes). */
function elementCount(shape: readonly number[], cap: number): number {
  if (shape.some((d) => d === 0)) return 0;
  let n = 1;
  for (const d of shape) {
    n *= d;
    if (n > cap) return Infinity;
  }
  return n;
}

function readU64LE(bytes: Uint8Array): number {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, 8);
  const lo = dv.getUint32(0, true);
  const hi = dv.getUint32(4, true);
  return hi * 2 ** 32 + lo;
}

/**
 * Validates the header and returns the tensor table plus metadata.
 * `file` is only used in error messages; `dataLength` is the size of the byte
 * buffer after the header.
 */
function parseHeader(
  file: string,
  headerBytes: Uint8Array,
  dataLength: number,
): { entries: Map<string, Entry>; metadata: Record<string, string> | null } {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    fail(`${file}: safetensors header is not valid UTF-8`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    fail(`${file}: safetensors header is not valid JSON (${(err as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    fail(`${file}: safetensors header must be a JSON object`);
  }

  let metadata: Record<string, string> | null = null;
  const entries = new Map<string, Entry>();
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (value === null) continue;
      if (typeof value !== 'object' || Array.isArray(value)) {
        fail(`${file}: __metadata__ must be an object of string values`);
      }
      metadata = {};
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`${file}: __metadata__ value for "${k}" must be a string, got ${typeof v}`);
        metadata[k] = v;
      }
      continue;
    }
    const where = `${file}: tensor "${name}"`;
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      fail(`${where}: header entry must be an object with dtype, shape and data_offsets`);
    }
    const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
    if (typeof dtype !== 'string') fail(`${where}: dtype missing or not a string`);
    if (!isDtype(dtype)) fail(`${where}: unknown or unsupported dtype "${dtype}"`);
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
      fail(`${where}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt)) {
      fail(`${where}: data_offsets must be two non-negative integers, got ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) fail(`${where}: data_offsets [${begin}, ${end}] have begin > end`);
    if (end > dataLength) {
      fail(`${where}: data_offsets [${begin}, ${end}] extend beyond the data section (${dataLength} bytes)`);
    }
    const size = dtypeSize(dtype);
    const expected = elementCount(shape as number[], dataLength) * size;
    if (expected !== end - begin) {
      fail(
        `${where}: byte length ${end - begin} does not match shape ${fmtShape(shape as number[])} ` +
          `of ${dtype} (${Number.isFinite(expected) ? `${expected} bytes` : 'too large'})`,
      );
    }
    entries.set(name, { name, dtype, shape: shape as number[], byteLength: end - begin, begin, end });
  }

  // The byte buffer must be indexed exactly: no overlaps, no holes, no tail.
  const sorted = [...entries.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let prev: Entry | undefined;
  for (const e of sorted) {
    if (e.begin < cursor) {
      fail(
        `${file}: tensor "${e.name}" data_offsets [${e.begin}, ${e.end}] overlap tensor "${prev!.name}" ` +
          `[${prev!.begin}, ${prev!.end}]`,
      );
    }
    if (e.begin > cursor) {
      fail(`${file}: gap of ${e.begin - cursor} unindexed bytes in data section before tensor "${e.name}"`);
    }
    cursor = e.end;
    prev = e;
  }
  if (cursor !== dataLength) {
    fail(`${file}: data section has ${dataLength - cursor} trailing unindexed bytes after the last tensor`);
  }
  return { entries, metadata };
}

/**
 * A validated safetensors file. The header is parsed and checked up front;
 * tensor bytes are fetched on demand, so `open` on a multi-GB checkpoint
 * costs only the header and each `getFloat32` allocates just its tensor.
 */
export class SafetensorsFile {
  /** Path or name used in error messages. */
  readonly name: string;
  /** The `__metadata__` map, or null when the file has none. */
  readonly metadata: Record<string, string> | null;
  private readonly entries: Map<string, Entry>;
  private readonly source: ByteSource;

  private constructor(
    name: string,
    parsed: { entries: Map<string, Entry>; metadata: Record<string, string> | null },
    source: ByteSource,
  ) {
    this.name = name;
    this.entries = parsed.entries;
    this.metadata = parsed.metadata;
    this.source = source;
  }

  /** Parses an in-memory safetensors image (the bytes are referenced, not copied). */
  static fromBytes(bytes: Uint8Array, name: string): SafetensorsFile {
    const { headerLength } = checkPrefix(name, bytes.subarray(0, 8), bytes.byteLength);
    const dataStart = 8 + headerLength;
    const parsed = parseHeader(name, bytes.subarray(8, dataStart), bytes.byteLength - dataStart);
    const source: ByteSource = {
      readInto(dest, offset) {
        dest.set(bytes.subarray(dataStart + offset, dataStart + offset + dest.byteLength));
      },
    };
    return new SafetensorsFile(name, parsed, source);
  }

  /** Parses a safetensors image from an ArrayBuffer, typed array, Blob/File or fetch Response. */
  static async from(data: BytesLike, name: string): Promise<SafetensorsFile> {
    return SafetensorsFile.fromBytes(await readBytes(data, name), name);
  }

  /**
   * Opens a file: reads and validates its header now; tensor data is read from
   * disk when requested. If the file is replaced or modified afterwards, reads
   * fail with a VeraError instead of returning mismatched bytes.
   */
  static open(file: string): SafetensorsFile {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (err) {
      fail(`${file}: cannot open safetensors file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) fail(`${file}: not a regular file`);
      const prefix = new Uint8Array(Math.min(8, st.size));
      readFully(fd, prefix, 0, file);
      const { headerLength } = checkPrefix(file, prefix, st.size);
      const header = new Uint8Array(headerLength);
      readFully(fd, header, 8, file);
      const dataStart = 8 + headerLength;
      const parsed = parseHeader(file, header, st.size - dataStart);
      const identity = { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs };
      const source: ByteSource = {
        readInto(dest, offset) {
          const rfd = fs.openSync(file, 'r');
          try {
            const now = fs.fstatSync(rfd);
            if (now.ino !== identity.ino || now.size !== identity.size || now.mtimeMs !== identity.mtimeMs) {
              fail(`${file}: file changed on disk since it was opened`);
            }
            readFully(rfd, dest, dataStart + offset, file);
          } finally {
            fs.closeSync(rfd);
          }
        },
      };
      return new SafetensorsFile(file, parsed, source);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Tensor names in header order. */
  keys(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): TensorInfo {
    const e = this.entry(name);
    return { dtype: e.dtype, shape: [...e.shape], byteLength: e.byteLength };
  }

  /** The tensor's stored bytes (little-endian), as a fresh copy. */
  getRaw(name: string): Uint8Array {
    const e = this.entry(name);
    const out = new Uint8Array(e.byteLength);
    this.source.readInto(out, e.begin);
    return out;
  }

  /** The tensor converted to float32 (a fresh array the caller may mutate). */
  getFloat32(name: string): Float32Array {
    const e = this.entry(name);
    const count = e.byteLength / dtypeSize(e.dtype);
    // getRaw returns a buffer at offset 0 that we own, so F32 needs no second copy.
    return decodeToFloat32(this.getRaw(name), e.dtype, count);
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) fail(`${this.name}: no tensor named "${name}"`);
    return e;
  }
}

/** Checks the 8-byte length prefix against the total size. */
function checkPrefix(file: string, prefix: Uint8Array, totalSize: number): { headerLength: number } {
  if (totalSize < 8) fail(`${file}: too short for a safetensors file (${totalSize} bytes, need at least 8)`);
  const n = readU64LE(prefix);
  if (n > MAX_HEADER_BYTES) fail(`${file}: safetensors header length ${n} is too large (limit ${MAX_HEADER_BYTES})`);
  if (8 + n > totalSize) {
    fail(`${file}: safetensors header length ${n} exceeds the file size (${totalSize} bytes); file truncated?`);
  }
  return { headerLength: n };
}

/** Positional read of exactly dest.byteLength bytes (readSync may return short counts). */
function readFully(fd: number, dest: Uint8Array, position: number, file: string): void {
  let done = 0;
  while (done < dest.byteLength) {
    const chunk = Math.min(dest.byteLength - done, 1 << 30);
    const n = fs.readSync(fd, dest, done, chunk, position + done);
    if (n === 0) fail(`${file}: unexpected end of file (truncated?)`);
    done += n;
  }
}

// ---------------------------------------------------------------------------
// Writer

export interface TensorToWrite {
  data: Float32Array;
  shape: number[];
  /** Stored element type; defaults to F32. */
  dtype?: WriteDtype;
}

/** Byte order of names as Rust compares `String`s (UTF-8 bytes), for reproducible files. */
function compareUtf8(a: string, b: string): number {
  const x = utf8.encode(a);
  const y = utf8.encode(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

const utf8 = new TextEncoder();

/**
 * Serializes tensors to a safetensors image. Like the reference writer, the
 * layout is sorted by element size (descending) then name, which keeps every
 * tensor aligned to its element size; the header is space-padded to a
 * multiple of 8 bytes so the data section starts 8-aligned too.
 */
export function serializeSafetensors(
  tensors: Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Uint8Array {
  const items = Object.entries(tensors).map(([name, t]) => {
    const where = `safetensors writer: tensor "${name}"`;
    if (name === '__metadata__') fail(`${where}: name is reserved`);
    const dtype: WriteDtype = t.dtype ?? 'F32';
    if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') fail(`${where}: unsupported dtype "${String(dtype)}"`);
    if (!(t.data instanceof Float32Array)) fail(`${where}: data must be a Float32Array`);
    if (!Array.isArray(t.shape) || !t.shape.every(isNonNegInt)) {
      fail(`${where}: shape must be an array of non-negative integers, got ${JSON.stringify(t.shape)}`);
    }
    const count = elementCount(t.shape, Number.MAX_SAFE_INTEGER);
    if (count !== t.data.length) {
      fail(`${where}: shape ${fmtShape(t.shape)} has ${count} elements but data has ${t.data.length}`);
    }
    return { name, dtype, shape: t.shape, data: t.data, size: DTYPE_SIZES[dtype] };
  });
  items.sort((a, b) => b.size - a.size || compareUtf8(a.name, b.name));

  let header = '{';
  const parts: string[] = [];
  if (metadata !== undefined) {
    const kv: string[] = [];
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') fail(`safetensors writer: __metadata__ value for "${k}" must be a string`);
      kv.push(`${JSON.stringify(k)}:${JSON.stringify(v)}`);
    }
    parts.push(`"__metadata__":{${kv.join(',')}}`);
  }
  // Built by hand: JSON.stringify would reorder integer-like tensor names.
  let offset = 0;
  const placed = items.map((it) => {
    const begin = offset;
    offset += it.data.length * it.size;
    parts.push(
      `${JSON.stringify(it.name)}:{"dtype":"${it.dtype}","shape":${JSON.stringify(it.shape)},"data_offsets":[${begin},${offset}]}`,
    );
    return { ...it, begin };
  });
  header += parts.join(',') + '}';

  const headerRaw = utf8.encode(header);
  const headerLength = Math.ceil(headerRaw.byteLength / 8) * 8;
  const dataStart = 8 + headerLength;
  const out = new Uint8Array(dataStart + offset);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, headerLength % 2 ** 32, true);
  dv.setUint32(4, Math.floor(headerLength / 2 ** 32), true);
  out.set(headerRaw, 8);
  out.fill(0x20, 8 + headerRaw.byteLength, dataStart);

  for (const it of placed) {
    const at = dataStart + it.begin;
    if (it.dtype === 'F32') {
      const src = new Uint8Array(it.data.buffer, it.data.byteOffset, it.data.byteLength);
      out.set(src, at);
      if (!LITTLE_ENDIAN_HOST) swapBytes(out.subarray(at, at + src.byteLength), 4);
    } else {
      const bits = it.dtype === 'F16' ? float32ArrayToFloat16(it.data) : float32ArrayToBfloat16(it.data);
      out.set(new Uint8Array(bits.buffer, 0, bits.byteLength), at);
      if (!LITTLE_ENDIAN_HOST) swapBytes(out.subarray(at, at + bits.byteLength), 2);
    }
  }
  return out;
}

/** Serializes and writes atomically (temp file + rename). */
export function writeSafetensors(
  file: string,
  tensors: Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): void {
  writeFileAtomic(file, serializeSafetensors(tensors, metadata));
}

// ---------------------------------------------------------------------------
// Hugging Face checkpoint folders

/** One tensor of a checkpoint; `data()` reads and converts it on each call. */
export interface CheckpointTensor {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: number[];
  readonly byteLength: number;
  /** Path of the .safetensors file that holds it. */
  readonly file: string;
  data(): Float32Array;
  /** The stored bytes (little-endian), as a fresh copy: for packed integer tensors (bitsandbytes' U8/I8 weights). */
  raw(): Uint8Array;
}

export interface CheckpointTensors {
  /** The folder (or single file) that was opened. */
  readonly dir: string;
  /** All tensor names, sorted. */
  readonly names: string[];
  /** The .safetensors files making up the checkpoint. */
  readonly files: string[];
  /** How messages name the checkpoint (its model.safetensors or index) when it was not read from a local folder. */
  readonly source?: string;
  has(name: string): boolean;
  /** Tensor handle; opens (and validates) its shard's header on first use. */
  get(name: string): CheckpointTensor;
}

const SINGLE_FILE = 'model.safetensors';
const INDEX_FILE = 'model.safetensors.index.json';

/**
 * Opens a Hugging Face model folder holding `model.safetensors` or a sharded
 * `model.safetensors.index.json` (preferring the single file, as transformers
 * does). `dir` may also point directly at a `.safetensors` file. Shards are
 * opened lazily; their existence is checked up front so a missing shard
 * fails early with a clear message.
 */
export function loadCheckpointTensors(dir: string): CheckpointTensors {
  const isFile = fs.existsSync(dir) && fs.statSync(dir).isFile();
  const single = isFile ? dir : path.join(dir, SINGLE_FILE);
  if (isFile || fs.existsSync(single)) {
    const st = SafetensorsFile.open(single);
    const names = st.keys().sort();
    return makeCheckpoint(dir, names, [single], () => single, () => st);
  }

  const indexPath = path.join(dir, INDEX_FILE);
  if (!fs.existsSync(indexPath)) {
    if (!fs.existsSync(dir)) fail(`${dir}: model directory does not exist`);
    fail(`${dir}: no ${SINGLE_FILE} or ${INDEX_FILE} found`);
  }
  const index = readJsonFile(indexPath, 'safetensors index');
  const shardOf = new Map<string, string>();
  const shardFiles = new Set<string>();
  for (const [name, shard] of indexShards(index, indexPath)) {
    const shardPath = path.join(dir, shard);
    shardOf.set(name, shardPath);
    shardFiles.add(shardPath);
  }
  for (const f of shardFiles) {
    if (!fs.existsSync(f)) fail(`${indexPath}: shard file ${f} is missing`);
  }

  const opened = new Map<string, SafetensorsFile>();
  const openShard = (shardPath: string): SafetensorsFile => {
    let st = opened.get(shardPath);
    if (!st) {
      st = SafetensorsFile.open(shardPath);
      opened.set(shardPath, st);
    }
    return st;
  };
  return makeCheckpoint(
    dir,
    [...shardOf.keys()].sort(),
    [...shardFiles].sort(),
    (name) => shardOf.get(name),
    openShard,
    indexPath,
  );
}

/** The (tensor name, shard file name) pairs of a model.safetensors.index.json, checked. */
function indexShards(index: unknown, indexPath: string): [string, string][] {
  const weightMap =
    index !== null && typeof index === 'object' && !Array.isArray(index)
      ? (index as Record<string, unknown>)['weight_map']
      : undefined;
  if (weightMap === null || typeof weightMap !== 'object' || Array.isArray(weightMap)) {
    fail(`${indexPath}: "weight_map" must be an object mapping tensor names to shard files`);
  }
  const out: [string, string][] = [];
  for (const [name, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shard !== 'string') fail(`${indexPath}: weight_map entry "${name}" must be a file name string`);
    // Shard names come from a downloaded file; never let them point outside the folder.
    const parts = shard.split(/[\\/]/);
    if (shard === '' || shard.startsWith('/') || /^[A-Za-z]:/.test(shard) || parts.some((p) => p === '' || p === '..')) {
      fail(`${indexPath}: weight_map entry "${name}" has invalid shard file name "${shard}"`);
    }
    out.push([name, shard]);
  }
  return out;
}

/**
 * The checkpoint of a model folder held by a FileSource (a URL, files a page was given):
 * model.safetensors, else the sharded model.safetensors.index.json and its shards, each read
 * whole into memory (the tensors are views into those bytes until converted).
 */
export async function loadCheckpointFromSource(source: FileSource): Promise<CheckpointTensors> {
  const single = await source.read(SINGLE_FILE);
  if (single !== null) {
    const file = sourcePath(source, SINGLE_FILE);
    const st = SafetensorsFile.fromBytes(single, file);
    return { ...makeCheckpoint(source.label, st.keys().sort(), [file], () => file, () => st), source: file };
  }
  const indexPath = sourcePath(source, INDEX_FILE);
  const index = await readJson(source, INDEX_FILE, 'safetensors index');
  if (index === null) fail(`${source.label}: no ${SINGLE_FILE} or ${INDEX_FILE} found`);
  const shardOf = new Map<string, string>();
  const shards = new Map<string, SafetensorsFile>();
  for (const [name, shard] of indexShards(index, indexPath)) {
    const file = sourcePath(source, shard);
    shardOf.set(name, file);
    if (shards.has(file)) continue;
    const bytes = await source.read(shard);
    if (bytes === null) fail(`${indexPath}: shard file ${file} is missing`);
    shards.set(file, SafetensorsFile.fromBytes(bytes, file));
  }
  const ckpt = makeCheckpoint(source.label, [...shardOf.keys()].sort(), [...shards.keys()].sort(), (name) => shardOf.get(name), (f) => shards.get(f)!, indexPath);
  return { ...ckpt, source: indexPath };
}

function makeCheckpoint(
  dir: string,
  names: string[],
  files: string[],
  locate: (name: string) => string | undefined,
  openFile: (file: string) => SafetensorsFile,
  indexPath?: string,
): CheckpointTensors {
  const known = new Set(names);
  return {
    dir,
    names,
    files,
    has: (name) => known.has(name),
    get(name) {
      const file = known.has(name) ? locate(name) : undefined;
      if (file === undefined) fail(`${dir}: checkpoint has no tensor named "${name}"`);
      const st = openFile(file);
      if (!st.has(name)) fail(`${indexPath ?? dir}: index maps tensor "${name}" to ${file}, but that file does not contain it`);
      const info = st.info(name);
      return {
        name,
        dtype: info.dtype,
        shape: info.shape,
        byteLength: info.byteLength,
        file,
        data: () => st.getFloat32(name),
        raw: () => st.getRaw(name),
      };
    },
  };
}
