// The short version of `npm run loadtest`: concurrent streaming clients (the openai package) over
// many adapters and two tenants against a real `vera serve` process; every request must succeed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const script = fileURLToPath(new URL('../scripts/loadtest.js', import.meta.url));

test('loadtest (short): 8 streaming clients over 40 adapters for 4 s, zero errors', () => {
  const r = spawnSync(process.execPath, [script, '--shape', 'tiny', '--clients', '8', '--adapters', '40', '--tenants', '2', '--duration', '4', '--json'], { encoding: 'utf8', timeout: 180_000 });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as { requests: number; errors: number; errorSamples: string[]; tokens: number; ttftMs: { p50: number } };
  assert.equal(report.errors, 0, report.errorSamples.join('; '));
  assert.ok(report.requests >= 8, `${report.requests} requests completed`);
  assert.ok(report.tokens > 0 && Number.isFinite(report.ttftMs.p50));
});
