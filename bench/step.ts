// One benchmark configuration on our runtime: a GPT-2-shaped model from a GPT-2 config, VeRA or
// LoRA on every block's c_attn, attn.c_proj, c_fc and mlp.c_proj (lm_head stays frozen), and
// timed training steps (forward, causal-LM loss, backward, AdamW on the adapter tensors) on random
// tokens. Also GEMM timing straight on the kernel. Runs in whatever process calls it; the bench
// runs each training configuration in its own child (bench/child.ts) so maxRSS is its own.
import '../src/backends/index.js';
import { Rng, Tensor, kernels } from '../src/tensor/index.js';
import { GPT2LMHeadModel, causalLmForwardLoss, gpt2ConfigFromJson } from '../src/models/index.js';
import { LoraLinear, VeraLinear, getPeftModel, loraConfig, veraConfig } from '../src/peft/index.js';
import { AdamW } from '../src/train/index.js';
import { loadAddon } from '../src/backends/native/index.js';
import { registryWasmKernels } from '../src/backends/wasm/node.js';
import { maxRssKiB, timed } from './stats.js';

/** dvora / dora: VeRA / LoRA with DoRA's magnitude (use_dora). */
export type Method = 'vera' | 'lora' | 'dvora' | 'dora';

/** The PEFT method's target module names: c_proj matches both attn.c_proj and mlp.c_proj. */
export const TARGET_MODULES = ['c_attn', 'c_proj', 'c_fc'];

export interface TrainSpec {
  method: Method;
  layers: number;
  width: number;
  vocab: number;
  positions: number;
  batch: number;
  seq: number;
  r: number;
  /** LoRA's lora_alpha (scaling α/r). */
  alpha: number;
  warmup: number;
  steps: number;
}

/** What the run changed, so a caller can check the step trained what it should and nothing else. */
export interface StepChecks {
  adaptedLayers: number;
  trainableNames: string[];
  /** Trainable tensors whose values differ after the steps. */
  updated: string[];
  /** Frozen parameters or buffers whose values changed (Σx² before vs after): should be none. */
  frozenChanged: string[];
  /** Frozen tensors that got a gradient buffer: should be none. */
  frozenWithGrad: string[];
}

export interface TrainResult {
  backend: string;
  tokensPerStep: number;
  /** Positions with a next-token target: batch·(seq − 1). */
  targetsPerStep: number;
  trainableParams: number;
  allParams: number;
  stepSeconds: number[];
  losses: number[];
  startupRssKiB: number;
  maxRssKiB: number;
  checks: StepChecks;
}

/** Heads of width `width` at GPT-2's 64 per head (one head below 64). */
export function headsFor(width: number): number {
  return Math.max(1, Math.floor(width / 64));
}

export function buildModel(spec: TrainSpec): GPT2LMHeadModel {
  const file = `bench GPT-2 ${spec.layers}x${spec.width}`;
  const config = gpt2ConfigFromJson(
    {
      model_type: 'gpt2',
      n_layer: spec.layers,
      n_embd: spec.width,
      n_head: headsFor(spec.width),
      vocab_size: spec.vocab,
      n_positions: spec.positions,
      resid_pdrop: 0,
      embd_pdrop: 0,
      attn_pdrop: 0,
    },
    file,
  );
  return new GPT2LMHeadModel(config, { rng: new Rng(0) });
}

