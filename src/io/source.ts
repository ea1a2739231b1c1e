// Where the loaders read a folder's files from, wherever the folder is: a URL (fetch), files a page
// was given (an <input type=file> FileList, Blobs, bytes), or a local folder under Node. Each
// loader that takes a folder path also takes a FileSource and then returns a Promise, since reading
// is asynchronous in a page.
import { VeraError } from './errors.js';
import { parseJsonExact } from './json.js';
import { fs, isNode, path } from './node.js';

/** A folder of files, read by relative name ('config.json', 'sub/adapter_config.json'). */
export interface FileSource {
  /** How messages name the folder (a URL, a path, "files"). */
  readonly label: string;
  /** The file's bytes, or null when the folder has no such file. */
  read(name: string): Promise<Uint8Array | null>;
}

/** A Blob or File as the loaders use it (the DOM's Blob/File, or Node's). */
export interface BlobLike {
  arrayBuffer(): Promise<ArrayBuffer>;
}
/** A File: a Blob with a name; `webkitRelativePath` when it came from a picked folder. */
export interface FileLike extends BlobLike {
  readonly name: string;
  readonly webkitRelativePath?: string;
}
/** A fetch() Response as the loaders use it. */
export interface ResponseLike {
  readonly ok: boolean;
  readonly status: number;
  readonly url: string;
  arrayBuffer(): Promise<ArrayBuffer>;
}

/** Bytes as a loader accepts them. */
export type BytesLike = ArrayBuffer | ArrayBufferView | BlobLike | ResponseLike;

/** `path` joined to a source's label for messages ('https://x/model' + 'config.json'). */
export function sourcePath(source: FileSource, name: string): string {
  return source.label.endsWith('/') ? `${source.label}${name}` : `${source.label}/${name}`;
}

/** Accepted file names: relative, '/'-separated, no '..' or empty parts (a name from a downloaded index must not climb out). */
function checkName(name: string, where: string): void {
  const parts = name.split(/[\\/]/);
  if (name === '' || name.startsWith('/') || parts.some((p) => p === '' || p === '..' || p === '.')) {
    throw new VeraError(`${where}: invalid file name ${JSON.stringify(name)} (relative names only, without '..')`);
  }
}

function isResponseLike(x: object): x is ResponseLike {
  return 'ok' in x && 'status' in x && typeof (x as ResponseLike).arrayBuffer === 'function';
}

/** The bytes of an ArrayBuffer, a typed array or DataView (a view, not a copy), a Blob/File, or a fetch Response (which must be ok). */
export async function readBytes(x: BytesLike, what = 'bytes'): Promise<Uint8Array> {
  if (x instanceof Uint8Array) return x;
  if (x instanceof ArrayBuffer) return new Uint8Array(x);
  if (ArrayBuffer.isView(x)) return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  if (x !== null && typeof x === 'object') {
    if (isResponseLike(x)) {
      if (!x.ok) throw new VeraError(`${x.url || what}: HTTP ${x.status}`);
      return new Uint8Array(await x.arrayBuffer());
    }
    if (typeof (x as BlobLike).arrayBuffer === 'function') return new Uint8Array(await (x as BlobLike).arrayBuffer());
  }
  throw new VeraError(`${what}: expected an ArrayBuffer, a typed array, a Blob/File or a fetch Response`);
}

// as fs.readFileSync(file, 'utf8'): a byte order mark is kept (readJson drops it), bad bytes become U+FFFD
const utf8 = new TextDecoder('utf-8', { ignoreBOM: true });

/** The file as UTF-8 text, or null when missing. */
export async function readText(source: FileSource, name: string): Promise<string | null> {
  const bytes = await source.read(name);
  return bytes === null ? null : utf8.decode(bytes);
}

/** The file parsed as JSON (one-line error naming it when it is not), or null when missing. */
export async function readJson(source: FileSource, name: string, what = 'file'): Promise<unknown> {
  let text = await readText(source, name);
  if (text === null) return null;
  // as readJsonFile: a BOM is dropped, integers past 2⁵³ stay exact (bigint)
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  try {
    return parseJsonExact(text);
  } catch (err) {
    throw new VeraError(`${sourcePath(source, name)}: invalid JSON in ${what}: ${(err as Error).message}`);
  }
}

/** The file, which must exist: a one-line error naming it otherwise. */
export async function readRequired(source: FileSource, name: string, what: string): Promise<Uint8Array> {
  const bytes = await source.read(name);
  if (bytes === null) throw new VeraError(`${sourcePath(source, name)}: not found (${what})`);
  return bytes;
}

/**
 * Files served over HTTP(S) under `baseUrl` (fetch; a 404 is a missing file, any other failure an
 * error). `init` is passed to each fetch (headers, credentials).
 */
