// Shared by the server tests: a model folder with a tokenizer, adapters made for it, and `vera serve`
// started as a real process on a loopback port.
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { Rng } from '../src/tensor/index.js';
import { loadPretrained, type CausalLM } from '../src/models/index.js';
import { getPeftModel, type BasePeftConfig } from '../src/peft/index.js';
import { runVera, tinyGpt2TokenizerJson } from './helpers.js';

export const gpt2Dir = fileURLToPath(new URL('../../test/fixtures/gpt2-tiny', import.meta.url));
const root = fileURLToPath(new URL('../../', import.meta.url));

export type Lm = CausalLM & ReturnType<typeof loadPretrained>['model'];
export const load = (dir: string): Lm => loadPretrained(dir).model as Lm;

/** gpt2-tiny with its tokenizer.json, in dir/name (the served model's name is the folder's). */
export function modelFolder(dir: string, name = 'tiny'): string {
  const modelDir = join(dir, name);
  mkdirSync(modelDir, { recursive: true });
  for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(gpt2Dir, f), join(modelDir, f));
  writeFileSync(join(modelDir, 'tokenizer.json'), tinyGpt2TokenizerJson());
  return modelDir;
}

/** An adapter with non-trivial ("trained") values, saved in PEFT's layout as dir/name. */
export function makeAdapter(modelDir: string, dir: string, name: string, config: BasePeftConfig, seed: number, std = 0.5): string {
  const peft = getPeftModel(load(modelDir), config);
  const rng = new Rng(seed);
  for (const [, t] of peft.trainableParameters()) t.copyFrom(rng.fillNormal(new Float32Array(t.size), 0, std));
  const out = join(dir, name);
  peft.saveAdapter(out);
  return out;
}

export async function createKey(store: string, tenant: string): Promise<string> {
  const r = await runVera(['keys', 'create', '--store', store, '--tenant', tenant]);
  if (r.code !== 0) throw new Error(`keys create: ${r.stderr}`);
  return r.stdout.trim();
}

export interface Served {
  url: string;
  child: ChildProcess;
  stderr: () => string;
  client: (apiKey: string) => OpenAI;
  /** SIGTERM, then the exit code. */
  stop: () => Promise<number | null>;
  exited: Promise<number | null>;
}

/** `vera serve --port 0 …args` as a child process; resolves once it listens. */
export function serve(args: string[], env: Record<string, string> = {}): Promise<Served> {
  const child = spawn(process.execPath, [join(root, 'bin', 'vera.js'), 'serve', '--port', '0', ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      const m = /listening on (http:\/\/[^\s]+)/.exec(stdout);
      if (m) {
        const url = m[1];
        resolve({
          url,
          child,
          stderr: () => stderr,
          client: (apiKey) => new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0, timeout: 60_000 }),
          stop: async () => {
            child.kill('SIGTERM');
            return exited;
          },
          exited,
        });
      }
    });
    exited.then((code) => reject(new Error(`vera serve exited (${code}) before listening: ${stderr}`)));
  });
}

/** PUT an adapter folder's two files as multipart. */
export async function putAdapter(url: string, key: string, id: string, files: { config: Uint8Array | string; weights: Uint8Array }, extra: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const form = new FormData();
  form.append('adapter_config.json', new Blob([files.config]), 'adapter_config.json');
  form.append('adapter_model.safetensors', new Blob([files.weights]), 'adapter_model.safetensors');
  for (const [k, v] of Object.entries(extra)) form.append(k, v);
  const res = await fetch(`${url}/v1/adapters/${encodeURIComponent(id)}`, { method: 'PUT', headers: { authorization: `Bearer ${key}` }, body: form });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

export async function api(url: string, key: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    parsed = { text };
  }
  return { status: res.status, body: parsed, headers: res.headers };
}
