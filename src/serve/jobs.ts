// Fine-tuning as a service, in OpenAI's shape: uploaded JSONL files, jobs that train an adapter in a
// worker thread while serving goes on, their events, and cancellation. Everything a job is lives in
// the store (status, events, its latest checkpoint), so a restarted server resumes a running job
// from its last checkpoint, and a finished job's adapter lands in the store in the same transaction
// that marks the job succeeded: the tenant can use it at once.
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { VeraError } from '../io/errors.js';
import { compactAdapterBytes } from '../peft/index.js';
import type { AdapterSource } from '../engine/index.js';
import { startFineTune, type FineTuneRun } from './finetune.js';
import { validateTrainingData, type ChatDataOptions } from '../data/chat-data.js';
import type { FileMeta, Job, JobEvent, ServeStore } from './store.js';
import { ApiError, badRequest, notFound } from './openai.js';

export interface JobManagerOptions {
  modelDir: string;
  /** The base model's served name: the only `model` a job may start from. */
  baseModel: string;
  /** The engine's VeRA setting: a job's adapter must fit it. */
  vera: { r: number; projectionPrngKey: number | bigint; targets: string[] };
  /** The engine's check that an adapter fits (run on the result before it is stored). */
  checkAdapter: (name: string, source: AdapterSource) => unknown;
  checkpointEvery: number;
  /** Training examples are cut to this many tokens (null: the model's context). */
  maxSeqLength: number | null;
  /** How training files are read (tokenizer, chat format, context); null: the model has no tokenizer, so no fine-tuning. */
  data: ChatDataOptions | null;
  /** false: accept jobs but leave running them to another replica. */
  run: boolean;
  /**
   * Who claims jobs in the store. Stable across restarts (default: the host name), so a job this
   * server ran when it was killed is resumed as soon as it starts again; replicas sharing a store
   * need distinct ids.
   */
  workerId: string;
  log: (line: string) => void;
}

/** A job's hyperparameters as stored (OpenAI's names, plus ours). */
interface Hyperparameters {
  method: 'vera' | 'lora';
  r: number;
  n_epochs: number;
  batch_size: number;
  learning_rate: number;
  learning_rate_multiplier: number;
}

const BASE_LR = { vera: 1e-2, lora: 1e-3 } as const;
const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

export class JobManager {
  private current: { jobId: string; run: FineTuneRun; stopping: 'pause' | 'cancel' | null } | null = null;
  private idle: Promise<void> = Promise.resolve();
  private started = false;
  private stopped = false;
  private poller: NodeJS.Timeout | null = null;
  private static readonly LEASE_S = 60;

  constructor(
    readonly store: ServeStore,
    private readonly opts: JobManagerOptions,
  ) {}

  /** Begin running jobs: those a previous run left unfinished first. */
  start(): void {
    if (this.started || !this.opts.run) return;
    this.started = true;
    this.kick();
    // jobs other replicas created, or left when their lease ran out
    this.poller = setInterval(() => this.kick(), 5000);
    this.poller.unref();
  }

  /** Pause the running job at once (it resumes from its last checkpoint on the next start). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.poller) clearInterval(this.poller);
    if (this.current) {
      this.current.stopping = 'pause';
      this.current.run.cancel();
    }
    await this.idle;
  }

  private kick(): void {
    if (!this.started || this.stopped || this.current) return;
    // runs from a timer and from a finished job: a store error (busy, disk full) must not end the process
    let job: Job | null;
    try {
      job = this.store.claimNextJob(this.opts.workerId, JobManager.LEASE_S);
    } catch (e) {
      this.opts.log(`cannot claim a fine-tuning job: ${(e as Error)?.message ?? String(e)}`);
      return;
    }
    if (job === null) return;
    const id = job.id;
    this.idle = this.runJob(job)
      .catch((e: unknown) => this.opts.log(`job ${id}: ${(e as Error)?.message ?? String(e)}`))
      .finally(() => {
        this.current = null;
        this.kick();
      });
  }

  /** A write for job `id` from a worker message or timer; failing, it is logged, not thrown where nothing catches it. */
  private record(id: string, what: string, write: () => void): void {
    try {
      write();
    } catch (e) {
      // e.g. a checkpoint that arrives after the job was cancelled: the store refuses it, rightly
      this.opts.log(`job ${id}: ${what} not recorded: ${(e as Error)?.message ?? String(e)}`);
    }
  }

