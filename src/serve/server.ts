// `vera serve`: the OpenAI API over the multi-adapter engine. One base model is loaded once; every
// request names its adapter in `model`, and the engine decodes all running requests together, each
// with its own adapter. Adapters, tenants, API keys, files and fine-tuning jobs live in the SQLite
// store alone: the engine's registrations are a cache checked against the store's checksum on each
// request, so replicas sharing the store see each other's writes and a restart loses nothing.
import type { WeightFormat } from '../tensor/quant.js';
import { randomBytes, randomInt } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { hostname } from 'node:os';
import { basename } from 'node:path';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import multipart from '@fastify/multipart';
import { VeraError } from '../io/errors.js';
import { loadPretrained, generationEosTokenIds, isCausalLM, type CausalLM } from '../models/index.js';
import type { Module } from '../nn/index.js';
import { loadTokenizer, type Tokenizer } from '../data/tokenizer.js';
import { chatTemplateOrPlain, type ChatTemplate } from '../data/chat-template.js';
import { chatDataOptions, type ChatDataOptions } from '../data/chat-data.js';
import { compactAdapterBytes } from '../peft/index.js';
import { InferenceEngine, type EngineOptions, type EngineResult, type RequestHandle } from '../engine/index.js';
import { ServeStore, type AdapterMeta, type Tenant } from './store.js';
import { JobManager, registerJobRoutes } from './jobs.js';
import {
  ApiError, StopTrimmer, badRequest, finishReason, modelNotFound, notFound, parseChatRequest, parseCompletionRequest, usage,
  type RequestLimits, type SamplingParams,
} from './openai.js';

/** What the server allows (vera serve's flags). */
export interface ServerLimits extends RequestLimits {
  /** JSON bodies at most, in bytes. */
  bodyBytes: number;
  /** Uploaded files (adapters, training data) at most, in bytes each. */
  uploadBytes: number;
  /**
   * Uploads being received at once, in all and per API key, counted in the largest upload requests
   * allowed (one of Content-Length n counts n / that; none declared counts 1): each is held in
   * memory whole, so this bounds their memory. More are answered 429.
   */
  concurrentUploads: number;
  concurrentUploadsPerTenant: number;
  /** Generation requests one tenant may have running or queued at once (choices count one each). */
  concurrentPerTenant: number;
  /** Requests waiting in the engine at most; more are answered 429. */
  maxQueue: number;
  /** A generation running longer is stopped (504, or an error event when streaming). */
  requestTimeoutMs: number;
  /** Adapters kept registered in the engine at once (least recently used dropped first; the store keeps them all). */
  registeredAdapters: number;
}

export const DEFAULT_LIMITS: ServerLimits = {
  maxTokens: 512,
  maxChoices: 8,
  maxPrompts: 32,
  bodyBytes: 4 * 1024 * 1024,
  uploadBytes: 64 * 1024 * 1024,
  concurrentUploads: 8,
  concurrentUploadsPerTenant: 2,
  concurrentPerTenant: 16,
  maxQueue: 256,
  requestTimeoutMs: 300_000,
  registeredAdapters: 4096,
};

export interface ServeOptions {
  /** The base model folder (Hugging Face layout, with tokenizer.json for text). */
  modelDir: string;
  /** Format of the served base's frozen linear weights (default f32); fine-tuning jobs still load their own f32 base. */
  weights?: WeightFormat;
  doubleQuant?: boolean;
  /** The SQLite store's path. */
  storePath: string;
  /** The base model's name in `model` (default: the folder's name, as vLLM). */
  servedModelName?: string;
  /** The admin's API key (from VERA_ADMIN_KEY or a file); null: no admin. */
  adminKey?: string | null;
  /** The VeRA setting every adapter must share (default r 256, key 0, PEFT's default targets). */
  vera?: { r?: number; projectionPrngKey?: number | bigint; targetModules?: string[] | string | null };
  limits?: Partial<ServerLimits>;
  engine?: Pick<EngineOptions, 'maxBatchSize' | 'maxBatchTokens' | 'prefillChunk' | 'maxAdapterBytes'>;
  /** Fine-tuning jobs: run them here (default true) and checkpoint every n steps. */
  jobs?: { run?: boolean; checkpointEvery?: number; workerId?: string };
  /** One line per event worth a log (startup, job transitions); default: none. */
  log?: (line: string) => void;
}

/** Who is calling: a tenant, or the admin (owner '' in the store). */
export interface Caller {
  owner: string;
  name: string;
  admin: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    caller: Caller;
  }
}

const ADMIN: Caller = { owner: '', name: 'admin', admin: true };
const now = (): number => Math.floor(Date.now() / 1000);

