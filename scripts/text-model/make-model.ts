// Builds the embedded text model, data/fortune-llama, from the Unix fortunes in about 45 minutes on
// 2 cores (not part of CI; the result is committed):
//   1. prepare-data: the held-out users, the pretraining corpus and its eval split;
//   2. train-tokenizer: a 4,096-token byte-level BPE on the pretraining corpus;
//   3. `vera train --method full --from-scratch --pack`: every weight of a fresh Llama trained on
//      the corpus (config.ts holds the architecture and the flags), checkpointed so a rerun resumes;
//   4. the held-out perplexities (per fortune, eos included) and the model card, then the folder
//      replaces data/fortune-llama in one step.
//
//   npm run build && node dist/scripts/text-model/make-model.js [--src ../shared/datasets/fortunes] [--steps N]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import '../../src/index.js';
import { loadTokenizer } from '../../src/data/tokenizer.js';
import { writeDirAtomic } from '../../src/io/atomic.js';
import { loadPretrained, type LlamaForCausalLM } from '../../src/models/index.js';
import { evaluateCausalLm } from '../../src/train/index.js';
import { MODEL_CONFIG, PRETRAIN_FLAGS } from './config.js';
import { USER_CATEGORIES } from './fortunes.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const { values } = parseArgs({
  options: {
    src: { type: 'string', default: resolve(root, '..', 'shared', 'datasets', 'fortunes') },
    work: { type: 'string', default: join(root, 'build', 'text-model') },
    steps: { type: 'string' },
    out: { type: 'string', default: join(root, 'data', 'fortune-llama') },
  },
});
const work = values.work!;
const node = process.execPath;

function run(args: string[]): void {
  console.log(`$ ${args.join(' ')}`);
  const r = spawnSync(node, args, { stdio: 'inherit', cwd: root });
  if (r.status !== 0) throw new Error(`failed (exit ${r.status}): ${args.join(' ')}`);
}

// 1, 2: data and tokenizer
run([join(root, 'dist/scripts/text-model/prepare-data.js'), '--src', values.src!, '--work', work]);
const init = join(work, 'init');
mkdirSync(init, { recursive: true });
run([join(root, 'dist/scripts/text-model/train-tokenizer.js'), '--data', join(work, 'pretrain.jsonl'), '--out', init, '--vocab-size', String(MODEL_CONFIG.vocab_size), '--model-max-length', String(MODEL_CONFIG.max_position_embeddings)]);
writeFileSync(join(init, 'config.json'), `${JSON.stringify(MODEL_CONFIG, null, 2)}\n`);
writeFileSync(join(init, 'generation_config.json'), `${JSON.stringify({ bos_token_id: 0, eos_token_id: 0 }, null, 2)}\n`);

// 3: pretraining (resumes from its checkpoint when one is there)
const flags = { ...PRETRAIN_FLAGS, ...(values.steps ? { '--steps': values.steps } : {}) };
const trained = join(work, 'model');
const ckpt = join(work, 'checkpoint');
const trainArgs = [
  join(root, 'bin/vera.js'), 'train', '--task', 'causal-lm', '--method', 'full', '--from-scratch', '--pack',
  '--model', init, '--data', join(work, 'pretrain.jsonl'), '--eval-data', join(root, 'data/fortunes/general/eval.jsonl'),
  ...Object.entries(flags).flat(), '--out', trained, '--overwrite', '--plot', join(trained, 'training_curve.svg'), '--checkpoint-dir', ckpt, '--checkpoint-every', '100',
  ...(existsSync(join(ckpt, 'trainer_state.json')) ? ['--resume'] : []),
];
run(trainArgs);

// 4: held-out perplexities per fortune (eos included, as the demo and experiments measure them)
const { model } = loadPretrained(trained, { log: () => {} });
const lm = model as LlamaForCausalLM;
lm.eval();
const tokenizer = (await loadTokenizer(trained))!;
const texts = (file: string): Int32Array[] =>
  readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => Int32Array.from([...tokenizer.encode((JSON.parse(l) as { text: string }).text), 0].slice(0, MODEL_CONFIG.max_position_embeddings)));
