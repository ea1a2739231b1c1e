// Seeded fuzzing of what reads untrusted files: the safetensors reader, the config readers
// (config.json for gpt2/llama, adapter_config.json for VeRA/LoRA), the adapter loader (PEFT folders
// with mutated files) and the `vera` command itself (child processes on mutated inputs).
//
// The contract under test: bad input ends in one one-line VeraError (in process) or, from the CLI,
// a non-zero exit with one stderr line, never a signal, a stack trace ("internal error") or a hang.
// Every case is a pure function of (seed, target, index), so a finding is replayed with
// `node dist/scripts/fuzz.js --seed S --target T --case I`.
//
//   npm run fuzz -- --minutes 10            rounds of every target until the time is up
//   node dist/scripts/fuzz.js --cases 500   one round of 500 cases per in-process target
import '../src/backends/index.js';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { VeraError } from '../src/io/errors.js';
import { SafetensorsFile, dtypeSize, serializeSafetensors, type TensorToWrite, type WriteDtype } from '../src/io/safetensors.js';
import { gpt2ConfigFromJson, llamaConfigFromJson, loadPretrained, modelFromConfig } from '../src/models/index.js';
import { AdapterLayer, PeftModel, modelShapesFromConfig, parsePeftConfig } from '../src/peft/index.js';
import type { Module } from '../src/nn/index.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FIXTURES = join(ROOT, 'test', 'fixtures');
const BIN = join(ROOT, 'bin', 'vera.js');

export const TARGETS = ['safetensors', 'config', 'adapter-config', 'adapter', 'cli'] as const;
export type Target = (typeof TARGETS)[number];

export interface Finding {
  target: Target;
  seed: number;
  case: number;
  /** What the case fed in, in a few words. */
  input: string;
  problem: string;
}

export interface FuzzReport {
  cases: Record<Target, number>;
  /** Cases that were refused with a proper one-line error (the rest were accepted as valid). */
  refused: Record<Target, number>;
  findings: Finding[];
}

export interface FuzzOptions {
  seed: number;
  /** Cases per target for this run. */
  counts: Partial<Record<Target, number>>;
  /** Milliseconds a CLI child may run (default 30 000). */
  cliTimeoutMs?: number;
  /** Virtual memory limit of a CLI child in KiB (default 4 GiB): a runaway allocation must fail cleanly. */
  cliMemoryKiB?: number;
  /** Only this case index (replay). */
  onlyCase?: number;
  /** First case index (later rounds of a long run continue where the last one stopped). */
  firstCase?: number;
  /** Milliseconds one in-process case may take (default 20 000). */
  caseTimeoutMs?: number;
}

// ------------------------------------------------------------------ seeded randomness

/** mulberry32: small, fast, and the same on every platform. */
export class Prng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

function caseRng(seed: number, target: Target, index: number): Prng {
  let h = seed >>> 0;
  for (const c of target) h = Math.imul(h ^ c.charCodeAt(0), 0x9e3779b1) >>> 0;
  return new Prng((h ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0);
}

// ------------------------------------------------------------------ values that break readers

/** JSON values a field should not hold (and a few it may). */
const ODD_VALUES: readonly unknown[] = [
  0, -1, 1, 2, 3, 0.5, -0.5, 1e9, 1e12, 1e15, 2 ** 53, 2 ** 53 + 2, 1e308, -1e308, 1e-300, -0, 65536, 2 ** 31, 2 ** 32 + 1,
  '', 'abc', '16', 'NaN', 'Infinity', '(', '.*', true, false, null, [], [1], [-1], ['c_attn'], [1, 2, 3], {}, { a: 1 }, [[1]],
];

function oddValue(rng: Prng): unknown {
  const v = rng.pick(ODD_VALUES);
  return typeof v === 'object' && v !== null ? structuredClone(v) : v;
}

const describe = (v: unknown): string => {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
};

/** Set, delete or add fields of a JSON object; returns what was done. */
function mutateJson(obj: Record<string, unknown>, rng: Prng, extraKeys: readonly string[]): string {
  const keys = Object.keys(obj);
  const done: string[] = [];
  const n = 1 + rng.int(3);
  for (let i = 0; i < n; i++) {
    const op = rng.int(10);
    const key = op < 7 && keys.length > 0 ? rng.pick(keys) : rng.pick([...extraKeys, 'zz_unknown_field']);
    if (op === 9) {
      delete obj[key];
      done.push(`-${key}`);
    } else {
      const v = oddValue(rng);
      obj[key] = v;
      done.push(`${key}=${describe(v)}`);
    }
  }
  return done.join(' ');
}

// ------------------------------------------------------------------ safetensors images

const READ_DTYPES = ['F64', 'F32', 'F16', 'BF16', 'F8_E4M3', 'F8_E5M2', 'I64', 'I32', 'I16', 'I8', 'U64', 'U32', 'U16', 'U8', 'BOOL', 'F4', 'C64', 'f32'];
const WRITE_DTYPES: readonly WriteDtype[] = ['F32', 'F16', 'BF16'];

function randomTensors(rng: Prng): Record<string, TensorToWrite> {
  const out: Record<string, TensorToWrite> = {};
  const n = 1 + rng.int(4);
  for (let i = 0; i < n; i++) {
    const shape = Array.from({ length: rng.int(4) }, () => rng.int(5));
    const count = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(count);
    for (let j = 0; j < count; j++) data[j] = (rng.next() - 0.5) * 8;
    out[rng.pick(['w', 'b', 'layer.0.weight', 'x', `t${i}`, '0', 'é'])+ (i > 0 ? `.${i}` : '')] = { data, shape, dtype: rng.pick(WRITE_DTYPES) };
  }
  return out;
}

interface HeaderEntry {
  dtype?: unknown;
  shape?: unknown;
  data_offsets?: unknown;
  [k: string]: unknown;
}

function splitImage(bytes: Uint8Array): { header: Record<string, unknown>; data: Uint8Array } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + n)).toString('utf8')) as Record<string, unknown>;
  return { header, data: bytes.subarray(8 + n) };
}

