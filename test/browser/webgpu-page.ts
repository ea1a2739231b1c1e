// The page of the WebGPU browser tests: exposes window.veraWebGpu with the checks, each run on
// demand by the node:test file through page.evaluate.
import { loadWebGpuKernels, type WebGpuKernels } from '../../src/backends/webgpu/index.js';
import { tsKernels } from '../../src/backends/ts/index.js';
import { checkedKernels } from '../../src/tensor/kernel-checks.js';
import { runWebGpuChecks, type CheckResult } from './webgpu-checks.js';
import { veraTrainingCheck, type TrainingReport } from './webgpu-train.js';

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
    return runWebGpuChecks({ ...checkedKernels(k), readAsync: (s) => k.readAsync(s) }, checkedKernels(tsKernels));
  },
  async train(steps: number): Promise<TrainingReport> {
    return veraTrainingCheck(await kernels(), tsKernels, steps);
  },
};
(globalThis as unknown as { veraWebGpu: typeof api }).veraWebGpu = api;
(globalThis as unknown as { veraReady: boolean }).veraReady = true;
