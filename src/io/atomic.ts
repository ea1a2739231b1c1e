/**
 * Crash-safe file output: readers see either the old contents or the complete
 * new contents, never a half-written file (checkpoints are large and runs get
 * interrupted).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fail } from './errors.js';
import { parseJsonExact } from './json.js';

/** Hidden, unique sibling name; `.tmp` is git-ignored and easy to spot if a crash leaves one. */
function tempName(target: string): string {
  const dir = path.dirname(target);
  const base = path.basename(target);
  return path.join(dir, `.${base}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
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
 * Atomically replaces `file` with `data`: temp file in the same directory
 * (so rename cannot cross filesystems), fsync, rename. Parent directories are
 * created. On failure the temp file is removed and the target is untouched.
 */
export function writeFileAtomic(file: string, data: Uint8Array | string): void {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true });
  const tmp = tempName(file);
  try {
    writeAndSync(tmp, toBytes(data));
    fs.renameSync(tmp, file);
  } catch (err) {
    removeQuietly(tmp);
    throw err;
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
 * Writes a set of files so that a reader never observes a partial set.
 *
 * - `dir` missing: everything goes into a temp sibling directory that is then
 *   renamed to `dir` in one step.
 * - `dir` present: every file is first written to its own temp file; only when
 *   all are complete are they renamed into place. Each file is replaced
 *   atomically; the set is as close to atomic as POSIX allows without
 *   replacing the directory (which might hold unrelated files).
 *
 * On failure, temp files/directories are removed.
 */
export function writeDirAtomic(dir: string, files: Record<string, Uint8Array | string>): void {
  const entries: [string, Uint8Array][] = Object.entries(files).map(([name, data]) => [
    checkRelativeName(dir, name),
    toBytes(data),
  ]);

  if (!fs.existsSync(dir)) {
    const parent = path.dirname(path.resolve(dir));
    fs.mkdirSync(parent, { recursive: true });
    const tmpDir = tempName(path.resolve(dir));
    try {
      fs.mkdirSync(tmpDir);
      writeFilesInto(tmpDir, entries);
      syncDir(tmpDir);
      fs.renameSync(tmpDir, dir);
      syncDir(parent);
      return;
    } catch (err) {
      removeQuietly(tmpDir);
      const code = (err as NodeJS.ErrnoException).code;
      // Someone else created `dir` meanwhile: fall through and merge into it.
      if (!(code === 'ENOTEMPTY' || code === 'EEXIST') || !fs.existsSync(dir)) throw err;
    }
  }

  const staged: { tmp: string; target: string }[] = [];
  try {
    for (const [rel, data] of entries) {
      const target = path.join(dir, rel);
      fs.mkdirSync(path.dirname(target), { recursive: true });
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