function joinImage(headerText: string, data: Uint8Array, lengthPrefix?: number): Uint8Array {
  const h = Buffer.from(headerText, 'utf8');
  const out = new Uint8Array(8 + h.byteLength + data.byteLength);
  const dv = new DataView(out.buffer);
  const n = lengthPrefix ?? h.byteLength;
  dv.setUint32(0, n % 2 ** 32, true);
  dv.setUint32(4, Math.floor(n / 2 ** 32) % 2 ** 32, true);
  out.set(h, 8);
  out.set(data, 8 + h.byteLength);
  return out;
}

/** A mutated safetensors image: header fields, length prefix, bytes, truncation. */
export function mutateSafetensors(valid: Uint8Array, rng: Prng): { bytes: Uint8Array; what: string } {
  const kind = rng.int(6);
  if (kind <= 2) {
    const { header, data } = splitImage(valid);
    const names = Object.keys(header).filter((k) => k !== '__metadata__');
    const name = names.length > 0 ? rng.pick(names) : 'w';
    const entry = (header[name] ?? {}) as HeaderEntry;
    header[name] = entry;
    const field = rng.pick(['dtype', 'shape', 'data_offsets', 'extra', 'entry', 'metadata', 'new']);
    let what: string;
    if (field === 'dtype') entry.dtype = rng.chance(0.6) ? rng.pick(READ_DTYPES) : oddValue(rng);
    else if (field === 'shape') {
      entry.shape = rng.chance(0.5) && Array.isArray(entry.shape) ? (entry.shape as unknown[]).map((d) => (rng.chance(0.4) ? oddValue(rng) : d)) : [oddValue(rng), rng.int(4)];
    } else if (field === 'data_offsets') {
      const [b, e] = Array.isArray(entry.data_offsets) ? (entry.data_offsets as number[]) : [0, 0];
      entry.data_offsets = rng.pick([[e, b], [b, e + 1], [b + 1, e], [b, e - 1], [0, 2 ** 53], [b, 2 ** 40], [oddValue(rng), e], [b], [b, e, 0]]);
    } else if (field === 'extra') entry[rng.pick(['extra', 'dtype2', '__proto__'])] = oddValue(rng);
    else if (field === 'entry') header[name] = oddValue(rng);
    else if (field === 'metadata') header.__metadata__ = rng.chance(0.5) ? { k: oddValue(rng) } : oddValue(rng);
    else header[`${name}_copy`] = { ...entry };
    what = `header ${name}.${field} → ${describe(field === 'entry' ? header[name] : field === 'metadata' ? header.__metadata__ : entry[field === 'extra' ? 'extra' : field])}`;
    let text = JSON.stringify(header);
    if (rng.chance(0.1)) {
      text = text.replace(/\d+/, '99999999999999999999');
      what += ' (a 20-digit number)';
    }
    return { bytes: joinImage(text, data), what };
  }
  if (kind === 3) {
    const { header, data } = splitImage(valid);
    const text = JSON.stringify(header);
    const h = Buffer.byteLength(text);
    const prefix = rng.pick([0, 1, 2, h - 1, h + 1, h + data.byteLength, h + data.byteLength + 1, 2 ** 32, 2 ** 40, 2 ** 53, 100_000_001]);
    return { bytes: joinImage(text, data, prefix), what: `length prefix ${prefix} (header is ${h} bytes)` };
  }
  if (kind === 4) {
    const bytes = Uint8Array.from(valid);
    const flips = 1 + rng.int(4);
    const at: number[] = [];
    for (let i = 0; i < flips; i++) {
      const pos = rng.chance(0.7) ? rng.int(Math.min(bytes.length, 64)) : rng.int(bytes.length);
      bytes[pos] = rng.int(256);
      at.push(pos);
    }
    return { bytes, what: `bytes at ${at.join(',')} changed` };
  }
  const cut = rng.int(valid.length);
  return rng.chance(0.8) ? { bytes: valid.subarray(0, cut), what: `truncated to ${cut} of ${valid.length} bytes` } : { bytes: Uint8Array.from([...valid, ...new Uint8Array(1 + rng.int(16))]), what: 'bytes appended' };
}

