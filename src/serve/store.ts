// The serving state on disk: tenants, API keys (hashes only), adapters, uploaded files and
// fine-tuning jobs, in one SQLite file. WAL + synchronous=FULL so an answered write survives a crash
// or kill; every write is one IMMEDIATE transaction (several processes may share the file, and
// IMMEDIATE takes the write lock up front, where busy_timeout applies, instead of failing on upgrade).
// Blobs carry a sha256 that is checked on every read: a damaged row is refused, never served.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { VeraError, fail } from '../io/errors.js';

/** Bumped when the schema changes; a store from a newer vera is refused rather than misread. */
export const STORE_SCHEMA_VERSION = 1;

/** Adapter ids (and job/file ids given by callers): what a URL path segment and a file name can hold. */
const ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;
/** Tenant names: as ids, no colon (keeps `tenant:id` spellings unambiguous for callers). */
const NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;
const KEY_PREFIX = 'vera-';

export type AdapterMethod = 'VERA' | 'LORA';
/** Storage dtype of a stored adapter's tensors. */
export type AdapterStoreDtype = 'F16' | 'F32';
export type JobStatus = 'validating_files' | 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';
export type JobEventLevel = 'info' | 'warn' | 'error';

const JOB_STATUSES: readonly JobStatus[] = ['validating_files', 'queued', 'running', 'succeeded', 'failed', 'cancelled'];
/** Statuses a job can still leave: what unfinishedJobs returns and finishJob accepts. */
const UNFINISHED: readonly JobStatus[] = ['validating_files', 'queued', 'running'];

export interface Tenant {
  /** `tenant-` + 24 hex digits. */
  id: string;
  name: string;
  /** Unix seconds. */
  createdAt: number;
}

/** An adapter without its weights. `owner` is a tenant id, or '' for admin-owned. */
export interface AdapterMeta {
  owner: string;
  id: string;
  /** Admin-owned only: usable by every tenant that has no adapter of this id. */
  shared: boolean;
  method: AdapterMethod;
  dtype: AdapterStoreDtype;
  /** sha256 hex of the weights. */
  checksum: string;
  /** Length of the weights in bytes. */
  bytes: number;
  createdAt: number;
  updatedAt: number;
}

/** An adapter with its two files' contents (checksum verified). */
export interface AdapterRecord extends AdapterMeta {
  /** adapter_config.json text. */
  config: string;
  /** adapter_model.safetensors bytes (VeRA: compact form). */
  weights: Uint8Array;
}

/** What putAdapter stores; `shared` undefined keeps a replaced adapter's flag (false for a new one). */
export interface AdapterInput {
  owner: string;
  id: string;
  method: AdapterMethod;
  config: string;
  weights: Uint8Array;
  dtype: AdapterStoreDtype;
  shared?: boolean;
}

export interface FileMeta {
  /** `file-` + 24 hex digits. */
  id: string;
  owner: string;
  purpose: string;
  filename: string;
  bytes: number;
  createdAt: number;
}

export interface FileRecord extends FileMeta {
  /** A Buffer, so callers can decode it (`content.toString('utf8')`). */
  content: Buffer;
}

export interface FileInput {
  owner: string;
  purpose: string;
  filename: string;
  content: Uint8Array;
}

/** A job's error as OpenAI reports it. */
export interface JobError {
  code: string;
  message: string;
  param: string | null;
}

export interface Job {
  /** `ftjob-` + 24 hex digits. */
  id: string;
  owner: string;
  model: string;
  trainingFile: string;
  hyperparameters: Record<string, unknown>;
  suffix: string | null;
  status: JobStatus;
  /** The adapter id it produced (owned by `owner`), once succeeded. */
  fineTunedModel: string | null;
  error: JobError | null;
  trainedTokens: number | null;
  /** The training run's seed (fixed at creation so a resumed run is the same run). */
  seed: number;
  createdAt: number;
  finishedAt: number | null;
  /** Step of the saved checkpoint, or null when none. */
  checkpointStep: number | null;
  /** The worker that holds the job (claimNextJob), or null. */
  worker: string | null;
  /** Unix seconds the worker's claim lasts until, unless renewed. */
  leaseUntil: number | null;
}

export interface JobInput {
  /** Default: `ftjob-` + 24 random hex digits. */
  id?: string;
  owner: string;
  model: string;
  trainingFile: string;
  hyperparameters: Record<string, unknown>;
  suffix?: string | null;
  seed: number;
  /** The adapter id the job will produce (set now so clients see it), or null. */
  fineTunedModel?: string | null;
  /** Default 'queued' (claimNextJob takes validating_files and queued jobs alike). */
  status?: JobStatus;
}

/** Fields updateJob may change; absent ones stay. */
export interface JobPatch {
  status?: JobStatus;
  fineTunedModel?: string | null;
  error?: JobError | null;
  trainedTokens?: number | null;
  finishedAt?: number | null;
}

export interface JobEvent {
  jobId: string;
  /** 1, 2, … per job, in the order written. */
  seq: number;
  createdAt: number;
  level: JobEventLevel;
  message: string;
}

export interface ListJobsOptions {
  /** Only jobs created before this job id (newest first, as OpenAI pages). */
  after?: string;
  limit?: number;
}

