// The multi-adapter inference engine: many requests, each with its own adapter (or none), decoded
// together with iteration-level scheduling. Every step runs one ragged batch: each running request
// adds its next token (or a chunk of its prompt while prefilling), the linear layers read their
// weights once for all of them, VeRA rows share one x·Aᵀ, and each request attends over its own
// KV cache. Requests join at any step and leave when done or cancelled; their tokens stream out
// as they are chosen. The model-wide PeftModel.setAdapter plays no part: which adapter a token uses
// travels with the step.
import { VeraError } from '../io/errors.js';
import { Rng, kernels, noGrad, type Tensor } from '../tensor/index.js';
import { Linear, type Module } from '../nn/index.js';
import { AdapterLayer, modelTypeOf, outputLayerOf, veraConfig } from '../peft/index.js';
import {
  RaggedKVCache, SequenceCache, TokenTextTracker, checkGenerationOptions, chooseToken,
  type CausalLM, type FinishReason, type GenerationOptions, type GenerationResult, type GenerationStep,
} from '../models/index.js';
import { AdapterStore, type AdapterLease, type AdapterSource, type AdapterStoreStats, type LayerShape } from './adapter-store.js';
import { RoutedLinear, type StepRoute } from './routed-linear.js';

/** One request: its prompt, its adapter, and generate()'s sampling and stopping options. */
export interface EngineRequest extends Pick<GenerationOptions, 'maxNewTokens' | 'doSample' | 'temperature' | 'topK' | 'topP' | 'seed' | 'stopStrings' | 'eosTokenIds'> {
  /** Prompt token ids (at least one). */
  promptIds: readonly number[];
  /** A registered adapter, or null / absent for the base model. */
  adapter?: string | null;
  /** Aborting it ends the request at the next step (finish reason 'cancelled'). */
  signal?: AbortSignal;
  /** Give each step the logits the token was chosen from. */
  returnLogits?: boolean;
}

export interface EngineStep extends GenerationStep {
  logits?: Float32Array;
}

export interface EngineResult extends GenerationResult {
  promptTokens: number;
  adapter: string | null;
}

export interface EngineOptions {
  /** Token ids → text: text deltas, stop strings and the result's text. */
  decode?: (ids: readonly number[]) => string;
  /**
   * The VeRA setting every VeRA adapter must share (key, r, target modules, as a VeraConfig names
   * them); without it the first VeRA adapter added sets it.
   */
  vera?: { projectionPrngKey?: number | bigint; r?: number; targetModules?: string[] | string | null };
  /** Requests decoded together at most (default 64). */
  maxBatchSize?: number;
  /** Tokens per step at most, prompt chunks included (default 512). */
  maxBatchTokens?: number;
  /** Prompt tokens one request feeds per step while prefilling (default 256): a long prompt does not stall the others. */
  prefillChunk?: number;
  /** Requests waiting to start at most; more are refused (default 4096). */
  maxQueue?: number;
  /** Resident adapter bytes before least-recently-used adapters are evicted (default 1 GiB). */
  maxAdapterBytes?: number;
}

/** One request's stream of steps (for await) and its result. */
export class RequestHandle implements AsyncIterable<EngineStep> {
  readonly result: Promise<EngineResult>;
  private readonly events: EngineStep[] = [];
  private waiting: (() => void) | null = null;
  private ended = false;
  private failure: unknown = null;
  private resolve!: (r: EngineResult) => void;
  private reject!: (e: unknown) => void;

