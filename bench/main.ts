// `npm run bench`: our runtime and PyTorch side by side on this machine. Every measurement runs
// in its own child process (ours: bench/child.ts, PyTorch: bench/torch_bench.py), ours first, and
// PyTorch then gets the thread count our backend reported, so both sides use the same threads.
import { spawnSync } from 'node:child_process';
import * as os from 'node:os';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../src/io/atomic.js';
import { renderMarkdown } from './report.js';
import type { GemmSpec, Method, TrainResult, TrainSpec } from './step.js';
import { probeTorch, torchDecode, torchGemm, torchTrain, type Probe, type TorchDecode, type TorchGemm, type TorchTrain } from './torch.js';
import type { DecodeResult, DecodeSpec } from './decode.js';
import type { QuantResult, QuantSpec } from './quant.js';
import type { QloraResult, QloraSpec } from './qlora.js';
import type { PeerGemm, WasmSpec } from './wasm.js';
import type { WebGpuBenchResult, WebGpuBenchSpec } from './webgpu-types.js';

const CHILD = fileURLToPath(new URL('./child.js', import.meta.url));
const WEBGPU = fileURLToPath(new URL('./webgpu.js', import.meta.url));

export type Section = 'gemm' | 'vera' | 'lora' | 'dvora' | 'dora' | 'decode' | 'quant' | 'qlora' | 'wasm' | 'webgpu';
export const SECTIONS: readonly Section[] = ['gemm', 'vera', 'lora', 'dvora', 'dora', 'decode', 'quant', 'qlora', 'wasm', 'webgpu'];

export interface ModelShape {
  layers: number;
  width: number;
}

export interface BenchOptions {
  sections: Section[];
  quick: boolean;
  /** Markdown report path; null writes none. */
  out: string | null;
  /** Raw results as JSON; null writes none. */
  jsonOut: string | null;
  /** Pythons to try for torch, in order; empty: run without PyTorch. */
  pythons: string[];
  /** Our backend's threads (VERA_NUM_THREADS for the children); null: the backend's default. */
  threads: number | null;
  gemm: GemmSpec;
  models: ModelShape[];
  batch: number;
  seq: number;
  vocab: number;
  positions: number;
  veraR: number;
  loraR: number;
  loraAlpha: number;
  warmup: number;
  steps: number;
  decode: DecodeSpec;
  quant: QuantSpec;
  qlora: QloraSpec;
  /** The wasm section: GEMM sizes against TF.js and jax-js, and one training shape against native. */
  wasm: { gemm: WasmSpec; train: TrainSpec };
  webgpu: WebGpuBenchSpec;
  /** The command line, for the report's header. */
  command: string;
  /** Free text for the report (e.g. "other jobs were using the CPU"). */
  note: string | null;
  log: (line: string) => void;
}

export type Outcome<T> = { ok: true; value: T } | { ok: false; error: string };

export interface OursGemm {
  backend: string;
  threads: number;
  results: { n: number; seconds: number[] }[];
  /** GFLOP/s of a register-only FMA loop on all threads (native only). */
  peakGflops?: number;
  /** The GEMM micro-kernel (native only). */
  kernel?: string;
}

export interface OursTrain extends TrainResult {
  threads: number;
}

export interface TrainEntry {
  spec: TrainSpec;
  ours: Outcome<OursTrain>;
  /** null when PyTorch is absent. */
  torch: Outcome<TorchTrain> | null;
}

export interface BenchResults {
  date: string;
  command: string;
  note: string | null;
  quick: boolean;
  machine: { cpu: string; cores: number; memoryKiB?: number; node: string; platform: string };
  /** 1-minute load average when the run started and when it ended: other work on the machine skews timings. */
  load: { start: number; end: number };
  /** Wall-clock seconds of the whole run (absent in results from before it was recorded). */
  seconds?: number;
  /** Our backend as the children reported it (null if none ran). */
  backend: { name: string; threads: number } | null;
  torch: Probe;
  gemm: { spec: GemmSpec; ours: Outcome<OursGemm>; torch: Outcome<TorchGemm> | null } | null;
  train: TrainEntry[];
  decode?: { spec: DecodeSpec; ours: Outcome<OursDecode>; torch: Outcome<TorchDecode> | null };
  quant?: { spec: QuantSpec; ours: Outcome<QuantResult & { threads: number }> };
  /** WebGPU in headless Chromium, on whatever adapter it finds. */
  webgpu?: { spec: WebGpuBenchSpec; ours: Outcome<WebGpuBenchResult> };
  qlora?: { spec: QloraSpec; ours: Outcome<QloraResult & { threads: number }> };
  wasm?: WasmResults;
}

