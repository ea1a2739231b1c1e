// The finetuning page's worker: the model, its adapter, training and generation run here, off the
// page's thread, on the backend the page asked for. Every device read is asynchronous (WebGPU's
// synchronous read throws): the loss is read with itemAsync, generation reads only the last
// position's logits with dataAsync.
import {
  AdamW, AutoModelForCausalLM, AutoTokenizer, KVCache, PeftModel, Rng, activeBackend, blobSource, causalLmTask,
  getPeftModel, initBackend, manualSeed, noGrad, trainStepsAsync, urlSource, veraConfig,
  LlamaForCausalLM, type PretrainedTokenizer, type TrainTask,
} from 'vera';
import type { AdapterInfo, Logits, MethodName, Methods, ModelInfo, Outputs, Progress, Reply, Request, TrainRequest, TrainResult } from './protocol.js';

/** Every linear layer of a Llama block, as the CLI demo adapts. */
const LLAMA_LINEAR = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

interface WorkerScope {
  postMessage(message: Reply, transfer?: Transferable[]): void;
  onmessage: ((e: MessageEvent<Request>) => void) | null;
}
const scope = self as unknown as WorkerScope;

let base: LlamaForCausalLM | null = null;
let tokenizer: PretrainedTokenizer | null = null;
let peft: PeftModel<LlamaForCausalLM> | null = null;
let adapterSource = '';
let eosId = 0;
let busy: string | null = null;
let stopRequested = false;

class Stopped extends Error {}

function need<T>(x: T | null, what: string): T {
  if (x === null) throw new Error(`${what}: the model is not loaded yet`);
  return x;
}

/**
 * 'auto': WebGPU when the browser gives a hardware adapter, else WebAssembly. A software adapter
 * (SwiftShader, a fallback adapter) runs each dispatch on the CPU and is far slower than the
 * WebAssembly kernels, so auto does not take it; the selector can still force it.
 */
async function autoBackend(): Promise<{ name: string; note: string }> {
  const gpu = (navigator as { gpu?: GPU }).gpu;
  if (gpu === undefined) return { name: 'wasm', note: 'no WebGPU in this browser' };
  const adapter = await gpu.requestAdapter();
  if (adapter === null) return { name: 'wasm', note: 'no WebGPU adapter' };
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const text = [info.vendor, info.architecture, info.device, info.description].filter((x) => x).join(' ');
  if (info.isFallbackAdapter === true || /swiftshader/i.test(text)) return { name: 'wasm', note: `the WebGPU adapter is a software one (${text || 'fallback'})` };
  try {
    await initBackend('webgpu');
    return { name: 'webgpu', note: text };
  } catch (e) {
    return { name: 'wasm', note: (e as Error).message };
  }
}

async function init({ backend, modelUrl }: Methods['init']['args']): Promise<ModelInfo> {
  if (base !== null) throw new Error('init: already loaded (the page starts a new worker to change backend)');
  const t0 = performance.now();
  const picked = backend === 'auto' ? await autoBackend() : { name: backend, note: '' };
  const name = await initBackend(picked.name);
  const source = urlSource(modelUrl);
  const model = await AutoModelForCausalLM.fromPretrained(source);
  if (!(model instanceof LlamaForCausalLM)) throw new Error(`${modelUrl}: not a Llama model`);
  base = model;
  base.eval();
  tokenizer = await AutoTokenizer.fromPretrained(source);
  const eos = base.eosTokenIds[0];
  if (eos === undefined) throw new Error(`${modelUrl}/config.json: no eos_token_id`);
  eosId = eos;
  const c = base.config;
  return {
    backend: activeBackend() ?? name,
    note: picked.note,
    params: base.parameters().reduce((a, t) => a + t.size, 0),
    layers: c.numHiddenLayers, hidden: c.hiddenSize, vocab: c.vocabSize,
    loadSeconds: (performance.now() - t0) / 1000,
  };
}

