// Decoding on our runtime (bench section "decode"): a SmolLM-135M-shaped Llama (random weights,
// seeded) through the multi-adapter engine. Measures, in one process: the time to read every
// weight once (the memory-bandwidth bound of a batch-1 step), batch-1 and batch-16 decoding,
// 64 concurrent requests on 64 distinct VeRA adapters against the same 64 on one adapter, on 64
// LoRA adapters and on the base model, a PEFT-style loop (each adapter's rows as their own batch,
// here one request at a time), 128 requests on the base model, the prefill of one 512-token prompt,
// and the resident bytes of 10,000 registered adapters.
import '../src/backends/index.js';
import { Rng, kernels } from '../src/tensor/index.js';
import { LlamaForCausalLM, llamaConfigFromJson } from '../src/models/index.js';
import { getPeftModel, loraConfig, loraConfigToJson, veraConfig, veraConfigToJson, type LoraConfig, type VeraConfig } from '../src/peft/index.js';
import { serializeSafetensors } from '../src/io/safetensors.js';
import { sortedJson } from '../src/peft/config.js';
import { InferenceEngine, type EngineRequest } from '../src/engine/index.js';
import { maxRssKiB } from './stats.js';

export interface DecodeShape {
  vocab: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
}

export interface DecodeSpec {
  shape: DecodeShape;
  /** Prompt tokens of every request. */
  prompt: number;
  /** New tokens per request in the timed runs. */
  newTokens: number;
  /** Requests of the batched run. */
  batch: number;
  /** Requests (and distinct adapters) of the mixed-adapter runs. */
  mixed: number;
  /** Requests of the wide run (base model): a batch past the streamed few-row GEMMs. */
  wide: number;
  /** Tokens of the one prompt whose prefill is timed (to its first token). */
  prefill: number;
  veraR: number;
  loraR: number;
  /** New tokens per request of the PEFT-style loop (one request at a time: slow). */
  loopTokens: number;
  /** Adapters registered for the memory figure. */
  registry: number;
  runs: number;
}

/** Steady decoding rate of one engine run: tokens after every request's first, per second. */
export interface DecodeRun {
  requests: number;
  tokensPerSecond: number;
  /** Seconds per decode step (all requests advance one token). */
  stepSeconds: number;
}

export interface DecodeResult {
  backend: string;
  weightBytes: number;
  /** Seconds to read every weight once (Σx² over all of them, all threads), per run. */
  readSeconds: number[];
  batch1: DecodeRun[];
  batchN: DecodeRun[];
  mixedVera: DecodeRun[];
  singleVera: DecodeRun[];
  base: DecodeRun[];
  mixedLora: DecodeRun[];
  peftLoop: DecodeRun[];
  wideBase: DecodeRun[];
  /** Seconds from submitting one `prefill`-token prompt to its first token, per run. */
  prefillSeconds: number[];
  /** Adapters on q_proj and v_proj of every layer, registered from bytes. */
  memory: { adapters: number; bytesPerAdapter: number; residentBytes: number; arrayBufferBytesPerAdapter: number };
  maxRssKiB: number;
}

export const SMOLLM_135M: DecodeShape = { vocab: 49152, hidden: 576, intermediate: 1536, layers: 30, heads: 9, kvHeads: 3 };
const TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const REGISTRY_TARGETS = ['q_proj', 'v_proj'];

/** The decode benches' Llama of shape `s` (seeded random weights, tied embeddings). */
export function buildModel(s: DecodeShape): LlamaForCausalLM {
  const config = llamaConfigFromJson({
    model_type: 'llama', vocab_size: s.vocab, hidden_size: s.hidden, intermediate_size: s.intermediate, num_hidden_layers: s.layers,
    num_attention_heads: s.heads, num_key_value_heads: s.kvHeads, tie_word_embeddings: true,
  }, 'bench model shape');
  return new LlamaForCausalLM(config, { rng: new Rng(0) });
}

/** An adapter's two files (as saveAdapter writes them), random "trained" values, made on a throwaway model of the shape. */
function adapterFiles(model: LlamaForCausalLM, config: VeraConfig | LoraConfig, seed: number): { config: string; weights: Uint8Array } {
  const peft = getPeftModel(model, config);
  const rng = new Rng(seed);
  const tensors: Record<string, { data: Float32Array; shape: number[] }> = {};
  for (const [key, t] of peft.adapterStateDict()) {
    tensors[key] = { data: t.requiresGrad ? rng.fillNormal(new Float32Array(t.size), 0, 0.02) : t.toFloat32Array(), shape: [...t.shape] };
  }
  const saved = peft.peftConfig.get('default')!;
  const json = saved.peftType === 'VERA' ? veraConfigToJson(saved as VeraConfig) : loraConfigToJson(saved as LoraConfig);
  peft.unload();
  return { config: sortedJson(json), weights: serializeSafetensors(tensors) };
}

/** Run `requests` through `engine`, timing each request's steps; the steady rate after every first token. */
async function timedRun(engine: InferenceEngine, requests: EngineRequest[]): Promise<DecodeRun> {
  const stamps: number[][] = requests.map(() => []);
  await Promise.all(requests.map(async (req, i) => {
    for await (const _ of engine.generate(req)) stamps[i].push(performance.now());
  }));
  const start = Math.max(...stamps.map((s) => s[0]));
  const end = Math.max(...stamps.map((s) => s[s.length - 1]));
  const tokens = stamps.reduce((n, s) => n + s.filter((t) => t > start).length, 0);
  const steps = Math.max(...stamps.map((s) => s.length)) - 1;
  return { requests: requests.length, tokensPerSecond: tokens / ((end - start) / 1000), stepSeconds: (end - start) / 1000 / steps };
}