/** Set by the worker: a case's input is sent before its oracle runs, so a crash or hang can name it. */
let announce: (input: string) => void = () => {};

/** A refusal must be one VeraError line; anything else is a finding (its first line). */
function problemOf(e: unknown): string | null {
  if (e instanceof VeraError && !e.message.includes('\n') && e.message.length > 0) return null;
  const err = e as Error;
  return `${err?.name ?? typeof e}: ${String(err?.message ?? e).split('\n')[0]}${err?.stack ? ` @ ${err.stack.split('\n')[1]?.trim() ?? ''}` : ''}`;
}

function safetensorsCase(rng: Prng): { input: string; problem: string | null; refused: boolean } {
  const valid = serializeSafetensors(randomTensors(rng), rng.chance(0.3) ? { format: 'pt' } : undefined);
  const { bytes, what } = mutateSafetensors(valid, rng);
  announce(what);
  try {
    const st = SafetensorsFile.fromBytes(bytes, 'fuzz.safetensors');
    // accepted: it must then be readable as it claims
    for (const k of st.keys()) {
      const info = st.info(k);
      const count = info.shape.reduce((a, b) => a * b, 1);
      if (info.byteLength !== count * dtypeSize(info.dtype)) return { input: what, problem: `accepted ${k} with ${info.byteLength} bytes for shape [${info.shape}] ${info.dtype}`, refused: false };
      const data = st.getFloat32(k);
      if (data.length !== count) return { input: what, problem: `getFloat32(${k}) gave ${data.length} values for ${count} elements`, refused: false };
    }
    return { input: what, problem: null, refused: false };
  } catch (e) {
    return { input: what, problem: problemOf(e), refused: true };
  }
}

// ------------------------------------------------------------------ config readers

const GPT2_CONFIG = (): Record<string, unknown> => JSON.parse(readFileSync(join(FIXTURES, 'gpt2-tiny', 'config.json'), 'utf8')) as Record<string, unknown>;
const LLAMA_CONFIG = (): Record<string, unknown> => ({
  model_type: 'llama', hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
  vocab_size: 100, max_position_embeddings: 64, rms_norm_eps: 1e-6, rope_theta: 10000, tie_word_embeddings: false, hidden_act: 'silu',
});
const GPT2_KEYS = ['n_embd', 'n_layer', 'n_head', 'vocab_size', 'n_positions', 'n_inner', 'layer_norm_epsilon', 'activation_function', 'model_type', 'tie_word_embeddings'];
const LLAMA_KEYS = ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'head_dim', 'vocab_size', 'rope_scaling', 'sliding_window', 'attention_bias', 'mlp_bias'];

/** Rough float count of a parsed decoder config: build only models that are certainly small. */
function smallEnough(config: object): boolean {
  const ints = Object.entries(config).filter(([k, v]) => typeof v === 'number' && Number.isInteger(v) && !/theta|eps|token|id|window|factor/i.test(k)).map(([, v]) => v as number);
  const big = Math.max(1, ...ints);
  return big <= 4096 && big * big * 16 <= 4e6;
}