  private async runJob(job: Job): Promise<void> {
    const store = this.store;
    const hp = job.hyperparameters as unknown as Hyperparameters;
    const file = store.getFile(job.owner, job.trainingFile);
    const adapterId = job.fineTunedModel;
    if (adapterId === null) {
      store.failJob(job.id, { code: 'internal', message: 'the job has no fine_tuned_model id', param: null });
      return;
    }
    if (file === null) {
      store.failJob(job.id, { code: 'invalid_training_file', message: `training file ${job.trainingFile} was deleted before the job ran`, param: 'training_file' });
      return;
    }
    const checkpoint = store.getCheckpoint(job.id);
    store.addJobEvent(job.id, 'info', checkpoint ? `Resuming from the checkpoint at step ${checkpoint.step}` : 'Fine-tuning job started');
    this.opts.log(`job ${job.id}: ${checkpoint ? `resuming at step ${checkpoint.step}` : 'started'}`);
    const run = startFineTune(
      {
        modelDir: this.opts.modelDir,
        trainingData: file.content.toString('utf8'),
        trainingFile: job.trainingFile,
        method: hp.method,
        r: hp.r,
        learningRate: hp.learning_rate * hp.learning_rate_multiplier,
        epochs: hp.n_epochs,
        batchSize: hp.batch_size,
        seed: job.seed,
        projectionPrngKey: this.opts.vera.projectionPrngKey,
        targetModules: this.opts.vera.targets,
        checkpointEvery: this.opts.checkpointEvery,
        maxSeqLength: this.opts.maxSeqLength ?? undefined,
        baseModelName: this.opts.baseModel,
      },
      checkpoint,
    );
    const current: { jobId: string; run: FineTuneRun; stopping: 'pause' | 'cancel' | null } = { jobId: job.id, run, stopping: null };
    this.current = current;
    run.onEvent((e) => this.record(job.id, 'event', () => store.addJobEvent(job.id, e.level, e.message)));
    run.onCheckpoint((c) => this.record(job.id, `checkpoint at step ${c.step}`, () => store.saveCheckpoint(job.id, c.step, c.bytes)));
    // keep the claim while training; losing it (another replica took over) pauses this run
    const renew = setInterval(() => this.record(job.id, 'lease renewal', () => {
      if (!store.renewJobLease(job.id, this.opts.workerId, JobManager.LEASE_S) && current.stopping === null) {
        current.stopping = 'pause';
        run.cancel();
      }
    }), (JobManager.LEASE_S * 1000) / 4);
    renew.unref();
    try {
      const result = await run.result;
      const compact = compactAdapterBytes(result.config, result.weights, `job ${job.id} adapter`);
      this.opts.checkAdapter(adapterId, { config: compact.config, weights: compact.weights });
      store.finishJob(job.id, { owner: job.owner, id: adapterId, method: compact.method, config: compact.config, weights: compact.weights, dtype: compact.dtype }, result.trainedTokens);
      this.opts.log(`job ${job.id}: succeeded, adapter ${adapterId}`);
    } catch (e) {
      const stopping = current.stopping;
      if (stopping === 'pause') {
        store.releaseJob(job.id, this.opts.workerId); // stays running; resumes from its checkpoint
        this.opts.log(`job ${job.id}: paused for shutdown`);
      } else if (stopping === 'cancel') {
        store.addJobEvent(job.id, 'info', 'Fine-tuning job cancelled');
      } else {
        const message = e instanceof VeraError ? e.message : `training failed: ${(e as Error)?.message ?? String(e)}`;
        store.failJob(job.id, { code: e instanceof VeraError ? 'invalid_training_file' : 'training_failed', message, param: null });
        this.opts.log(`job ${job.id}: failed: ${message}`);
      }
    } finally {
      clearInterval(renew);
    }
  }

  // ------------------------------------------------------------------ API

