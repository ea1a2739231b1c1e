// Generate text with a PEFT adapter: load a base model, apply an adapter folder as Hugging Face
// PEFT writes it (adapter_config.json + adapter_model.safetensors), and generate, greedy and sampled.
//
//   node dist/examples/peft-adapter-generate.js [--model DIR] [--adapter DIR] [--prompt TEXT] [--max-new-tokens N]
//
// The model defaults to the embedded fortune-llama. Without --adapter, the example first makes one:
// a VeRA adapter trained for --steps steps on the "startrek" fortunes (which fortune-llama never
// saw), saved to a temporary folder.
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { AutoModelForCausalLM, AutoTokenizer, PeftModel, TextGenerator, pipeline } from 'vera';
import { FORTUNE_LLAMA, quickVeraAdapter, userFortunes } from './shared.js';

const { values: args } = parseArgs({
  options: {
    model: { type: 'string', default: FORTUNE_LLAMA },
    adapter: { type: 'string' },
    prompt: { type: 'string', default: 'Captain, the' },
    'max-new-tokens': { type: 'string', default: '24' },
    steps: { type: 'string', default: '20' },
    r: { type: 'string', default: '64' },
  },
});
const modelDir = args.model;
const maxNewTokens = Number(args['max-new-tokens']);

// An adapter folder to load: the one given, or a quick one made here.
let adapterDir = args.adapter;
let tempDir: string | null = null;
if (adapterDir === undefined) {
  tempDir = mkdtempSync(join(tmpdir(), 'vera-example-'));
  adapterDir = join(tempDir, 'startrek');
  const model = AutoModelForCausalLM.fromPretrained(modelDir);
  const tokenizer = await AutoTokenizer.fromPretrained(modelDir);
  const peft = quickVeraAdapter(model, await userFortunes('startrek', model, tokenizer), {
    r: Number(args.r), steps: Number(args.steps), targetModules: ['q_proj', 'v_proj'],
  });
  peft.saveAdapter(adapterDir);
  const files = readdirSync(adapterDir).map((f) => `${f} (${statSync(join(adapterDir ?? '', f)).size} B)`);
  console.log(`trained a VeRA adapter for ${args.steps} steps on the startrek fortunes: ${adapterDir}: ${files.join(', ')}`);
}

try {
  // 1. the base, then the adapter on it (its layers are swapped into the model in place)
  const base = AutoModelForCausalLM.fromPretrained(modelDir);
  const tokenizer = await AutoTokenizer.fromPretrained(modelDir);
  const adapted = PeftModel.fromPretrained(base, adapterDir);
  const generator = pipeline('text-generation', adapted, tokenizer);

  // 2. greedy decoding, without and with the adapter
  adapted.disableAdapters();
  const plain = await generator.generate(args.prompt, { maxNewTokens });
  adapted.enableAdapters();
  const withAdapter = await generator.generate(args.prompt, { maxNewTokens });
  console.log(`prompt: ${JSON.stringify(args.prompt)}`);
  console.log(`base model:   ${JSON.stringify(plain.text)} (${plain.tokens.length} tokens, ${plain.finishReason})`);
  console.log(`with adapter: ${JSON.stringify(withAdapter.text)} (${withAdapter.tokens.length} tokens, ${withAdapter.finishReason})`);

  // 3. sampling, streamed as it is produced
  process.stdout.write('sampled (temperature 0.8, seed 1): ');
  for await (const delta of generator.stream(args.prompt, { maxNewTokens, doSample: true, temperature: 0.8, seed: 1 })) {
    process.stdout.write(JSON.stringify(delta).slice(1, -1));
  }
  process.stdout.write('\n');

  // 4. the same in one call: model, tokenizer, generation_config.json's eos ids and the adapter
  const again = await TextGenerator.fromPretrained(modelDir, { adapter: adapterDir });
  const same = (await again.generate(args.prompt, { maxNewTokens })).text === withAdapter.text;
  console.log(`TextGenerator.fromPretrained(model, { adapter }) gives the same text: ${same ? 'yes' : 'NO'}`);
  if (!same) process.exitCode = 1;
} finally {
  if (tempDir !== null) rmSync(tempDir, { recursive: true, force: true });
}