/** Engine registrations: a bounded cache of the store's adapters, keyed by owner/id, checked by checksum. */
class RegisteredAdapters {
  private readonly byName = new Map<string, string>(); // engine name → checksum, oldest first

  constructor(
    private readonly engine: InferenceEngine,
    private readonly store: ServeStore,
    private readonly max: number,
  ) {}

  static nameOf(meta: { owner: string; id: string }): string {
    return `${meta.owner}/${meta.id}`;
  }

  /** The engine name of `meta`, registering (or refreshing) it from the store when needed. */
  ensure(meta: AdapterMeta): string {
    const name = RegisteredAdapters.nameOf(meta);
    const have = this.byName.get(name);
    this.byName.delete(name);
    if (have !== meta.checksum) {
      const rec = this.store.getAdapter(meta.owner, meta.id);
      if (rec === null) throw modelNotFound(meta.id);
      this.engine.addAdapter(name, { config: rec.config, weights: rec.weights });
    }
    this.byName.set(name, meta.checksum);
    for (const [old] of this.byName) {
      if (this.byName.size <= this.max) break;
      this.byName.delete(old);
      this.engine.removeAdapter(old); // requests using it finish with it
    }
    return name;
  }

  drop(meta: { owner: string; id: string }): void {
    const name = RegisteredAdapters.nameOf(meta);
    if (this.byName.delete(name)) this.engine.removeAdapter(name);
  }
}

/** One prompt's generation: its ids and the choice index it answers. */
interface Choice {
  index: number;
  promptIds: number[];
  handle?: RequestHandle;
}

export class VeraServer {
  readonly app: FastifyInstance;
  readonly store: ServeStore;
  readonly engine: InferenceEngine;
  readonly modelName: string;
  readonly limits: ServerLimits;
  readonly jobs: JobManager;
  private readonly tokenizer: Tokenizer | null;
  private readonly chat: ChatTemplate | null;
  private readonly eos: number[];
  private readonly lm: CausalLM;
  /** Prompt + completion tokens at most (see servingContext). */
  private readonly context: number;
  /** Prompt characters at most: past this a text cannot fit the context whatever it holds. */
  private readonly maxPromptChars: number;
  private readonly registered: RegisteredAdapters;
  private readonly active = new Map<string, number>(); // tenant → generations running or queued
  private readonly uploading = new Map<string, number>(); // tenant → upload bytes being received (see concurrentUploads)
  private readonly created = now();
  /** Choices finished, by how (GET /health). */
  private readonly finished = { stop: 0, length: 0, cancelled: 0 };
  private draining = false;

  private constructor(opts: ServeOptions, model: CausalLM & Module, tokenizer: Tokenizer | null, chat: ChatTemplate | null, data: ChatDataOptions | null, store: ServeStore) {
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.store = store;
    this.lm = model;
    this.tokenizer = tokenizer;
    this.chat = chat;
    this.modelName = opts.servedModelName ?? basename(opts.modelDir.replace(/[/\\]+$/, ''));
    this.eos = generationEosTokenIds(opts.modelDir, model);
    this.context = servingContext(model, tokenizer);
    this.maxPromptChars = this.context * longestTokenChars(tokenizer);
    // chat models end their turn with the template's eos token
    const turnEnd = chat?.eosToken && tokenizer ? tokenizer.tokenToId(chat.eosToken) : null;
    if (turnEnd !== null && turnEnd !== undefined && !this.eos.includes(turnEnd)) this.eos.push(turnEnd);
    this.engine = new InferenceEngine(model, {
      ...opts.engine,
      maxQueue: Math.max(this.limits.maxQueue, 1),
      decode: tokenizer ? (ids) => tokenizer.decode(ids, { skipSpecialTokens: true }) : undefined,
      vera: { r: opts.vera?.r ?? 256, projectionPrngKey: opts.vera?.projectionPrngKey ?? 0, targetModules: opts.vera?.targetModules ?? null },
    });
    this.registered = new RegisteredAdapters(this.engine, store, this.limits.registeredAdapters);
    const spec = this.engine.store.veraState!.spec;
    this.jobs = new JobManager(store, {
      modelDir: opts.modelDir,
      baseModel: this.modelName,
      vera: { r: spec.r, projectionPrngKey: spec.projectionPrngKey, targets: spec.targets },
      checkAdapter: (name, source) => this.engine.checkAdapter(name, source),
      checkpointEvery: opts.jobs?.checkpointEvery ?? 10,
      run: opts.jobs?.run ?? true,
      workerId: opts.jobs?.workerId ?? hostname(),
      maxSeqLength: data?.maxLength ?? null,
      data,
      log: opts.log ?? (() => undefined),
    });
    this.app = Fastify({
      bodyLimit: this.limits.bodyBytes, logger: false, forceCloseConnections: false, return503OnClosing: true,
      // a client may take as long to send its request as a generation may run, not forever
      requestTimeout: this.limits.requestTimeoutMs,
      // URLs the router refuses (bad percent-encoding, an over-long id) answer OpenAI's error object too
      frameworkErrors: (err, _req, reply) => void this.sendError(reply, err),
      clientErrorHandler: clientError,
    });
    this.routes(opts.adminKey ?? null);
  }

