// npm run loadtest: `vera serve` under load, over loopback only. Builds a model folder (by default a
// Llama of SmolLM-135M's shape with random weights and GPT-2's tokenizer), uploads N VeRA adapters
// spread over several tenants through the API, then runs C concurrent streaming chat clients (the
// official openai package), each picking a random adapter per request, for a fixed time. Reports
// errors, time to first token, time per token, tokens/s, and the server's RSS at the start and end.
import '../src/backends/index.js';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';
import { Rng } from '../src/tensor/index.js';
import { GPT2LMHeadModel, LlamaForCausalLM, gpt2ConfigFromJson, llamaConfigFromJson, modelConfigJson, savePretrained, type PretrainedModel } from '../src/models/index.js';
import { getPeftModel, veraConfig, veraConfigToJson, type VeraConfig } from '../src/peft/index.js';
import { sortedJson } from '../src/peft/config.js';
import { serializeSafetensors } from '../src/io/safetensors.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const gpt2Tokenizer = join(root, 'test', 'fixtures', 'tokenizers', 'gpt2');

interface Options {
  shape: 'smollm' | 'tiny';
  clients: number;
  adapters: number;
  tenants: number;
  duration: number;
  maxTokens: number;
  r: number;
  json: boolean;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      shape: { type: 'string', default: 'smollm' },
      clients: { type: 'string', default: '64' },
      adapters: { type: 'string', default: '1000' },
      tenants: { type: 'string', default: '8' },
      duration: { type: 'string', default: '120' },
      'max-tokens': { type: 'string', default: '16' },
      r: { type: 'string', default: '256' },
      json: { type: 'boolean', default: false },
    },
  });
  const int = (k: string, v: string | undefined): number => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 1) throw new Error(`loadtest: --${k} must be a positive integer, got ${v}`);
    return n;
  };
  if (values.shape !== 'smollm' && values.shape !== 'tiny') throw new Error(`loadtest: --shape must be smollm or tiny, got ${values.shape}`);
  return {
    shape: values.shape, clients: int('clients', values.clients), adapters: int('adapters', values.adapters), tenants: int('tenants', values.tenants),
    duration: int('duration', values.duration), maxTokens: int('max-tokens', values['max-tokens']), r: int('r', values.r), json: values.json ?? false,
  };
}

/** A model folder of the chosen shape with GPT-2's tokenizer (random weights: speed does not depend on them). */
function buildModelFolder(dir: string, shape: Options['shape']): { dir: string; model: PretrainedModel } {
  const rng = new Rng(0);
  const model: PretrainedModel = shape === 'smollm'
    ? (new LlamaForCausalLM(llamaConfigFromJson({ model_type: 'llama', vocab_size: 50257, hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3, tie_word_embeddings: true, max_position_embeddings: 2048, bos_token_id: 50256, eos_token_id: 50256 }, 'loadtest'), { rng }) as PretrainedModel)
    : new GPT2LMHeadModel(gpt2ConfigFromJson({ model_type: 'gpt2', vocab_size: 50257, n_embd: 64, n_layer: 2, n_head: 4, n_positions: 256 }, 'loadtest'), { rng });
  const out = join(dir, shape === 'smollm' ? 'smollm-135m-shape' : 'gpt2-tiny-shape');
  savePretrained(out, model, modelConfigJson(model));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(gpt2Tokenizer, f), join(out, f));
  return { dir: out, model };
}

/** N adapters' files: one PEFT wrapping, new random vectors per adapter. */
function* adapterFiles(model: PretrainedModel, r: number, n: number): Generator<{ config: string; weights: Uint8Array }> {
  const peft = getPeftModel(model, veraConfig({ r, saveProjection: false }));
  const config = sortedJson(veraConfigToJson(peft.peftConfig.get('default') as VeraConfig));
  for (let i = 0; i < n; i++) {
    const rng = new Rng(1000 + i);
    const tensors: Record<string, { data: Float32Array; shape: number[] }> = {};
    for (const [key, t] of peft.adapterStateDict()) tensors[key] = { data: rng.fillNormal(new Float32Array(t.size), 0, 0.05), shape: [...t.shape] };
    yield { config, weights: serializeSafetensors(tensors) };
  }
  peft.unload();
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

const quantile = (xs: number[], q: number): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};

export interface LoadReport {
  model: string;
  r: number;
  targets: string;
  maxTokens: number;
  clients: number;
  adapters: number;
  tenants: number;
  durationS: number;
  requests: number;
  errors: number;
  errorSamples: string[];
  tokens: number;
  tokensPerS: number;
  ttftMs: { p50: number; p99: number };
  perTokenMs: { p50: number; p99: number };
  rssMiB: { start: number; end: number };
  uploadS: number;
  loadAverage: number[];
}