  uploadFile(owner: string, filename: string, purpose: string | undefined, content: Buffer): FileMeta {
    if (purpose !== 'fine-tune') throw badRequest('purpose', `purpose must be 'fine-tune' (the only purpose this server uses), got ${JSON.stringify(purpose ?? null)}`);
    if (this.opts.data === null) throw badRequest('file', 'the served model has no tokenizer.json, so it cannot be fine-tuned on text');
    if (filename.length > 1024) throw badRequest('file', `the file name is ${filename.length} characters; at most 1024`);
    try {
      validateTrainingData(content.toString('utf8'), filename, this.opts.data);
    } catch (e) {
      if (e instanceof VeraError) throw badRequest('file', e.message);
      throw e;
    }
    return this.store.putFile({ owner, purpose, filename, content });
  }

  createJob(owner: string, body: unknown): Job {
    if (!isObject(body)) throw badRequest('body', 'the request body must be a JSON object');
    const known = ['model', 'training_file', 'hyperparameters', 'suffix', 'seed', 'method', 'validation_file', 'integrations', 'metadata'];
    for (const k of Object.keys(body)) if (!known.includes(k)) throw badRequest(k, `Unrecognized request argument supplied: ${k}`);
    if (body['validation_file'] !== undefined && body['validation_file'] !== null) throw badRequest('validation_file', 'validation_file is not supported by this server');
    if (Array.isArray(body['integrations']) && body['integrations'].length > 0) throw badRequest('integrations', 'integrations are not supported by this server');
    if (body['model'] !== this.opts.baseModel) throw badRequest('model', `model must be the served base model '${this.opts.baseModel}', got ${JSON.stringify(body['model'] ?? null)}`);
    const fileId = body['training_file'];
    if (typeof fileId !== 'string') throw badRequest('training_file', 'training_file must be the id of an uploaded file');
    if (this.store.getFileMeta(owner, fileId) === null) throw badRequest('training_file', `invalid training_file: ${fileId}`);
    const suffix = body['suffix'];
    if (suffix !== undefined && suffix !== null && (typeof suffix !== 'string' || !/^[A-Za-z0-9_-]{1,40}$/.test(suffix))) throw badRequest('suffix', 'suffix must be 1 to 40 of A-Z a-z 0-9 _ -');
    const seedV = body['seed'];
    if (seedV !== undefined && seedV !== null && (!Number.isSafeInteger(seedV) || (seedV as number) < 0 || (seedV as number) > 2 ** 31 - 1)) throw badRequest('seed', 'seed must be an integer in [0, 2147483647]');
    const seed = typeof seedV === 'number' ? seedV : Math.floor(Math.random() * 2 ** 31);
    // hyperparameters directly, or in OpenAI's method: {type: 'supervised', supervised: {hyperparameters}}
    let raw = body['hyperparameters'];
    const method = body['method'];
    if (method !== undefined && method !== null) {
      if (!isObject(method) || method['type'] !== 'supervised') throw badRequest('method.type', "method.type must be 'supervised' (set hyperparameters.method to vera or lora)");
      const sup = method['supervised'];
      if (sup !== undefined && sup !== null) {
        if (!isObject(sup)) throw badRequest('method.supervised', 'method.supervised must be an object');
        if (raw !== undefined && raw !== null) throw badRequest('hyperparameters', 'give hyperparameters or method.supervised.hyperparameters, not both');
        raw = sup['hyperparameters'];
      }
    }
    const hp = this.hyperparameters(raw);
    const id = `ftjob-${randomBytes(12).toString('hex')}`;
    const base = this.opts.baseModel.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 60);
    const fineTunedModel = `ft:${base}:${suffix ?? hp.method}:${id.slice(6, 18)}`;
    return this.store.createJob({ id, owner, model: this.opts.baseModel, trainingFile: fileId, hyperparameters: { ...hp }, suffix: (suffix as string | undefined) ?? null, seed, fineTunedModel });
  }

  private hyperparameters(raw: unknown): Hyperparameters {
    if (raw !== undefined && raw !== null && !isObject(raw)) throw badRequest('hyperparameters', 'hyperparameters must be an object');
    const h = (raw ?? {}) as Record<string, unknown>;
    const known = ['method', 'r', 'n_epochs', 'batch_size', 'learning_rate', 'learning_rate_multiplier'];
    for (const k of Object.keys(h)) if (!known.includes(k)) throw badRequest(`hyperparameters.${k}`, `Unrecognized hyperparameter: ${k} (known: ${known.join(', ')})`);
    const auto = (v: unknown): boolean => v === undefined || v === null || v === 'auto';
    const int = (k: string, lo: number, hi: number, dflt: number): number => {
      const v = h[k];
      if (auto(v)) return dflt;
      if (!Number.isSafeInteger(v) || (v as number) < lo || (v as number) > hi) throw badRequest(`hyperparameters.${k}`, `hyperparameters.${k} must be an integer in [${lo}, ${hi}] or "auto", got ${JSON.stringify(v)}`);
      return v as number;
    };
    const num = (k: string, dflt: number): number => {
      const v = h[k];
      if (auto(v)) return dflt;
      if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v) || v > 10) throw badRequest(`hyperparameters.${k}`, `hyperparameters.${k} must be a number in (0, 10] or "auto", got ${JSON.stringify(v)}`);
      return v;
    };
    const m = h['method'] ?? 'vera';
    if (m !== 'vera' && m !== 'lora') throw badRequest('hyperparameters.method', `hyperparameters.method must be vera or lora, got ${JSON.stringify(m)}`);
    const r = int('r', 1, 4096, m === 'vera' ? this.opts.vera.r : 8);
    if (m === 'vera' && r !== this.opts.vera.r) throw badRequest('hyperparameters.r', `hyperparameters.r must be ${this.opts.vera.r} for vera: every VeRA adapter on this server shares its projections (vera serve --vera-r)`);
    return { method: m, r, n_epochs: int('n_epochs', 1, 50, 3), batch_size: int('batch_size', 1, 256, 4), learning_rate: num('learning_rate', BASE_LR[m]), learning_rate_multiplier: num('learning_rate_multiplier', 1) };
  }

  cancel(owner: string, id: string): Job {
    const job = this.store.getJob(owner, id);
    if (job === null) throw notFound(`No fine-tuning job found with id '${id}'.`, 'job_not_found', 'fine_tuning_job_id');
    if (job.status === 'succeeded' || job.status === 'failed' || job.status === 'cancelled') throw badRequest('fine_tuning_job_id', `Job has already completed: status ${job.status}`);
    this.store.cancelJob(job.id);
    if (this.current?.jobId !== job.id) this.store.addJobEvent(job.id, 'info', 'Fine-tuning job cancelled');
    if (this.current?.jobId === job.id) {
      this.current.stopping = 'cancel';
      this.current.run.cancel();
    }
    return this.store.getJob(owner, id)!;
  }

  /** After a job is created: run it if this server runs jobs and is idle. */
  wake(): void {
    this.kick();
  }
}