  /** Load the base model and open the store; nothing listens yet. */
  static async create(opts: ServeOptions): Promise<VeraServer> {
    const loaded = loadPretrained(opts.modelDir, { weights: opts.weights, doubleQuant: opts.doubleQuant });
    const model = loaded.model;
    if (!isCausalLM(model)) throw new VeraError(`${opts.modelDir}: serve needs a causal language model, this is a ${loaded.modelType}`);
    const tokenizer = await loadTokenizer(opts.modelDir);
    const chat = tokenizer ? chatTemplateOrPlain(opts.modelDir) : null;
    // fine-tuning cuts examples to the context; a model without a fixed one (RoPE) uses the tokenizer's limit, else 2048
    const data = tokenizer ? await chatDataOptions(opts.modelDir, model, model.contextLength ?? tokenizer.modelMaxLength ?? 2048) : null;
    const store = ServeStore.open(opts.storePath);
    try {
      return new VeraServer(opts, model as CausalLM & Module, tokenizer, chat, data, store);
    } catch (e) {
      store.close();
      throw e;
    }
  }

  /** Listen; resolves to the address (http://host:port). */
  async listen(host: string, port: number): Promise<string> {
    const address = await this.app.listen({ host, port });
    this.jobs.start();
    return address;
  }

  /** Stop taking requests, let running ones finish, pause jobs at a checkpoint, close the store. */
  async close(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    await this.jobs.stop();
    // waits for in-flight requests (streams included); a client still sending its body, or no longer
    // reading its stream, would hold that open forever, so past the request timeout its connection is cut
    const cut = setTimeout(() => this.app.server.closeAllConnections(), this.limits.requestTimeoutMs);
    cut.unref();
    try {
      await this.app.close();
    } finally {
      clearTimeout(cut);
    }
    await this.engine.close();
    this.store.close();
  }

  // ------------------------------------------------------------------ routes

  private routes(adminKey: string | null): void {
    const app = this.app;
    app.register(multipart, { limits: { fileSize: this.limits.uploadBytes, files: 2, fields: 8, parts: 10 } });
    app.decorateRequest('caller', null as unknown as Caller);
    app.setErrorHandler((err, _req, reply) => this.sendError(reply, err));
    app.setNotFoundHandler((req, reply) => this.sendError(reply, notFound(`Unknown request URL: ${req.method} ${req.url.split('?')[0]}`, 'unknown_url')));
    app.get('/health', async () => ({ status: this.draining ? 'draining' : 'ok', ...this.engine.load, finished: this.finished }));
    app.addHook('onRequest', async (req) => {
      await this.refuseOversized(req);
      if (!req.url.startsWith('/v1/')) return;
      const auth = req.headers.authorization;
      const key = typeof auth === 'string' && auth.startsWith('Bearer ') ? auth.slice(7).trim() : '';
      if (key === '') throw new ApiError(401, 'You did not provide an API key: send it as "Authorization: Bearer KEY".', 'invalid_request_error', null, 'invalid_api_key');
      if (adminKey !== null && key === adminKey) {
        req.caller = ADMIN;
        return;
      }
      const tenant: Tenant | null = this.store.authenticate(key);
      if (tenant === null) throw new ApiError(401, 'Incorrect API key provided.', 'invalid_request_error', null, 'invalid_api_key');
      req.caller = { owner: tenant.id, name: tenant.name, admin: false };
    });

    // the models the caller can use: for the admin, its own adapters (a tenant's would answer 404)
    app.get('/v1/models', async (req) => ({
      object: 'list',
      data: [this.baseModelObject(), ...this.store.listAdapters(req.caller.owner).map((a) => this.modelObject(a))],
    }));
    app.get<{ Params: { model: string } }>('/v1/models/*', async (req) => {
      const id = (req.params as Record<string, string>)['*'];
      if (id === this.modelName) return this.baseModelObject();
      const meta = this.resolve(req.caller, id);
      if (meta === null) throw modelNotFound(id);
      return this.modelObject(meta);
    });

    app.post('/v1/completions', (req, reply) => this.completions(req, reply));
    app.post('/v1/chat/completions', (req, reply) => this.chatCompletions(req, reply));

    app.put<{ Params: { id: string } }>('/v1/adapters/:id', (req, reply) => this.putAdapter(req, reply));
    app.get('/v1/adapters', async (req) => ({ object: 'list', data: this.store.listAdapters(req.caller.admin ? null : req.caller.owner).map((a) => this.adapterObject(a)) }));
    app.get<{ Params: { id: string } }>('/v1/adapters/:id', async (req) => {
      const meta = this.resolve(req.caller, req.params.id);
      if (meta === null) throw this.adapterNotFound(req.params.id);
      return this.adapterObject(meta);
    });
    app.delete<{ Params: { id: string } }>('/v1/adapters/:id', async (req) => {
      const id = req.params.id;
      const meta = this.resolve(req.caller, id);
      if (meta === null) throw this.adapterNotFound(id);
      if (meta.owner !== req.caller.owner) throw new ApiError(403, `adapter ${id} is shared by the admin; only the admin can delete it`, 'invalid_request_error', 'id');
      this.store.deleteAdapter(meta.owner, meta.id);
      this.registered.drop(meta);
      return { id, object: 'adapter', deleted: true };
    });

    registerJobRoutes(app, this.jobs, {
      readUpload: (req) => this.readUpload(req, ['file'], ['purpose']),
    });
  }

