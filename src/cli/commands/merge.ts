// `vera merge`: fold an adapter into the base weights and write a plain checkpoint with the input's
// tensor names, shapes and dtypes, so any Hugging Face loader reads it unchanged.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { loadPretrained, savePretrained } from '../../models/index.js';
import { PeftModel } from '../../peft/index.js';

/** Files that travel with a model folder and do not change when weights merge. */
const COMPANION_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'merges.txt', 'vocab.txt', 'tokenizer.model', 'generation_config.json'];

export function registerMerge(program: Command): void {
  program
    .command('merge')
    .description('merge an adapter into a model: writes config.json + model.safetensors (same tensor names, shapes, dtypes) and copies the tokenizer files')
    .requiredOption('--model <dir>', 'base model folder (config.json + model.safetensors or a sharded index)')
    .requiredOption('--adapter <dir>', 'adapter folder (adapter_config.json + adapter_model.safetensors, PEFT layout)')
    .requiredOption('--out <dir>', 'output folder (written atomically)')
    .option('--quiet', 'print nothing on success')
    .action((o: { model: string; adapter: string; out: string; quiet?: boolean }) => {
      const loaded = loadPretrained(o.model);
      const peft = PeftModel.fromPretrained(loaded.model, o.adapter);
      // safe: a NaN/Inf from the adapter must never reach the written checkpoint
      const merged = peft.mergeAndUnload({ safe: true });
      const extra: Record<string, Uint8Array> = {};
      for (const f of COMPANION_FILES) if (existsSync(join(o.model, f))) extra[f] = readFileSync(join(o.model, f));
      savePretrained(o.out, merged, loaded.configJson, loaded.checkpoint, extra);
      if (!o.quiet) console.log(`merged ${o.adapter} into ${o.model} → ${o.out}`);
    });
}