// ------------------------------------------------------------------ OpenAI objects and routes

export function jobObject(j: Job): Record<string, unknown> {
  const hp = j.hyperparameters as unknown as Hyperparameters;
  const hyperparameters = { n_epochs: hp.n_epochs, batch_size: hp.batch_size, learning_rate_multiplier: hp.learning_rate_multiplier, method: hp.method, r: hp.r, learning_rate: hp.learning_rate };
  return {
    object: 'fine_tuning.job', id: j.id, model: j.model, created_at: j.createdAt, finished_at: j.finishedAt, fine_tuned_model: j.status === 'succeeded' ? j.fineTunedModel : null,
    organization_id: j.owner === '' ? 'admin' : j.owner, result_files: [], status: j.status, validation_file: null, training_file: j.trainingFile, hyperparameters,
    trained_tokens: j.trainedTokens, error: j.error, seed: j.seed, estimated_finish: null, integrations: [], user_provided_suffix: j.suffix,
    method: { type: 'supervised', supervised: { hyperparameters } },
  };
}

const eventId = (jobId: string, seq: number): string => `ftevent-${jobId.slice(6)}-${seq}`;

/** The seq of one of job `jobId`'s event ids, or null when it is not one. */
function eventSeq(jobId: string, id: string): number | null {
  const prefix = eventId(jobId, 0).slice(0, -1);
  const seq = id.startsWith(prefix) ? Number(id.slice(prefix.length)) : NaN;
  return Number.isSafeInteger(seq) && seq >= 0 && eventId(jobId, seq) === id ? seq : null;
}