export interface ListEventsOptions {
  /** 'asc' (default): seq > after; 'desc': newest first, seq < after. */
  order?: 'asc' | 'desc';
  after?: number;
  limit?: number;
}

/** Size limits the store enforces (bytes, or characters for text). */
export interface StoreLimits {
  adapterBytes: number;
  configChars: number;
  fileBytes: number;
  checkpointBytes: number;
  textChars: number;
}

export interface StoreOptions {
  /** false: refuse a path with no store yet instead of creating one (default true). */
  create?: boolean;
  /** Milliseconds a write waits for another process's lock (default 10 000). */
  busyTimeoutMs?: number;
  limits?: Partial<StoreLimits>;
}

const DEFAULT_LIMITS: StoreLimits = {
  adapterBytes: 512 * 2 ** 20,
  configChars: 2 ** 20,
  fileBytes: 512 * 2 ** 20,
  checkpointBytes: 900 * 2 ** 20, // under SQLite's 1e9-byte value limit
  textChars: 64 * 1024,
};

const SCHEMA = `
CREATE TABLE tenants(
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL
) STRICT;
CREATE TABLE api_keys(
  hash TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);
CREATE TABLE adapters(
  owner TEXT NOT NULL,
  id TEXT NOT NULL,
  shared INTEGER NOT NULL CHECK (shared IN (0, 1) AND (shared = 0 OR owner = '')),
  method TEXT NOT NULL CHECK (method IN ('VERA', 'LORA')),
  config TEXT NOT NULL,
  weights BLOB NOT NULL,
  dtype TEXT NOT NULL CHECK (dtype IN ('F16', 'F32')),
  checksum TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (owner, id)
) STRICT;
CREATE INDEX adapters_shared ON adapters(id) WHERE shared = 1;
CREATE TABLE files(
  id TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  purpose TEXT NOT NULL,
  filename TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  checksum TEXT NOT NULL,
  content BLOB NOT NULL,
  created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX files_owner ON files(owner);
CREATE TABLE jobs(
  id TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  model TEXT NOT NULL,
  training_file TEXT NOT NULL,
  hyperparameters TEXT NOT NULL,
  suffix TEXT,
  status TEXT NOT NULL CHECK (status IN ('validating_files', 'queued', 'running', 'succeeded', 'failed', 'cancelled')),
  fine_tuned_model TEXT,
  error TEXT,
  trained_tokens INTEGER,
  seed INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  finished_at INTEGER,
  checkpoint BLOB,
  checkpoint_step INTEGER,
  checkpoint_checksum TEXT,
  worker TEXT,
  lease_until INTEGER,
  lease_s INTEGER
) STRICT;
CREATE INDEX jobs_owner ON jobs(owner);
CREATE INDEX jobs_status ON jobs(status);
CREATE TABLE job_events(
  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  level TEXT NOT NULL CHECK (level IN ('info', 'warn', 'error')),
  message TEXT NOT NULL,
  PRIMARY KEY (job_id, seq)
) STRICT;
`;

const now = (): number => Math.floor(Date.now() / 1000);
const sha256 = (data: Uint8Array | string): string => createHash('sha256').update(data).digest('hex');
const newId = (prefix: string): string => `${prefix}-${randomBytes(12).toString('hex')}`;
/** SQLite hands BLOBs back as Buffers; callers get a plain view of the same bytes. */
const bytesOf = (b: Buffer): Uint8Array => new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
/** The driver binds Buffers as BLOBs; a Buffer over the same memory, no copy. */
const blob = (u: Uint8Array): Buffer => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

/** Whether `id` is a valid adapter (or caller-given job) id: 1-128 of A-Z a-z 0-9 . _ : - */
export function isValidId(id: string): boolean {
  return ID_RE.test(id);
}

/** Whether `name` is a valid tenant name: 1-64 of A-Z a-z 0-9 . _ - */
export function isValidTenantName(name: string): boolean {
  return NAME_RE.test(name);
}

/** sha256 hex of an API key: the only form a key is kept in. */
export function hashApiKey(key: string): string {
  return sha256(key);
}

interface TenantRow { id: string; name: string; created_at: number }
interface AdapterMetaRow { owner: string; id: string; shared: number; method: AdapterMethod; dtype: AdapterStoreDtype; checksum: string; bytes: number; created_at: number; updated_at: number }
interface AdapterRow extends AdapterMetaRow { config: string; weights: Buffer }
interface FileMetaRow { id: string; owner: string; purpose: string; filename: string; bytes: number; created_at: number }
interface FileRow extends FileMetaRow { checksum: string; content: Buffer }
interface JobRow {
  id: string; owner: string; model: string; training_file: string; hyperparameters: string; suffix: string | null; status: JobStatus;
  fine_tuned_model: string | null; error: string | null; trained_tokens: number | null; seed: number; created_at: number; finished_at: number | null; checkpoint_step: number | null;
  worker: string | null; lease_until: number | null;
}
interface EventRow { job_id: string; seq: number; created_at: number; level: JobEventLevel; message: string }