  /**
   * A body declared larger than its limit is read and dropped before the 413 goes out: a client
   * still sending when the connection closed would see a broken pipe, not the error. Past a hard
   * cap the connection is closed instead.
   */
  private async refuseOversized(req: FastifyRequest): Promise<void> {
    const declared = Number(req.headers['content-length'] ?? 0);
    const multipartBody = /^multipart\//i.test(req.headers['content-type'] ?? '');
    const limit = multipartBody ? this.uploadRequestBytes : this.limits.bodyBytes;
    if (!(declared > limit)) return;
    const cap = Math.max(4 * limit, 64 << 20);
    if (declared <= cap) {
      await new Promise<void>((resolve) => {
        req.raw.on('end', resolve).on('error', resolve).on('close', resolve);
        req.raw.resume();
      });
    }
    throw new ApiError(413, `the request body is too large: ${declared} bytes, the limit is ${limit}`, 'invalid_request_error', null, 'request_too_large');
  }

  private sendError(reply: FastifyReply, err: unknown): FastifyReply {
    const e = toApiError(err);
    if (e.status === 429) reply.header('Retry-After', '1');
    return reply.status(e.status).send(e.body());
  }

  // ------------------------------------------------------------------ models and adapters

  private baseModelObject(): Record<string, unknown> {
    return { id: this.modelName, object: 'model', created: this.created, owned_by: 'vera' };
  }

  private modelObject(a: AdapterMeta): Record<string, unknown> {
    return { id: a.id, object: 'model', created: a.createdAt, owned_by: a.owner === '' ? 'admin' : a.owner, parent: this.modelName, root: this.modelName };
  }

  private adapterObject(a: AdapterMeta): Record<string, unknown> {
    return {
      id: a.id, object: 'adapter', owned_by: a.owner === '' ? 'admin' : a.owner, shared: a.shared, method: a.method.toLowerCase(), dtype: a.dtype,
      bytes: a.bytes, checksum: `sha256:${a.checksum}`, created_at: a.createdAt, updated_at: a.updatedAt, base_model: this.modelName,
    };
  }

  private adapterNotFound(id: string): ApiError {
    return notFound(`No adapter found with id '${id}'.`, 'adapter_not_found', 'id');
  }

  /** The caller's adapter `id` (its own, else one the admin shared); null when it has none. */
  private resolve(caller: Caller, id: string): AdapterMeta | null {
    return this.store.resolveAdapter(caller.owner, id);
  }

  /** Multipart fields of an upload: named files (bytes) and text fields. */
  private async readUpload(req: FastifyRequest, fileFields: readonly string[], textFields: readonly string[]): Promise<{ files: Map<string, { bytes: Buffer; filename: string }>; fields: Map<string, string> }> {
    if (!req.isMultipart()) throw badRequest('body', 'expected a multipart/form-data body');
    const tenant = req.caller.owner;
    const largest = this.uploadRequestBytes;
    const declared = Number(req.headers['content-length']);
    const bytes = Number.isSafeInteger(declared) && declared > 0 ? Math.min(declared, largest) : largest;
    const mine = this.uploading.get(tenant) ?? 0;
    let all = 0;
    for (const n of this.uploading.values()) all += n;
    if (mine + bytes > this.limits.concurrentUploadsPerTenant * largest || all + bytes > this.limits.concurrentUploads * largest) {
      const why = mine + bytes > this.limits.concurrentUploadsPerTenant * largest ? `at most ${this.limits.concurrentUploadsPerTenant} uploads of the largest size at once per API key` : 'the server is receiving as many uploads as it holds at once';
      throw new ApiError(429, `too many uploads: ${why}; try again shortly`, 'rate_limit_exceeded', null, 'rate_limit_exceeded');
    }
    this.uploading.set(tenant, mine + bytes);
    try {
      return await this.readParts(req, fileFields, textFields);
    } finally {
      const left = (this.uploading.get(tenant) ?? bytes) - bytes;
      if (left > 0) this.uploading.set(tenant, left);
      else this.uploading.delete(tenant);
    }
  }