  constructor() {
    this.result = new Promise<EngineResult>((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    this.result.catch(() => undefined); // a caller reading only the stream still sees the error there
  }

  /** @internal */
  push(step: EngineStep): void {
    this.events.push(step);
    this.wake();
  }

  /** @internal */
  finish(result: EngineResult): void {
    this.ended = true;
    this.resolve(result);
    this.wake();
  }

  /** @internal */
  fail(err: unknown): void {
    this.ended = true;
    this.failure = err;
    this.reject(err);
    this.wake();
  }

  private wake(): void {
    const w = this.waiting;
    this.waiting = null;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<EngineStep> {
    for (;;) {
      if (this.events.length > 0) {
        yield this.events.shift()!;
        continue;
      }
      if (this.ended) {
        if (this.failure !== null) throw this.failure;
        return;
      }
      await new Promise<void>((r) => (this.waiting = r));
    }
  }
}

interface Running {
  req: EngineRequest;
  handle: RequestHandle;
  prompt: Int32Array;
  /** Prompt tokens already in the cache. */
  fed: number;
  cache: SequenceCache;
  lease: AdapterLease | null;
  tracker: TokenTextTracker;
  rng: Rng;
  maxNewTokens: number;
  /** The token chosen last, fed at the next step. */
  pending: number | null;
}

interface Waiting {
  req: EngineRequest;
  handle: RequestHandle;
}

const positiveInt = (v: number, what: string): number => {
  if (!Number.isSafeInteger(v) || v < 1) throw new VeraError(`engine: ${what} must be a positive integer, got ${v}`);
  return v;
};

export class InferenceEngine {
  readonly store: AdapterStore;
  private readonly lm: CausalLM;
  private readonly layerShapes = new Map<string, LayerShape>();
  private readonly routed = new Map<string, RoutedLinear>();
  private readonly waiting: Waiting[] = [];
  private readonly running: Running[] = [];
  /** The last step's logits on the host (grown as needed, reused every step). */
  private logitsHost = new Float32Array(0);
  private looping = false;
  private closed = false;
  private readonly maxBatchSize: number;
  private readonly maxBatchTokens: number;
  private readonly prefillChunk: number;
  private readonly maxQueue: number;
  private steps = 0;

  constructor(
    private readonly model: CausalLM & Module,
    private readonly opts: EngineOptions = {},
  ) {
    this.lm = model;
    this.maxBatchSize = positiveInt(opts.maxBatchSize ?? 64, 'maxBatchSize');
    this.maxBatchTokens = positiveInt(opts.maxBatchTokens ?? 512, 'maxBatchTokens');
    this.prefillChunk = positiveInt(opts.prefillChunk ?? 256, 'prefillChunk');
    this.maxQueue = positiveInt(opts.maxQueue ?? 4096, 'maxQueue');
    if (this.maxBatchTokens < this.maxBatchSize) throw new VeraError(`engine: maxBatchTokens (${this.maxBatchTokens}) must be at least maxBatchSize (${this.maxBatchSize}): every running request feeds a token per step`);
    for (const [path, m] of model.namedModules()) {
      if (m instanceof AdapterLayer || m instanceof RoutedLinear) throw new VeraError(`engine: ${path} already carries adapters (a PeftModel's or another engine's); give the engine a plain base model`);
      if (m instanceof Linear) this.layerShapes.set(path, { inFeatures: m.inFeatures, outFeatures: m.outFeatures });
    }
    this.store = new AdapterStore({ modelType: modelTypeOf(model), layers: this.layerShapes, outputLayer: outputLayerOf(model) }, { maxBytes: opts.maxAdapterBytes });
    if (opts.vera) {
      const config = veraConfig({ r: opts.vera.r ?? 256, projectionPrngKey: opts.vera.projectionPrngKey ?? 0, targetModules: opts.vera.targetModules ?? null });
      const targets = this.store.resolveTargets(config);
      if (targets.length === 0) throw new VeraError('engine: vera.targetModules match no linear layer of the model');
      this.store.setVeraSpec({ projectionPrngKey: config.projectionPrngKey, r: config.r, targets });
      this.routeLayers(targets);
    }
    model.train(false); // the engine only infers: no dropout
  }

  /** Register (or replace) an adapter from a PEFT folder or its files' contents; refused in one line if it does not fit. */
  addAdapter(name: string, source: AdapterSource): void {
    this.open();
    const { targets } = this.store.add(name, source);
    const vera = this.store.veraState;
    if (vera) this.routeLayers(vera.spec.targets);
    this.routeLayers(targets); // a LoRA adapter's layers (VeRA's are the engine's)
  }

  /** Check that an adapter fits this engine (its key, r, targets, shapes, finite values) without registering it. */
  checkAdapter(name: string, source: AdapterSource): 'VERA' | 'LORA' {
    return this.store.check(name, source);
  }

  /** Drop an adapter; requests already using it finish with it. */
  removeAdapter(name: string): void {
    this.store.remove(name);
  }

  adapterStats(): AdapterStoreStats {
    return this.store.stats();
  }

  /** Submit a request; its steps stream from the handle as they are chosen. */
  generate(req: EngineRequest): RequestHandle {
    this.open();
    this.check(req);
    return this.enqueue(req);
  }

  /** Run requests together; results in their order. All are checked before any starts. */
  async generateAll(reqs: readonly EngineRequest[]): Promise<EngineResult[]> {
    this.open();
    for (const r of reqs) this.check(r);
    return Promise.all(reqs.map((r) => this.enqueue(r).result));
  }

  private enqueue(req: EngineRequest): RequestHandle {
    if (this.waiting.length >= this.maxQueue) throw new VeraError(`engine: the queue is full (${this.waiting.length} requests waiting); try again later`);
    const handle = new RequestHandle();
    this.waiting.push({ req, handle });
    req.signal?.addEventListener('abort', () => this.pump(), { once: true });
    this.pump();
    return handle;
  }

  /** Requests waiting and running, and steps run so far. */
  get load(): { waiting: number; running: number; steps: number } {
    return { waiting: this.waiting.length, running: this.running.length, steps: this.steps };
  }

  /** Finish what runs, then give the model its own layers back. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.looping || this.running.length > 0 || this.waiting.length > 0) await new Promise((r) => setImmediate(r));
    for (const [path, layer] of this.routed) this.model.setSubmodule(path, layer.base_layer);
    this.routed.clear();
  }

  // ---------------------------------------------------------------- internals

  private open(): void {
    if (this.closed) throw new VeraError('engine: closed');
  }

  private routeLayers(paths: readonly string[]): void {
    for (const path of paths) {
      if (this.routed.has(path)) continue;
      const m = this.model.getSubmodule(path);
      if (!(m instanceof Linear)) throw new VeraError(`engine: ${path} is not a linear layer`);
      const layer = new RoutedLinear(m, path, this.store);
      this.model.setSubmodule(path, layer);
      this.routed.set(path, layer);
    }
  }

  private check(req: EngineRequest): void {
    checkGenerationOptions({ ...req, decode: this.opts.decode });
    const prompt = req.promptIds;
    if (!Array.isArray(prompt) && !(prompt instanceof Int32Array)) throw new VeraError('engine: promptIds must be a list of token ids');
    if (prompt.length === 0) throw new VeraError('engine: the prompt is empty (a causal LM needs at least one token to start from)');
    const vocab = this.lm.config.vocabSize;
    for (const id of prompt) if (!(Number.isInteger(id) && id >= 0 && id < vocab)) throw new VeraError(`engine: prompt token id ${id} is out of range [0, ${vocab})`);
    const limit = this.lm.contextLength;
    const maxNew = req.maxNewTokens ?? 20;
    if (limit !== null && prompt.length + maxNew > limit) throw new VeraError(`engine: prompt of ${prompt.length} tokens + ${maxNew} new tokens exceeds the model's context of ${limit} positions`);
    if (req.adapter != null && !this.store.has(req.adapter)) throw new VeraError(`engine: no adapter named '${req.adapter}'`);
  }

  private pump(): void {
    if (this.looping) return;
    this.looping = true;
    setImmediate(() => void this.loop());
  }

  private async loop(): Promise<void> {
    try {
      while (this.waiting.length > 0 || this.running.length > 0) {
        this.step();
        await new Promise((r) => setImmediate(r)); // let new requests, cancellations and adapters in
      }
    } finally {
      this.looping = false;
    }
  }

  private end(r: Running, reason: FinishReason): void {
    if (r.lease) this.store.release(r.lease);
    r.lease = null;
    r.handle.finish({ ...r.tracker.result(reason), promptTokens: r.prompt.length, adapter: r.req.adapter ?? null });
  }

  private admit(): void {
    while (this.running.length < this.maxBatchSize && this.waiting.length > 0) {
      const w = this.waiting[0];
      if (w.req.signal?.aborted) {
        this.waiting.shift();
        w.handle.finish({ tokens: [], text: this.opts.decode ? '' : null, finishReason: 'cancelled', promptTokens: w.req.promptIds.length, adapter: w.req.adapter ?? null });
        continue;
      }
      let lease: AdapterLease | null = null;
      if (w.req.adapter != null) {
        try {
          lease = this.store.acquire(w.req.adapter);
        } catch (e) {
          this.waiting.shift();
          w.handle.fail(e); // removed, or no longer loadable: this request alone fails
          continue;
        }
        if (lease === null) break; // the adapter budget is full of running adapters: wait for one to finish
        if (lease.lora) this.routeLayers([...lease.lora.keys()]);
      }
      this.waiting.shift();
      this.running.push({
        req: w.req,
        handle: w.handle,
        prompt: Int32Array.from(w.req.promptIds),
        fed: 0,
        cache: new SequenceCache(),
        lease,
        tracker: new TokenTextTracker(w.req.eosTokenIds ?? this.lm.eosTokenIds, this.opts.decode, w.req.stopStrings),
        rng: new Rng(w.req.seed ?? 0),
        maxNewTokens: w.req.maxNewTokens ?? 20,
        pending: null,
      });
    }
  }

  /** One iteration: admit, build the ragged batch, run it, sample, stream, retire. */
  private step(): void {
    for (const r of [...this.running]) {
      if (r.req.signal?.aborted) {
        this.running.splice(this.running.indexOf(r), 1);
        this.end(r, 'cancelled');
      }
    }
    this.admit();
    if (this.running.length === 0) return;
    // decoding requests feed one token each; prefills share what is left of the token budget
    const plan: { r: Running; ids: Int32Array; sample: boolean }[] = [];
    let budget = this.maxBatchTokens;
    for (const r of this.running) {
      if (r.pending === null) continue;
      plan.push({ r, ids: Int32Array.of(r.pending), sample: true });
      budget--;
    }
    for (const r of this.running) {
      if (r.pending !== null || budget <= 0) continue;
      const n = Math.min(r.prompt.length - r.fed, this.prefillChunk, budget);
      plan.push({ r, ids: r.prompt.subarray(r.fed, r.fed + n), sample: r.fed + n === r.prompt.length });
      budget -= n;
    }
    const total = plan.reduce((s, p) => s + p.ids.length, 0);
    const ids = new Int32Array(total);
    const positions = new Int32Array(total);
    const veraSlots = new Int32Array(total).fill(-1);
    const loraRows = new Map<AdapterLease, number[]>();
    const logitsAt: number[] = [];
    let anyVera = false;
    let at = 0;
    for (const p of plan) {
      const past = p.r.cache.length;
      ids.set(p.ids, at);
      for (let i = 0; i < p.ids.length; i++) positions[at + i] = past + i;
      const lease = p.r.lease;
      if (lease?.method === 'VERA') {
        veraSlots.fill(lease.slot, at, at + p.ids.length);
        anyVera = true;
      } else if (lease?.method === 'LORA') {
        const rows = loraRows.get(lease) ?? [];
        for (let i = 0; i < p.ids.length; i++) rows.push(at + i);
        loraRows.set(lease, rows);
      }
      at += p.ids.length;
      if (p.sample) logitsAt.push(at - 1);
    }
    const route: StepRoute = {
      veraSlots: anyVera ? veraSlots : null,
      lora: [...loraRows].map(([lease, rows]) => ({ weights: lease.lora!, rows: Int32Array.from(rows) })),
    };
    const vocab = this.lm.config.vocabSize;
    // greedy choices for every sampled row; the logits rows only when a request samples or asks for them
    let chosen: { greedy: Float32Array; logits: Float32Array | null };
    try {
      for (const layer of this.routed.values()) layer.route = route;
      const cache = new RaggedKVCache(plan.map((p) => p.ids.length), plan.map((p) => p.r.cache));
      chosen = noGrad(() => {
        const out: Tensor = this.lm.forward(ids, [1, total], { cache, positionIds: positions, logitsAt: Int32Array.from(logitsAt) });
        const k = kernels();
        // greedy tokens from the backend (a JavaScript argmax over 16 × 49,152 logits took ~1 ms a step)
        const rows = out.size / vocab;
        const best = k.alloc(rows);
        k.argmaxRows(out.storage, rows, vocab, best);
        const greedy = k.read(best).slice(0, rows);
        k.free?.(best);
        let logits: Float32Array | null = null;
        // the rows into one host buffer the engine keeps, and the step's logits freed at once: a
        // step of 16 rows allocates 3 MB of them, which left to the collector kept the heap growing
        if (plan.some((p) => p.sample && (p.r.req.doSample || p.r.req.returnLogits))) {
          if (this.logitsHost.length < out.size) this.logitsHost = new Float32Array(out.size);
          this.logitsHost.set(k.read(out.storage).subarray(0, out.size));
          logits = this.logitsHost.subarray(0, out.size);
        }
        k.free?.(out.storage);
        return { greedy, logits };
      });
    } catch (e) {
      // a failed step fails the requests in it; the engine goes on with the others
      for (const p of plan) {
        this.running.splice(this.running.indexOf(p.r), 1);
        if (p.r.lease) this.store.release(p.r.lease);
        p.r.handle.fail(e instanceof VeraError ? e : new VeraError(`engine: step failed: ${(e as Error).message}`));
      }
      return;
    } finally {
      for (const layer of this.routed.values()) layer.route = null;
    }
    this.steps++;
    let row = 0;
    for (const p of plan) {
      const r = p.r;
      if (r.pending === null) r.fed += p.ids.length; // a prompt chunk
      if (!p.sample) continue;
      const scores = chosen.logits?.subarray(row * vocab, (row + 1) * vocab);
      const token = r.req.doSample ? chooseToken(scores!, r.req, r.rng) : chosen.greedy[row];
      row++;
      const step: EngineStep = r.tracker.push(token);
      if (r.req.returnLogits) step.logits = scores!.slice();
      r.handle.push(step);
      r.pending = token;
      const done = r.tracker.finishReason ?? (r.tracker.tokens.length >= r.maxNewTokens ? 'length' : null);
      if (done !== null) {
        this.running.splice(this.running.indexOf(r), 1);
        this.end(r, done);
      }
    }
  }
}

/**
 * generate() for a batch: every request with its own adapter (a name from `adapters`, or null for
 * the base model), decoded together by an engine made for the call; results in request order.
 * The model gets its own layers back afterwards.
 */
export async function generateBatch(
  model: CausalLM & Module,
  requests: readonly EngineRequest[],
  opts: EngineOptions & { adapters?: Readonly<Record<string, AdapterSource>> } = {},
): Promise<EngineResult[]> {
  const engine = new InferenceEngine(model, opts);
  try {
    for (const [name, source] of Object.entries(opts.adapters ?? {})) engine.addAdapter(name, source);
    return await engine.generateAll(requests);
  } finally {
    await engine.close();
  }
}
