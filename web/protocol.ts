// Messages between the page (web/page.ts) and its worker (web/worker.ts). The page calls methods
// by name with an id; the worker answers each once ({ id, ok, result | error }) and sends training
// progress as events in between.

export type BackendChoice = 'auto' | 'webgpu' | 'wasm' | 'ts';

export interface ModelInfo {
  backend: string;
  /** Why 'auto' chose it (or the adapter's name). */
  note: string;
  /** Base model parameters. */
  params: number;
  layers: number;
  hidden: number;
  vocab: number;
  loadSeconds: number;
}

export interface TrainRequest {
  texts: string[];
  steps: number;
  lr: number;
  r: number;
  batchSize: number;
  /** Tokens per training sequence at most (each text + eos, cut). */
  maxLen: number;
  seed: number;
}

export interface TrainResult {
  losses: { step: number; loss: number }[];
  steps: number;
  stopped: boolean;
  seconds: number;
  tokens: number;
  trainable: number;
}

export interface AdapterInfo {
  /** 'trained' or the files it came from. */
  source: string;
  peftType: string;
  r: number;
  targetModules: string[];
  trainable: number;
}

export interface Outputs {
  prompts: string[];
  base: string[];
  adapter: string[] | null;
}

export interface Logits {
  prompt: string;
  /** The token ids fed (eos first, as generation starts). */
  ids: number[];
  vocab: number;
  /** (ids.length × vocab) logits, row-major. */
  values: number[];
}

export interface Methods {
  init: { args: { backend: BackendChoice; modelUrl: string }; result: ModelInfo };
  train: { args: TrainRequest; result: TrainResult };
  generate: { args: { prompts: string[]; maxNewTokens: number }; result: Outputs };
  logits: { args: { prompt: string; adapter: boolean }; result: Logits };
  save: { args: Record<string, never>; result: Record<string, Uint8Array> };
  load: { args: { files: File[] }; result: AdapterInfo };
}
export type MethodName = keyof Methods;

export type Request = { [K in MethodName]: { kind: 'call'; id: number; method: K; args: Methods[K]['args'] } }[MethodName] | { kind: 'stop' };

export interface Progress {
  step: number;
  steps: number;
  loss: number;
  tokens: number;
  seconds: number;
}

export type Reply =
  | { kind: 'result'; id: number; ok: true; result: unknown }
  | { kind: 'result'; id: number; ok: false; error: string }
  | { kind: 'progress'; progress: Progress };
