// `vera merge`: fold an adapter into the base weights and write a plain checkpoint with the input's
// tensor names, shapes and dtypes, so any Hugging Face loader reads it unchanged.
import type { Command } from 'commander';
import { loadPretrained, savePretrained } from '../../models/index.js';
import { PeftModel } from '../../peft/index.js';

export function registerMerge(program: Command): void {
  program
    .command('merge')
    .description('merge an adapter into a model: writes config.json + model.safetensors (same tensor names, shapes, dtypes)')
    .requiredOption('--model <dir>', 'base model folder (config.json + model.safetensors or a sharded index)')
    .requiredOption('--adapter <dir>', 'adapter folder (adapter_config.json + adapter_model.safetensors, PEFT layout)')
    .requiredOption('--out <dir>', 'output folder (written atomically)')
    .option('--quiet', 'print nothing on success')
    .action((o: { model: string; adapter: string; out: string; quiet?: boolean }) => {
      const loaded = loadPretrained(o.model);
      const peft = PeftModel.fromPretrained(loaded.model, o.adapter);
      // safe: a NaN/Inf from the adapter must never reach the written checkpoint
      const merged = peft.mergeAndUnload({ safe: true });
      savePretrained(o.out, merged, loaded.configJson, loaded.checkpoint);
      if (!o.quiet) console.log(`merged ${o.adapter} into ${o.model} → ${o.out}`);
    });
}
