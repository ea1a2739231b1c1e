// Child process of `npm run bench`: one measurement on our runtime, printed as one JSON line, so
// each configuration's peak RSS is its own. Usage: node dist/bench/child.js gemm|train|decode|quant|tfjs|jax '<json>'.
import { kernels } from '../src/tensor/index.js';
import { backendThreads, gemmSeconds, runTrainSpec, type GemmSpec, type TrainSpec } from './step.js';
import { runDecodeSpec, type DecodeSpec } from './decode.js';
import { runQuantSpec, type QuantSpec } from './quant.js';
import { runQloraSpec, type QloraSpec } from './qlora.js';
import { loadAddon } from '../src/backends/native/index.js';
import { registryWasmKernels } from '../src/backends/wasm/node.js';
import { jaxGemm, tfjsGemm, type WasmSpec } from './wasm.js';

async function main(): Promise<void> {
  const [mode, json] = process.argv.slice(2);
  if (!['gemm', 'train', 'decode', 'quant', 'qlora', 'tfjs', 'jax'].includes(mode ?? '') || json === undefined) {
    process.stderr.write('usage: child.js gemm|train|decode|quant|qlora|tfjs|jax <json spec>\n');
    process.exit(2);
  }
  // the wasm module's workers start in the background: measure once they are all up
  if (kernels().name === 'wasm') await registryWasmKernels()?.whenReady;
  const base = { backend: kernels().name, threads: backendThreads() };
  if (mode === 'tfjs' || mode === 'jax') {
    // the other WebAssembly runtimes (bench/wasm.ts): their own kernels, not ours
    const result = await (mode === 'tfjs' ? tfjsGemm : jaxGemm)(JSON.parse(json) as WasmSpec);
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } else if (mode === 'qlora') {
    const result = runQloraSpec(JSON.parse(json) as QloraSpec);
    process.stdout.write(`${JSON.stringify({ ...base, ...result })}\n`);
  } else if (mode === 'quant') {
    const result = await runQuantSpec(JSON.parse(json) as QuantSpec);
    process.stdout.write(`${JSON.stringify({ ...base, ...result })}\n`);
  } else if (mode === 'decode') {
    const result = await runDecodeSpec(JSON.parse(json) as DecodeSpec);
    process.stdout.write(`${JSON.stringify({ ...base, ...result })}\n`);
  } else if (mode === 'gemm') {
    const spec = JSON.parse(json) as GemmSpec;
    const results = spec.sizes.map((n) => ({ n, seconds: gemmSeconds(n, spec.warmup, spec.runs, spec.minSeconds) }));
    // the machine's peak: a register-only FMA loop on all threads, with the GEMM's vector width
    const addon = base.backend === 'native' ? loadAddon().addon : null;
    const peak = addon ? { peakGflops: addon.machinePeak(1), kernel: addon.gemmKernel() } : {};
    process.stdout.write(`${JSON.stringify({ ...base, results, ...peak })}\n`);
  } else {
    const result = await runTrainSpec(JSON.parse(json) as TrainSpec);
    process.stdout.write(`${JSON.stringify({ ...base, ...result })}\n`);
  }
}

void main();