/** Our wasm backend against TF.js's and jax-js's WebAssembly GEMMs, and its VeRA step against native's. */
export interface WasmResults {
  spec: { gemm: WasmSpec; train: TrainSpec };
  /** Ours on one thread (wasm/vera.wasm). */
  ours: Outcome<OursGemm>;
  /** Ours on `threads` threads (wasm/vera-threads.wasm, workers over a shared memory). */
  oursThreads: Outcome<OursGemm>;
  threads: number;
  tfjs: Outcome<PeerGemm>;
  jax: Outcome<PeerGemm>;
  trainWasm: Outcome<OursTrain>;
  trainNative: Outcome<OursTrain>;
}

export interface OursDecode extends DecodeResult {
  threads: number;
}

function attempt<T>(fn: () => T): Outcome<T> {
  try {
    return { ok: true, value: fn() };
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

/** Two rounds of one GEMM measurement as one: the first's, with the second's runs added to each size. */
function pooledRuns<T extends { results: { n: number; seconds: number[] }[] }>(a: Outcome<T>, b: Outcome<T>): Outcome<T> {
  if (!a.ok || !b.ok) return a.ok ? a : b;
  return { ok: true, value: { ...a.value, results: a.value.results.map((x) => ({ n: x.n, seconds: [...x.seconds, ...(b.value.results.find((y) => y.n === x.n)?.seconds ?? [])] })) } };
}

function runChild<T>(mode: 'gemm' | 'train' | 'decode' | 'quant' | 'qlora' | 'tfjs' | 'jax' | 'webgpu', spec: object, threads: number | null, backend?: string): T {
  const env = { ...process.env };
  if (backend !== undefined) env.VERA_BACKEND = backend;
  if (threads !== null) env.VERA_NUM_THREADS = String(threads);
  // the WebGPU bench drives Chromium from its own script
  const args = mode === 'webgpu' ? [WEBGPU, JSON.stringify(spec)] : [CHILD, mode, JSON.stringify(spec)];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', env, maxBuffer: 64 << 20 });
  if (r.status !== 0) {
    const tail = (r.stderr ?? '').trim().split('\n').slice(-3).join(' | ');
    throw new Error(`${mode} child failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`}): ${tail}`);
  }
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as T;
}

export function trainSpecFor(o: BenchOptions, shape: ModelShape, method: Method): TrainSpec {
  return {
    method,
    layers: shape.layers,
    width: shape.width,
    vocab: o.vocab,
    positions: o.positions,
    batch: o.batch,
    seq: o.seq,
    r: method === 'vera' || method === 'dvora' ? o.veraR : o.loraR,
    alpha: o.loraAlpha,
    warmup: o.warmup,
    steps: o.steps,
  };
}

export function runBench(o: BenchOptions): BenchResults {
  const torch = o.pythons.length > 0 ? probeTorch(o.pythons) : { python: null, reason: 'disabled with --no-torch' };
  if (torch.python === null) o.log(`PyTorch is not available: ${torch.reason}. Reporting our numbers only; ratios are n/a.`);
  else o.log(`PyTorch ${torch.info.version} (${torch.info.blas}) via ${torch.python}`);

  const cpus = os.cpus();
  const results: BenchResults = {
    date: new Date().toISOString(),
    command: o.command,
    note: o.note,
    quick: o.quick,
    machine: { cpu: cpus[0]?.model.trim() ?? 'unknown', cores: os.availableParallelism(), memoryKiB: os.totalmem() / 1024, node: process.version, platform: `${os.platform()} ${os.release()} ${os.arch()}` },
    load: { start: os.loadavg()[0], end: NaN },
    backend: null,
    torch,
    gemm: null,
    train: [],
  };
  const noteBackend = (name: string, threads: number): void => {
    results.backend ??= { name, threads };
  };

  /** Ours in a child, then PyTorch with the thread count ours reported. */
  const sideBySide = <O extends { backend: string; threads: number }, T>(label: string, ours: () => O, theirs: (python: string, threads: number) => T): { ours: Outcome<O>; torch: Outcome<T> | null } => {
    const mine = attempt(ours);
    if (mine.ok) noteBackend(mine.value.backend, mine.value.threads);
    const threads = mine.ok ? mine.value.threads : (o.threads ?? os.availableParallelism());
    const python = torch.python;
    const other = python === null ? null : attempt(() => theirs(python, threads));
    o.log(`${label}: ours ${mine.ok ? 'done' : mine.error}${other ? `; torch ${other.ok ? 'done' : other.error}` : ''}`);
    return { ours: mine, torch: other };
  };

  if (o.sections.includes('gemm')) {
    results.gemm = { spec: o.gemm, ...sideBySide('gemm', () => runChild<OursGemm>('gemm', o.gemm, o.threads), (py, t) => torchGemm(py, o.gemm, t)) };
  }

  const methods = (['vera', 'lora', 'dvora', 'dora'] as const).filter((m) => o.sections.includes(m));
  for (const shape of o.models) {
    for (const method of methods) {
      const spec = trainSpecFor(o, shape, method);
      results.train.push({ spec, ...sideBySide(`${method} ${shape.layers}x${shape.width}`, () => runChild<OursTrain>('train', spec, o.threads), (py, t) => torchTrain(py, spec, t)) });
    }
  }

  if (o.sections.includes('decode')) {
    results.decode = { spec: o.decode, ...sideBySide('decode', () => runChild<OursDecode>('decode', o.decode, o.threads), (py, t) => torchDecode(py, o.decode, t)) };
  }

  if (o.sections.includes('quant')) {
    const ours = attempt(() => runChild<QuantResult & { threads: number }>('quant', o.quant, o.threads));
    if (ours.ok) noteBackend(ours.value.backend, ours.value.threads);
    o.log(`quant: ours ${ours.ok ? 'done' : ours.error}`);
    results.quant = { spec: o.quant, ours };
  }

  if (o.sections.includes('qlora')) {
    const ours = attempt(() => runChild<QloraResult & { threads: number }>('qlora', o.qlora, o.threads));
    if (ours.ok) noteBackend(ours.value.backend, ours.value.threads);
    o.log(`qlora: ours ${ours.ok ? 'done' : ours.error}`);
    results.qlora = { spec: o.qlora, ours };
  }

  if (o.sections.includes('wasm')) {
    // ours on one thread and on the wasm loader's default (the cores, at most 8), or --threads,
    // at least 2; TF.js's and jax-js's wasm run one thread in Node
    const spec = o.wasm;
    const threads = Math.max(2, o.threads ?? Math.min(os.availableParallelism(), 8));
    // two rounds, the runtimes in turn in each, their runs pooled: a busy spell of the machine
    // then falls on all of them rather than on whichever ran during it
    const round = (): [Outcome<OursGemm>, Outcome<OursGemm>, Outcome<PeerGemm>, Outcome<PeerGemm>] => [
      attempt(() => runChild<OursGemm>('gemm', spec.gemm, 1, 'wasm')),
      attempt(() => runChild<OursGemm>('gemm', spec.gemm, threads, 'wasm')),
      attempt(() => runChild<PeerGemm>('tfjs', spec.gemm, 1)),
      attempt(() => runChild<PeerGemm>('jax', spec.gemm, 1)),
    ];
    const [r1, r2] = [round(), round()];
    const outcomes = [pooledRuns(r1[0], r2[0]), pooledRuns(r1[1], r2[1]), pooledRuns(r1[2], r2[2]), pooledRuns(r1[3], r2[3])] as const;
    const wasm: WasmResults = {
      spec,
      ours: outcomes[0],
      oursThreads: outcomes[1],
      threads,
      tfjs: outcomes[2],
      jax: outcomes[3],
      trainWasm: attempt(() => runChild<OursTrain>('train', spec.train, 1, 'wasm')),
      trainNative: attempt(() => {
        const t = runChild<OursTrain>('train', spec.train, 1, 'native');
        // without the addon the registry falls back (to wasm): that is no native figure
        if (t.backend !== 'native') throw new Error(`native backend not available (the child ran ${t.backend})`);
        return t;
      }),
    };
    const said = (r: Outcome<unknown>): string => (r.ok ? 'done' : r.error);
    o.log(`wasm: ours ${said(wasm.ours)}, on ${threads} threads ${said(wasm.oursThreads)}; tfjs ${said(wasm.tfjs)}; jax-js ${said(wasm.jax)}; vera step wasm ${said(wasm.trainWasm)}, native ${said(wasm.trainNative)}`);
    results.wasm = wasm;
  }

  if (o.sections.includes('webgpu')) {
    const ours = attempt(() => runChild<WebGpuBenchResult>('webgpu', o.webgpu, null));
    o.log(`webgpu: ${ours.ok ? `done (${ours.value.adapter})` : ours.error}`);
    results.webgpu = { spec: o.webgpu, ours };
  }

  results.load.end = os.loadavg()[0];
  results.seconds = (Date.now() - Date.parse(results.date)) / 1000;
  const markdown = renderMarkdown(results);
  if (o.out !== null) writeFileAtomic(o.out, markdown);
  if (o.jsonOut !== null) writeFileAtomic(o.jsonOut, `${JSON.stringify(results, null, 2)}\n`);
  return results;
}
