// Shared by the tests: temporary folders that are always cleaned up, and the fixtures folder.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
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