function eventObject(jobId: string, e: JobEvent): Record<string, unknown> {
  return { object: 'fine_tuning.job.event', id: eventId(jobId, e.seq), created_at: e.createdAt, level: e.level, message: e.message, data: {}, type: 'message' };
}

function fileObject(f: FileMeta): Record<string, unknown> {
  return { id: f.id, object: 'file', bytes: f.bytes, created_at: f.createdAt, filename: f.filename, purpose: f.purpose, status: 'processed', status_details: null, expires_at: null };
}

function listLimit(q: Record<string, unknown>): number {
  const v = q['limit'];
  if (v === undefined) return 20;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1 || n > 100) throw badRequest('limit', 'limit must be an integer in [1, 100]');
  return n;
}

export function registerJobRoutes(app: FastifyInstance, jobs: JobManager, io: { readUpload: (req: FastifyRequest) => Promise<{ files: Map<string, { bytes: Buffer; filename: string }>; fields: Map<string, string> }> }): void {
  const store = jobs.store;
  const noFile = (id: string): ApiError => notFound(`No such File object: ${id}`, 'file_not_found', 'file_id');
  const noJob = (id: string): ApiError => notFound(`No fine-tuning job found with id '${id}'.`, 'job_not_found', 'fine_tuning_job_id');

  app.post('/v1/files', async (req) => {
    const { files, fields } = await io.readUpload(req);
    const f = files.get('file')!;
    return fileObject(jobs.uploadFile(req.caller.owner, f.filename, fields.get('purpose'), f.bytes));
  });
  app.get('/v1/files', async (req) => ({ object: 'list', data: store.listFiles(req.caller.owner).map(fileObject), has_more: false }));
  app.get<{ Params: { id: string } }>('/v1/files/:id', async (req) => {
    const f = store.getFileMeta(req.caller.owner, req.params.id);
    if (f === null) throw noFile(req.params.id);
    return fileObject(f);
  });
  app.get<{ Params: { id: string } }>('/v1/files/:id/content', async (req, reply) => {
    const f = store.getFile(req.caller.owner, req.params.id);
    if (f === null) throw noFile(req.params.id);
    return reply.type('application/octet-stream').send(f.content);
  });
  app.delete<{ Params: { id: string } }>('/v1/files/:id', async (req) => {
    if (!store.deleteFile(req.caller.owner, req.params.id)) throw noFile(req.params.id);
    return { id: req.params.id, object: 'file', deleted: true };
  });

  app.post('/v1/fine_tuning/jobs', async (req) => {
    const job = jobs.createJob(req.caller.owner, req.body);
    jobs.wake();
    return jobObject(job);
  });
  app.get<{ Querystring: Record<string, unknown> }>('/v1/fine_tuning/jobs', async (req) => {
    const limit = listLimit(req.query);
    const after = typeof req.query['after'] === 'string' ? req.query['after'] : undefined;
    // one row past the page says whether there are more; the store pages (newest first)
    const list = store.listJobs(req.caller.owner, { after, limit: limit + 1 });
    return { object: 'list', data: list.slice(0, limit).map(jobObject), has_more: list.length > limit };
  });
  app.get<{ Params: { id: string } }>('/v1/fine_tuning/jobs/:id', async (req) => {
    const job = store.getJob(req.caller.owner, req.params.id);
    if (job === null) throw noJob(req.params.id);
    return jobObject(job);
  });
  app.get<{ Params: { id: string }; Querystring: Record<string, unknown> }>('/v1/fine_tuning/jobs/:id/events', async (req) => {
    const job = store.getJob(req.caller.owner, req.params.id);
    if (job === null) throw noJob(req.params.id);
    const limit = listLimit(req.query);
    const after = typeof req.query['after'] === 'string' ? eventSeq(job.id, req.query['after']) : undefined;
    // newest first, as OpenAI; an `after` that is not one of this job's events pages past the end
    const events = after === null ? [] : store.listJobEvents(job.id, { order: 'desc', after, limit: limit + 1 });
    return { object: 'list', data: events.slice(0, limit).map((e) => eventObject(job.id, e)), has_more: events.length > limit };
  });
  app.post<{ Params: { id: string } }>('/v1/fine_tuning/jobs/:id/cancel', async (req) => jobObject(jobs.cancel(req.caller.owner, req.params.id)));
}
