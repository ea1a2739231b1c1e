/**
 * Reader for IDX files (the format of MNIST / Fashion-MNIST), gzipped or not.
 *
 * Layout: magic `00 00 TT ND` (TT = data type, ND = number of dimensions), then ND
 * big-endian uint32 dimension sizes, then the data in row-major order. Only the unsigned
 * byte type (0x08) is supported. Gzip compression is detected from the gzip magic
 * `1f 8b`, not from the file name.
 */
import { fs, zlib } from '../io/node.js';
import { VeraError } from '../io/errors.js';

export interface IdxArray {
  /** Dimension sizes, outermost first (e.g. [count, rows, cols]). */
  dims: number[];
  /** Row-major data, `dims` product bytes long. */
  data: Uint8Array;
}

const IDX_TYPE_NAMES: Record<number, string> = {
  0x08: 'ubyte',
  0x09: 'byte',
  0x0b: 'short',
  0x0c: 'int',
  0x0d: 'float',
  0x0e: 'double',
};

function hex(bytes: Uint8Array): string {
  let s = '0x';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

function oneLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split('\n')[0] ?? msg;
}

/** Reads an IDX file from disk (gzipped or not). Throws VeraError on any problem. */
export function readIdx(path: string): IdxArray {
  let raw: Buffer;
  try {
    raw = fs.readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new VeraError(`${path}: file not found`);
    throw new VeraError(`${path}: cannot read file (${oneLine(err)})`);
  }
  return parseIdx(raw, path);
}

/**
 * Parses IDX bytes (gzipped or not). `name` is used in error messages.
 * The returned data is a view into the (decompressed) buffer.
 */
export function parseIdx(bytes: Uint8Array, name: string): IdxArray {
  let buf = bytes;
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) {
    try {
      buf = zlib.gunzipSync(buf);
    } catch (err) {
      throw new VeraError(`${name}: corrupt gzip data (${oneLine(err)})`);
    }
  }
  if (buf.length < 4) {
    throw new VeraError(`${name}: not an IDX file (only ${buf.length} bytes, too short for a header)`);
  }
  if (buf[0] !== 0 || buf[1] !== 0 || !(buf[2]! in IDX_TYPE_NAMES)) {
    throw new VeraError(`${name}: not an IDX file (bad magic ${hex(buf.subarray(0, 4))})`);
  }
  const type = buf[2]!;
  if (type !== 0x08) {
    throw new VeraError(
      `${name}: unsupported IDX data type 0x${type.toString(16).padStart(2, '0')} (${IDX_TYPE_NAMES[type]}); only ubyte (0x08) is supported`,
    );
  }
  const ndim = buf[3]!;
  if (ndim === 0) throw new VeraError(`${name}: IDX header declares 0 dimensions`);
  const headerLen = 4 + 4 * ndim;
  if (buf.length < headerLen) {
    throw new VeraError(
      `${name}: truncated IDX header (${ndim} dimensions need ${headerLen} bytes, file has ${buf.length})`,
    );
  }
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const dims: number[] = [];
  let expected = 1;
  for (let i = 0; i < ndim; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    dims.push(d);
    expected *= d;
  }
  const actual = buf.length - headerLen;
  if (actual !== expected) {
    const what = actual < expected ? 'truncated IDX data' : 'IDX data has trailing bytes';
    throw new VeraError(
      `${name}: ${what} (dims ${dims.join('x')} need ${expected} bytes, found ${actual})`,
    );
  }
  return { dims, data: new Uint8Array(buf.buffer, buf.byteOffset + headerLen, actual) };
}