const ADAPTER_META_COLS = 'owner, id, shared, method, dtype, checksum, bytes, created_at, updated_at';
const JOB_COLS = 'id, owner, model, training_file, hyperparameters, suffix, status, fine_tuned_model, error, trained_tokens, seed, created_at, finished_at, checkpoint_step, worker, lease_until';

const tenantOf = (r: TenantRow): Tenant => ({ id: r.id, name: r.name, createdAt: r.created_at });
const adapterMetaOf = (r: AdapterMetaRow): AdapterMeta => ({
  owner: r.owner, id: r.id, shared: r.shared === 1, method: r.method, dtype: r.dtype, checksum: r.checksum, bytes: r.bytes, createdAt: r.created_at, updatedAt: r.updated_at,
});
const fileMetaOf = (r: FileMetaRow): FileMeta => ({ id: r.id, owner: r.owner, purpose: r.purpose, filename: r.filename, bytes: r.bytes, createdAt: r.created_at });
const jobOf = (r: JobRow): Job => ({
  id: r.id, owner: r.owner, model: r.model, trainingFile: r.training_file, hyperparameters: JSON.parse(r.hyperparameters) as Record<string, unknown>,
  suffix: r.suffix, status: r.status, fineTunedModel: r.fine_tuned_model, error: r.error === null ? null : (JSON.parse(r.error) as JobError),
  trainedTokens: r.trained_tokens, seed: r.seed, createdAt: r.created_at, finishedAt: r.finished_at, checkpointStep: r.checkpoint_step, worker: r.worker, leaseUntil: r.lease_until,
});
const eventOf = (r: EventRow): JobEvent => ({ jobId: r.job_id, seq: r.seq, createdAt: r.created_at, level: r.level, message: r.message });

/** Synchronous store over one SQLite file; open with ServeStore.open, close when done. */
export class ServeStore {
  readonly limits: StoreLimits;

  private constructor(
    /** The file, as given (used in error messages). */
    readonly path: string,
    private readonly db: Database.Database,
    limits: StoreLimits,
  ) {
    this.limits = limits;
  }

