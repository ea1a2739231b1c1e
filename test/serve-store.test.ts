// The serving store (src/serve/store.ts) on a real SQLite file: WAL, one transaction per write
// (a failed write leaves nothing), checksums checked on read, tenants kept apart, API keys kept as
// hashes only, jobs' claims and endings; a writer killed with SIGKILL loses no acknowledged adapter
// and leaves no partial row. Also the upload compaction (compactAdapterBytes) and the `vera keys` /
// `vera adapters` commands: import → export gives the same vectors and the same model outputs.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { Rng, noGrad } from '../src/tensor/index.js';
import { loadPretrained, type CausalLM } from '../src/models/index.js';
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, PeftModel, compactAdapterBytes, getPeftModel, loraConfig, veraConfig, type BasePeftConfig } from '../src/peft/index.js';
import { SafetensorsFile, serializeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { ServeStore, type AdapterInput } from '../src/serve/store.js';
import { runVera, throwsVera, withTmp } from './helpers.js';

const gpt2Dir = new URL('../../test/fixtures/gpt2-tiny', import.meta.url).pathname;
const llamaDir = new URL('../../test/fixtures/decoders/llama-gqa', import.meta.url).pathname;
const storeModule = fileURLToPath(new URL('../src/serve/store.js', import.meta.url));

type Lm = CausalLM & ReturnType<typeof loadPretrained>['model'];
const load = (dir: string): Lm => loadPretrained(dir).model as Lm;
const sha = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');

/** An adapter with non-trivial ("trained") values saved into dir/name. */
function makeAdapter(dir: string, name: string, config: BasePeftConfig, seed: number, save: { dtype?: 'f16'; saveProjection?: boolean } = {}): string {
  const peft = getPeftModel(load(gpt2Dir), config);
  const rng = new Rng(seed);
  for (const [, t] of peft.trainableParameters()) t.copyFrom(rng.fillNormal(new Float32Array(t.size), 0, 0.4));
  const out = join(dir, name);
  peft.saveAdapter(out, save);
  return out;
}

const veraCfg = (extra: Partial<Parameters<typeof veraConfig>[0]> = {}): BasePeftConfig => veraConfig({ targetModules: ['c_attn', 'c_fc'], r: 4, initWeights: false, ...extra });
const loraCfg = (): BasePeftConfig => loraConfig({ targetModules: ['c_attn'], r: 2, loraAlpha: 4 });

/** A small adapter row (the store does not parse its bytes). */
const row = (owner: string, id: string, fill = 1, extra: Partial<AdapterInput> = {}): AdapterInput => ({
  owner, id, method: 'VERA', config: '{"peft_type":"VERA"}', weights: new Uint8Array(64).fill(fill), dtype: 'F32', ...extra,
});

const count = (file: string, table: string): number => {
  const db = new Database(file, { readonly: true });
  try {
    return (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
  } finally {
    db.close();
  }
};

/** Run `sql` on the store file through a connection of its own (what a damaged disk or another tool does). */
function rawSql(file: string, sql: string, ...args: unknown[]): void {
  const db = new Database(file);
  try {
    db.prepare(sql).run(...args);
  } finally {
    db.close();
  }
}

function logits(modelDir: string, adapterDir: string): Float32Array {
  const model = load(modelDir);
  PeftModel.fromPretrained(model, adapterDir);
  const ids = Int32Array.from([3, 14, 15, 92, 65, 35, 89, 79]);
  return noGrad(() => model.forward(ids, [1, ids.length]).toFloat32Array());
}

test('a new store is in WAL mode with its schema version; a non-store file and a missing store are refused in one line', () => {
  withTmp((dir) => {
    const file = join(dir, 'sub', 'serve.db');
    ServeStore.open(file).close();
    const db = new Database(file);
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    assert.equal(db.pragma('user_version', { simple: true }), 1);
    db.close();
    // reopening an existing store keeps its data
    const s = ServeStore.open(file);
    s.createTenant('alice');
    s.close();
    const again = ServeStore.open(file, { create: false });
    assert.equal(again.tenantByName('alice')?.name, 'alice');
    again.close();

    const junk = join(dir, 'junk.db');
    writeFileSync(junk, 'this is not a database, just some text that is long enough to have a header '.repeat(20));
    throwsVera(() => ServeStore.open(junk), /junk\.db: cannot open store/);
    const other = join(dir, 'other.db');
    const o = new Database(other);
    o.exec('CREATE TABLE t(x)');
    o.close();
    throwsVera(() => ServeStore.open(other), /other\.db: a SQLite database that is not a vera store/);
    throwsVera(() => ServeStore.open(join(dir, 'none.db'), { create: false }), /none\.db: no store there/);
    assert.equal(existsSync(join(dir, 'none.db')), false);
    rawSql(file, 'PRAGMA user_version = 7');
    throwsVera(() => ServeStore.open(file), /schema version 7 is newer/);
  });
});

test('API keys: vera- + 32 random bytes base64url, authenticated by hash; the plaintext is nowhere in the file', () => {
  withTmp((dir) => {
    const file = join(dir, 's.db');
    const s = ServeStore.open(file);
    const k1 = s.createApiKey('alice');
    const k2 = s.createApiKey('alice');
    const k3 = s.createApiKey('bob');
    for (const k of [k1, k2, k3]) assert.match(k, /^vera-[A-Za-z0-9_-]{43}$/);
    assert.equal(new Set([k1, k2, k3]).size, 3);
    assert.equal(s.listTenants().length, 2, 'the second key of alice reuses her tenant');
    const alice = s.authenticate(k1);
    assert.equal(alice?.name, 'alice');
    assert.match(alice!.id, /^tenant-[0-9a-f]{24}$/);
    assert.deepEqual(s.authenticate(k2), alice);
    assert.equal(s.authenticate(k3)?.name, 'bob');
    assert.equal(s.authenticate(k1.slice(0, -1) + (k1.endsWith('A') ? 'B' : 'A')), null);
    assert.equal(s.authenticate(''), null);
    assert.equal(s.authenticate('sk-whatever'), null);
    assert.equal(s.revokeApiKey(k2), true);
    assert.equal(s.authenticate(k2), null);
    assert.equal(s.authenticate(k1)?.name, 'alice');
    throwsVera(() => s.createApiKey('no spaces'), /^tenant name: "no spaces" is not valid/);
    throwsVera(() => s.createTenant('alice'), /tenant: a tenant named 'alice' already exists/);
    s.close();
    const db = new Database(file, { readonly: true });
    const hashes = (db.prepare('SELECT hash FROM api_keys ORDER BY hash').all() as { hash: string }[]).map((r) => r.hash);
    db.close();
    assert.deepEqual(hashes, [k1, k3].map(sha).sort());
    const bytes = readFileSync(file).toString('latin1');
    for (const k of [k1, k2, k3]) assert.ok(!bytes.includes(k.slice(5)), 'plaintext key found in the store file');
    assert.ok(bytes.includes(sha(k1)), 'the hash is what is stored');
  });
});

test('adapters: per-tenant ids, shared admin adapters, listing/resolve/delete never cross tenants', () => {
  withTmp((dir) => {
    const s = ServeStore.open(join(dir, 's.db'));
    const a = s.createTenant('alice').id;
    const b = s.createTenant('bob').id;
    s.putAdapter(row(a, 'x', 1));
    s.putAdapter(row(b, 'x', 2));
    s.putAdapter(row('', 'x', 3, { shared: true }));
    s.putAdapter(row('', 'y', 4, { shared: true }));
    s.putAdapter(row('', 'z', 5));
    s.putAdapter(row(b, 'only-bob', 6));
    const ids = (list: { owner: string; id: string }[]): string[] => list.map((m) => `${m.owner === '' ? 'admin' : m.owner === a ? 'alice' : 'bob'}/${m.id}`);
    assert.deepEqual(ids(s.listAdapters(a)), ['alice/x', 'admin/y']);
    assert.deepEqual(ids(s.listAdapters(b)), ['bob/only-bob', 'bob/x', 'admin/y']);
    // sorted by id, then owner id (tenant ids are random): compare as a set
    assert.deepEqual(ids(s.listAdapters(null)).sort(), ['admin/x', 'admin/y', 'admin/z', 'alice/x', 'bob/only-bob', 'bob/x']);
    assert.equal(s.resolveAdapter(a, 'x')?.owner, a);
    assert.equal(s.resolveAdapter(b, 'x')?.owner, b);
    assert.equal(s.resolveAdapter(a, 'y')?.owner, '');
    assert.equal(s.resolveAdapter(a, 'z'), null, 'an unshared admin adapter is not the tenants\'');
    assert.equal(s.resolveAdapter(a, 'only-bob'), null);
    assert.equal(s.resolveAdapter('', 'z')?.owner, '');
    assert.deepEqual(s.getAdapter(a, 'x')?.weights, new Uint8Array(64).fill(1));
    assert.deepEqual(s.getAdapter(b, 'x')?.weights, new Uint8Array(64).fill(2));
    assert.equal(s.getAdapter(a, 'only-bob'), null);
    // deleting is by (owner, id): alice cannot touch bob's or the admin's
    assert.equal(s.deleteAdapter(a, 'only-bob'), false);
    assert.equal(s.deleteAdapter(a, 'y'), false);
    assert.equal(s.deleteAdapter(a, 'x'), true);
    assert.equal(s.resolveAdapter(a, 'x')?.owner, '', 'with hers gone, the shared admin x shows through');
    assert.equal(s.getAdapter(b, 'x')?.weights[0], 2);
    assert.equal(s.listAdapters(null).length, 5);
    // sharing: admin-owned only
    throwsVera(() => s.putAdapter(row(a, 'w', 1, { shared: true })), /^adapter shared: only admin-owned adapters can be shared/);
    assert.equal(s.setShared('z', true), true);
    assert.equal(s.resolveAdapter(b, 'z')?.owner, '');
    assert.equal(s.setShared('only-bob', true), false);
    assert.equal(s.resolveAdapter(a, 'only-bob'), null);
    // a replace keeps created_at and the shared flag unless given
    const before = s.getAdapter('', 'y')!;
    const after = s.putAdapter(row('', 'y', 9));
    assert.equal(after.shared, true);
    assert.equal(after.createdAt, before.createdAt);
    assert.equal(s.getAdapter('', 'y')?.weights[0], 9);
    s.close();
  });
});

test('bad ids, owners, sizes and kinds are refused in one line naming the field, and nothing is written', () => {
  withTmp((dir) => {
    const file = join(dir, 's.db');
    const s = ServeStore.open(file, { limits: { adapterBytes: 100 } });
    const a = s.createTenant('alice').id;
    s.putAdapter(row(a, 'keep', 7));
    throwsVera(() => s.putAdapter(row(a, 'a b')), /^adapter id: "a b" is not valid/);
    throwsVera(() => s.putAdapter(row(a, 'x'.repeat(129))), /^adapter id: /);
    throwsVera(() => s.putAdapter(row(a, '')), /^adapter id: /);
    throwsVera(() => s.putAdapter(row('tenant-000000000000000000000000', 'x')), /^adapter owner: no tenant with id tenant-0+/);
    throwsVera(() => s.putAdapter(row('alice', 'x')), /^owner: "alice" is not a tenant id/);
    throwsVera(() => s.putAdapter(row(a, 'x', 1, { weights: new Uint8Array(101) })), /^adapter weights: 101 bytes, over the limit of 100/);
    throwsVera(() => s.putAdapter(row(a, 'x', 1, { weights: new Uint8Array(0) })), /^adapter weights: must be non-empty/);
    throwsVera(() => s.putAdapter(row(a, 'x', 1, { dtype: 'BF16' as 'F16' })), /^adapter dtype: must be F16 or F32/);
    throwsVera(() => s.putAdapter(row(a, 'x', 1, { method: 'IA3' as 'VERA' })), /^adapter method: must be VERA or LORA/);
    throwsVera(() => s.putAdapter(row(a, 'x', 1, { config: '' })), /^adapter config: /);
    // a failed replace leaves the old adapter as it was
    throwsVera(() => s.putAdapter(row(a, 'keep', 1, { weights: new Uint8Array(500) })), /^adapter weights: /);
    assert.deepEqual(s.getAdapter(a, 'keep')?.weights, new Uint8Array(64).fill(7));
    s.close();
    assert.equal(count(file, 'adapters'), 1);
  });
});

test('a write that fails inside its transaction leaves nothing: putAdapter and finishJob roll back whole', () => {
  withTmp((dir) => {
    const file = join(dir, 's.db');
    const s = ServeStore.open(file);
    const a = s.createTenant('alice').id;
    s.putAdapter(row(a, 'x', 1));
    // the database itself refuses the row (as a full disk or a constraint would): no half write
    rawSql(file, "CREATE TRIGGER no_adapters BEFORE UPDATE ON adapters BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END");
    throwsVera(() => s.putAdapter(row(a, 'x', 2)), /store adapter failed .*refused by trigger/);
    assert.equal(s.getAdapter(a, 'x')?.weights[0], 1);
    rawSql(file, 'DROP TRIGGER no_adapters');

    const file1 = s.putFile({ owner: a, purpose: 'fine-tune', filename: 'train.jsonl', content: Buffer.from('{}\n') });
    const job = s.createJob({ owner: a, model: 'gpt2', trainingFile: file1.id, hyperparameters: { n_epochs: 1 }, seed: 3, fineTunedModel: 'ft:gpt2:x:1' });
    assert.equal(s.claimNextJob('w1')?.id, job.id);
    s.saveCheckpoint(job.id, 5, new Uint8Array([1, 2, 3]));
    // finishJob = adapter + job status + event: the event insert fails last, so all of it must go
    rawSql(file, "CREATE TRIGGER no_events BEFORE INSERT ON job_events BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END");
    throwsVera(() => s.finishJob(job.id, row(a, 'ft:gpt2:x:1', 4), 100), /finish job failed .*refused by trigger/);
    assert.equal(s.getAdapter(a, 'ft:gpt2:x:1'), null, 'the adapter insert was rolled back');
    const still = s.getJob(a, job.id)!;
    assert.equal(still.status, 'running');
    assert.equal(still.worker, 'w1');
    assert.deepEqual(s.getCheckpoint(job.id), { step: 5, bytes: new Uint8Array([1, 2, 3]) });
    rawSql(file, 'DROP TRIGGER no_events');
    const done = s.finishJob(job.id, row(a, 'ft:gpt2:x:1', 4), 100);
    assert.equal(done.status, 'succeeded');
    assert.equal(done.fineTunedModel, 'ft:gpt2:x:1');
    assert.equal(done.trainedTokens, 100);
    assert.equal(done.worker, null);
    assert.equal(s.getCheckpoint(job.id), null);
    assert.equal(s.resolveAdapter(a, 'ft:gpt2:x:1')?.owner, a);
    assert.deepEqual(s.listJobEvents(job.id).map((e) => [e.seq, e.level, e.message]), [[1, 'info', 'The job has successfully completed']]);
    // an ended job cannot succeed again, nor take another tenant's adapter
    throwsVera(() => s.finishJob(job.id, row(a, 'other', 4)), /is succeeded; only an unfinished job can succeed/);
    const j2 = s.createJob({ owner: a, model: 'gpt2', trainingFile: file1.id, hyperparameters: {}, seed: 1 });
    throwsVera(() => s.finishJob(j2.id, row('', 'other', 4)), /^adapter owner: '' \(admin\) is not job/);
    assert.equal(s.getAdapter('', 'other'), null);
    s.close();
  });
});

test('checksums are verified on read: a corrupted adapter, file or checkpoint is refused, never served', () => {
  withTmp((dir) => {
    const file = join(dir, 's.db');
    const s = ServeStore.open(file);
    const a = s.createTenant('alice').id;
    const meta = s.putAdapter(row(a, 'x', 1));
    assert.equal(meta.checksum, sha(new Uint8Array(64).fill(1)));
    assert.equal(meta.bytes, 64);
    const f = s.putFile({ owner: a, purpose: 'fine-tune', filename: 't.jsonl', content: Buffer.from('hello\n') });
    assert.equal(s.getFile(a, f.id)?.content.toString('utf8'), 'hello\n');
    const job = s.createJob({ owner: a, model: 'm', trainingFile: f.id, hyperparameters: {}, seed: 0 });
    s.saveCheckpoint(job.id, 3, new Uint8Array([9, 9, 9]));
    const flipped = new Uint8Array(64).fill(1);
    flipped[17] ^= 0x10;
    rawSql(file, "UPDATE adapters SET weights = ? WHERE id = 'x'", Buffer.from(flipped));
    throwsVera(() => s.getAdapter(a, 'x'), /adapter tenant-[0-9a-f]+\/x: stored weights fail their checksum/);
    rawSql(file, "UPDATE adapters SET weights = ? WHERE id = 'x'", Buffer.from(new Uint8Array(63).fill(1)));
    throwsVera(() => s.getAdapter(a, 'x'), /fail their checksum/);
    rawSql(file, 'UPDATE files SET content = ? WHERE id = ?', Buffer.from('hellO\n'), f.id);
    throwsVera(() => s.getFile(a, f.id), new RegExp(`file ${f.id}: stored content fails its checksum`));
    rawSql(file, 'UPDATE jobs SET checkpoint = ? WHERE id = ?', Buffer.from([9, 9, 8]), job.id);
    throwsVera(() => s.getCheckpoint(job.id), /stored checkpoint fails its checksum/);
    // the metadata is still readable (so an operator can see what to re-import)
    assert.equal(s.resolveAdapter(a, 'x')?.bytes, 64);
    s.close();
  });
});

test('files and jobs: per-owner, events in order, claims with leases, cancel/fail end a job once', () => {
  withTmp((dir) => {
    const file = join(dir, 's.db');
    const s = ServeStore.open(file);
    const a = s.createTenant('alice').id;
    const b = s.createTenant('bob').id;
    const fa = s.putFile({ owner: a, purpose: 'fine-tune', filename: 'a.jsonl', content: Buffer.from('a') });
    s.putFile({ owner: b, purpose: 'fine-tune', filename: 'b.jsonl', content: Buffer.from('b') });
    assert.match(fa.id, /^file-[0-9a-f]{24}$/);
    assert.deepEqual(s.listFiles(a).map((f) => f.filename), ['a.jsonl']);
    assert.equal(s.getFileMeta(b, fa.id), null);
    assert.equal(s.getFile(b, fa.id), null);
    assert.equal(s.deleteFile(b, fa.id), false);

    const j1 = s.createJob({ owner: a, model: 'm', trainingFile: fa.id, hyperparameters: { n_epochs: 2 }, seed: 7, suffix: 'mine' });
    const j2 = s.createJob({ id: 'ftjob-given', owner: b, model: 'm', trainingFile: 'file-x', hyperparameters: {}, seed: 8 });
    const j3 = s.createJob({ owner: a, model: 'm', trainingFile: fa.id, hyperparameters: {}, seed: 9 });
    assert.match(j1.id, /^ftjob-[0-9a-f]{24}$/);
    assert.equal(j2.id, 'ftjob-given');
    throwsVera(() => s.createJob({ id: 'ftjob-given', owner: b, model: 'm', trainingFile: 'f', hyperparameters: {}, seed: 1 }), /^job id: ftjob-given already exists/);
    assert.equal(j1.status, 'queued');
    assert.deepEqual(j1.hyperparameters, { n_epochs: 2 });
    assert.equal(j1.seed, 7);
    assert.deepEqual(s.listJobs(a).map((j) => j.id), [j3.id, j1.id], 'newest first, own only');
    assert.deepEqual(s.listJobs(a, { after: j3.id }).map((j) => j.id), [j1.id]);
    assert.deepEqual(s.listJobs(null, { limit: 2 }).map((j) => j.id), [j3.id, j2.id]);
    assert.equal(s.getJob(b, j1.id), null);
    assert.deepEqual(s.unfinishedJobs().map((j) => j.id), [j1.id, j2.id, j3.id]);

    // claims: oldest first; a held job is not handed out again until released or its lease lapses
    assert.equal(s.claimNextJob('w1')?.id, j1.id);
    assert.equal(s.claimNextJob('w2')?.id, j2.id);
    assert.equal(s.claimNextJob('w5')?.id, j3.id);
    assert.equal(s.claimNextJob('w3'), null);
    // a worker asking for work holds none: its old claim is from before a restart, so it gets that job back at once
    assert.equal(s.claimNextJob('w5')?.id, j3.id);
    assert.equal(s.releaseJob(j1.id, 'w2'), false, 'only the holder releases');
    assert.equal(s.releaseJob(j1.id, 'w1'), true);
    assert.equal(s.getJob(a, j1.id)?.status, 'running');
    assert.equal(s.claimNextJob('w3')?.id, j1.id, 'a released running job resumes elsewhere');
    rawSql(file, 'UPDATE jobs SET lease_until = 0 WHERE id = ?', j2.id);
    assert.equal(s.renewJobLease(j1.id, 'w3', 60), true);
    assert.equal(s.claimNextJob('w4')?.id, j2.id, 'an expired lease is taken over');
    assert.equal(s.renewJobLease(j2.id, 'w2'), false, 'the old holder learns it lost the job');

    const e1 = s.addJobEvent(j1.id, 'info', 'step 1');
    const e2 = s.addJobEvent(j1.id, 'warn', 'step 2');
    s.addJobEvent(j3.id, 'info', 'other job');
    assert.deepEqual([e1.seq, e2.seq], [1, 2]);
    assert.deepEqual(s.listJobEvents(j1.id).map((e) => e.message), ['step 1', 'step 2']);
    assert.deepEqual(s.listJobEvents(j1.id, { order: 'desc', limit: 1 }).map((e) => e.message), ['step 2']);
    assert.deepEqual(s.listJobEvents(j1.id, { after: 1 }).map((e) => e.message), ['step 2']);
    throwsVera(() => s.addJobEvent('ftjob-none', 'info', 'x'), /^job: no job with id ftjob-none/);
    throwsVera(() => s.addJobEvent(j1.id, 'debug' as 'info', 'x'), /^job event level: "debug"/);

    const cancelled = s.cancelJob(j1.id);
    assert.equal(cancelled?.status, 'cancelled');
    assert.ok(cancelled?.finishedAt !== null);
    assert.equal(s.cancelJob(j1.id), null, 'ends once');
    assert.equal(s.failJob(j1.id, { code: 'x', message: 'late', param: null }), null);
    throwsVera(() => s.saveCheckpoint(j1.id, 1, new Uint8Array(1)), /is cancelled; a checkpoint is kept for unfinished jobs only/);
    const failed = s.failJob(j3.id, { code: 'training_failed', message: 'loss is NaN', param: null });
    assert.deepEqual(failed?.error, { code: 'training_failed', message: 'loss is NaN', param: null });
    assert.deepEqual(s.listJobEvents(j3.id).map((e) => [e.level, e.message]), [['info', 'other job'], ['error', 'loss is NaN']]);
    assert.deepEqual(s.unfinishedJobs().map((j) => j.id), [j2.id]);
    const patched = s.updateJob(j2.id, { trainedTokens: 12 }, ['running']);
    assert.equal(patched?.trainedTokens, 12);
    assert.equal(s.updateJob(j2.id, { status: 'failed' }, ['queued']), null);
    assert.equal(s.getJob(null, j2.id)?.status, 'running');
    s.close();
  });
});

test('compactAdapterBytes: VeRA keeps its vectors only (projections checked), LoRA as sent; damaged uploads refused in one line', () => {
  withTmp((dir) => {
    const v = makeAdapter(dir, 'v', veraCfg(), 1);
    // f16 projections are rounded: they are not the pair the key makes, so an f16 VeRA adapter is sent compact
    const v16 = makeAdapter(dir, 'v16', veraCfg(), 2, { dtype: 'f16', saveProjection: false });
    const v16p = makeAdapter(dir, 'v16p', veraCfg(), 2, { dtype: 'f16' });
    const l = makeAdapter(dir, 'l', loraCfg(), 3);
    const read = (d: string): { config: string; weights: Buffer } => ({ config: readFileSync(join(d, ADAPTER_CONFIG), 'utf8'), weights: readFileSync(join(d, ADAPTER_WEIGHTS)) });

    for (const [d, dtype] of [[v, 'F32'], [v16, 'F16']] as const) {
      const up = read(d);
      const original = SafetensorsFile.fromBytes(up.weights, 'orig');
      assert.equal(original.has('base_model.vera_A'), dtype === 'F32');
      const c = compactAdapterBytes(up.config, up.weights, 'upload');
      assert.equal(c.method, 'VERA');
      assert.equal(c.dtype, dtype);
      assert.equal((JSON.parse(c.config) as { save_projection: boolean }).save_projection, false);
      const st = SafetensorsFile.fromBytes(c.weights, 'compact');
      const vectorKeys = original.keys().filter((k) => !/vera_[AB]$/.test(k)).sort();
      assert.deepEqual(st.keys().sort(), vectorKeys);
      assert.ok(vectorKeys.length >= 4 && vectorKeys.every((k) => /vera_lambda_[bd]$/.test(k)));
      for (const k of vectorKeys) {
        assert.equal(st.info(k).dtype, dtype);
        assert.deepEqual(st.getRaw(k), original.getRaw(k), `${k} bytes`);
      }
      if (dtype === 'F32') assert.ok(c.weights.byteLength < up.weights.byteLength);
    }
    const p16 = read(v16p);
    throwsVera(() => compactAdapterBytes(p16.config, p16.weights, 'upload'), /^upload: adapter_model\.safetensors: vera_A\/vera_B are not what projection_prng_key 0 regenerates/);

    const lu = read(l);
    const lc = compactAdapterBytes(lu.config, lu.weights, 'upload');
    assert.equal(lc.method, 'LORA');
    assert.equal(lc.config, lu.config);
    assert.deepEqual(lc.weights, lu.weights);

    // bf16 widens exactly to f32
    const lst = SafetensorsFile.fromBytes(lu.weights, 'l');
    const bf: Record<string, TensorToWrite> = {};
    for (const k of lst.keys()) bf[k] = { data: lst.getFloat32(k), shape: lst.info(k).shape, dtype: 'BF16' };
    const bfc = compactAdapterBytes(lu.config, serializeSafetensors(bf), 'upload');
    assert.equal(bfc.dtype, 'F32');
    const bfst = SafetensorsFile.fromBytes(bfc.weights, 'x');
    const bfOrig = SafetensorsFile.fromBytes(serializeSafetensors(bf), 'y');
    for (const k of lst.keys()) assert.deepEqual(bfst.getFloat32(k), bfOrig.getFloat32(k));

    const vu = read(v);
    const st = SafetensorsFile.fromBytes(vu.weights, 'v');
    const rewrite = (edit: (k: string, d: Float32Array) => void): Uint8Array => {
      const t: Record<string, TensorToWrite> = {};
      for (const k of st.keys()) {
        const d = st.getFloat32(k);
        edit(k, d);
        t[k] = { data: d, shape: st.info(k).shape };
      }
      return serializeSafetensors(t);
    };
    throwsVera(() => compactAdapterBytes(vu.config, rewrite((k, d) => k.endsWith('vera_A') && (d[5] += 1e-3)), 'upload u1'),
      /^upload u1: adapter_model\.safetensors: vera_A\/vera_B are not what projection_prng_key 0 regenerates/);
    throwsVera(() => compactAdapterBytes(vu.config, rewrite((k, d) => k.endsWith('vera_lambda_d') && (d[0] = NaN)), 'upload u2'),
      /^upload u2: adapter_model\.safetensors: tensor base_model\.model\..*vera_lambda_d contains NaN or Inf/);
    throwsVera(() => compactAdapterBytes(vu.config, rewrite((k, d) => k.endsWith('vera_lambda_b') && (d[1] = -Infinity)), 'u3'), /NaN or Inf/);
    throwsVera(() => compactAdapterBytes(vu.config, vu.weights.subarray(0, vu.weights.byteLength - 10), 'u4'), /^u4: adapter_model\.safetensors: .*(beyond|trailing|truncated)/);
    throwsVera(() => compactAdapterBytes(vu.config, vu.weights.subarray(0, 5), 'u5'), /^u5: adapter_model\.safetensors: too short/);
    throwsVera(() => compactAdapterBytes('{"peft_type": "VERA",', vu.weights, 'u6'), /^u6: adapter_config\.json: invalid JSON/);
    throwsVera(() => compactAdapterBytes('[]', vu.weights, 'u7'), /^u7: adapter_config\.json: must be a JSON object/);
    throwsVera(() => compactAdapterBytes('{"peft_type": "IA3"}', vu.weights, 'u8'), /peft_type "IA3" is not supported/);
    throwsVera(() => compactAdapterBytes(vu.config.replace('"r": 4', '"r": -1'), vu.weights, 'u9'), /^u9: adapter_config\.json: .*r/);
    throwsVera(() => compactAdapterBytes(vu.config, serializeSafetensors({}), 'u10'), /^u10: adapter_model\.safetensors: holds no tensors/);
  });
});

test('vera adapters import → export round trip: same vector bytes, same model outputs (VeRA f32/f16 and LoRA); list and keys', async () => {
  await withTmp(async (dir) => {
    const store = join(dir, 'serve.db');
    const key = await runVera(['keys', 'create', '--store', store, '--tenant', 'alice']);
    assert.equal(key.code, 0, key.stderr);
    assert.match(key.stdout, /^vera-[A-Za-z0-9_-]{43}\n$/, 'the key alone on one line');
    const cases = [
      { name: 'v', dir: makeAdapter(dir, 'v', veraCfg(), 11), tenant: [] as string[] },
      { name: 'v16', dir: makeAdapter(dir, 'v16', veraCfg({ projectionPrngKey: 123456789012345678901234567890n % 2n ** 64n }), 12, { dtype: 'f16', saveProjection: false }), tenant: ['--tenant', 'alice'] },
      { name: 'l', dir: makeAdapter(dir, 'l', loraCfg(), 13), tenant: ['--tenant', 'alice'] },
    ];
    for (const c of cases) {
      const imp = await runVera(['adapters', 'import', '--store', store, '--id', `ft:${c.name}`, c.dir, '--model', gpt2Dir, ...c.tenant]);
      assert.equal(imp.code, 0, imp.stderr);
      assert.match(imp.stdout, new RegExp(`^imported ft:${c.name} for ${c.tenant.length ? 'alice' : 'admin'}`));
      const out = join(dir, `out-${c.name}`);
      const exp = await runVera(['adapters', 'export', '--store', store, '--id', `ft:${c.name}`, '--out', out, ...c.tenant]);
      assert.equal(exp.code, 0, exp.stderr);
      assert.deepEqual(readdirSync(out).sort(), [ADAPTER_CONFIG, ADAPTER_WEIGHTS], 'PEFT layout, no temp files left');
      const orig = SafetensorsFile.open(join(c.dir, ADAPTER_WEIGHTS));
      const back = SafetensorsFile.open(join(out, ADAPTER_WEIGHTS));
      const vectors = orig.keys().filter((k) => !/vera_[AB]$/.test(k)).sort();
      assert.deepEqual(back.keys().sort(), vectors);
      for (const k of vectors) assert.deepEqual(back.getRaw(k), orig.getRaw(k), `${c.name}: ${k}`);
      assert.deepEqual(logits(gpt2Dir, out), logits(gpt2Dir, c.dir), `${c.name}: outputs`);
    }
    // the shared admin view: alice sees her two and no unshared admin adapter
    const listed = await runVera(['adapters', 'list', '--store', store, '--tenant', 'alice', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    const rows = JSON.parse(listed.stdout) as { owner: string; id: string; method: string; dtype: string; shared: boolean }[];
    assert.deepEqual(rows.map((r) => [r.owner, r.id, r.method, r.dtype]), [['alice', 'ft:l', 'LORA', 'F32'], ['alice', 'ft:v16', 'VERA', 'F16']]);
    const all = await runVera(['adapters', 'list', '--store', store]);
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, /^OWNER +ID +METHOD/);
    assert.equal(all.stdout.trim().split('\n').length, 4);
    // admin export of alice's adapter id finds nothing (ids are per owner) and writes nothing
    const nope = await runVera(['adapters', 'export', '--store', store, '--id', 'ft:l', '--out', join(dir, 'nope')]);
    assert.equal(nope.code, 1);
    assert.match(nope.stderr, /^vera: --id: no adapter 'ft:l' for admin in /);
    assert.equal(existsSync(join(dir, 'nope')), false);
    // shared admin adapters are exported for a tenant too
    assert.equal((await runVera(['adapters', 'import', '--store', store, '--id', 'base-style', cases[0].dir, '--shared'])).code, 0);
    const sharedOut = join(dir, 'shared-out');
    assert.equal((await runVera(['adapters', 'export', '--store', store, '--id', 'base-style', '--tenant', 'alice', '--out', sharedOut])).code, 0);
    assert.deepEqual(logits(gpt2Dir, sharedOut), logits(gpt2Dir, cases[0].dir));
    const del = await runVera(['adapters', 'delete', '--store', store, '--id', 'ft:l', '--tenant', 'alice']);
    assert.equal(del.code, 0, del.stderr);
    const s = ServeStore.open(store);
    assert.equal(s.resolveAdapter(s.tenantByName('alice')!.id, 'ft:l'), null);
    s.close();
  });
});

test('vera keys / adapters: every bad input is one stderr line naming the flag or file, exit 1, nothing written', async () => {
  await withTmp(async (dir) => {
    const store = join(dir, 'serve.db');
    const v = makeAdapter(dir, 'v', veraCfg(), 21);
    const weights = readFileSync(join(v, ADAPTER_WEIGHTS));
    const config = readFileSync(join(v, ADAPTER_CONFIG), 'utf8');
    const bad = (name: string, files: { config?: string; weights?: Uint8Array }): string => {
      const d = join(dir, name);
      mkdirSync(d);
      if (files.config !== undefined) writeFileSync(join(d, ADAPTER_CONFIG), files.config);
      if (files.weights !== undefined) writeFileSync(join(d, ADAPTER_WEIGHTS), files.weights);
      return d;
    };
    const st = SafetensorsFile.fromBytes(weights, 'v');
    const tampered: Record<string, TensorToWrite> = {};
    for (const k of st.keys()) {
      const d = st.getFloat32(k);
      if (k.endsWith('vera_B')) d[0] *= 2;
      tampered[k] = { data: d, shape: st.info(k).shape };
    }
    const nan: Record<string, TensorToWrite> = {};
    for (const k of st.keys()) {
      const d = st.getFloat32(k);
      if (k.endsWith('lambda_b')) d[2] = NaN;
      nan[k] = { data: d, shape: st.info(k).shape };
    }
    const truncated = bad('truncated', { config, weights: weights.subarray(0, weights.byteLength - 1) });
    const projections = bad('projections', { config, weights: serializeSafetensors(tampered) });
    const nans = bad('nans', { config, weights: serializeSafetensors(nan) });
    const noWeights = bad('no-weights', { config });
    const badJson = bad('bad-json', { config: '{', weights });

    // keys: a bad tenant name writes no store
    let r = await runVera(['keys', 'create', '--store', store, '--tenant', 'bad name']);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'vera: --tenant: "bad name" is not a valid tenant name (1-64 of A-Z a-z 0-9 . _ -)\n');
    assert.equal(r.stdout, '');
    r = await runVera(['keys', 'create', '--store', store]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--tenant/);
    assert.equal(existsSync(store), false);

    // import failures before the store exists: none creates it
    const expectFail = async (args: string[], pattern: RegExp): Promise<void> => {
      const res = await runVera(args);
      assert.equal(res.code, 1, `${args.join(' ')}: ${res.stderr}`);
      assert.equal(res.stderr.trim().split('\n').length, 1, `one line: ${res.stderr}`);
      assert.match(res.stderr, pattern);
      assert.equal(res.stdout, '');
    };
    const imp = (d: string, ...more: string[]): string[] => ['adapters', 'import', '--store', store, '--id', 'x', d, ...more];
    await expectFail(imp(truncated), /^vera: .*truncated: adapter_model\.safetensors: .*(beyond|trailing|truncated)/);
    await expectFail(imp(projections), /^vera: .*projections: adapter_model\.safetensors: vera_A\/vera_B are not what projection_prng_key 0 regenerates/);
    await expectFail(imp(nans), /^vera: .*nans: adapter_model\.safetensors: tensor .*vera_lambda_b contains NaN or Inf/);
    await expectFail(imp(noWeights), /^vera: .*no-weights\/adapter_model\.safetensors: not found/);
    await expectFail(imp(badJson), /^vera: .*bad-json: adapter_config\.json: invalid JSON/);
    await expectFail(imp(join(dir, 'missing')), /^vera: .*missing\/adapter_config\.json: not found/);
    await expectFail(['adapters', 'import', '--store', store, '--id', 'a/b', v], /^vera: --id: "a\/b" is not a valid adapter id/);
    await expectFail(imp(v, '--model', llamaDir), /^vera: .*(target_modules|c_attn|matches no)/);
    await expectFail(imp(v, '--tenant', 'alice', '--shared'), /^vera: --shared: only admin-owned adapters/);
    await expectFail(imp(v, '--tenant', 'alice'), /^vera: --store .*serve\.db: no store there/);
    assert.equal(existsSync(store), false, 'no failed import created the store');

    // with a store: failures leave it as it was
    assert.equal((await runVera(['keys', 'create', '--store', store, '--tenant', 'alice'])).code, 0);
    assert.equal((await runVera(imp(v))).code, 0);
    const s0 = ServeStore.open(store);
    const before = s0.listAdapters(null);
    s0.close();
    await expectFail(imp(v, '--tenant', 'bob'), /^vera: --tenant: no tenant named 'bob'/);
    await expectFail(imp(projections), /vera_A\/vera_B are not what/);
    await expectFail(['adapters', 'list', '--store', store, '--tenant', 'bob'], /^vera: --tenant: no tenant named 'bob'/);
    await expectFail(['adapters', 'delete', '--store', store, '--id', 'x', '--tenant', 'alice'], /^vera: --id: no adapter 'x' owned by alice/);
    const junk = join(dir, 'junk.db');
    writeFileSync(junk, 'not sqlite '.repeat(100));
    await expectFail(['adapters', 'list', '--store', junk], /^vera: --store .*junk\.db: cannot open store/);
    await expectFail(['adapters', 'import', '--store', junk, '--id', 'x', v], /^vera: --store .*junk\.db: cannot open store/);
    assert.equal(readFileSync(junk, 'utf8'), 'not sqlite '.repeat(100));
    const s1 = ServeStore.open(store);
    assert.deepEqual(s1.listAdapters(null), before);
    assert.equal(s1.listTenants().length, 1);
    s1.close();
  });
});

test('kill -9 while writing: every acknowledged adapter reads back with a good checksum, and no partial row exists', async () => {
  await withTmp(async (dir) => {
    const file = join(dir, 'serve.db');
    const child = join(dir, 'writer.mjs');
    // each write: a fresh 0.25-1 MiB blob whose checksum the parent recomputes from its seed
    writeFileSync(
      child,
      `import { ServeStore } from ${JSON.stringify(storeModule)};
import { createHash } from 'node:crypto';
const [file, prefix] = process.argv.slice(2);
const store = ServeStore.open(file);
const blob = (i) => { const n = 262144 + (i % 4) * 262144; const b = new Uint8Array(n); let x = i + 1; for (let j = 0; j < n; j += 4) { x = (x * 1103515245 + 12345) >>> 0; b[j] = x & 255; b[j + 1] = (x >>> 8) & 255; } return b; };
for (let i = 0; ; i++) {
  store.putAdapter({ owner: '', id: prefix + i, method: 'VERA', config: '{"peft_type":"VERA","i":' + i + '}', weights: blob(i), dtype: 'F32' });
  process.stdout.write(prefix + i + '\\n');
}
`,
    );
    const expected = (i: number): string => {
      const n = 262144 + (i % 4) * 262144;
      const b = new Uint8Array(n);
      let x = i + 1;
      for (let j = 0; j < n; j += 4) {
        x = (x * 1103515245 + 12345) >>> 0;
        b[j] = x & 255;
        b[j + 1] = (x >>> 8) & 255;
      }
      return sha(b);
    };
    for (const round of [0, 1, 2]) {
      const prefix = `r${round}-`;
      const acked: string[] = [];
      const target = 6 + round * 5;
      await new Promise<void>((resolve, reject) => {
        const p = spawn(process.execPath, [child, file, prefix], { stdio: ['ignore', 'pipe', 'pipe'] });
        let buf = '';
        let err = '';
        let killed = false;
        p.stdout.on('data', (d: Buffer) => {
          buf += d.toString();
          const lines = buf.split('\n');
          buf = lines.pop()!;
          acked.push(...lines);
          if (!killed && acked.length >= target) {
            killed = true;
            // a varying moment inside the next write
            setTimeout(() => p.kill('SIGKILL'), round * 3);
          }
        });
        p.stderr.on('data', (d: Buffer) => (err += d.toString()));
        p.on('error', reject);
        p.on('close', (code, signal) => (signal === 'SIGKILL' ? resolve() : reject(new Error(`writer exited ${code}: ${err}`))));
      });
      assert.ok(acked.length >= target);
      const s = ServeStore.open(file);
      const stored = s.listAdapters(null).filter((m) => m.id.startsWith(prefix));
      // every acknowledged write is there, at most the one in flight besides, and nothing else
      assert.ok(stored.length === acked.length || stored.length === acked.length + 1, `${stored.length} rows for ${acked.length} acknowledged`);
      const storedIds = new Set(stored.map((m) => m.id));
      for (let i = 0; i < stored.length; i++) assert.ok(storedIds.has(`${prefix}${i}`), `${prefix}${i} missing`);
      for (const m of stored) {
        const rec = s.getAdapter('', m.id)!; // throws on a checksum mismatch
        const i = Number(m.id.slice(prefix.length));
        assert.equal(rec.checksum, expected(i), `${m.id}: the bytes written`);
        assert.equal(JSON.parse(rec.config).i, i);
      }
      s.close();
      const db = new Database(file, { readonly: true });
      assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
      db.close();
    }
  });
});