/** The base model without any adapter (the one attached is unloaded). */
function bareBase(): LlamaForCausalLM {
  const model = need(base, 'adapter');
  if (peft !== null) {
    peft.unload();
    peft = null;
  }
  return model;
}

function encode(text: string, maxLen: number): Int32Array {
  return Int32Array.from([...need(tokenizer, 'encode').encode(text), eosId].slice(0, maxLen));
}

async function train(o: TrainRequest): Promise<TrainResult> {
  const texts = o.texts.filter((t) => t.trim() !== '');
  if (texts.length === 0) throw new Error('train: no text to train on');
  const model = bareBase();
  const sequences = texts.map((t) => encode(t, o.maxLen));
  manualSeed(o.seed);
  peft = getPeftModel(model, veraConfig({ targetModules: LLAMA_LINEAR, r: o.r, projectionPrngKey: 0, saveProjection: false, dInitial: 0.1 }));
  adapterSource = 'trained here';
  const params = peft.trainableParameters();
  const optimizer = new AdamW([{ lr: o.lr, params: params.map(([, t]) => t) }]);
  const inner = causalLmTask(peft, sequences, Math.min(o.batchSize, sequences.length), eosId);
  let tokens = 0;
  const task: TrainTask<number[]> = {
    nextBatch: (rng) => inner.nextBatch(rng),
    loss: (batch) => {
      const r = inner.loss(batch);
      tokens += r.items;
      return r;
    },
  };
  const losses: { step: number; loss: number }[] = [];
  stopRequested = false;
  const t0 = performance.now();
  let stopped = false;
  model.train();
  try {
    await trainStepsAsync(task, optimizer, {
      // clipped at 1 as `vera train` and the CLI demo; a warmup step starts at lr 0: none on short runs, where it would be a tenth of the run
      steps: o.steps, rng: new Rng(o.seed), seed: o.seed, readEvery: 1, maxGradNorm: 1, schedule: 'cosine', warmup: o.steps >= 20 ? Math.ceil(o.steps / 20) : 0,
      onLoss: (step, loss) => {
        losses.push({ step, loss });
        const progress: Progress = { step, steps: o.steps, loss, tokens, seconds: (performance.now() - t0) / 1000 };
        scope.postMessage({ kind: 'progress', progress });
        if (stopRequested && step < o.steps) throw new Stopped('stopped');
      },
    });
  } catch (e) {
    if (!(e instanceof Stopped)) throw e;
    stopped = true;
  } finally {
    model.eval();
    optimizer.zeroGrad();
  }
  return {
    losses, steps: losses.at(-1)?.step ?? 0, stopped, seconds: (performance.now() - t0) / 1000, tokens,
    trainable: params.reduce((a, [, t]) => a + t.size, 0),
  };
}

/** Greedy continuation of `prompt`: one forward per token through a KV cache, reading only the last position's logits. */
async function greedy(model: LlamaForCausalLM, prompt: string, maxNewTokens: number): Promise<string> {
  const tok = need(tokenizer, 'generate');
  const limit = model.contextLength ?? Infinity;
  let input = [eosId, ...tok.encode(prompt)];
  const out: number[] = [];
  const cache = new KVCache();
  const vocab = model.config.vocabSize;
  for (let i = 0; i < maxNewTokens && cache.length + input.length <= limit; i++) {
    const ids = Int32Array.from(input);
    const logits = noGrad(() => model.forward(ids, [1, ids.length], { cache, logitsToKeep: 1 }));
    const row = await logits.dataAsync();
    let best = 0;
    for (let v = 1; v < vocab; v++) if (row[v] > row[best]) best = v;
    if (best === eosId) break;
    out.push(best);
    input = [best];
    // a task turn per token: finalizers free collected tensors' backend memory only between tasks
    await new Promise<void>((resolve) => setTimeout(resolve, 0));
  }
  return prompt + tok.decode(out);
}

