// The finetuning page: the controls, the loss plot and the outputs; the model lives in a worker
// (web/worker.ts). The page's state is on window.veraPage (and its phase on body[data-phase]) for
// scripts and the browser tests. URL parameters preset the controls: ?backend=wasm&steps=10&…
import type { AdapterInfo, BackendChoice, Logits, MethodName, Methods, ModelInfo, Outputs, Progress, Reply, Request, TrainResult } from './protocol.js';

/** The prompt whose logits the page computes after training or loading (read by the tests). */
const PROBE_PROMPT = "Captain's log, stardate";

type Phase = 'loading' | 'ready' | 'busy' | 'error';

interface PageState {
  phase: Phase;
  status: string;
  error: string | null;
  model: ModelInfo | null;
  categories: string[];
  texts: number;
  progress: Progress | null;
  losses: { step: number; loss: number }[];
  trained: TrainResult | null;
  outputs: Outputs | null;
  adapter: AdapterInfo | null;
  /** Logits of PROBE_PROMPT with the current adapter. */
  probe: Logits | null;
  /** Names of the adapter files ready to download. */
  files: string[];
}

const state: PageState = {
  phase: 'loading', status: '', error: null, model: null, categories: [], texts: 0, progress: null, losses: [],
  trained: null, outputs: null, adapter: null, probe: null, files: [],
};
(globalThis as unknown as { veraPage: { state: PageState } }).veraPage = { state };

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`page: no element #${id}`);
  return el as T;
};
const ui = {
  status: $<HTMLParagraphElement>('status'),
  error: $<HTMLParagraphElement>('error'),
  backend: $<HTMLSelectElement>('backend'),
  modelInfo: $<HTMLSpanElement>('model-info'),
  category: $<HTMLSelectElement>('category'),
  custom: $<HTMLTextAreaElement>('custom'),
  dataInfo: $<HTMLSpanElement>('data-info'),
  steps: $<HTMLInputElement>('steps'),
  lr: $<HTMLInputElement>('lr'),
  batch: $<HTMLInputElement>('batch'),
  maxlen: $<HTMLInputElement>('maxlen'),
  r: $<HTMLInputElement>('r'),
  seed: $<HTMLInputElement>('seed'),
  train: $<HTMLButtonElement>('train'),
  stop: $<HTMLButtonElement>('stop'),
  progress: $<HTMLProgressElement>('progress'),
  progressText: $<HTMLSpanElement>('progress-text'),
  plot: document.getElementById('plot') as unknown as SVGSVGElement,
  prompts: $<HTMLTextAreaElement>('prompts'),
  tokens: $<HTMLInputElement>('tokens'),
  generate: $<HTMLButtonElement>('generate'),
  outputs: $<HTMLTableElement>('outputs'),
  download: $<HTMLButtonElement>('download'),
  dlConfig: $<HTMLAnchorElement>('dl-config'),
  dlWeights: $<HTMLAnchorElement>('dl-weights'),
  load: $<HTMLInputElement>('load'),
  adapterInfo: $<HTMLSpanElement>('adapter-info'),
};
/** Controls disabled while the worker is busy (Stop is enabled only while training). */
const controls: (HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement | HTMLButtonElement)[] = [
  ui.backend, ui.category, ui.custom, ui.steps, ui.lr, ui.batch, ui.maxlen, ui.r, ui.seed, ui.train, ui.prompts, ui.tokens, ui.generate, ui.load,
];

// presets from the URL (?backend=wasm&steps=10&lr=0.05&batch=4&maxlen=24&r=64&tokens=8&category=tao&text=…)
const params = new URLSearchParams(location.search);
for (const [key, input] of [['steps', ui.steps], ['lr', ui.lr], ['batch', ui.batch], ['maxlen', ui.maxlen], ['r', ui.r], ['seed', ui.seed], ['tokens', ui.tokens]] as const) {
  const v = params.get(key);
  if (v !== null) input.value = v;
}
const wantedBackend = params.get('backend');
if (wantedBackend !== null) {
  if (![...ui.backend.options].some((o) => o.value === wantedBackend)) throw new Error(`?backend=${wantedBackend}: expected auto, webgpu, wasm or ts`);
  ui.backend.value = wantedBackend;
}
if (params.get('text') !== null) ui.custom.value = params.get('text')!;
if (params.get('prompts') !== null) ui.prompts.value = params.get('prompts')!;

// ---- status, errors, busy -------------------------------------------------------------------

function setStatus(text: string): void {
  state.status = text;
  ui.status.textContent = text;
}

function showError(e: unknown): void {
  // one line: the first line of the message
  const text = (e instanceof Error ? e.message : String(e)).split('\n')[0];
  state.error = text;
  ui.error.textContent = `Error: ${text}`;
  ui.error.title = text;
  ui.error.hidden = false;
}