  /**
   * Opens (creating it and its folder unless `create: false`) the store at `path`. A file that is
   * not a SQLite database, or a store from a newer schema, is refused in one line naming `path`.
   */
  static open(path: string, opts: StoreOptions = {}): ServeStore {
    if (path === '') fail('store path is empty');
    if (opts.create === false && !existsSync(path)) fail(`${path}: no store there (nothing to read)`);
    let db: Database.Database;
    try {
      if (opts.create !== false && path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
      db = new Database(path, { fileMustExist: opts.create === false });
    } catch (e) {
      fail(`${path}: cannot open store (${(e as Error).message})`);
    }
    try {
      db.pragma(`busy_timeout = ${Math.max(0, Math.floor(opts.busyTimeoutMs ?? 10_000))}`);
      const mode = db.pragma('journal_mode = WAL', { simple: true });
      // ':memory:' (tests) has no journal file to put in WAL mode, nor anything to keep durable
      if (mode !== 'wal' && path !== ':memory:') fail(`${path}: the store needs WAL journaling, which this filesystem refuses (got ${String(mode)})`);
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      // schema creation is a write like any other: one transaction, and two processes opening a
      // fresh file at once cannot both create it (the second sees user_version set)
      db.transaction(() => {
        const version = db.pragma('user_version', { simple: true }) as number;
        if (version === 0) {
          const tables = db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table'").get() as { n: number };
          if (tables.n > 0) fail(`${path}: a SQLite database that is not a vera store`);
          db.exec(SCHEMA);
          db.pragma(`user_version = ${STORE_SCHEMA_VERSION}`);
        } else if (version > STORE_SCHEMA_VERSION) {
          fail(`${path}: store schema version ${version} is newer than this vera understands (${STORE_SCHEMA_VERSION})`);
        }
      }).immediate();
    } catch (e) {
      db.close();
      if (e instanceof VeraError) throw e;
      fail(`${path}: cannot open store (${(e as Error).message})`);
    }
    return new ServeStore(path, db, { ...DEFAULT_LIMITS, ...opts.limits });
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  /** One IMMEDIATE transaction; SQLite failures (busy, disk full…) become one-line VeraErrors. */
  private write<T>(what: string, fn: () => T): T {
    try {
      return this.db.transaction(fn).immediate();
    } catch (e) {
      if (e instanceof VeraError) throw e;
      if (e instanceof Database.SqliteError) fail(`${this.path}: ${what} failed (${e.code}: ${e.message})`);
      throw e;
    }
  }

  // ---------------------------------------------------------------------------
  // tenants and keys

  /** A new tenant; its name must be new. */
  createTenant(name: string): Tenant {
    checkName(name);
    return this.write('create tenant', () => {
      if (this.tenantByName(name)) fail(`tenant: a tenant named '${name}' already exists`);
      return this.insertTenant(name);
    });
  }

  private insertTenant(name: string): Tenant {
    const t: Tenant = { id: newId('tenant'), name, createdAt: now() };
    this.db.prepare('INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)').run(t.id, t.name, t.createdAt);
    return t;
  }

  tenantByName(name: string): Tenant | null {
    const r = this.db.prepare('SELECT id, name, created_at FROM tenants WHERE name = ?').get(name) as TenantRow | undefined;
    return r ? tenantOf(r) : null;
  }

  tenantById(id: string): Tenant | null {
    const r = this.db.prepare('SELECT id, name, created_at FROM tenants WHERE id = ?').get(id) as TenantRow | undefined;
    return r ? tenantOf(r) : null;
  }

  listTenants(): Tenant[] {
    return (this.db.prepare('SELECT id, name, created_at FROM tenants ORDER BY name').all() as TenantRow[]).map(tenantOf);
  }

  /** A new API key for tenant `tenantName` (created if missing). Returns the key; only its sha256 is kept. */
  createApiKey(tenantName: string): string {
    checkName(tenantName);
    const key = KEY_PREFIX + randomBytes(32).toString('base64url');
    this.write('create API key', () => {
      const tenant = this.tenantByName(tenantName) ?? this.insertTenant(tenantName);
      this.db.prepare('INSERT INTO api_keys (hash, tenant_id, created_at) VALUES (?, ?, ?)').run(hashApiKey(key), tenant.id, now());
    });
    return key;
  }

  /** The tenant a key belongs to, or null for an unknown (or malformed) key. */
  authenticate(key: string): Tenant | null {
    if (typeof key !== 'string' || !key.startsWith(KEY_PREFIX) || key.length > 200) return null;
    const r = this.db
      .prepare('SELECT t.id, t.name, t.created_at FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.hash = ?')
      .get(hashApiKey(key)) as TenantRow | undefined;
    return r ? tenantOf(r) : null;
  }

  /** Forget a key; true if it existed. */
  revokeApiKey(key: string): boolean {
    return this.write('revoke API key', () => this.db.prepare('DELETE FROM api_keys WHERE hash = ?').run(hashApiKey(key)).changes > 0);
  }

  // ---------------------------------------------------------------------------
  // adapters

  /** Insert or replace adapter (owner, id) in one transaction; returns what was stored. */
  putAdapter(a: AdapterInput): AdapterMeta {
    this.checkAdapter(a);
    return this.write('store adapter', () => this.upsertAdapter(a));
  }

  private checkAdapter(a: AdapterInput): void {
    checkId(a.id, 'adapter id');
    if (a.owner !== '') checkOwner(a.owner);
    if (a.method !== 'VERA' && a.method !== 'LORA') fail(`adapter method: must be VERA or LORA, got ${JSON.stringify(a.method)}`);
    if (a.dtype !== 'F16' && a.dtype !== 'F32') fail(`adapter dtype: must be F16 or F32, got ${JSON.stringify(a.dtype)}`);
    if (typeof a.config !== 'string' || a.config.length === 0) fail('adapter config: must be non-empty adapter_config.json text');
    if (a.config.length > this.limits.configChars) fail(`adapter config: ${a.config.length} characters, over the limit of ${this.limits.configChars}`);
    if (!(a.weights instanceof Uint8Array) || a.weights.byteLength === 0) fail('adapter weights: must be non-empty adapter_model.safetensors bytes');
    if (a.weights.byteLength > this.limits.adapterBytes) fail(`adapter weights: ${a.weights.byteLength} bytes, over the limit of ${this.limits.adapterBytes}`);
    if (a.shared === true && a.owner !== '') fail(`adapter shared: only admin-owned adapters can be shared (owner is ${a.owner})`);
  }

  /** The write of putAdapter, inside a caller's transaction. */
  private upsertAdapter(a: AdapterInput): AdapterMeta {
    if (a.owner !== '' && !this.tenantById(a.owner)) fail(`adapter owner: no tenant with id ${a.owner}`);
    const t = now();
    const old = this.db.prepare('SELECT shared, created_at FROM adapters WHERE owner = ? AND id = ?').get(a.owner, a.id) as { shared: number; created_at: number } | undefined;
    const shared = a.shared ?? (old ? old.shared === 1 : false);
    const meta: AdapterMeta = {
      owner: a.owner, id: a.id, shared, method: a.method, dtype: a.dtype, checksum: sha256(a.weights), bytes: a.weights.byteLength,
      createdAt: old ? old.created_at : t, updatedAt: t,
    };
    this.db
      .prepare(
        `INSERT INTO adapters (owner, id, shared, method, config, weights, dtype, checksum, bytes, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (owner, id) DO UPDATE SET shared = excluded.shared, method = excluded.method, config = excluded.config,
           weights = excluded.weights, dtype = excluded.dtype, checksum = excluded.checksum, bytes = excluded.bytes, updated_at = excluded.updated_at`,
      )
      .run(meta.owner, meta.id, shared ? 1 : 0, meta.method, a.config, blob(a.weights), meta.dtype, meta.checksum, meta.bytes, meta.createdAt, meta.updatedAt);
    return meta;
  }

  /** Adapter (owner, id) with its weights, or null; a row whose weights fail their checksum throws. */
  getAdapter(owner: string, id: string): AdapterRecord | null {
    const r = this.db.prepare(`SELECT ${ADAPTER_META_COLS}, config, weights FROM adapters WHERE owner = ? AND id = ?`).get(owner, id) as AdapterRow | undefined;
    if (!r) return null;
    const weights = bytesOf(r.weights);
    if (weights.byteLength !== r.bytes || sha256(weights) !== r.checksum) {
      fail(`${this.path}: adapter ${owner === '' ? 'admin' : owner}/${id}: stored weights fail their checksum (store damaged; import the adapter again)`);
    }
    return { ...adapterMetaOf(r), config: r.config, weights };
  }

  /** The adapter tenant `tenant` means by `id`: its own, else a shared admin one; null if neither. */
  resolveAdapter(tenant: string, id: string): AdapterMeta | null {
    const r = this.db
      .prepare(`SELECT ${ADAPTER_META_COLS} FROM adapters WHERE id = ? AND (owner = ? OR (owner = '' AND shared = 1)) ORDER BY owner = ? DESC LIMIT 1`)
      .get(id, tenant, tenant) as AdapterMetaRow | undefined;
    return r ? adapterMetaOf(r) : null;
  }

  /**
   * null (admin): every adapter. A tenant id: its own adapters and the shared admin ones it can
   * use (those whose id it has not taken itself). '': the admin-owned ones. Sorted by id, owner.
   */
  listAdapters(tenant: string | null): AdapterMeta[] {
    const rows =
      tenant === null
        ? this.db.prepare(`SELECT ${ADAPTER_META_COLS} FROM adapters ORDER BY id, owner`).all()
        : this.db
            .prepare(
              `SELECT ${ADAPTER_META_COLS} FROM adapters a WHERE owner = ?
                 OR (owner = '' AND shared = 1 AND NOT EXISTS (SELECT 1 FROM adapters o WHERE o.owner = ? AND o.id = a.id))
               ORDER BY id, owner`,
            )
            .all(tenant, tenant);
    return (rows as AdapterMetaRow[]).map(adapterMetaOf);
  }

  /** Delete adapter (owner, id); true if it existed. A tenant cannot delete a shared admin adapter. */
  deleteAdapter(owner: string, id: string): boolean {
    return this.write('delete adapter', () => this.db.prepare('DELETE FROM adapters WHERE owner = ? AND id = ?').run(owner, id).changes > 0);
  }

  /** Share (or stop sharing) admin-owned adapter `id`; false if there is none. */
  setShared(id: string, shared: boolean): boolean {
    return this.write('share adapter', () => this.db.prepare("UPDATE adapters SET shared = ?, updated_at = ? WHERE owner = '' AND id = ?").run(shared ? 1 : 0, now(), id).changes > 0);
  }

  // ---------------------------------------------------------------------------
  // files

  /** Store an uploaded file; its id is generated. */
  putFile(f: FileInput): FileMeta {
    if (f.owner !== '') checkOwner(f.owner);
    checkText(f.purpose, 'file purpose', 64);
    checkText(f.filename, 'file filename', 1024);
    if (!(f.content instanceof Uint8Array)) fail('file content: must be bytes');
    if (f.content.byteLength > this.limits.fileBytes) fail(`file content: ${f.content.byteLength} bytes, over the limit of ${this.limits.fileBytes}`);
    const meta: FileMeta = { id: newId('file'), owner: f.owner, purpose: f.purpose, filename: f.filename, bytes: f.content.byteLength, createdAt: now() };
    this.write('store file', () => {
      this.db
        .prepare('INSERT INTO files (id, owner, purpose, filename, bytes, checksum, content, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
        .run(meta.id, meta.owner, meta.purpose, meta.filename, meta.bytes, sha256(f.content), blob(f.content), meta.createdAt);
    });
    return meta;
  }

  /** File `id` of `owner` without its content, or null. */
  getFileMeta(owner: string, id: string): FileMeta | null {
    const r = this.db.prepare('SELECT id, owner, purpose, filename, bytes, created_at FROM files WHERE owner = ? AND id = ?').get(owner, id) as FileMetaRow | undefined;
    return r ? fileMetaOf(r) : null;
  }

  /** File `id` of `owner` with its content (checksum verified), or null. */
  getFile(owner: string, id: string): FileRecord | null {
    const r = this.db.prepare('SELECT id, owner, purpose, filename, bytes, created_at, checksum, content FROM files WHERE owner = ? AND id = ?').get(owner, id) as FileRow | undefined;
    if (!r) return null;
    const content = r.content;
    if (content.byteLength !== r.bytes || sha256(content) !== r.checksum) fail(`${this.path}: file ${id}: stored content fails its checksum (store damaged; upload it again)`);
    return { ...fileMetaOf(r), content };
  }

  /** `owner`'s files, oldest first. */
  listFiles(owner: string): FileMeta[] {
    return (this.db.prepare('SELECT id, owner, purpose, filename, bytes, created_at FROM files WHERE owner = ? ORDER BY rowid').all(owner) as FileMetaRow[]).map(fileMetaOf);
  }

  deleteFile(owner: string, id: string): boolean {
    return this.write('delete file', () => this.db.prepare('DELETE FROM files WHERE owner = ? AND id = ?').run(owner, id).changes > 0);
  }

  // ---------------------------------------------------------------------------
  // fine-tuning jobs

  /** A new job (id generated unless given), status 'queued' unless given. */
  createJob(j: JobInput): Job {
    if (j.id !== undefined) checkId(j.id, 'job id');
    if (j.owner !== '') checkOwner(j.owner);
    checkText(j.model, 'job model', 256);
    checkText(j.trainingFile, 'job training_file', 256);
    if (j.suffix != null) checkText(j.suffix, 'job suffix', 256);
    if (j.fineTunedModel != null) checkId(j.fineTunedModel, 'job fine_tuned_model');
    checkCount(j.seed, 'job seed');
    const status = j.status ?? 'queued';
    checkStatus(status);
    const hp = jsonText(j.hyperparameters, 'job hyperparameters', this.limits.textChars);
    const id = j.id ?? newId('ftjob');
    return this.write('create job', () => {
      if (this.getJob(null, id)) fail(`job id: ${id} already exists`);
      this.db
        .prepare('INSERT INTO jobs (id, owner, model, training_file, hyperparameters, suffix, status, fine_tuned_model, seed, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)')
        .run(id, j.owner, j.model, j.trainingFile, hp, j.suffix ?? null, status, j.fineTunedModel ?? null, j.seed, now());
      return this.getJob(null, id)!;
    });
  }

  /** Job `id`; `owner` null (admin) finds any owner's. */
  getJob(owner: string | null, id: string): Job | null {
    const r = (owner === null
      ? this.db.prepare(`SELECT ${JOB_COLS} FROM jobs WHERE id = ?`).get(id)
      : this.db.prepare(`SELECT ${JOB_COLS} FROM jobs WHERE id = ? AND owner = ?`).get(id, owner)) as JobRow | undefined;
    return r ? jobOf(r) : null;
  }

  /** `owner`'s jobs (null: all), newest first; `after` pages past a job id. */
  listJobs(owner: string | null, opts: ListJobsOptions = {}): Job[] {
    const limit = checkLimit(opts.limit);
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (owner !== null) {
      where.push('owner = ?');
      args.push(owner);
    }
    if (opts.after !== undefined) {
      where.push('rowid < coalesce((SELECT rowid FROM jobs WHERE id = ?), -1)');
      args.push(opts.after);
    }
    const sql = `SELECT ${JOB_COLS} FROM jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY rowid DESC LIMIT ?`;
    return (this.db.prepare(sql).all(...args, limit) as JobRow[]).map(jobOf);
  }

  /**
   * Change job `id`'s fields in one transaction. With `onlyIf`, only when its status is one of
   * those (so a cancel and a finish cannot overwrite each other). The updated job, or null when
   * there is no such job or its status did not qualify.
   */
  updateJob(id: string, patch: JobPatch, onlyIf?: readonly JobStatus[]): Job | null {
    if (patch.status !== undefined) checkStatus(patch.status);
    if (patch.fineTunedModel != null) checkId(patch.fineTunedModel, 'job fine_tuned_model');
    if (patch.trainedTokens != null) checkCount(patch.trainedTokens, 'job trained_tokens');
    if (patch.finishedAt != null) checkCount(patch.finishedAt, 'job finished_at');
    const error = patch.error === undefined ? undefined : patch.error === null ? null : jsonText(patch.error, 'job error', this.limits.textChars);
    return this.write('update job', () => {
      const job = this.getJob(null, id);
      if (!job || (onlyIf && !onlyIf.includes(job.status))) return null;
      const sets: string[] = [];
      const args: (string | number | null)[] = [];
      const set = (col: string, v: string | number | null | undefined): void => {
        if (v === undefined) return;
        sets.push(`${col} = ?`);
        args.push(v);
      };
      set('status', patch.status);
      set('fine_tuned_model', patch.fineTunedModel);
      set('error', error);
      set('trained_tokens', patch.trainedTokens);
      set('finished_at', patch.finishedAt);
      if (sets.length > 0) this.db.prepare(`UPDATE jobs SET ${sets.join(', ')} WHERE id = ?`).run(...args, id);
      return this.getJob(null, id);
    });
  }

  /**
   * Take the oldest job that needs a worker and mark it running, held by `worker` for
   * `leaseSeconds` (renewed by renewJobLease, addJobEvent and saveCheckpoint). A job qualifies when
   * validating_files or queued, or running with no holder, an expired lease, or `worker` itself as
   * holder (a worker asking for work holds nothing: that claim is left from before a restart, so
   * give each replica a stable worker id and a crashed job resumes at once). null: nothing to do.
   */
  claimNextJob(worker: string, leaseSeconds = 60): Job | null {
    checkText(worker, 'worker', 256);
    checkCount(leaseSeconds, 'lease seconds');
    return this.write('claim job', () => {
      const t = now();
      const r = this.db
        .prepare(
          `SELECT id FROM jobs WHERE status IN ('validating_files', 'queued')
             OR (status = 'running' AND (worker IS NULL OR worker = ? OR lease_until IS NULL OR lease_until < ?))
           ORDER BY rowid LIMIT 1`,
        )
        .get(worker, t) as { id: string } | undefined;
      if (!r) return null;
      this.db.prepare("UPDATE jobs SET status = 'running', worker = ?, lease_until = ?, lease_s = ? WHERE id = ?").run(worker, t + leaseSeconds, leaseSeconds, r.id);
      return this.getJob(null, r.id);
    });
  }

  /** Extend `worker`'s claim on job `id`; false when it no longer holds it (cancelled, finished, taken over). */
  renewJobLease(id: string, worker: string, leaseSeconds = 60): boolean {
    checkCount(leaseSeconds, 'lease seconds');
    return this.write('renew job lease', () =>
      this.db.prepare("UPDATE jobs SET lease_until = ?, lease_s = ? WHERE id = ? AND worker = ? AND status = 'running'").run(now() + leaseSeconds, leaseSeconds, id, worker).changes > 0,
    );
  }

  /** Give up `worker`'s claim on job `id`, leaving it running (a later claim resumes it from its checkpoint). */
  releaseJob(id: string, worker: string): boolean {
    return this.write('release job', () => this.db.prepare('UPDATE jobs SET worker = NULL, lease_until = NULL WHERE id = ? AND worker = ?').run(id, worker).changes > 0);
  }

  /** Cancel job `id` if still unfinished (its claim and checkpoint dropped); null otherwise. */
  cancelJob(id: string): Job | null {
    return this.end(id, 'cancel job', 'cancelled', null);
  }

  /** Fail job `id` if still unfinished, logging the error's message as an error event; null otherwise. */
  failJob(id: string, error: JobError): Job | null {
    const text = jsonText(error, 'job error', this.limits.textChars);
    checkText(error.message, 'job error message', this.limits.textChars);
    return this.end(id, 'fail job', 'failed', text, () => this.insertEvent(id, 'error', error.message));
  }

  private end(id: string, what: string, status: 'cancelled' | 'failed', error: string | null, also?: () => void): Job | null {
    return this.write(what, () => {
      const job = this.getJob(null, id);
      if (!job || !UNFINISHED.includes(job.status)) return null;
      this.db
        .prepare('UPDATE jobs SET status = ?, error = ?, finished_at = ?, worker = NULL, lease_until = NULL, checkpoint = NULL, checkpoint_step = NULL, checkpoint_checksum = NULL WHERE id = ?')
        .run(status, error, now(), id);
      also?.();
      return this.getJob(null, id);
    });
  }

  /** Append an event to job `id`'s log; its seq is the next one. */
  addJobEvent(id: string, level: JobEventLevel, message: string): JobEvent {
    checkLevel(level);
    checkText(message, 'job event message', this.limits.textChars);
    return this.write('add job event', () => {
      this.renew(id);
      return this.insertEvent(id, level, message);
    });
  }

  /** A running job's worker writing is alive: push its lease on by the length it claimed. */
  private renew(id: string): void {
    this.db.prepare("UPDATE jobs SET lease_until = ? + lease_s WHERE id = ? AND status = 'running' AND worker IS NOT NULL AND lease_s IS NOT NULL").run(now(), id);
  }

  private insertEvent(id: string, level: JobEventLevel, message: string): JobEvent {
    if (!this.db.prepare('SELECT 1 FROM jobs WHERE id = ?').get(id)) fail(`job: no job with id ${id}`);
    const { seq } = this.db.prepare('SELECT coalesce(max(seq), 0) + 1 AS seq FROM job_events WHERE job_id = ?').get(id) as { seq: number };
    const e: JobEvent = { jobId: id, seq, createdAt: now(), level, message };
    this.db.prepare('INSERT INTO job_events (job_id, seq, created_at, level, message) VALUES (?, ?, ?, ?, ?)').run(id, seq, e.createdAt, level, message);
    return e;
  }

  /** Job `id`'s events, oldest first (or newest first with order 'desc'); `after` is a seq cursor. */
  listJobEvents(id: string, opts: ListEventsOptions = {}): JobEvent[] {
    const desc = opts.order === 'desc';
    const after = opts.after ?? (desc ? Number.MAX_SAFE_INTEGER : 0);
    const sql = `SELECT job_id, seq, created_at, level, message FROM job_events WHERE job_id = ? AND seq ${desc ? '<' : '>'} ? ORDER BY seq ${desc ? 'DESC' : 'ASC'} LIMIT ?`;
    return (this.db.prepare(sql).all(id, after, checkLimit(opts.limit)) as EventRow[]).map(eventOf);
  }

  /** Replace job `jobId`'s checkpoint (the latest one is all a resume needs); refused once the job has ended. */
  saveCheckpoint(jobId: string, step: number, data: Uint8Array): void {
    checkCount(step, 'checkpoint step');
    if (!(data instanceof Uint8Array)) fail('checkpoint: must be bytes');
    if (data.byteLength > this.limits.checkpointBytes) fail(`checkpoint: ${data.byteLength} bytes, over the limit of ${this.limits.checkpointBytes}`);
    this.write('save checkpoint', () => {
      const job = this.getJob(null, jobId);
      if (!job) fail(`job: no job with id ${jobId}`);
      if (!UNFINISHED.includes(job.status)) fail(`job ${jobId}: is ${job.status}; a checkpoint is kept for unfinished jobs only`);
      this.db.prepare('UPDATE jobs SET checkpoint = ?, checkpoint_step = ?, checkpoint_checksum = ? WHERE id = ?').run(blob(data), step, sha256(data), jobId);
      this.renew(jobId);
    });
  }

  /** Job `jobId`'s checkpoint (checksum verified), or null when it has none. */
  getCheckpoint(jobId: string): { step: number; bytes: Uint8Array } | null {
    const r = this.db.prepare('SELECT checkpoint, checkpoint_step, checkpoint_checksum FROM jobs WHERE id = ?').get(jobId) as
      | { checkpoint: Buffer | null; checkpoint_step: number | null; checkpoint_checksum: string | null }
      | undefined;
    if (!r || r.checkpoint === null || r.checkpoint_step === null) return null;
    const bytes = bytesOf(r.checkpoint);
    if (sha256(bytes) !== r.checkpoint_checksum) fail(`${this.path}: job ${jobId}: stored checkpoint fails its checksum (store damaged)`);
    return { step: r.checkpoint_step, bytes };
  }

  /** Jobs not yet ended (validating_files, queued, running), oldest first: what a restarted server looks at. */
  unfinishedJobs(): Job[] {
    const marks = UNFINISHED.map(() => '?').join(', ');
    return (this.db.prepare(`SELECT ${JOB_COLS} FROM jobs WHERE status IN (${marks}) ORDER BY rowid`).all(...UNFINISHED) as JobRow[]).map(jobOf);
  }

  /**
   * One transaction: store the job's adapter (owned by the job's owner), mark the job succeeded
   * with fine_tuned_model = adapter.id, drop its claim and checkpoint, and log `message`. Refused
   * (nothing written) when the job is missing or has ended (e.g. cancelled meanwhile).
   */
  finishJob(jobId: string, adapter: AdapterInput, trainedTokens?: number, message = 'The job has successfully completed'): Job {
    this.checkAdapter(adapter);
    if (trainedTokens !== undefined) checkCount(trainedTokens, 'job trained_tokens');
    checkText(message, 'job event message', this.limits.textChars);
    return this.write('finish job', () => {
      const job = this.getJob(null, jobId);
      if (!job) fail(`job: no job with id ${jobId}`);
      if (!UNFINISHED.includes(job.status)) fail(`job ${jobId}: is ${job.status}; only an unfinished job can succeed`);
      if (adapter.owner !== job.owner) fail(`adapter owner: ${adapter.owner || "'' (admin)"} is not job ${jobId}'s owner`);
      this.upsertAdapter(adapter);
      this.db
        .prepare(
          `UPDATE jobs SET status = 'succeeded', fine_tuned_model = ?, trained_tokens = coalesce(?, trained_tokens), finished_at = ?, error = NULL,
             worker = NULL, lease_until = NULL, checkpoint = NULL, checkpoint_step = NULL, checkpoint_checksum = NULL WHERE id = ?`,
        )
        .run(adapter.id, trainedTokens ?? null, now(), jobId);
      this.insertEvent(jobId, 'info', message);
      return this.getJob(null, jobId)!;
    });
  }
}

// ---------------------------------------------------------------------------
// argument checks: one line naming the field

function checkId(id: unknown, field: string): asserts id is string {
  if (typeof id !== 'string' || !ID_RE.test(id)) fail(`${field}: ${JSON.stringify(id)} is not valid (1-128 of A-Z a-z 0-9 . _ : -)`);
}

function checkName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !NAME_RE.test(name)) fail(`tenant name: ${JSON.stringify(name)} is not valid (1-64 of A-Z a-z 0-9 . _ -)`);
}

function checkOwner(owner: unknown): void {
  if (typeof owner !== 'string' || !/^tenant-[0-9a-f]{24}$/.test(owner)) fail(`owner: ${JSON.stringify(owner)} is not a tenant id ('' for admin)`);
}

function checkText(s: unknown, field: string, max: number): asserts s is string {
  if (typeof s !== 'string' || s.length === 0) fail(`${field}: must be a non-empty string`);
  if (s.length > max) fail(`${field}: ${s.length} characters, over the limit of ${max}`);
}

function checkStatus(s: unknown): void {
  if (!JOB_STATUSES.includes(s as JobStatus)) fail(`job status: ${JSON.stringify(s)} is not one of ${JOB_STATUSES.join(', ')}`);
}

function checkLevel(s: unknown): void {
  if (s !== 'info' && s !== 'warn' && s !== 'error') fail(`job event level: ${JSON.stringify(s)} is not one of info, warn, error`);
}

function checkCount(n: unknown, field: string): void {
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) fail(`${field}: must be a non-negative integer, got ${String(n)}`);
}

function checkLimit(limit: number | undefined): number {
  if (limit === undefined) return -1; // SQLite: no limit
  if (!Number.isSafeInteger(limit) || limit < 1) fail(`limit: must be a positive integer, got ${String(limit)}`);
  return limit;
}

function jsonText(v: unknown, field: string, max: number): string {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(`${field}: must be a JSON object`);
  let text: string;
  try {
    text = JSON.stringify(v);
  } catch (e) {
    fail(`${field}: cannot be written as JSON (${(e as Error).message})`);
  }
  if (text.length > max) fail(`${field}: ${text.length} characters of JSON, over the limit of ${max}`);
  return text;
}