async function main(): Promise<void> {
  const o = options();
  const work = mkdtempSync(join(tmpdir(), 'vera-loadtest-'));
  try {
    const { dir: modelDir, model } = buildModelFolder(work, o.shape);
    const store = join(work, 'store.db');
    const keys: string[] = [];
    for (let t = 0; t < o.tenants; t++) {
      const r = spawnSync(process.execPath, [join(root, 'bin', 'vera.js'), 'keys', 'create', '--store', store, '--tenant', `tenant${t}`], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`keys create: ${r.stderr}`);
      keys.push(r.stdout.trim());
    }
    const child = spawn(process.execPath, [join(root, 'bin', 'vera.js'), 'serve', '--model', modelDir, '--store', store, '--port', '0', '--vera-r', String(o.r), '--max-batch-size', String(Math.max(o.clients, 1)), '--max-concurrent', String(Math.ceil(o.clients / o.tenants) + 1), '--quiet'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /listening on (http:\/\/\S+)/.exec(out);
        if (m) resolve(m[1]);
      });
      child.on('exit', (code) => reject(new Error(`vera serve exited with ${code}`)));
    });
    try {
      // adapters through the API, round-robin over the tenants
      const uploadStart = performance.now();
      let i = 0;
      for (const files of adapterFiles(model, o.r, o.adapters)) {
        const form = new FormData();
        form.append('adapter_config.json', new Blob([files.config]), 'adapter_config.json');
        form.append('adapter_model.safetensors', new Blob([files.weights]), 'adapter_model.safetensors');
        const res = await fetch(`${url}/v1/adapters/user${i}`, { method: 'PUT', headers: { authorization: `Bearer ${keys[i % o.tenants]}` }, body: form });
        if (res.status !== 201) throw new Error(`upload user${i}: ${res.status} ${await res.text()}`);
        i++;
      }
      const uploadS = (performance.now() - uploadStart) / 1000;
      const rssStart = rssKiB(child.pid!);
      const ttft: number[] = [];
      const gaps: number[] = [];
      const errorSamples: string[] = [];
      let errors = 0;
      let requests = 0;
      let tokens = 0;
      const rng = new Rng(7);
      const start = performance.now();
      const deadline = start + o.duration * 1000;
      const clients = Array.from({ length: o.clients }, (_, c) => new OpenAI({ baseURL: `${url}/v1`, apiKey: keys[c % o.tenants], maxRetries: 0, timeout: 600_000 }));
      await Promise.all(clients.map(async (client, c) => {
        while (performance.now() < deadline) {
          // an adapter of this client's tenant
          const n = rng.int(Math.ceil((o.adapters - (c % o.tenants)) / o.tenants));
          const model = `user${(c % o.tenants) + n * o.tenants}`;
          const sent = performance.now();
          let last = sent;
          let first = true;
          try {
            const stream = await client.chat.completions.create({
              model, messages: [{ role: 'user', content: `Tell me something about the number ${c * 1000 + requests}.` }], max_tokens: o.maxTokens, temperature: 0.8, stream: true, stream_options: { include_usage: true },
            });
            for await (const chunk of stream) {
              if (chunk.usage) tokens += chunk.usage.completion_tokens;
              if (!chunk.choices[0]?.delta.content) continue;
              const t = performance.now();
              if (first) ttft.push(t - sent);
              else gaps.push(t - last);
              first = false;
              last = t;
            }
            requests++;
          } catch (e) {
            errors++;
            if (errorSamples.length < 5) errorSamples.push((e as Error).message.split('\n')[0]);
          }
        }
      }));
      const elapsed = (performance.now() - start) / 1000;
      const report: LoadReport = {
        model: o.shape === 'smollm' ? 'Llama, SmolLM-135M shape (30 × 576, vocab 50257), random float32 weights, GPT-2 tokenizer' : 'GPT-2 2 × 64, vocab 50257, random weights, GPT-2 tokenizer',
        r: o.r, maxTokens: o.maxTokens, targets: o.shape === 'smollm' ? 'q_proj and v_proj (PEFT\'s default)' : 'c_attn (PEFT\'s default)', clients: o.clients, adapters: o.adapters, tenants: o.tenants, durationS: elapsed, requests, errors, errorSamples, tokens, tokensPerS: tokens / elapsed,
        ttftMs: { p50: quantile(ttft, 0.5), p99: quantile(ttft, 0.99) }, perTokenMs: { p50: quantile(gaps, 0.5), p99: quantile(gaps, 0.99) },
        rssMiB: { start: rssStart / 1024, end: rssKiB(child.pid!) / 1024 }, uploadS, loadAverage: (await import('node:os')).loadavg(),
      };
      if (o.json) console.log(JSON.stringify(report));
      else printReport(report, statSync(store).size);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function printReport(r: LoadReport, storeBytes: number): void {
  const f = (x: number, d = 1): string => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
  console.log(`# vera serve load test\n`);
  console.log(`${r.model}; VeRA adapters r ${r.r} on ${r.targets}; ${r.adapters} adapters over ${r.tenants} tenants (uploaded through PUT /v1/adapters in ${f(r.uploadS)} s; store ${f(storeBytes / 2 ** 20)} MiB)`);
  console.log(`${r.clients} concurrent streaming chat clients (openai npm), a random adapter of the client's tenant per request, max_tokens ${r.maxTokens}, temperature 0.8, for ${f(r.durationS)} s\n`);
  console.log('| measure | value |\n|---|---:|');
  console.log(`| requests completed | ${r.requests} |`);
  console.log(`| errors | ${r.errors}${r.errorSamples.length ? ` (${r.errorSamples.join('; ')})` : ''} |`);
  console.log(`| tokens/s (all clients) | ${f(r.tokensPerS)} |`);
  console.log(`| time to first token p50 / p99 | ${f(r.ttftMs.p50, 0)} / ${f(r.ttftMs.p99, 0)} ms |`);
  console.log(`| time per token p50 / p99 | ${f(r.perTokenMs.p50, 0)} / ${f(r.perTokenMs.p99, 0)} ms |`);
  console.log(`| server RSS start / end | ${f(r.rssMiB.start, 0)} / ${f(r.rssMiB.end, 0)} MiB |`);
  console.log(`| load average (1, 5, 15 min) at the end | ${r.loadAverage.map((x) => x.toFixed(2)).join(', ')} |`);
}

main().catch((e) => {
  console.error(`loadtest: ${(e as Error)?.message ?? String(e)}`);
  process.exit(1);
});