async function generate({ prompts, maxNewTokens }: Methods['generate']['args']): Promise<Outputs> {
  const model = need(base, 'generate');
  const run = async (): Promise<string[]> => {
    const texts: string[] = [];
    for (const p of prompts) texts.push(await greedy(model, p, maxNewTokens));
    return texts;
  };
  if (peft === null) return { prompts, base: await run(), adapter: null };
  peft.disableAdapters();
  let baseTexts: string[];
  try {
    baseTexts = await run();
  } finally {
    peft.enableAdapters();
  }
  return { prompts, base: baseTexts, adapter: await run() };
}

async function logits({ prompt, adapter }: Methods['logits']['args']): Promise<Logits> {
  const model = need(base, 'logits');
  if (adapter && peft === null) throw new Error('logits: no adapter (train one or load one first)');
  const ids = [eosId, ...need(tokenizer, 'logits').encode(prompt)];
  const off = !adapter && peft !== null;
  if (off) peft!.disableAdapters();
  try {
    const t = noGrad(() => model.forward(Int32Array.from(ids), [1, ids.length]));
    return { prompt, ids, vocab: model.config.vocabSize, values: Array.from(await t.dataAsync()) };
  } finally {
    if (off) peft!.enableAdapters();
  }
}

async function save(): Promise<Record<string, Uint8Array>> {
  if (peft === null) throw new Error('save: no adapter (train one or load one first)');
  // the two files savePretrained writes for the adapter (its README.md model card left out)
  const { 'adapter_config.json': config, 'adapter_model.safetensors': weights } = await peft.saveToBytesAsync();
  return { 'adapter_config.json': config, 'adapter_model.safetensors': weights };
}

function info(p: PeftModel<LlamaForCausalLM>): AdapterInfo {
  const config = p.peftConfig.get(p.activeAdapter) as { peftType: string; r?: number; targetModules?: unknown } | undefined;
  const targets = config?.targetModules;
  return {
    source: adapterSource,
    peftType: config?.peftType ?? '?',
    r: config?.r ?? 0,
    targetModules: Array.isArray(targets) ? targets.map(String) : typeof targets === 'string' ? [targets] : [],
    trainable: [...p.adapterStateDict().values()].reduce((a, t) => a + t.size, 0),
  };
}

async function load({ files }: Methods['load']['args']): Promise<AdapterInfo> {
  // downloads may come back renamed ('adapter_config (1).json'): one .json and one .safetensors file are the pair
  const json = files.filter((f) => f.name.endsWith('.json'));
  const st = files.filter((f) => f.name.endsWith('.safetensors'));
  if (json.length !== 1 || st.length !== 1 || files.length !== 2) {
    throw new Error(`load: choose two files, adapter_config.json and adapter_model.safetensors (got ${files.map((f) => f.name).join(', ') || 'none'})`);
  }
  const model = bareBase();
  peft = await PeftModel.fromPretrained(model, blobSource({ 'adapter_config.json': json[0], 'adapter_model.safetensors': st[0] }, `${json[0].name} + ${st[0].name}`));
  adapterSource = `${json[0].name} + ${st[0].name}`;
  return info(peft);
}

const methods: { [K in MethodName]: (args: Methods[K]['args']) => Promise<Methods[K]['result']> | Methods[K]['result'] } = {
  init, train, generate, logits, load, save: () => save(),
};

scope.onmessage = (e) => {
  const msg = e.data;
  if (msg.kind === 'stop') {
    stopRequested = true;
    return;
  }
  const { id, method } = msg;
  if (busy !== null) {
    scope.postMessage({ kind: 'result', id, ok: false, error: `${method}: busy (${busy} is running)` });
    return;
  }
  busy = method;
  void (async () => {
    try {
      const result = await (methods[method] as (a: unknown) => unknown)(msg.args);
      scope.postMessage({ kind: 'result', id, ok: true, result });
    } catch (err) {
      const text = err instanceof Error ? err.message : String(err);
      scope.postMessage({ kind: 'result', id, ok: false, error: text.split('\n')[0] });
    } finally {
      busy = null;
    }
  })();
};