/** One request at a time, each timed alone (the PEFT-style loop: every adapter's rows are their own batch). */
async function sequentialRun(engine: InferenceEngine, requests: EngineRequest[]): Promise<DecodeRun> {
  let seconds = 0;
  let tokens = 0;
  for (const req of requests) {
    const r = await timedRun(engine, [req]);
    seconds += r.stepSeconds * (req.maxNewTokens! - 1);
    tokens += req.maxNewTokens! - 1;
  }
  return { requests: requests.length, tokensPerSecond: tokens / seconds, stepSeconds: seconds / tokens };
}

export async function runDecodeSpec(spec: DecodeSpec): Promise<DecodeResult> {
  const model = buildModel(spec.shape);
  const k = kernels();
  let weightBytes = 0;
  const weights = [...new Set(model.parameters())];
  for (const t of weights) weightBytes += 4 * t.size;
  const readSeconds: number[] = [];
  for (let i = 0; i < spec.runs + 1; i++) {
    const t0 = performance.now();
    for (const t of weights) k.sumSquares(t.storage);
    if (i > 0) readSeconds.push((performance.now() - t0) / 1000);
  }
  const engine = new InferenceEngine(model, { vera: { r: spec.veraR, targetModules: TARGETS }, maxBatchSize: Math.max(spec.mixed, spec.batch, spec.wide), maxBatchTokens: 1024 });
  // adapters are made on a second model of the shape (the engine takes its own model's layers),
  // which is dropped before anything is timed; LoRA adapters join only for their own run
  const files = (make: (maker: LlamaForCausalLM, i: number) => { config: string; weights: Uint8Array }): { config: string; weights: Uint8Array }[] => {
    const maker = buildModel(spec.shape);
    return Array.from({ length: spec.mixed }, (_, i) => make(maker, i));
  };
  files((maker, i) => adapterFiles(maker, veraConfig({ targetModules: TARGETS, r: spec.veraR, initWeights: false, saveProjection: false }), 100 + i)).forEach((f, i) => engine.addAdapter(`v${i}`, f));
  const rng = new Rng(7);
  const prompt = (): number[] => Array.from({ length: spec.prompt }, () => rng.int(spec.shape.vocab));
  const reqs = (n: number, adapter: (i: number) => string | null, tokens = spec.newTokens): EngineRequest[] =>
    Array.from({ length: n }, (_, i) => ({ promptIds: prompt(), adapter: adapter(i), maxNewTokens: tokens, eosTokenIds: [] }));
  const out: Omit<DecodeResult, 'backend' | 'weightBytes' | 'readSeconds' | 'memory' | 'maxRssKiB'> = {
    batch1: [], batchN: [], mixedVera: [], singleVera: [], base: [], mixedLora: [], peftLoop: [], wideBase: [], prefillSeconds: [],
  };
  await timedRun(engine, reqs(2, () => null, 3)); // warm-up
  for (let run = 0; run < spec.runs; run++) {
    out.batch1.push(await timedRun(engine, reqs(1, () => null)));
    out.batchN.push(await timedRun(engine, reqs(spec.batch, () => null)));
    out.mixedVera.push(await timedRun(engine, reqs(spec.mixed, (i) => `v${i}`)));
    out.singleVera.push(await timedRun(engine, reqs(spec.mixed, () => 'v0')));
    // next to the mixed batch (after the one-adapter run, which the mixed one is compared with
    // too), so that each ratio pairs runs made under nearly the same conditions
    out.peftLoop.push(await sequentialRun(engine, reqs(spec.mixed, (i) => `v${i}`, spec.loopTokens)));
    out.base.push(await timedRun(engine, reqs(spec.mixed, () => null)));
    out.wideBase.push(await timedRun(engine, reqs(spec.wide, () => null)));
    const t0 = performance.now();
    for await (const _ of engine.generate({ promptIds: Array.from({ length: spec.prefill }, () => rng.int(spec.shape.vocab)), maxNewTokens: 1, eosTokenIds: [] })) break;
    out.prefillSeconds.push((performance.now() - t0) / 1000);
  }
  files((maker, i) => adapterFiles(maker, loraConfig({ targetModules: TARGETS, r: spec.loraR, loraAlpha: spec.loraR }), 500 + i)).forEach((f, i) => engine.addAdapter(`l${i}`, f));
  for (let run = 0; run < spec.runs; run++) out.mixedLora.push(await timedRun(engine, reqs(spec.mixed, (i) => `l${i}`)));
  await engine.close();
  // resident bytes of many registered adapters (from bytes: their vectors, in slabs), on q and v
  // only: on all seven projections 10,000 adapters would hold 8 GB of vectors
  const one = adapterFiles(model, veraConfig({ targetModules: REGISTRY_TARGETS, r: spec.veraR, saveProjection: false }), 9);
  const registry = new InferenceEngine(model, { vera: { r: spec.veraR, targetModules: REGISTRY_TARGETS } });
  const before = process.memoryUsage().arrayBuffers;
  for (let i = 0; i < spec.registry; i++) registry.addAdapter(`u${i}`, one);
  const stats = registry.adapterStats();
  const grown = process.memoryUsage().arrayBuffers - before;
  return {
    backend: k.name,
    weightBytes,
    readSeconds,
    ...out,
    memory: { adapters: spec.registry, bytesPerAdapter: stats.veraBytesPerAdapter, residentBytes: stats.residentBytes, arrayBufferBytesPerAdapter: grown / spec.registry },
    maxRssKiB: maxRssKiB(),
  };
}
