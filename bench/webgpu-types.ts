// What the WebGPU bench page is asked and answers (shared by the page and the Node side).

export interface WebGpuTrainShape {
  layers: number;
  width: number;
  vocab: number;
  batch: number;
  seq: number;
  r: number;
}

export interface WebGpuBenchSpec {
  /** Square GEMM sizes (SwiftShader: those ≤ 512). */
  sizes: number[];
  runs: number;
  /** Timed VeRA steps after one warm-up. */
  steps: number;
  /** The training shape on a GPU … */
  train: WebGpuTrainShape;
  /** … and on SwiftShader, a CPU rasterizer. */
  small: WebGpuTrainShape;
}

export interface WebGpuBenchResult {
  /** The adapter as the browser describes it. */
  adapter: string;
  /** SwiftShader (Chromium's CPU fallback): its figures say nothing about GPU speed. */
  swiftshader: boolean;
  gemm: { n: number; seconds: number[] }[];
  train: { shape: WebGpuTrainShape; stepSeconds: number[]; losses: number[] };
}