function configCase(rng: Prng): { input: string; problem: string | null; refused: boolean } {
  const llama = rng.chance(0.5);
  const json = llama ? LLAMA_CONFIG() : GPT2_CONFIG();
  const what = `${llama ? 'llama' : 'gpt2'} config.json ${mutateJson(json, rng, llama ? LLAMA_KEYS : GPT2_KEYS)}`;
  announce(what);
  try {
    const config = llama ? llamaConfigFromJson(json, 'config.json') : gpt2ConfigFromJson(json, 'config.json');
    modelShapesFromConfig(json, 'config.json'); // inspect --config reads the same fields
    if (smallEnough(config)) modelFromConfig(json, 'config.json', { init: false });
    return { input: what, problem: null, refused: false };
  } catch (e) {
    return { input: what, problem: problemOf(e), refused: true };
  }
}

const VERA_KEYS = ['r', 'projection_prng_key', 'save_projection', 'vera_dropout', 'd_initial', 'target_modules', 'layers_to_transform', 'layers_pattern', 'modules_to_save', 'bias', 'use_dora', 'rank_pattern', 'task_type', 'peft_type', 'fan_in_fan_out', 'ablation', 'projection_init'];
const LORA_KEYS = ['r', 'lora_alpha', 'lora_dropout', 'use_rslora', 'init_lora_weights', 'target_modules', 'exclude_modules', 'use_dora', 'rank_pattern', 'alpha_pattern', 'layer_replication', 'task_type', 'peft_type', 'bias'];

