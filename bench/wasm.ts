// The `wasm` section of `npm run bench`: our WebAssembly backend (wasm/vera.wasm) against the two
// other WebAssembly runtimes in JavaScript — TF.js's wasm backend (XNNPACK) and jax-js's wasm
// device — on square GEMMs, each in its own child process in Node; and a VeRA training step on
// the small GPT-2 shape on wasm against the native addon at the same thread count. Figures are
// ratios within one run: the machine's load moves them all.
import { Rng } from '../src/tensor/index.js';

export interface WasmSpec {
  sizes: number[];
  warmup: number;
  runs: number;
  minSeconds: number;
}

export interface PeerGemm {
  /** What ran: library, version, device. */
  label: string;
  threads: number;
  /** Why that many threads. */
  threadsNote: string;
  results: { n: number; seconds: number[] }[];
}

/** Timed runs of `run` until `runs` and `minSeconds` are both reached (after `warmup`). */
async function repeat(spec: WasmSpec, run: () => Promise<void>): Promise<number[]> {
  for (let i = 0; i < spec.warmup; i++) await run();
  const out: number[] = [];
  let total = 0;
  while (out.length < spec.runs || total < spec.minSeconds) {
    const t0 = performance.now();
    await run();
    out.push((performance.now() - t0) / 1000);
    total += out[out.length - 1];
  }
  return out;
}

function inputs(n: number): [Float32Array, Float32Array] {
  const rng = new Rng(n);
  return [rng.fillUniform(new Float32Array(n * n), -0.5, 0.5), rng.fillUniform(new Float32Array(n * n), -0.5, 0.5)];
}

interface TfTensor { dispose(): void; dataSync(): unknown }
interface Tf {
  version_core: string;
  setBackend(name: string): Promise<boolean>;
  ready(): Promise<void>;
  getBackend(): string;
  tensor2d(data: Float32Array, shape: [number, number]): TfTensor;
  matMul(a: TfTensor, b: TfTensor): TfTensor;
}

/** TF.js (tfjs-core + tfjs-backend-wasm, XNNPACK inside): tf.matMul, read back with dataSync. */
export async function tfjsGemm(spec: WasmSpec): Promise<PeerGemm> {
  const tf = (await import('@tensorflow/tfjs-core')) as unknown as Tf;
  const wasm = (await import('@tensorflow/tfjs-backend-wasm')) as unknown as { getThreadsCount(): number };
  if (!(await tf.setBackend('wasm'))) throw new Error('tfjs: the wasm backend did not initialise');
  await tf.ready();
  const results = [];
  for (const n of spec.sizes) {
    const [x, y] = inputs(n);
    const a = tf.tensor2d(x, [n, n]);
    const b = tf.tensor2d(y, [n, n]);
    const seconds = await repeat(spec, async () => {
      const c = tf.matMul(a, b);
      c.dataSync();
      c.dispose();
    });
    a.dispose();
    b.dispose();
    results.push({ n, seconds });
  }
  const threads = wasm.getThreadsCount();
  return {
    label: `TF.js ${tf.version_core}, wasm backend (XNNPACK, SIMD)`, threads,
    threadsNote: threads === 1 ? 'its multithreaded build needs Web Workers and SharedArrayBuffer, which it does not use in Node' : 'its default',
    results,
  };
}

interface JaxArray { ref: JaxArray; reshape(shape: number[]): JaxArray; blockUntilReady(): Promise<JaxArray>; dispose(): void }
interface Jax {
  init(...devices: string[]): Promise<string[]>;
  defaultDevice(d?: string): string;
  numpy: { array(data: Float32Array): JaxArray; matmul(a: JaxArray, b: JaxArray): JaxArray };
}

/** jax-js's wasm device: np.matmul, waited for with blockUntilReady. */
export async function jaxGemm(spec: WasmSpec): Promise<PeerGemm> {
  const jax = (await import('@jax-js/jax')) as unknown as Jax;
  const devices = await jax.init('wasm');
  if (!devices.includes('wasm')) throw new Error(`jax-js: no wasm device (have ${devices.join(', ')})`);
  jax.defaultDevice('wasm');
  const np = jax.numpy;
  const results = [];
  for (const n of spec.sizes) {
    const [x, y] = inputs(n);
    const a = np.array(x).reshape([n, n]);
    const b = np.array(y).reshape([n, n]);
    const seconds = await repeat(spec, async () => {
      const c = await np.matmul(a.ref, b.ref).blockUntilReady();
      c.dispose();
    });
    a.dispose();
    b.dispose();
    results.push({ n, seconds });
  }
  // jax-js's own test: workers over a shared memory when both exist (browsers, cross-origin isolated)
  const g = globalThis as { Worker?: unknown; SharedArrayBuffer?: unknown };
  const threaded = g.Worker !== undefined && g.SharedArrayBuffer !== undefined;
  let version = '?';
  try {
    const { createRequire } = await import('node:module');
    const { readFileSync } = await import('node:fs');
    const { dirname, join } = await import('node:path');
    const main = createRequire(import.meta.url).resolve('@jax-js/jax');
    version = (JSON.parse(readFileSync(join(dirname(main), '..', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    // the version is for the report only
  }
  return {
    label: `jax-js ${version}, wasm device`, threads: threaded ? navigatorCores() : 1,
    threadsNote: threaded ? 'Web Workers over a SharedArrayBuffer' : 'it runs on workers only where a global Worker exists, which Node lacks',
    results,
  };
}

function navigatorCores(): number {
  return (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? 1;
}
