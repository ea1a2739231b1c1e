/**
 * Crash-safe file output: readers see either the old contents or the complete
 * new contents, never a half-written file (checkpoints are large and runs get
 * interrupted).
 */
import { crypto, fs, path } from './node.js';
import { VeraError, fail } from './errors.js';
import { parseJsonExact } from './json.js';

/**
 * Temp names: hidden siblings of the target that carry a fixed marker and the writer's pid, so a
 * later run can tell leftovers of a killed writer (pid no longer alive) from a live writer's files.
 * `tmp` holds new contents being written; `old` holds the previous folder for the instant between
 * the two renames of a replace.
 */
type TempKind = 'tmp' | 'old';
const TEMP_RE = /^vera-(tmp|old)-(\d+)-[0-9a-f]+$/;
/** The format written before pids were parsed back: `.<base>.<pid>.<12 hex>.tmp`. */
const LEGACY_TEMP_RE = /^(\d+)\.[0-9a-f]{12}\.tmp$/;

function tempName(target: string, kind: TempKind = 'tmp'): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.vera-${kind}-${process.pid}-${crypto.randomBytes(6).toString('hex')}`);
}

function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the pid exists but belongs to someone else; only ESRCH proves it is gone.
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * Cleans up after writers of `target` that were killed: their temp files/folders are removed, and
 * a previous folder set aside by a replace that died between its two renames is put back when
 * `target` is missing (the new contents were not in place yet). Leftovers of live processes are
 * left alone. Never throws: recovery must not hide the real work's errors.
 */
export function recoverDir(target: string): void {
  const abs = path.resolve(target);
  const dir = path.dirname(abs);
  const prefix = `.${path.basename(abs)}.`;
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => n.startsWith(prefix));
  } catch {
    return;
  }
  const stale: { name: string; kind: TempKind }[] = [];
  for (const name of names) {
    const rest = name.slice(prefix.length);
    const m = TEMP_RE.exec(rest);
    const legacy = m ? null : LEGACY_TEMP_RE.exec(rest);
    const pid = Number(m ? m[2] : legacy?.[1]);
    if (!(m || legacy) || pidAlive(pid)) continue;
    stale.push({ name, kind: m ? (m[1] as TempKind) : 'tmp' });
  }
  for (const { name, kind } of stale) {
    const p = path.join(dir, name);
    if (kind === 'old' && !fs.existsSync(abs)) {
      try {
        fs.renameSync(p, abs);
        continue;
      } catch {
        // fall through: remove it rather than leave it
      }
    }
    removeQuietly(p);
  }
}

function toBytes(data: Uint8Array | string): Uint8Array {
  return typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
}

/** Writes all of `data` to a new file (exclusive create) and fsyncs it. */
function writeAndSync(file: string, data: Uint8Array): void {
  const fd = fs.openSync(file, 'wx');
  try {
    let done = 0;
    // writeSync may write less than asked (and caps a single call at 2 GiB).
    while (done < data.byteLength) {
      const chunk = Math.min(data.byteLength - done, 1 << 30);
      done += fs.writeSync(fd, data, done, chunk);
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Persists a rename. Not every platform allows fsync on a directory, so it is best effort. */
function syncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // Ignored: the data itself is already synced; only rename durability is at stake.
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

function removeQuietly(p: string): void {
  try {
    fs.rmSync(p, { recursive: true, force: true });
  } catch {
    // Cleanup must never mask the original error.
  }
}

/**
 * An fs error from writing becomes a one-line VeraError naming what the user gave (`label`),
 * never the temp path the error carries.
 */
function asUserError(err: unknown, label: string): unknown {
  if (err instanceof VeraError) return err;
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (typeof code !== 'string') return err;
  const why: Record<string, string> = { EACCES: 'permission denied', EPERM: 'permission denied', EROFS: 'read-only file system', ENOSPC: 'no space left on the device', EDQUOT: 'disk quota exceeded', ENOTDIR: 'a parent is not a folder' };
  return new VeraError(`${label}: cannot write (${why[code] ? `${why[code]}, ` : ''}${code})`);
}

/**
 * Atomically replaces `file` with `data`: temp file in the same directory
 * (so rename cannot cross filesystems), fsync, rename. Parent directories are
 * created. On failure the temp file is removed and the target is untouched.
 */
export function writeFileAtomic(file: string, data: Uint8Array | string): void {
  const dir = path.dirname(file);
  const tmp = tempName(file);
  try {
    fs.mkdirSync(dir, { recursive: true });
    recoverDir(file);
    try {
      writeAndSync(tmp, toBytes(data));
      fs.renameSync(tmp, file);
    } catch (err) {
      removeQuietly(tmp);
      throw err;
    }
  } catch (err) {
    throw asUserError(err, file);
  }
  syncDir(dir);
}

/** Accepts `a.json` or `sub/a.json`; rejects anything that could escape the directory. */
function checkRelativeName(dir: string, name: string): string {
  const parts = name.split(/[\\/]/);
  if (name === '' || path.isAbsolute(name) || parts.some((p) => p === '' || p === '.' || p === '..')) {
    fail(`${dir}: invalid output file name "${name}" (must be a relative path without "." or ".." segments)`);
  }
  return parts.join(path.sep);
}

/** Writes every file of `files` into the existing directory `root` (not atomic as a set). */
function writeFilesInto(root: string, files: [string, Uint8Array][]): void {
  for (const [rel, data] of files) {
    const target = path.join(root, rel);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    writeAndSync(target, data);
  }
}

/**
 * How writeDirAtomic treats a `dir` that already exists:
 * - `merge` (the library default, like save_pretrained): each file is replaced atomically and other
 *   files are kept, but the set is not atomic (a crash can mix old and new files).
 * - `create`: refuse a non-empty `dir`.
 * - `replace`: swap the whole folder for the new one; files not in `files` are gone afterwards.
 */
export type WriteDirMode = 'merge' | 'create' | 'replace';

export interface WriteDirOptions {
  mode?: WriteDirMode;
  /** What to call `dir` in errors (e.g. `--out run`); default `dir` itself. */
  label?: string;
}

/**
 * Writes a set of files so that a reader never observes a partial set (except in `merge` mode
 * into an existing folder, see WriteDirMode).
 *
 * The new folder is written complete as a temp sibling, then renamed onto `dir` (which succeeds
 * when `dir` is missing or empty). `replace` of a non-empty `dir` takes two renames, old → a temp
 * sibling, new → `dir`; a kill between them leaves `dir` missing and the old folder set aside,
 * which recoverDir (run at the start of every write, and by readers that care) puts back. So after
 * a kill at any moment `dir` is the old folder or the new one, complete.
 *
 * Errors name `opts.label ?? dir`; temp files and folders are removed on failure.
 */
export function writeDirAtomic(dir: string, files: Record<string, Uint8Array | string>, opts: WriteDirOptions = {}): void {
  const label = opts.label ?? dir;
  const entries: [string, Uint8Array][] = Object.entries(files).map(([name, data]) => [
    checkRelativeName(label, name),
    toBytes(data),
  ]);
  try {
    writeDir(dir, entries, opts.mode ?? 'merge', label);
  } catch (err) {
    throw asUserError(err, label);
  }
}

function writeDir(dir: string, entries: [string, Uint8Array][], mode: WriteDirMode, label: string): void {
  let abs = path.resolve(dir);
  // a symlinked folder keeps its link: the folder it points to is what gets replaced
  if (fs.existsSync(abs) && fs.lstatSync(abs).isSymbolicLink()) abs = fs.realpathSync(abs);
  const parent = path.dirname(abs);
  fs.mkdirSync(parent, { recursive: true });
  recoverDir(abs);
  if (fs.existsSync(abs) && !fs.statSync(abs).isDirectory()) fail(`${label}: exists and is not a folder`);

  if (mode !== 'merge' || !fs.existsSync(abs)) {
    const tmpDir = tempName(abs);
    try {
      fs.mkdirSync(tmpDir);
      writeFilesInto(tmpDir, entries);
      syncDir(tmpDir);
      try {
        fs.renameSync(tmpDir, abs); // dir missing or empty
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (!(code === 'ENOTEMPTY' || code === 'EEXIST')) throw err;
        if (mode === 'create') fail(`${label}: exists and is not empty`);
        if (mode === 'merge') {
          // someone else created `dir` meanwhile: merge into it below
          removeQuietly(tmpDir);
          mergeInto(abs, entries);
          return;
        }
        const old = tempName(abs, 'old');
        fs.renameSync(abs, old);
        try {
          fs.renameSync(tmpDir, abs);
        } catch (e) {
          fs.renameSync(old, abs); // put the old folder back before reporting
          throw e;
        }
        removeQuietly(old);
      }
    } catch (err) {
      removeQuietly(tmpDir);
      throw err;
    }
    syncDir(parent);
    return;
  }
  mergeInto(abs, entries);
}

/** `merge` into an existing folder: every file staged beside its target, then all renamed. */
function mergeInto(dir: string, entries: [string, Uint8Array][]): void {
  const staged: { tmp: string; target: string }[] = [];
  try {
    for (const [rel, data] of entries) {
      const target = path.join(dir, rel);
      fs.mkdirSync(path.dirname(target), { recursive: true });
      recoverDir(target);
      const tmp = tempName(target);
      staged.push({ tmp, target });
      writeAndSync(tmp, data);
    }
    // Rename only once every file's contents are safely on disk.
    while (staged.length > 0) {
      const { tmp, target } = staged[0]!;
      fs.renameSync(tmp, target);
      staged.shift();
    }
  } catch (err) {
    for (const { tmp } of staged) removeQuietly(tmp);
    throw err;
  }
  syncDir(dir);
}

/**
 * Reads and parses a JSON file. Missing/unreadable files and malformed JSON
 * become one-line VeraErrors naming `file` (as given) and `what` it is,
 * e.g. `run/config.json: cannot read model config (ENOENT)`.
 */
export function readJsonFile(file: string, what: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    fail(`${file}: cannot read ${what} (${code})`);
  }
  // Editors on Windows like to prepend a BOM, which JSON.parse rejects.
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  try {
    return parseJsonExact(text);
  } catch (err) {
    fail(`${file}: invalid JSON in ${what}: ${(err as Error).message}`);
  }
}
