// Shared by the tests: temporary folders that are always cleaned up, and the fixtures folder.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Run `fn` with a fresh temporary folder, removed afterwards whatever happens. */
export function withTmp<T>(fn: (dir: string) => T, prefix = 'vera-test-'): T {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
