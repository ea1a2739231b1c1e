// One adapter per user on one base model, served together: every request names its user's adapter
// and the multi-adapter engine decodes them all in one batch (each linear layer reads its weights
// once for every user). Each user's text is then checked against that adapter applied alone.
//
//   node dist/examples/per-user-adapters.js [--model DIR] [--users startrek,zippy,riddles,tao] [--steps N] [--max-new-tokens N]
//
// Each user's VeRA adapter is trained here for --steps steps on that user's fortunes (categories
// fortune-llama never saw) and saved as a PEFT folder; all share the projection key 0 and rank, so
// the engine holds one random pair and a few kilobytes of vectors per user.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { AutoModelForCausalLM, AutoTokenizer, PeftModel, generate, generateBatch, noGrad, type EngineRequest } from 'vera';
import { FORTUNE_LLAMA, USERS, quickVeraAdapter, userFortunes } from './shared.js';

const { values: args } = parseArgs({
  options: {
    model: { type: 'string', default: FORTUNE_LLAMA },
    users: { type: 'string', default: USERS.join(',') },
    prompt: { type: 'string', default: 'The' },
    steps: { type: 'string', default: '8' },
    r: { type: 'string', default: '64' },
    'max-new-tokens': { type: 'string', default: '20' },
  },
});
const modelDir = args.model;
const users = args.users.split(',');
const maxNewTokens = Number(args['max-new-tokens']);
const r = Number(args.r);
const targetModules = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];
const tokenizer = await AutoTokenizer.fromPretrained(modelDir);
const decode = (ids: readonly number[]): string => tokenizer.decode(ids);
const promptIds = tokenizer.encode(args.prompt);
const tempDir = mkdtempSync(join(tmpdir(), 'vera-example-'));

try {
  // 1. each user's adapter, trained on their fortunes and saved in PEFT's layout
  const adapters: Record<string, string> = {};
  for (const user of users) {
    const model = AutoModelForCausalLM.fromPretrained(modelDir);
    const peft = quickVeraAdapter(model, await userFortunes(user, model, tokenizer), { r, steps: Number(args.steps), targetModules });
    const dir = join(tempDir, user);
    peft.saveAdapter(dir, { dtype: 'f16', saveProjection: false }); // the compact form: vectors only
    adapters[user] = dir;
    console.log(`${user}: adapter trained (${peft.getNbTrainableParameters().trainable} parameters), ${statSync(join(dir, 'adapter_model.safetensors')).size} bytes on disk`);
  }

  // 2. every user's request (and one for the plain base model) in one engine batch
  const base = AutoModelForCausalLM.fromPretrained(modelDir);
  const requests: EngineRequest[] = [...users, null].map((adapter) => ({ promptIds, adapter, maxNewTokens }));
  const t0 = performance.now();
  const served = await generateBatch(base, requests, { adapters, decode });
  console.log(`\nserved ${requests.length} requests together in ${((performance.now() - t0) / 1000).toFixed(2)} s, prompt ${JSON.stringify(args.prompt)}:`);

  // 3. each against its adapter alone (a fresh base with only that adapter, plain generate())
  let allEqual = true;
  for (const result of served) {
    const who = result.adapter ?? '(base model)';
    const model = AutoModelForCausalLM.fromPretrained(modelDir);
    const alone = result.adapter === null ? model : PeftModel.fromPretrained(model, adapters[result.adapter]);
    const reference = noGrad(() => generate(alone, promptIds, { maxNewTokens, decode }));
    const equal = reference.tokens.length === result.tokens.length && reference.tokens.every((t, i) => t === result.tokens[i]);
    allEqual &&= equal;
    console.log(`  ${who.padEnd(14)} ${JSON.stringify(result.text)}`);
    console.log(`  ${''.padEnd(14)} same tokens as the adapter alone: ${equal ? 'yes' : `NO (alone: ${JSON.stringify(reference.text)})`}`);
  }
  const distinct = new Set(served.map((s) => s.text)).size;
  console.log(`\n${distinct} distinct texts from ${served.length} requests; every user's output equals that adapter alone: ${allEqual ? 'yes' : 'NO'}`);
  if (!allEqual) process.exitCode = 1;
} finally {
  rmSync(tempDir, { recursive: true, force: true });
}