  /** The largest multipart body accepted: two files of the upload limit and the form around them. */
  private get uploadRequestBytes(): number {
    return 2 * this.limits.uploadBytes + (1 << 20);
  }

  private async readParts(req: FastifyRequest, fileFields: readonly string[], textFields: readonly string[]): Promise<{ files: Map<string, { bytes: Buffer; filename: string }>; fields: Map<string, string> }> {
    const files = new Map<string, { bytes: Buffer; filename: string }>();
    const fields = new Map<string, string>();
    try {
      for await (const part of req.parts()) {
        const name = part.fieldname;
        if (part.type === 'file') {
          if (!fileFields.includes(name)) {
            part.file.resume();
            throw badRequest(name, `unexpected file field '${name}' (expected ${fileFields.join(', ')})`);
          }
          const bytes = await part.toBuffer(); // throws RequestFileTooLargeError past the limit
          if (files.has(name)) throw badRequest(name, `file field '${name}' is given twice`);
          files.set(name, { bytes, filename: part.filename });
        } else {
          const value = typeof part.value === 'string' ? part.value : String(part.value);
          // a second value would silently replace the first
          if (files.has(name) || fields.has(name)) throw badRequest(name, `field '${name}' is given twice`);
          if (fileFields.includes(name)) files.set(name, { bytes: Buffer.from(value, 'utf8'), filename: name });
          else if (textFields.includes(name)) fields.set(name, value);
          else throw badRequest(name, `unexpected field '${name}'`);
        }
      }
    } catch (e) {
      // busboy's parse errors (no boundary, a broken part, a body that ends early) are plain Errors: the client's fault
      if (e instanceof ApiError || typeof (e as { statusCode?: unknown })?.statusCode === 'number') throw e;
      throw badRequest('body', `malformed multipart/form-data body: ${String((e as Error)?.message ?? e).split('\n')[0]}`);
    }
    for (const f of fileFields) if (!files.has(f)) throw badRequest(f, `missing the file field '${f}'`);
    return { files, fields };
  }

  private async putAdapter(req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply): Promise<unknown> {
    const id = req.params.id;
    if (!/^[A-Za-z0-9._:-]{1,128}$/.test(id) || id === this.modelName) {
      throw badRequest('id', id === this.modelName ? `adapter id '${id}' is the base model's name` : `adapter id must be 1 to 128 of A-Z a-z 0-9 . _ : -, got ${JSON.stringify(id.slice(0, 40))}`);
    }
    const { files, fields } = await this.readUpload(req, ['adapter_config.json', 'adapter_model.safetensors'], ['shared']);
    const shared = fields.get('shared');
    if (shared !== undefined && shared !== 'true' && shared !== 'false') throw badRequest('shared', 'shared must be true or false');
    if (shared === 'true' && !req.caller.admin) throw new ApiError(403, 'only the admin can share adapters', 'invalid_request_error', 'shared');
    const where = `adapter ${id}`;
    let compact;
    try {
      compact = compactAdapterBytes(files.get('adapter_config.json')!.bytes.toString('utf8'), files.get('adapter_model.safetensors')!.bytes, where);
      // it must fit the served base and the engine's shared VeRA pair
      this.engine.checkAdapter(id, { config: compact.config, weights: compact.weights });
    } catch (e) {
      if (e instanceof VeraError) throw badRequest('file', e.message);
      throw e;
    }
    const existed = this.store.resolveAdapter(req.caller.owner, id)?.owner === req.caller.owner;
    const meta = this.store.putAdapter({ owner: req.caller.owner, id, method: compact.method, config: compact.config, weights: compact.weights, dtype: compact.dtype, shared: shared === 'true' });
    this.registered.drop(meta); // the next request registers the new version
    return reply.status(existed ? 200 : 201).send(this.adapterObject(meta));
  }

  // ------------------------------------------------------------------ generation

  /** The engine adapter for `model` (null: the base model), or a 404. */
  private adapterFor(caller: Caller, model: string): string | null {
    if (model === this.modelName) return null;
    const meta = this.resolve(caller, model);
    if (meta === null) throw modelNotFound(model);
    try {
      return this.registered.ensure(meta);
    } catch (e) {
      if (e instanceof VeraError) throw new ApiError(409, `adapter ${model} no longer fits the served model: ${e.message}`, 'invalid_request_error', 'model');
      throw e;
    }
  }

