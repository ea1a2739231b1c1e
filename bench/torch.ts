// The PyTorch side: find a Python with torch, and run bench/torch_bench.py (one process per
// measurement, like ours). Nothing is installed; without torch the bench reports ours alone.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { GemmSpec, TrainSpec } from './step.js';
import type { DecodeSpec } from './decode.js';

const SCRIPT = fileURLToPath(new URL('../../bench/torch_bench.py', import.meta.url));

export interface TorchInfo {
  version: string;
  /** torch.__config__.show(), verbatim. */
  config: string;
  /** 'OpenBLAS', 'MKL' or 'unknown', from the libraries mapped into the process after a matmul. */
  blas: string;
  blas_libraries: string[];
  default_threads: number;
  python: string;
  executable: string;
}

export interface TorchGemm {
  threads: number;
  results: { n: number; seconds: number[] }[];
}

export interface TorchTrain {
  threads: number;
  tokens_per_step: number;
  targets_per_step: number;
  trainable_params: number;
  all_params: number;
  step_seconds: number[];
  losses: number[];
  startup_rss_kib: number;
  max_rss_kib: number;
}

export type Probe = { python: string; info: TorchInfo } | { python: null; reason: string };

/**
 * The first of `candidates` that imports torch. The default list is `python3` (the PATH's) and
 * then `/usr/bin/python3`, since a version manager's python3 may shadow the system one that has torch.
 */
export function probeTorch(candidates: string[]): Probe {
  const tried: string[] = [];
  for (const python of [...new Set(candidates)]) {
    const r = spawnSync(python, ['-c', 'import torch'], { encoding: 'utf8' });
    if (r.status === 0) return { python, info: runTorch<TorchInfo>(python, ['info']) };
    tried.push(`${python} -c 'import torch' failed (${r.error ? (r.error as NodeJS.ErrnoException).code : lastLine(r.stderr)})`);
  }
  return { python: null, reason: tried.join('; ') };
}

function lastLine(text: string): string {
  const lines = text.trim().split('\n');
  return lines[lines.length - 1] ?? '';
}

/** Runs torch_bench.py and parses the JSON on its last stdout line; throws with its stderr tail on failure. */
export function runTorch<T>(python: string, args: string[], threads: number | null = null): T {
  const env = { ...process.env };
  // torch.set_num_threads sizes torch's own pool; OpenBLAS (pthreads build) keeps its own, sized here.
  if (threads !== null) for (const v of ['OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS']) env[v] = String(threads);
  const r = spawnSync(python, [SCRIPT, ...args], { encoding: 'utf8', env, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`torch_bench.py ${args[0]} failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`}): ${lastLine(r.stderr ?? '')}`);
  return JSON.parse(lastLine(r.stdout)) as T;
}

export function torchGemm(python: string, spec: GemmSpec, threads: number): TorchGemm {
  return runTorch<TorchGemm>(python, ['gemm', '--sizes', spec.sizes.join(','), '--warmup', String(spec.warmup), '--runs', String(spec.runs), '--min-seconds', String(spec.minSeconds), '--threads', String(threads)], threads);
}

export function torchTrain(python: string, spec: TrainSpec, threads: number): TorchTrain {
  const args = ['train', '--threads', String(threads)];
  for (const key of ['method', 'layers', 'width', 'vocab', 'positions', 'batch', 'seq', 'r', 'alpha', 'warmup', 'steps'] as const) {
    args.push(`--${key}`, String(spec[key]));
  }
  return runTorch<TorchTrain>(python, args, threads);
}

export interface TorchDecode {
  threads: number;
  /** Seconds per decode step (every row advances one token), per run, keyed by rows: batch1_step_seconds, … */
  [key: `batch${number}_step_seconds`]: number[];
  /** Seconds of one forward over a `--prefill`-token prompt (logits of its last position), per run. */
  prefill_seconds?: number[];
  max_rss_kib: number;
}

export function torchDecode(python: string, spec: DecodeSpec, threads: number): TorchDecode {
  const s = spec.shape;
  const args = ['decode', '--threads', String(threads), '--layers', String(s.layers), '--width', String(s.hidden), '--intermediate', String(s.intermediate),
    '--heads', String(s.heads), '--kv-heads', String(s.kvHeads), '--vocab', String(s.vocab), '--seq', String(spec.prompt),
    '--new-tokens', String(spec.newTokens), '--batches', `1,${spec.batch}`, '--prefill', String(spec.prefill), '--runs', String(spec.runs)];
  return runTorch<TorchDecode>(python, args, threads);
}