function readAdapterConfig(name: string): Record<string, unknown> {
  return JSON.parse(readFileSync(join(FIXTURES, name, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
}

function adapterConfigCase(rng: Prng): { input: string; problem: string | null; refused: boolean } {
  const lora = rng.chance(0.4);
  const json = readAdapterConfig(lora ? 'gpt2-tiny-lora' : 'gpt2-tiny-vera');
  const what = `${lora ? 'lora' : 'vera'} adapter_config.json ${mutateJson(json, rng, lora ? LORA_KEYS : VERA_KEYS)}`;
  announce(what);
  try {
    parsePeftConfig(json, 'adapter_config.json');
    return { input: what, problem: null, refused: false };
  } catch (e) {
    return { input: what, problem: problemOf(e), refused: true };
  }
}

// ------------------------------------------------------------------ adapter folders

const ADAPTERS = ['gpt2-tiny-vera', 'gpt2-tiny-vera-noproj', 'gpt2-tiny-lora'] as const;

function readWeights(file: string): Record<string, TensorToWrite> {
  const st = SafetensorsFile.open(file);
  const out: Record<string, TensorToWrite> = {};
  for (const k of st.keys()) {
    const info = st.info(k);
    out[k] = { data: st.getFloat32(k), shape: info.shape, dtype: info.dtype === 'F16' || info.dtype === 'BF16' ? info.dtype : 'F32' };
  }
  return out;
}

/**
 * A PEFT folder with one mutation. `invalid`: one that certainly makes it unloadable onto its model;
 * `invalid-alone`: one that is wrong even without the model (a stray or missing key is not).
 */
export function mutatedAdapterFolder(dir: string, rng: Prng, mode: 'any' | 'invalid' | 'invalid-alone'): { what: string; adapter: string } {
  const adapter = rng.pick(ADAPTERS);
  mkdirSync(dir, { recursive: true });
  const config = readAdapterConfig(adapter);
  const weightsFile = join(FIXTURES, adapter, 'adapter_model.safetensors');
  let weights: Uint8Array = readFileSync(weightsFile);
  let what: string;
  const kind = mode === 'any' ? rng.int(6) : rng.pick(mode === 'invalid' ? [0, 1, 2, 3, 4] : [0, 1, 3, 4]);
  const r = config.r as number;
  if (kind === 0) {
    const nr = rng.pick([r - 1, r + 1, 2 * r, 1, r + 1000].filter((x) => x > 0 && x !== r));
    config.r = nr;
    what = `r ${r} → ${nr}`;
  } else if (kind === 1) {
    const tensors = readWeights(weightsFile);
    const keys = Object.keys(tensors).filter((k) => tensors[k].data.length > 0);
    const k = rng.pick(keys);
    const v = rng.pick([NaN, Infinity, -Infinity]);
    tensors[k].data[rng.int(tensors[k].data.length)] = v;
    weights = serializeSafetensors(tensors);
    what = `${v} in ${k}`;
  } else if (kind === 2) {
    const tensors = readWeights(weightsFile);
    const k = rng.pick(Object.keys(tensors));
    const op = rng.int(3);
    if (op === 0) delete tensors[k];
    else if (op === 1) tensors[`${k}.stray`] = tensors[k];
    else tensors[k] = { data: new Float32Array(tensors[k].data.length + 1), shape: [tensors[k].data.length + 1] };
    weights = serializeSafetensors(tensors);
    what = `${['removed', 'duplicated as .stray', 'lengthened'][op]} ${k}`;
  } else if (kind === 3) {
    const cut = rng.int(weights.length);
    weights = weights.subarray(0, cut);
    what = `weights truncated to ${cut} bytes`;
  } else if (kind === 4) {
    // a wrong type on a field the loader must read (r, target_modules, peft_type)
    const field = rng.pick(['r', 'target_modules', 'peft_type']);
    config[field] = rng.pick(field === 'r' ? ['16', 0, -3, 1.5, [16]] : field === 'target_modules' ? [5, [1], '(', true] : ['DORA', 3, 'vera', null]);
    what = `${field} = ${describe(config[field])}`;
  } else {
    // anything goes (may stay valid): a header mutation or a config field
    if (rng.chance(0.5)) {
      const m = mutateSafetensors(weights, rng);
      weights = m.bytes;
      what = m.what;
    } else what = mutateJson(config, rng, adapter.includes('lora') ? LORA_KEYS : VERA_KEYS);
  }
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(config));
  writeFileSync(join(dir, 'adapter_model.safetensors'), weights);
  return { what: `${adapter}: ${what}`, adapter };
}

let baseModel: Module | null = null;

function adapterCase(rng: Prng, dir: string): { input: string; problem: string | null; refused: boolean } {
  baseModel ??= loadPretrained(join(FIXTURES, 'gpt2-tiny')).model;
  const model = baseModel;
  const { what } = mutatedAdapterFolder(dir, rng, 'any');
  announce(what);
  let problem: string | null = null;
  let refused = false;
  try {
    PeftModel.fromPretrained(model, dir).unload();
  } catch (e) {
    problem = problemOf(e);
    refused = true;
  }
  // a failed load must leave the model as it was given (the next case reuses it)
  const leftover = [...model.namedModules()].find(([, m]) => m instanceof AdapterLayer);
  if (leftover) {
    problem ??= `adapter layer left at ${leftover[0]}`;
    baseModel = null;
  }
  return { input: what, problem, refused };
}

// ------------------------------------------------------------------ the CLI

interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function runVera(args: string[], timeoutMs: number, memoryKiB: number): Promise<CliRun> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    // ulimit -v: a runaway allocation must become an error the command reports, not a machine out of memory
    const child = spawn('bash', ['-c', `ulimit -v ${memoryKiB}; exec "$0" "$@"`, process.execPath, BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      if (stdout.length < 1e5) stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      if (stderr.length < 1e5) stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

/** A mutated model folder that cannot load: truncated weights, a NaN weight, or a config field that is wrong or absurdly large. */
function mutatedModelFolder(dir: string, rng: Prng): string {
  mkdirSync(dir, { recursive: true });
  const config = GPT2_CONFIG();
  let weights: Uint8Array = readFileSync(join(FIXTURES, 'gpt2-tiny', 'model.safetensors'));
  let what: string;
  const kind = rng.int(4);
  if (kind === 0) {
    const cut = rng.int(weights.length);
    weights = weights.subarray(0, cut);
    what = `model.safetensors truncated to ${cut}`;
  } else if (kind === 1) {
    const tensors = readWeights(join(FIXTURES, 'gpt2-tiny', 'model.safetensors'));
    const k = rng.pick(Object.keys(tensors));
    tensors[k].data[rng.int(tensors[k].data.length)] = NaN;
    weights = serializeSafetensors(tensors);
    what = `NaN in ${k}`;
  } else if (kind === 2) {
    const field = rng.pick(['n_embd', 'n_layer', 'n_head', 'vocab_size', 'n_positions']);
    config[field] = rng.pick<unknown>(['32', -1, 0, 1.5, [2], {}]);
    what = `config ${field} = ${describe(config[field])}`;
  } else {
    // sizes the checkpoint does not hold: must be refused before anything that size is allocated
    const field = rng.pick(['n_layer', 'vocab_size', 'n_embd', 'n_positions']);
    config[field] = rng.pick([1e6, 1e9, 1e12, 2 ** 40]);
    what = `config ${field} = ${config[field]}`;
  }
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  writeFileSync(join(dir, 'model.safetensors'), weights);
  return what;
}

async function cliCase(rng: Prng, dir: string, timeoutMs: number, memoryKiB: number): Promise<{ input: string; problem: string | null; refused: boolean }> {
  const tiny = join(FIXTURES, 'gpt2-tiny');
  const out = join(dir, 'out');
  mkdirSync(dir, { recursive: true });
  const kind = rng.int(7);
  let args: string[];
  let what: string;
  if (kind === 0) {
    what = mutatedAdapterFolder(join(dir, 'a'), rng, 'invalid-alone').what;
    args = ['inspect', '--adapter', join(dir, 'a'), ...(rng.chance(0.5) ? ['--json'] : [])];
  } else if (kind === 1) {
    what = mutatedAdapterFolder(join(dir, 'a'), rng, 'invalid').what;
    args = ['merge', '--model', tiny, '--adapter', join(dir, 'a'), '--out', out];
  } else if (kind === 2) {
    what = mutatedModelFolder(join(dir, 'm'), rng);
    args = rng.chance(0.5) ? ['merge', '--model', join(dir, 'm'), '--adapter', join(FIXTURES, 'gpt2-tiny-vera'), '--out', out] : ['perplexity', '--model', join(dir, 'm'), '--token-ids', join(FIXTURES, 'token_ids.json')];
  } else if (kind === 3) {
    what = mutatedAdapterFolder(join(dir, 'a'), rng, 'invalid-alone').what;
    args = ['convert-adapter', '--adapter', join(dir, 'a'), '--out', out, '--dtype', rng.pick(['f16', 'bf16', 'f32'])];
  } else if (kind === 4) {
    const ids = rng.pick<unknown>([[1], [0, 101], [-1, 2], [1.5, 2], 'abc', {}, [1, 2, '3'], [2 ** 53, 1]]);
    writeFileSync(join(dir, 'ids.json'), JSON.stringify(ids));
    what = `token ids ${describe(ids)}`;
    args = ['perplexity', '--model', tiny, '--token-ids', join(dir, 'ids.json')];
  } else if (kind === 5) {
    const llama = rng.chance(0.5);
    const json = llama ? LLAMA_CONFIG() : GPT2_CONFIG();
    // the fields inspect --config reads (a bad dropout is not its business)
    const field = rng.pick(llama ? ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'vocab_size'] : ['n_embd', 'n_layer', 'vocab_size']);
    json[field] = rng.pick(['x', -5, 0, 1e300, [1], true]);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(json));
    what = `inspect --config with ${field} = ${describe(json[field])}`;
    args = ['inspect', '--config', join(dir, 'config.json'), '--method', rng.pick(['vera', 'lora']), '--r', String(1 + rng.int(64))];
  } else {
    const bad = rng.pick([['--r', '0'], ['--r', 'abc'], ['--bogus'], ['--method', 'dora'], ['--r', '1e400']]);
    what = `inspect --config with ${bad.join(' ')}`;
    args = ['inspect', '--config', join(tiny, 'config.json'), '--method', 'vera', '--r', '4', ...bad];
  }
  const r = await runVera(args, timeoutMs, memoryKiB);
  const lines = r.stderr.trim() === '' ? [] : r.stderr.trim().split('\n');
  let problem: string | null = null;
  if (r.signal !== null) problem = `killed by ${r.signal} after ${r.ms} ms${r.ms >= timeoutMs ? ' (time limit)' : ''}`;
  else if (r.code === 0) problem = 'exit 0 on invalid input';
  else if (lines.length !== 1) problem = `${lines.length} stderr lines: ${r.stderr.slice(0, 300).replace(/\n/g, ' | ')}`;
  else if (/internal error|^\s+at /m.test(r.stderr)) problem = `stack trace: ${lines[0].slice(0, 300)}`;
  else if (existsSync(out)) problem = 'partial output left in --out';
  return { input: `vera ${args.map((a) => a.replace(dir, '$TMP').replace(FIXTURES, '$FX')).join(' ')} [${what}]`, problem, refused: true };
}

// ------------------------------------------------------------------ the runner

type CaseResult = { input: string; problem: string | null; refused: boolean };

function inProcessCase(target: Exclude<Target, 'cli'>, rng: Prng, dir: string): CaseResult {
  if (target === 'safetensors') return safetensorsCase(rng);
  if (target === 'config') return configCase(rng);
  if (target === 'adapter-config') return adapterConfigCase(rng);
  return adapterCase(rng, dir);
}

/** Worker → runner messages: a case starts (so a crash or hang is pinned on it), a case ends. */
type WorkerMessage = { kind: 'start'; i: number } | { kind: 'input'; i: number; input: string } | { kind: 'done'; i: number; res: CaseResult };

interface WorkerJob {
  seed: number;
  target: Exclude<Target, 'cli'>;
  cases: number[];
  tmp: string;
}

function workerMain(job: WorkerJob): void {
  const port = parentPort!;
  for (const i of job.cases) {
    port.postMessage({ kind: 'start', i } satisfies WorkerMessage);
    announce = (input) => port.postMessage({ kind: 'input', i, input } satisfies WorkerMessage);
    const dir = join(job.tmp, `${job.target}-${i}`);
    let res: CaseResult;
    try {
      res = inProcessCase(job.target, caseRng(job.seed, job.target, i), dir);
    } catch (e) {
      res = { input: '(the case generator itself failed)', problem: problemOf(e), refused: false };
    }
    if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
    port.postMessage({ kind: 'done', i, res } satisfies WorkerMessage);
  }
}

/**
 * In-process cases run in a worker thread with a heap limit and a per-case time limit: a reader
 * that allocates without bound or loops becomes a finding pinned on its case, and the run goes on
 * with the next case in a fresh worker (the machine is shared; the fuzzer must stay bounded too).
 */
async function runInWorker(job: WorkerJob, caseTimeoutMs: number, onResult: (i: number, res: CaseResult) => void): Promise<void> {
  let pending = [...job.cases];
  while (pending.length > 0) {
    const current = await new Promise<{ died: number | null; why: string; input: string }>((resolve) => {
      const worker = new Worker(new URL(import.meta.url), { workerData: { fuzzJob: { ...job, cases: pending } }, resourceLimits: { maxOldGenerationSizeMb: 768, maxYoungGenerationSizeMb: 48 }, stderr: true });
      let running: number | null = null;
      let timer: NodeJS.Timeout | undefined;
      let why = '';
      let input = '(the case died before its input was made)';
      worker.on('message', (m: WorkerMessage) => {
        if (m.kind === 'input') input = m.input;
        else if (m.kind === 'start') {
          running = m.i;
          timer = setTimeout(() => {
            why = `no result after ${caseTimeoutMs} ms`;
            void worker.terminate();
          }, caseTimeoutMs);
        } else {
          clearTimeout(timer);
          running = null;
          pending = pending.filter((c) => c !== m.i);
          onResult(m.i, m.res);
        }
      });
      worker.on('error', (e: Error) => {
        why ||= `worker died: ${e.name}: ${e.message.split('\n')[0]}`;
      });
      worker.on('exit', (code) => {
        clearTimeout(timer);
        resolve({ died: running, why: why || `worker exited with code ${code}`, input });
      });
    });
    if (current.died === null) break;
    pending = pending.filter((c) => c !== current.died);
    onResult(current.died, { input: current.input, problem: current.why, refused: false });
  }
}

export async function runFuzz(opts: FuzzOptions): Promise<FuzzReport> {
  const report: FuzzReport = {
    cases: Object.fromEntries(TARGETS.map((t) => [t, 0])) as Record<Target, number>,
    refused: Object.fromEntries(TARGETS.map((t) => [t, 0])) as Record<Target, number>,
    findings: [],
  };
  const tmp = mkdtempSync(join(tmpdir(), 'vera-fuzz-'));
  const record = (target: Target, i: number, res: CaseResult): void => {
    report.cases[target]++;
    if (res.refused) report.refused[target]++;
    if (res.problem !== null) report.findings.push({ target, seed: opts.seed, case: i, input: res.input, problem: res.problem });
  };
  try {
    for (const target of TARGETS) {
      const first = opts.firstCase ?? 0;
      const cases = Array.from({ length: opts.counts[target] ?? 0 }, (_, k) => first + k).filter((i) => opts.onlyCase === undefined || i === opts.onlyCase);
      if (cases.length === 0) continue;
      if (target !== 'cli') {
        await runInWorker({ seed: opts.seed, target, cases, tmp }, opts.caseTimeoutMs ?? 20_000, (i, res) => record(target, i, res));
        continue;
      }
      for (const i of cases) {
        const dir = join(tmp, `${target}-${i}`);
        record(target, i, await cliCase(caseRng(opts.seed, target, i), dir, opts.cliTimeoutMs ?? 30_000, opts.cliMemoryKiB ?? 4 * 1024 * 1024));
        rmSync(dir, { recursive: true, force: true });
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return report;
}

export function formatFinding(f: Finding): string {
  return `[${f.target} seed=${f.seed} case=${f.case}] ${f.problem}\n    input: ${f.input}\n    replay: node dist/scripts/fuzz.js --seed ${f.seed} --target ${f.target} --case ${f.case}`;
}

function parseArgs(argv: string[]): { minutes: number | null; seed: number; cases: number; cli: number; target: Target | null; onlyCase: number | undefined } {
  const o = { minutes: null as number | null, seed: 1, cases: 400, cli: 20, target: null as Target | null, onlyCase: undefined as number | undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    const num = (): number => {
      i++;
      const n = Number(v);
      if (v === undefined || !Number.isFinite(n) || n < 0) throw new VeraError(`fuzz: ${a} needs a non-negative number, got ${v ?? 'nothing'}`);
      return n;
    };
    if (a === '--minutes') o.minutes = num();
    else if (a === '--seed') o.seed = Math.floor(num());
    else if (a === '--cases') o.cases = Math.floor(num());
    else if (a === '--cli-cases') o.cli = Math.floor(num());
    else if (a === '--case') o.onlyCase = Math.floor(num());
    else if (a === '--target') {
      i++;
      if (!(TARGETS as readonly string[]).includes(v ?? '')) throw new VeraError(`fuzz: --target must be one of ${TARGETS.join(', ')}, got ${v ?? 'nothing'}`);
      o.target = v as Target;
    } else throw new VeraError(`fuzz: unknown argument ${a} (use --minutes N, --seed S, --cases N, --cli-cases N, --target T, --case I)`);
  }
  return o;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  // adapter cases write folders and load a model, so a round has a quarter as many
  const c: Partial<Record<Target, number>> = {};
  for (const t of TARGETS) if (o.target === null || o.target === t) c[t] = o.onlyCase !== undefined ? o.onlyCase + 1 : t === 'cli' ? o.cli : t === 'adapter' ? Math.ceil(o.cases / 4) : o.cases;
  const deadline = o.minutes === null ? null : Date.now() + o.minutes * 60_000;
  const total: FuzzReport = { cases: Object.fromEntries(TARGETS.map((t) => [t, 0])) as Record<Target, number>, refused: Object.fromEntries(TARGETS.map((t) => [t, 0])) as Record<Target, number>, findings: [] };
  let round = 0;
  do {
    // each round continues the case numbering, so a long run never repeats a case
    const first = o.onlyCase !== undefined ? 0 : round * Math.max(...Object.values(c).map((n) => n ?? 0));
    const rep = await runFuzz({ seed: o.seed, counts: c, onlyCase: o.onlyCase, firstCase: first });
    for (const t of TARGETS) {
      total.cases[t] += rep.cases[t];
      total.refused[t] += rep.refused[t];
    }
    for (const f of rep.findings) {
      console.log(formatFinding(f));
      total.findings.push(f);
    }
    round++;
    if (deadline !== null) process.stderr.write(`fuzz: round ${round}, ${Object.values(total.cases).reduce((a, b) => a + b, 0)} cases, ${total.findings.length} findings\n`);
  } while (deadline !== null && Date.now() < deadline && o.onlyCase === undefined);
  console.log(`fuzz (seed ${o.seed}): ${TARGETS.map((t) => `${t} ${total.cases[t]} (${total.refused[t]} refused)`).join(', ')}; ${total.findings.length} findings`);
  process.exitCode = total.findings.length > 0 ? 1 : 0;
}

const job = (workerData as { fuzzJob?: WorkerJob } | null)?.fuzzJob;
if (!isMainThread && job !== undefined) workerMain(job);
else if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e: unknown) => {
    process.stderr.write(`${e instanceof VeraError ? e.message : `fuzz: ${(e as Error).stack ?? String(e)}`}\n`);
    process.exitCode = 2;
  });
}

/** For the test: the fixtures the fuzzer reads exist (a broken checkout should fail loudly, not fuzz nothing). */
export function fixturesPresent(): boolean {
  return ADAPTERS.every((a) => existsSync(join(FIXTURES, a, 'adapter_model.safetensors'))) && readdirSync(join(FIXTURES, 'gpt2-tiny')).includes('model.safetensors');
}