  /** Token ids of a text prompt; `field` names it in errors (prompt, prompt[i], messages). */
  private encode(text: string, special: boolean, field: string): number[] {
    if (this.tokenizer === null) throw badRequest('prompt', `the served model has no tokenizer.json: give prompts as token ids`);
    const param = field.startsWith('prompt') ? 'prompt' : field;
    // tokenizing megabytes takes seconds of the event loop: a text too long for any tokenization to fit is refused unread
    if (text.length > this.maxPromptChars) {
      throw badRequest(param, `${field}: This model's maximum context length is ${this.context} tokens; the prompt has ${text.length} characters, more than that many tokens can hold.`);
    }
    const ids = this.tokenizer.encode(text, { addSpecialTokens: special });
    if (ids.length === 0) throw badRequest(param, `${field}: the prompt is empty (it has no tokens in this model's vocabulary)`);
    // one prompt past the context ends the request before the others are tokenized
    if (ids.length >= this.context) throw badRequest(param, `${field}: This model's maximum context length is ${this.context} tokens; the prompt has ${ids.length}.`);
    return ids;
  }

  private async completions(req: FastifyRequest, reply: FastifyReply): Promise<void> {
    const p = parseCompletionRequest(req.body, this.limits, this.lm.config.vocabSize);
    const adapter = this.adapterFor(req.caller, p.model);
    const prompts = p.prompts.map((q, i) => (typeof q === 'string' ? this.encode(q, true, p.prompts.length > 1 ? `prompt[${i}]` : 'prompt') : q));
    const choices: Choice[] = [];
    prompts.forEach((ids, i) => {
      for (let c = 0; c < p.n; c++) choices.push({ index: i * p.n + c, promptIds: ids });
    });
    await this.generate(req, reply, 'text_completion', `cmpl-${randomBytes(12).toString('hex')}`, p, adapter, choices);
  }

  private async chatCompletions(req: FastifyRequest, reply: FastifyReply): Promise<void> {
    const p = parseChatRequest(req.body, this.limits);
    const adapter = this.adapterFor(req.caller, p.model);
    if (this.chat === null) throw badRequest('messages', 'the served model has no tokenizer.json, so it has no chat format: use /v1/completions with token ids');
    let text: string;
    try {
      text = this.chat.render(p.messages, { addGenerationPrompt: true });
    } catch (e) {
      if (e instanceof VeraError) throw badRequest('messages', e.message);
      throw e;
    }
    // the template writes the special tokens itself (transformers' apply_chat_template)
    const ids = this.encode(text, false, 'messages');
    const choices: Choice[] = [];
    for (let c = 0; c < p.n; c++) choices.push({ index: c, promptIds: ids });
    await this.generate(req, reply, 'chat.completion', `chatcmpl-${randomBytes(12).toString('hex')}`, p, adapter, choices);
  }

