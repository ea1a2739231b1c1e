// Shared by the tests: temporary folders that are always cleaned up, and the fixtures folder.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { VeraError } from '../src/io/errors.js';

/** Run `fn` with a fresh temporary folder, removed afterwards whatever happens (after the promise settles when `fn` is async). */
export function withTmp<T>(fn: (dir: string) => T, prefix = 'vera-test-'): T {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true });
  let result: T;
  try {
    result = fn(dir);
  } catch (e) {
    cleanup();
    throw e;
  }
  if (result instanceof Promise) return result.finally(cleanup) as T;
  cleanup();
  return result;
}

/** Largest |a[i] − b[i]|; the lengths must agree. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'lengths differ');
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** `fn` throws a one-line VeraError whose message includes (or matches) every part. */
export function assertVeraError(fn: () => unknown, parts: (string | RegExp)[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof VeraError, `expected VeraError, got ${String(err)}`);
    assert.ok(!err.message.includes('\n'), 'message must be one line');
    for (const p of parts) {
      if (typeof p === 'string') assert.ok(err.message.includes(p), `"${err.message}" should include "${p}"`);
      else assert.match(err.message, p);
    }
    return true;
  });
}

/** `fn` throws a one-line VeraError matching `pattern`. */
export function throwsVera(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof VeraError, `expected a VeraError, got ${String(e)}`);
    assert.match(e.message, pattern);
    assert.ok(!e.message.includes('\n'), 'one line');
    return true;
  });
}

/** `p` rejects with a VeraError matching `pattern`. */
export async function rejectsVera(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof VeraError, `expected a VeraError, got ${String(e)}`);
    assert.match(e.message, pattern);
    return true;
  });
}

/** Byte-level BPE tokenizer.json for gpt2-tiny's 101 tokens (printable ASCII + 'Ġ', 5 merges, <|endoftext|>). */
export function tinyGpt2TokenizerJson(): string {
  const vocab: Record<string, number> = { Ġ: 0 };
  for (let b = 33; b <= 126; b++) vocab[String.fromCharCode(b)] = b - 32;
  const merges = ['Ġ t', 'h e', 'Ġt he', 'Ġ a', 'l l'];
  merges.forEach((m, i) => (vocab[m.replace(' ', '')] = 95 + i));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return JSON.stringify({
    version: '1.0',
    added_tokens: [{ id: 100, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: byteLevel,
    decoder: byteLevel,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab, merges },
  });
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `node bin/vera.js …args` from the repository root (dist/ must be built). */
export function runVera(args: string[]): Promise<CliResult> {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(root, 'bin', 'vera.js'), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Every number in the JSON is finite (JSON.stringify writes NaN and ±Inf as null, so no null may appear); returns how many there are. */
export function checkNumbers(v: unknown, where: string): number {
  assert.notEqual(v, null, `${where}: null (a NaN or Inf before JSON)`);
  if (typeof v === 'number') {
    assert.ok(Number.isFinite(v), `${where}: ${v}`);
    return 1;
  }
  if (Array.isArray(v)) return v.reduce((n: number, x, i) => n + checkNumbers(x, `${where}[${i}]`), 0);
  if (typeof v === 'object') return Object.entries(v as object).reduce((n: number, [k, x]) => n + checkNumbers(x, `${where}.${k}`), 0);
  return 0;
}