const perplexity: Record<string, number> = { 'pretraining categories (held-out 5%)': evaluateCausalLm(lm, texts(join(root, 'data/fortunes/general/eval.jsonl')), 16, 0).perplexity };
for (const u of USER_CATEGORIES) perplexity[`${u} (held out of pretraining)`] = evaluateCausalLm(lm, texts(join(root, 'data/fortunes/users', u, 'eval.jsonl')), 16, 0).perplexity;
const log = JSON.parse(readFileSync(join(trained, 'training_log.json'), 'utf8')) as { summary: Record<string, unknown>; data: Record<string, unknown> };
const params = lm.parameters().reduce((a, t) => a + t.size, 0);

const card = `---
license: bsd-3-clause
language: en
tags: [llama, vera, tiny, fortunes]
---
# fortune-llama

A ${(params / 1e6).toFixed(1)}M-parameter Llama-family causal language model that ships inside vera so the
demo, the tests and the experiments have a real text model where no model hub is reachable. It
writes Unix fortunes: short quips, quotes with attributions, definitions, poems.

## How it was made
Entirely with vera's own runtime, by \`node dist/scripts/text-model/make-model.js\` (about 45 minutes on 2 CPU cores):
- **Data**: the Unix fortunes as Debian's fortune-mod ships them (${USER_CATEGORIES.length + 37} categories; ascii-art,
  translate-me and the licence file left out). Four categories are **held out of pretraining** and play the
  "users" whose adapters the demo and experiments train: ${USER_CATEGORIES.join(', ')} (data/fortunes/users, 80/20
  train/eval). Of the other 37 categories, 5% of the fortunes (by hash) are held out as
  data/fortunes/general/eval.jsonl; the remaining ${String(log.data['records'] ?? '')} fortunes are the pretraining corpus.
- **Tokenizer**: byte-level BPE (GPT-2's pre-tokenizer and byte map), 4,096 tokens, trained on the pretraining
  corpus by scripts/text-model/train-tokenizer.ts; \`<|endoftext|>\` (id 0) ends every fortune and starts generation.
- **Architecture** (config.json): ${MODEL_CONFIG.num_hidden_layers} layers, hidden ${MODEL_CONFIG.hidden_size}, ${MODEL_CONFIG.num_attention_heads} heads with ${MODEL_CONFIG.num_key_value_heads} key/value heads, SwiGLU ${MODEL_CONFIG.intermediate_size},
  RoPE, RMSNorm, tied embeddings, context ${MODEL_CONFIG.max_position_embeddings}.
- **Training**: \`vera train --method full --from-scratch --pack\` ${Object.entries(flags).map(([k, v]) => `${k} ${v}`).join(' ')}:
  every weight trained with AdamW; fortunes joined with \`<|endoftext|>\` and cut into blocks of ${flags['--seq-len']} tokens.
  ${Number(log.summary['tokens'] ?? 0).toLocaleString('en-US')} tokens in ${(Number(log.summary['seconds'] ?? 0) / 60).toFixed(0)} minutes; final train loss ${Number(log.summary['trainLoss']).toFixed(3)},
  eval loss on the packed held-out 5% ${Number(log.summary['evalLoss']).toFixed(3)}. Weights stored as F16.

## Held-out perplexity (per fortune, \`<|endoftext|>\` included)
| text | perplexity |
|---|---:|
${Object.entries(perplexity).map(([k, v]) => `| ${k} | ${v.toFixed(2)} |`).join('\n')}

## Licence
The fortunes are distributed under the BSD licence of fortune-mod (see COPYRIGHT in this folder, copied from
the Debian package); the weights are derived from them and carry the same licence. The quotations belong to
their authors. The model is a toy: it repeats and recombines fortunes, some of which are dated or offensive.
`;

const files: Record<string, Uint8Array | string> = { 'README.md': card, COPYRIGHT: readFileSync(join(root, 'data/fortunes/COPYRIGHT')) };
for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json', 'training_log.json', 'training_curve.svg']) {
  if (existsSync(join(trained, f))) files[f] = readFileSync(join(trained, f));
}
writeDirAtomic(values.out!, files, { mode: 'replace' });
console.log(`wrote ${values.out}: ${JSON.stringify(perplexity)}`);