  /** Run the choices through the engine and answer, whole or streamed. */
  private async generate(req: FastifyRequest, reply: FastifyReply, object: 'text_completion' | 'chat.completion', id: string, p: SamplingParams & { model: string }, adapter: string | null, choices: Choice[]): Promise<void> {
    const context = this.context;
    const longest = Math.max(...choices.map((c) => c.promptIds.length));
    if (p.maxTokens !== null && longest + p.maxTokens > context) {
      throw badRequest(object === 'chat.completion' ? 'messages' : 'prompt', `This model's maximum context length is ${context} tokens. However, you requested ${longest + p.maxTokens} tokens (${longest} in the prompt, ${p.maxTokens} in the completion). Please reduce the prompt or max_tokens.`);
    }
    if (longest >= context) throw badRequest(object === 'chat.completion' ? 'messages' : 'prompt', `This model's maximum context length is ${context} tokens; the prompt has ${longest}.`);
    const maxTokens = Math.min(p.maxTokens ?? this.limits.maxTokens, context - longest);
    // a request larger than the limits themselves would get a 429 every time: retrying cannot help
    const most = Math.min(this.limits.concurrentPerTenant, this.limits.maxQueue);
    if (choices.length > most) {
      const prompts = choices.length / p.n;
      throw badRequest(p.n > 1 ? 'n' : 'prompt', `${choices.length} generations (${prompts} prompt${prompts === 1 ? '' : 's'} × n ${p.n}) in one request; this server runs at most ${most} at once per API key`);
    }
    // admission: the tenant's share and the engine's queue
    const tenant = req.caller.owner;
    const mine = this.active.get(tenant) ?? 0;
    if (mine + choices.length > this.limits.concurrentPerTenant) {
      throw new ApiError(429, `too many concurrent requests: at most ${this.limits.concurrentPerTenant} generations at once per API key (${mine} running)`, 'rate_limit_exceeded', null, 'rate_limit_exceeded');
    }
    if (this.engine.load.waiting + choices.length > this.limits.maxQueue) {
      throw new ApiError(429, `the server is busy: ${this.engine.load.waiting} requests are waiting; try again shortly`, 'rate_limit_exceeded', null, 'rate_limit_exceeded');
    }
    this.active.set(tenant, mine + choices.length);
    const abort = new AbortController();
    setMaxListeners(choices.length + 10, abort.signal); // the engine listens once per choice
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      abort.abort();
    }, this.limits.requestTimeoutMs);
    const onClose = (): void => {
      if (!reply.raw.writableFinished) abort.abort(); // the client went away: stop generating for it
    };
    reply.raw.on('close', onClose);
    try {
      const seed = p.seed ?? randomInt(0, 2 ** 31);
      for (const c of choices) {
        c.handle = this.engine.generate({
          promptIds: c.promptIds, adapter, maxNewTokens: maxTokens, doSample: p.temperature > 0, temperature: p.temperature > 0 ? p.temperature : undefined,
          topK: p.topK, topP: p.topP, seed: seed + c.index, stopStrings: p.stop.length > 0 ? p.stop : undefined, eosTokenIds: this.eos, signal: abort.signal,
        });
        c.handle.result.then((r) => {
          this.finished[r.finishReason === 'cancelled' ? 'cancelled' : finishReason(r.finishReason)]++;
        }, () => undefined);
      }
      if (p.stream) await this.stream(reply, object, id, p, choices, () => timedOut, abort.signal);
      else {
        const results = await Promise.all(choices.map((c) => c.handle!.result));
        if (timedOut) throw this.timeoutError();
        if (abort.signal.aborted) return; // nobody to answer
        await reply.send(this.wholeResponse(object, id, p.model, choices, results, p.stop));
      }
    } finally {
      clearTimeout(timer);
      reply.raw.off('close', onClose);
      abort.abort(); // anything still running for this request stops
      const left = (this.active.get(tenant) ?? choices.length) - choices.length;
      if (left > 0) this.active.set(tenant, left);
      else this.active.delete(tenant);
    }
  }

  private timeoutError(): ApiError {
    return new ApiError(504, `the request timed out after ${this.limits.requestTimeoutMs / 1000} s`, 'timeout', null, 'timeout');
  }

  private wholeResponse(object: 'text_completion' | 'chat.completion', id: string, model: string, choices: Choice[], results: EngineResult[], stop: string[]): Record<string, unknown> {
    let completionTokens = 0;
    const out = results.map((r, i) => {
      completionTokens += r.tokens.length;
      const trim = new StopTrimmer(stop);
      const text = trim.push(r.text ?? '') + trim.end();
      const finish = finishReason(r.finishReason);
      return object === 'chat.completion'
        ? { index: choices[i].index, message: { role: 'assistant', content: text, refusal: null }, logprobs: null, finish_reason: finish }
        : { index: choices[i].index, text, logprobs: null, finish_reason: finish };
    });
    return { id, object, created: now(), model, choices: out, usage: usage(promptTokenCount(choices), completionTokens), system_fingerprint: null };
  }

  /** Server-sent events: one chunk per text delta per choice, a final chunk per choice, usage, [DONE]. */
  private async stream(reply: FastifyReply, object: 'text_completion' | 'chat.completion', id: string, p: SamplingParams & { model: string }, choices: Choice[], timedOut: () => boolean, ended: AbortSignal): Promise<void> {
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    const created = now();
    const chunkObject = object === 'chat.completion' ? 'chat.completion.chunk' : 'text_completion';
    const send = async (data: unknown): Promise<void> => {
      if (raw.destroyed || raw.writableEnded) return;
      if (raw.write(`data: ${JSON.stringify(data)}\n\n`)) return;
      // a client that stops reading holds this request (and its key's slot) only until the request ends
      if (ended.aborted) {
        raw.destroy();
        return;
      }
      await new Promise<void>((r) => {
        const done = (): void => {
          raw.off('drain', done);
          raw.off('close', done);
          ended.removeEventListener('abort', cut);
          r();
        };
        const cut = (): void => {
          raw.destroy();
          done();
        };
        raw.on('drain', done);
        raw.on('close', done);
        ended.addEventListener('abort', cut, { once: true });
      });
    };
    const chunk = (choice: Record<string, unknown>): Record<string, unknown> => {
      const c: Record<string, unknown> = { id, object: chunkObject, created, model: p.model, system_fingerprint: null, choices: [choice] };
      if (p.includeUsage) c['usage'] = null;
      return c;
    };
    let completionTokens = 0;
    let failure: unknown = null;
    try {
      await Promise.all(choices.map(async (c) => {
        const trim = new StopTrimmer(p.stop);
        if (object === 'chat.completion') await send(chunk({ index: c.index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }));
        for await (const step of c.handle!) {
          const text = trim.push(step.text);
          if (text !== '') await send(chunk(object === 'chat.completion' ? { index: c.index, delta: { content: text }, logprobs: null, finish_reason: null } : { index: c.index, text, logprobs: null, finish_reason: null }));
        }
        const r = await c.handle!.result;
        completionTokens += r.tokens.length;
        const rest = trim.end();
        const finish = finishReason(r.finishReason);
        await send(chunk(object === 'chat.completion' ? { index: c.index, delta: rest === '' ? {} : { content: rest }, logprobs: null, finish_reason: finish } : { index: c.index, text: rest, logprobs: null, finish_reason: finish }));
      }));
    } catch (e) {
      failure = e;
    }
    if (timedOut()) failure = this.timeoutError();
    if (failure !== null) await send(toApiError(failure).body());
    else {
      if (p.includeUsage) {
        await send({ id, object: chunkObject, created, model: p.model, system_fingerprint: null, choices: [], usage: usage(promptTokenCount(choices), completionTokens) });
      }
      if (!raw.destroyed && !raw.writableEnded) raw.write('data: [DONE]\n\n');
    }
    raw.end();
  }
}