export function urlSource(baseUrl: string | URL, init?: RequestInit): FileSource {
  const text = String(baseUrl);
  const base = text.endsWith('/') ? text : `${text}/`;
  const fetchFn = (globalThis as { fetch?: typeof fetch }).fetch;
  if (fetchFn === undefined) throw new VeraError('urlSource: fetch is not available here');
  return {
    label: text.replace(/\/$/, ''),
    async read(name) {
      checkName(name, text);
      const where = `${base}${name}`;
      let res: Response;
      try {
        res = await fetchFn(new URL(name, new URL(base, (globalThis as { location?: { href: string } }).location?.href)), init);
      } catch (err) {
        throw new VeraError(`${where}: fetch failed (${(err as Error).message})`);
      }
      if (res.status === 404) return null;
      if (!res.ok) throw new VeraError(`${where}: HTTP ${res.status}`);
      return new Uint8Array(await res.arrayBuffer());
    },
  };
}

/**
 * Files a page holds: a FileList or array of Files (named by `webkitRelativePath` below the picked
 * folder when there is one, else by `name`), or a record of name → Blob/File, ArrayBuffer, typed
 * array or fetch Response. A name without a folder part also matches a file of that base name
 * when it is the only one (a folder picked as loose files).
 */
export function blobSource(files: ArrayLike<FileLike> | Iterable<FileLike> | Record<string, BytesLike>, label = 'files'): FileSource {
  const byName = new Map<string, BytesLike>();
  const isList = typeof (files as Iterable<FileLike>)[Symbol.iterator] === 'function' || typeof (files as ArrayLike<FileLike>).length === 'number';
  if (isList) {
    for (const f of Array.from(files as ArrayLike<FileLike>)) {
      const rel = f.webkitRelativePath ?? '';
      // a picked folder names its files 'folder/config.json': the folder itself is the source
      byName.set(rel.includes('/') ? rel.slice(rel.indexOf('/') + 1) : f.name, f);
    }
  } else {
    for (const [name, v] of Object.entries(files as Record<string, BytesLike>)) byName.set(name.replace(/^\.\//, ''), v);
  }
  const cache = new Map<string, Promise<Uint8Array>>();
  return {
    label,
    read(name) {
      checkName(name, label);
      let entry = byName.get(name);
      if (entry === undefined && !name.includes('/')) {
        const same = [...byName.keys()].filter((k) => k.split('/').pop() === name);
        if (same.length === 1) entry = byName.get(same[0]);
      }
      if (entry === undefined) return Promise.resolve(null);
      let p = cache.get(name);
      if (p === undefined) {
        p = readBytes(entry, `${label}/${name}`);
        cache.set(name, p);
      }
      return p;
    },
  };
}

/** The files under `dir` of another source (an adapter saved in a subfolder). */
export function subSource(source: FileSource, dir: string): FileSource {
  checkName(dir, source.label);
  const prefix = dir.replace(/\/$/, '');
  return { label: sourcePath(source, prefix), read: (name) => source.read(`${prefix}/${name}`) };
}

/** A local folder (Node only): reads with fs.promises; a missing file is null. */
export function folderSource(dir: string): FileSource {
  return {
    label: dir,
    async read(name) {
      checkName(name, dir);
      try {
        return new Uint8Array(await fs.promises.readFile(path.join(dir, name)));
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') return null;
        throw new VeraError(`${path.join(dir, name)}: cannot read (${code ?? (err as Error).message})`);
      }
    },
  };
}

/** The file `name` beside `file` (a path or a source's file), for messages. */
export function siblingFile(file: string, name: string): string {
  if (isNode() && !/^[a-z][a-z0-9+.-]*:\/\//i.test(file)) return path.join(path.dirname(file), name);
  const cut = Math.max(file.lastIndexOf('/'), file.lastIndexOf('\\'));
  return cut < 0 ? name : `${file.slice(0, cut + 1)}${name}`;
}

/** True for a FileSource (the loaders' other argument is a folder path string). */
export function isFileSource(x: unknown): x is FileSource {
  return x !== null && typeof x === 'object' && typeof (x as FileSource).read === 'function' && typeof (x as FileSource).label === 'string';
}

/**
 * A PEFT folder's (or any folder's) files as one Blob per file, for a download link or an upload:
 * strings are UTF-8 encoded; the bytes are exactly the ones given.
 */
export function filesToBlobs(files: Record<string, Uint8Array | string>): Record<string, Blob> {
  const out: Record<string, Blob> = {};
  for (const [name, data] of Object.entries(files)) {
    out[name] = new Blob([typeof data === 'string' ? new TextEncoder().encode(data) : data], { type: name.endsWith('.json') ? 'application/json' : 'application/octet-stream' });
  }
  return out;
}