function clearError(): void {
  state.error = null;
  ui.error.hidden = true;
}

function setPhase(phase: Phase): void {
  state.phase = phase;
  document.body.dataset.phase = phase;
  const off = phase !== 'ready';
  for (const c of controls) c.disabled = off;
  // after a failed model load only the backend can change
  if (phase === 'error' && state.model === null) ui.backend.disabled = false;
  ui.download.disabled = off || state.files.length === 0;
}

/** Runs `task` with the controls disabled; its error is shown in one line. */
async function busy(what: string, task: () => Promise<void>): Promise<void> {
  clearError();
  setPhase('busy');
  setStatus(`${what}…`);
  try {
    await task();
    setPhase(state.model === null ? 'error' : 'ready');
  } catch (e) {
    showError(e);
    setStatus(`${what} failed`);
    setPhase(state.model === null ? 'error' : 'ready');
  }
}

// ---- the worker -----------------------------------------------------------------------------

let worker: Worker | null = null;
let nextId = 1;
const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
let onProgress: (p: Progress) => void = () => {};

function startWorker(): Worker {
  worker?.terminate();
  for (const p of pending.values()) p.reject(new Error('the worker was restarted'));
  pending.clear();
  const w = new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name: 'vera' });
  w.onmessage = (e: MessageEvent<Reply>) => {
    const msg = e.data;
    if (msg.kind === 'progress') {
      onProgress(msg.progress);
      return;
    }
    const p = pending.get(msg.id);
    if (p === undefined) return;
    pending.delete(msg.id);
    if (msg.ok) p.resolve(msg.result);
    else p.reject(new Error(msg.error));
  };
  w.onerror = (e) => {
    const err = new Error(`worker: ${e.message || 'failed to start'}`);
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  worker = w;
  return w;
}

function call<K extends MethodName>(method: K, args: Methods[K]['args']): Promise<Methods[K]['result']> {
  const w = worker;
  if (w === null) return Promise.reject(new Error('no worker'));
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
    w.postMessage({ kind: 'call', id, method, args } as Request);
  });
}

// ---- model ----------------------------------------------------------------------------------

async function loadModel(): Promise<void> {
  state.model = null;
  state.adapter = null;
  state.probe = null;
  state.trained = null;
  setFiles(null);
  ui.adapterInfo.textContent = '';
  startWorker();
  const choice = ui.backend.value as BackendChoice;
  await busy(`Loading the model (${choice === 'auto' ? 'picking a backend' : choice})`, async () => {
    const info = await call('init', { backend: choice, modelUrl: new URL('model/', location.href).href });
    state.model = info;
    ui.modelInfo.textContent = `running on ${info.backend}${info.note ? ` (${info.note})` : ''}: ${(info.params / 1e6).toFixed(1)}M parameters, ${info.layers} layers × ${info.hidden}, loaded in ${info.loadSeconds.toFixed(1)} s`;
    await generateOutputs();
    setStatus(`Ready on ${info.backend}. Pick a category and press Train.`);
  });
}

// ---- data -----------------------------------------------------------------------------------

const textsByCategory = new Map<string, string[]>();

async function categoryTexts(name: string): Promise<string[]> {
  const known = textsByCategory.get(name);
  if (known) return known;
  const res = await fetch(`fortunes/${encodeURIComponent(name)}/train.jsonl`);
  if (!res.ok) throw new Error(`fortunes/${name}/train.jsonl: HTTP ${res.status}`);
  const texts = (await res.text()).split('\n').filter((l) => l.trim() !== '').map((l, i) => {
    const obj = JSON.parse(l) as { text?: unknown };
    if (typeof obj.text !== 'string') throw new Error(`fortunes/${name}/train.jsonl:${i + 1}: expected {"text": …}`);
    return obj.text;
  });
  textsByCategory.set(name, texts);
  return texts;
}

function customTexts(): string[] {
  return ui.custom.value.split(/\n\s*\n/).map((t) => t.trim()).filter((t) => t !== '');
}

async function trainingTexts(): Promise<{ texts: string[]; from: string }> {
  const custom = customTexts();
  if (custom.length > 0) return { texts: custom, from: 'your text' };
  const name = ui.category.value;
  if (name === '') throw new Error('no training text: pick a category or paste some text');
  return { texts: await categoryTexts(name), from: `the "${name}" fortunes` };
}

async function describeData(): Promise<void> {
  try {
    const { texts, from } = await trainingTexts();
    state.texts = texts.length;
    ui.dataInfo.textContent = `${texts.length} texts from ${from}`;
  } catch (e) {
    ui.dataInfo.textContent = '';
    showError(e);
  }
}

