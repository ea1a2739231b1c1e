// Shared by the tests: temporary folders that are always cleaned up, and the fixtures folder.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { VeraError } from '../src/io/errors.js';

/** Run `fn` with a fresh temporary folder, removed afterwards whatever happens. */
export function withTmp<T>(fn: (dir: string) => T, prefix = 'vera-test-'): T {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
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
