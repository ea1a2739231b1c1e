// The page of the WebGPU browser tests: exposes window.veraWebGpu with the checks, each run on
// demand by the node:test file through page.evaluate.
import { loadWebGpuKernels, type WebGpuKernels } from '../../src/backends/webgpu/index.js';
import { tsKernels } from '../../src/backends/ts/index.js';
import { checkedKernels } from '../../src/tensor/kernel-checks.js';
import { runWebGpuChecks, type CheckResult } from './webgpu-checks.js';
import { runKernelSuite, type SuiteResult } from '../conformance/kernel-suite.js';
import { generationCheck, veraTrainingCheck, type TrainingReport } from './webgpu-train.js';

let gpu: WebGpuKernels | null = null;
async function kernels(): Promise<WebGpuKernels> {
  gpu ??= await loadWebGpuKernels();
  return gpu;
}

const api = {
  async adapter(): Promise<string> {
    return (await kernels()).adapterInfo;
  },
  async kernels(): Promise<CheckResult[]> {
    const k = await kernels();
    return runWebGpuChecks({ ...checkedKernels(k), readAsync: (s) => k.readAsync(s), device: k.device } as WebGpuKernels, checkedKernels(tsKernels));
  },
  /** The shared conformance suite; `skip` names cases left out (with the reason given by the test). */
  async suite(skip: string[]): Promise<SuiteResult[]> {
    const k = await kernels();
    return runKernelSuite({ ...checkedKernels(k), readAsync: (s) => k.readAsync(s) }, checkedKernels(tsKernels), { filter: (name) => !skip.some((x) => name.startsWith(x)) });
  },
  /** The GEMM-based cases with the other GEMM kernel than the adapter's default (both must hold). */
  async suiteOtherGemm(): Promise<SuiteResult[]> {
    const base = await kernels();
    const k = await loadWebGpuKernels({ device: base.device, gemm: /swiftshader|cpu/i.test(base.adapterInfo) ? 'tiled' : 'direct' });
    return runKernelSuite({ ...checkedKernels(k), readAsync: (s) => k.readAsync(s) }, checkedKernels(tsKernels), { filter: (name) => /matmul|VeRA/.test(name) });
  },
  async train(steps: number): Promise<TrainingReport> {
    return veraTrainingCheck(await kernels(), tsKernels, steps);
  },
  async generate(): Promise<{ gpu: number[]; ts: number[] }> {
    return generationCheck(await kernels(), tsKernels);
  },
};
(globalThis as unknown as { veraWebGpu: typeof api }).veraWebGpu = api;
(globalThis as unknown as { veraReady: boolean }).veraReady = true;