/**
 * The longest prompt + completion served: the model's context; a model without a fixed one (RoPE)
 * would take a prefill of a million tokens from one request, so config's max_position_embeddings,
 * else the tokenizer's limit, else 2048 (as fine-tuning).
 */
function servingContext(model: CausalLM, tokenizer: Tokenizer | null): number {
  if (model.contextLength !== null) return model.contextLength;
  const positions = (model.config as { maxPositionEmbeddings?: unknown }).maxPositionEmbeddings;
  if (typeof positions === 'number' && Number.isSafeInteger(positions) && positions > 0) return positions;
  return tokenizer?.modelMaxLength ?? 2048;
}

/**
 * Characters one token covers at most, doubled for normalizers that shrink text (NFC). A token's
 * string is at least as long as the text it covers (byte-level BPE: one character per byte;
 * SentencePiece: '▁' for ' ', <0xNN> for a byte), so a text longer than context × this needs more
 * tokens than the context holds.
 */
function longestTokenChars(tokenizer: Tokenizer | null): number {
  let longest = 1;
  for (let id = 0; tokenizer !== null && id < tokenizer.vocabSize; id++) longest = Math.max(longest, tokenizer.idToToken(id)?.length ?? 0);
  return 2 * longest;
}

/** What Node's HTTP parser refuses before fastify sees a request (headers too large, a broken request, one too slow to arrive): OpenAI's error object too. */
function clientError(err: Error & { code?: string }, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, message] = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'the request took longer to arrive than --request-timeout allows']
    : err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'the request headers are too large']
    : [400, `malformed HTTP request (${err.code ?? 'parse error'})`];
  const body = JSON.stringify(new ApiError(status, message).body());
  if (socket.writable) socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n${body}`);
  socket.destroy(err);
}

/** Prompt tokens of a request: each prompt once, however many choices (n) it has. */
function promptTokenCount(choices: readonly Choice[]): number {
  return [...new Set(choices.map((c) => c.promptIds))].reduce((sum, ids) => sum + ids.length, 0);
}

/** Any failure as the client sees it: ours as they are, fastify's by status, the rest a 500 without internals. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof VeraError) return new ApiError(400, err.message);
  const e = err as { statusCode?: number; code?: string; message?: string };
  const status = typeof e?.statusCode === 'number' ? e.statusCode : 500;
  if (e?.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || (e?.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') || (status === 400 && /JSON/.test(e?.message ?? ''))) {
    return new ApiError(400, `We could not parse the JSON body of your request: ${(e.message ?? '').split('\n')[0]}`, 'invalid_request_error', null, 'invalid_json');
  }
  if (e?.code === 'FST_PARTS_LIMIT' || e?.code === 'FST_FILES_LIMIT' || e?.code === 'FST_FIELDS_LIMIT') {
    // more parts than any upload here has: the form is wrong, not too large
    return new ApiError(400, `the multipart/form-data body has more ${e.code === 'FST_FILES_LIMIT' ? 'files' : e.code === 'FST_FIELDS_LIMIT' ? 'fields' : 'parts'} than this endpoint takes`, 'invalid_request_error', 'body');
  }
  if (e?.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || e?.code === 'FST_REQ_FILE_TOO_LARGE') {
    return new ApiError(413, `the request body is too large: ${(e.message ?? '').split('\n')[0]}`, 'invalid_request_error', null, 'request_too_large');
  }
  if (status >= 400 && status < 500) return new ApiError(status, (e?.message ?? 'bad request').split('\n')[0]);
  return new ApiError(500, 'The server had an error while processing your request.', 'server_error');
}