async function loadCategories(): Promise<void> {
  const res = await fetch('fortunes/index.json');
  if (!res.ok) throw new Error(`fortunes/index.json: HTTP ${res.status}`);
  const { categories } = (await res.json()) as { categories: string[] };
  state.categories = categories;
  ui.category.replaceChildren(...categories.map((c) => new Option(c, c)));
  const wanted = params.get('category') ?? 'startrek';
  if (categories.includes(wanted)) ui.category.value = wanted;
  await describeData();
}

// ---- training -------------------------------------------------------------------------------

function intOf(input: HTMLInputElement, name: string, min: number, max: number): number {
  const v = Number(input.value);
  if (!Number.isInteger(v) || v < min || v > max) throw new Error(`${name}: expected an integer from ${min} to ${max}, got ${JSON.stringify(input.value)}`);
  return v;
}

function numberOf(input: HTMLInputElement, name: string): number {
  const v = Number(input.value);
  if (!(v > 0) || !Number.isFinite(v)) throw new Error(`${name}: expected a positive number, got ${JSON.stringify(input.value)}`);
  return v;
}

function seconds(s: number): string {
  if (!Number.isFinite(s)) return '–';
  return s < 90 ? `${s.toFixed(0)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function showProgress(p: Progress): void {
  state.progress = p;
  state.losses.push({ step: p.step, loss: p.loss });
  ui.progress.max = p.steps;
  ui.progress.value = p.step;
  const perStep = p.seconds / p.step;
  const tps = p.seconds > 0 ? p.tokens / p.seconds : 0;
  ui.progressText.textContent = `step ${p.step}/${p.steps} · loss ${p.loss.toFixed(3)} · ${tps.toFixed(0)} tokens/s · ETA ${seconds(perStep * (p.steps - p.step))}`;
  setStatus(`Training on ${state.model?.backend ?? '?'}: step ${p.step}/${p.steps}`);
  drawPlot(state.losses, p.steps);
}

async function trainAdapter(): Promise<void> {
  const settings = {
    steps: intOf(ui.steps, 'Steps', 1, 10000),
    lr: numberOf(ui.lr, 'Learning rate'),
    batchSize: intOf(ui.batch, 'Batch', 1, 256),
    maxLen: intOf(ui.maxlen, 'Tokens per text', 2, 256),
    r: intOf(ui.r, 'VeRA r', 1, 1024),
    seed: intOf(ui.seed, 'Seed', 0, 2 ** 31 - 1),
  };
  const { texts, from } = await trainingTexts();
  state.losses = [];
  state.progress = null;
  state.trained = null;
  state.probe = null;
  setFiles(null);
  drawPlot([], settings.steps);
  ui.progress.value = 0;
  ui.progressText.textContent = '';
  onProgress = showProgress;
  ui.stop.disabled = false;
  setStatus(`Training on ${texts.length} texts from ${from}…`);
  let result: TrainResult;
  try {
    result = await call('train', { texts, ...settings });
  } finally {
    ui.stop.disabled = true;
    onProgress = () => {};
  }
  state.trained = result;
  const first = result.losses[0]?.loss;
  const last = result.losses.at(-1)?.loss;
  const summary = `${result.stopped ? 'Stopped after' : 'Trained'} ${result.steps} steps in ${seconds(result.seconds)} (${(result.steps / result.seconds).toFixed(2)} steps/s, ${(result.tokens / result.seconds).toFixed(0)} tokens/s); loss ${first?.toFixed(3)} → ${last?.toFixed(3)}`;
  state.adapter = { source: 'trained here', peftType: 'VERA', r: settings.r, targetModules: [], trainable: result.trainable };
  ui.adapterInfo.textContent = `adapter: trained here on ${from} (VeRA r=${settings.r}, ${result.trainable.toLocaleString('en-US')} trainable parameters)`;
  await afterAdapter();
  setStatus(summary);
}

/** After an adapter was trained or loaded: outputs before/after, the probe logits, the files. */
async function afterAdapter(): Promise<void> {
  setStatus('Generating with and without the adapter…');
  await generateOutputs();
  state.probe = await call('logits', { prompt: PROBE_PROMPT, adapter: true });
  setFiles(await call('save', {}));
}

// ---- outputs --------------------------------------------------------------------------------

async function generateOutputs(): Promise<void> {
  const prompts = ui.prompts.value.split('\n').map((p) => p.trim()).filter((p) => p !== '');
  if (prompts.length === 0) throw new Error('Prompts: write at least one prompt');
  const out = await call('generate', { prompts, maxNewTokens: intOf(ui.tokens, 'New tokens', 1, 200) });
  state.outputs = out;
  const body = ui.outputs.tBodies[0];
  body.replaceChildren(...out.prompts.map((p, i) => {
    const row = document.createElement('tr');
    for (const text of [out.base[i], out.adapter?.[i] ?? '(no adapter yet)']) {
      const cell = document.createElement('td');
      const strong = document.createElement('span');
      strong.className = 'prompt';
      strong.textContent = p;
      cell.append(strong, text.startsWith(p) ? text.slice(p.length) : text);
      row.append(cell);
    }
    return row;
  }));
}

// ---- adapter files --------------------------------------------------------------------------

const urls: string[] = [];

function setFiles(files: Record<string, Uint8Array> | null): void {
  for (const u of urls.splice(0)) URL.revokeObjectURL(u);
  state.files = [];
  for (const [a, name] of [[ui.dlConfig, 'adapter_config.json'], [ui.dlWeights, 'adapter_model.safetensors']] as const) {
    const bytes = files?.[name];
    if (bytes === undefined) {
      a.removeAttribute('href');
      a.setAttribute('aria-disabled', 'true');
      a.textContent = name;
      continue;
    }
    const url = URL.createObjectURL(new Blob([bytes as Uint8Array<ArrayBuffer>], { type: name.endsWith('.json') ? 'application/json' : 'application/octet-stream' }));
    urls.push(url);
    a.href = url;
    a.setAttribute('aria-disabled', 'false');
    a.textContent = `${name} (${bytes.byteLength.toLocaleString('en-US')} bytes)`;
    state.files.push(name);
  }
  ui.download.disabled = state.phase !== 'ready' || state.files.length === 0;
}

async function loadAdapter(files: File[]): Promise<void> {
  state.probe = null;
  setFiles(null);
  const info = await call('load', { files });
  state.adapter = info;
  state.trained = null;
  ui.adapterInfo.textContent = `adapter: ${info.source} (${info.peftType} r=${info.r}, ${info.trainable.toLocaleString('en-US')} parameters)`;
  await afterAdapter();
  setStatus(`Loaded ${info.source}.`);
}

// ---- the loss plot --------------------------------------------------------------------------

function drawPlot(losses: { step: number; loss: number }[], steps: number): void {
  const svg = ui.plot;
  const ns = 'http://www.w3.org/2000/svg';
  const W = 600, H = 200, L = 48, R = 12, T = 12, B = 28;
  const el = (name: string, attrs: Record<string, string | number>, text?: string): SVGElement => {
    const e = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const parts: SVGElement[] = [
    el('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B }),
    el('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B }),
    el('text', { x: W - R, y: H - 8, 'text-anchor': 'end' }, `step (of ${steps})`),
  ];
  if (losses.length > 0) {
    let lo = Math.min(...losses.map((l) => l.loss));
    let hi = Math.max(...losses.map((l) => l.loss));
    if (hi - lo < 1e-6) { lo -= 0.5; hi += 0.5; }
    const x = (s: number): number => L + ((s - 1) / Math.max(1, steps - 1)) * (W - L - R);
    const y = (v: number): number => T + ((hi - v) / (hi - lo)) * (H - T - B);
    parts.push(
      el('polyline', { class: 'line', points: losses.map((l) => `${x(l.step).toFixed(1)},${y(l.loss).toFixed(1)}`).join(' ') }),
      el('text', { x: L - 4, y: T + 8, 'text-anchor': 'end' }, hi.toFixed(2)),
      el('text', { x: L - 4, y: H - B, 'text-anchor': 'end' }, lo.toFixed(2)),
      el('text', { x: L + 4, y: T + 8 }, 'loss'),
    );
  } else {
    parts.push(el('text', { x: (W + L) / 2, y: H / 2, 'text-anchor': 'middle' }, 'the training loss appears here'));
  }
  svg.replaceChildren(...parts);
}

// ---- wiring ---------------------------------------------------------------------------------

ui.backend.addEventListener('change', () => void loadModel());
ui.category.addEventListener('change', () => void describeData());
ui.custom.addEventListener('input', () => void describeData());
ui.train.addEventListener('click', () => void busy('Training', trainAdapter));
ui.stop.addEventListener('click', () => {
  worker?.postMessage({ kind: 'stop' } as Request);
  ui.stop.disabled = true;
  setStatus('Stopping after this step…');
});
ui.generate.addEventListener('click', () => void busy('Generating', generateOutputs));
ui.download.addEventListener('click', () => {
  // two downloads, one per file (the browser may ask once whether the page may download several files)
  ui.dlConfig.click();
  setTimeout(() => ui.dlWeights.click(), 300);
});
ui.load.addEventListener('change', () => {
  const files = [...(ui.load.files ?? [])];
  ui.load.value = '';
  if (files.length > 0) void busy('Loading the adapter', () => loadAdapter(files));
});

drawPlot([], Number(ui.steps.value) || 1);
setPhase('loading');
void (async () => {
  try {
    await loadCategories();
  } catch (e) {
    showError(e);
  }
  await loadModel();
})();