export async function runTrainSpec(spec: TrainSpec): Promise<TrainResult> {
  const startupRssKiB = maxRssKiB();
  const model = buildModel(spec);
  const useDora = spec.method === 'dvora' || spec.method === 'dora';
  const config =
    spec.method === 'vera' || spec.method === 'dvora'
      ? veraConfig({ targetModules: TARGET_MODULES, r: spec.r, veraDropout: 0, useDora })
      : loraConfig({ targetModules: TARGET_MODULES, r: spec.r, loraAlpha: spec.alpha, loraDropout: 0, useDora });
  const peft = getPeftModel(model, config);
  const trainable = peft.trainableParameters();
  const optimizer = new AdamW([{ params: trainable.map(([, t]) => t), lr: 1e-3 }], { weightDecay: 0.01 });

  const rng = new Rng(1);
  const shape: [number, number] = [spec.batch, spec.seq];
  const inputIds = Int32Array.from({ length: spec.batch * spec.seq }, () => rng.int(spec.vocab));

  const trainableSet = new Set(trainable.map(([, t]) => t));
  const frozen = [...model.namedParameters(), ...model.namedBuffers()].filter(([, t]) => !trainableSet.has(t));
  const fingerprint = (t: Tensor): number => kernels().sumSquares(t.storage);
  const frozenBefore = frozen.map(([, t]) => fingerprint(t));
  const trainableBefore = trainable.map(([, t]) => t.toFloat32Array());

  model.train();
  const stepSeconds: number[] = [];
  const losses: number[] = [];
  for (let step = 0; step < spec.warmup + spec.steps; step++) {
    const seconds = timed(() => {
      optimizer.zeroGrad();
      // as the trainers do: the frozen head and the loss fused (the logits are never whole)
      const loss = causalLmForwardLoss(peft.model, inputIds, shape);
      loss.backward();
      optimizer.step();
      losses.push(loss.item());
    });
    if (step >= spec.warmup) stepSeconds.push(seconds);
    // between steps, untimed, as the trainers do: lets the event loop run (the wasm backend's
    // storages that the garbage collector found dead are released then)
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  const checks: StepChecks = {
    adaptedLayers: [...model.namedModules()].filter(([, m]) => m instanceof (spec.method === 'vera' || spec.method === 'dvora' ? VeraLinear : LoraLinear)).length,
    trainableNames: trainable.map(([n]) => n),
    updated: trainable.filter(([, t], i) => !sameValues(t.data(), trainableBefore[i])).map(([n]) => n),
    frozenChanged: frozen.filter(([, t], i) => fingerprint(t) !== frozenBefore[i]).map(([n]) => n),
    frozenWithGrad: frozen.filter(([, t]) => t.grad !== null).map(([n]) => n),
  };
  const counts = peft.getNbTrainableParameters();
  return {
    backend: kernels().name,
    tokensPerStep: spec.batch * spec.seq,
    targetsPerStep: spec.batch * (spec.seq - 1),
    trainableParams: counts.trainable,
    allParams: counts.all,
    stepSeconds,
    losses,
    startupRssKiB,
    maxRssKiB: maxRssKiB(),
    checks,
  };
}

function sameValues(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Seconds per run of an n×n×n float32 matmul through the active backend's kernel: `runs` runs, and
 * more until they add up to `minSeconds` (small sizes get enough runs for a steady median).
 */
export function gemmSeconds(n: number, warmup: number, runs: number, minSeconds: number): number[] {
  const k = kernels();
  const rng = new Rng(n);
  const fill = (): Float32Array => rng.fillUniform(new Float32Array(n * n), -0.5, 0.5);
  const a = k.fromArray(fill());
  const b = k.fromArray(fill());
  const c = k.alloc(n * n);
  const p = { batch: 1, m: n, n, k: n, transA: false, transB: false, strideA: 0, strideB: 0, accumulate: false };
  for (let i = 0; i < warmup; i++) k.matmul(a, b, c, p);
  const out: number[] = [];
  let total = 0;
  while (out.length < runs || total < minSeconds) {
    out.push(timed(() => k.matmul(a, b, c, p)));
    total += out[out.length - 1];
  }
  for (const s of [a, b, c]) k.free?.(s);
  return out;
}

export interface GemmSpec {
  sizes: number[];
  warmup: number;
  /** Timed runs at least… */
  runs: number;
  /** …and at least this many seconds of them. */
  minSeconds: number;
}

/** The active backend's threads: the native addon's pool or the wasm module's workers (VERA_NUM_THREADS); the TS backend runs on one. */
export function backendThreads(): number {
  if (kernels().name === 'wasm') return registryWasmKernels()?.threads ?? 1;
  if (kernels().name !== 'native') return 1;
  const load = loadAddon(); // the module already loaded: same addon, same pool
  return load.addon === null ? 1 : load.addon.numThreads();
}
