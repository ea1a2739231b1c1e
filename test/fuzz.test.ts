// A few thousand seeded fuzz cases (scripts/fuzz.ts) against the safetensors reader, the config
// readers, the adapter loader and the `vera` command: every refusal is one VeraError line (one stderr
// line and a non-zero exit from the CLI), never a crash, a stack trace, a signal or a hang.
// `npm run fuzz -- --minutes N` runs the same generator for longer, with new cases each round.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Prng, fixturesPresent, formatFinding, mutateSafetensors, runFuzz } from '../scripts/fuzz.js';
import { serializeSafetensors } from '../src/io/safetensors.js';

test('the fuzzer is deterministic and its mutations change the input', () => {
  assert.ok(fixturesPresent(), 'the fuzzer reads test/fixtures');
  const valid = serializeSafetensors({ w: { data: new Float32Array([1, 2, 3, 4]), shape: [2, 2] } });
  const a = Array.from({ length: 50 }, (_, i) => mutateSafetensors(valid, new Prng(i)));
  const b = Array.from({ length: 50 }, (_, i) => mutateSafetensors(valid, new Prng(i)));
  assert.deepEqual(a.map((m) => m.what), b.map((m) => m.what));
  assert.ok(a.every((m, i) => Buffer.compare(Buffer.from(m.bytes), Buffer.from(b[i].bytes)) === 0));
  assert.ok(a.filter((m) => Buffer.compare(Buffer.from(m.bytes), Buffer.from(valid)) !== 0).length >= 45, 'mutations mutate');
});

test('seeded fuzz: safetensors, config.json, adapter_config.json, adapter folders, and the CLI', async () => {
  const report = await runFuzz({
    seed: 20261128,
    counts: { safetensors: 900, config: 700, 'adapter-config': 700, adapter: 200, cli: 16 },
    cliTimeoutMs: 30_000,
  });
  assert.deepEqual(report.findings.map(formatFinding), []);
  // the generator must mostly produce bad input (else the contract is not exercised), and some valid input
  for (const t of ['safetensors', 'config', 'adapter-config', 'adapter'] as const) {
    assert.ok(report.refused[t] > report.cases[t] / 2, `${t}: ${report.refused[t]} of ${report.cases[t]} refused`);
    assert.ok(report.refused[t] < report.cases[t], `${t}: some cases stay valid`);
  }
  assert.equal(report.cases.cli, 16);
});
