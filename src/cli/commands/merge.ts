// `vera merge`: fold an adapter into the base weights and write a plain checkpoint with the input's
// tensor names, shapes and dtypes, so any Hugging Face loader reads it unchanged.
import type { Command } from 'commander';
import { loadPretrained, readCompanionFiles, savePretrained } from '../../models/index.js';
import { PeftModel } from '../../peft/index.js';
import { OVERWRITE_HELP, prepareOut } from '../out.js';
import { DOUBLE_QUANT_HELP, weightFormat } from '../options.js';
import type { WeightFormat } from '../../tensor/quant.js';

export function registerMerge(program: Command): void {
  program
    .command('merge')
    .description('merge an adapter into a model: writes config.json + model.safetensors (same tensor names, shapes, dtypes) and copies the tokenizer files')
    .requiredOption('--model <dir>', 'base model folder (config.json + model.safetensors or a sharded index)')
    .requiredOption('--adapter <dir>', 'adapter folder (adapter_config.json + adapter_model.safetensors, PEFT layout)')
    .requiredOption('--out <dir>', 'output folder (written atomically)')
    .option('--overwrite', OVERWRITE_HELP)
    .option('--quiet', 'print nothing on success')
    .option('--allow-non-finite', 'load and merge weights holding NaN/Inf instead of refusing them')
    .option('--weights <format>', 'format of the merged linear weights: f32 (default), bf16 (written as BF16), int8 or nf4 (the base is quantized as it loads, the merge dequantizes, adds ΔW and requantizes, and the written values are the requantized ones)', weightFormat, 'f32')
    .option('--double-quant', DOUBLE_QUANT_HELP)
    .action((o: { model: string; adapter: string; out: string; quiet?: boolean; allowNonFinite?: boolean; overwrite?: boolean; weights?: WeightFormat; doubleQuant?: boolean }) => {
      const write = prepareOut('--out', o.out, [['--model', o.model], ['--adapter', o.adapter]], o.overwrite === true);
      const allowNonFinite = o.allowNonFinite ?? false;
      const loaded = loadPretrained(o.model, { allowNonFinite, weights: o.weights, doubleQuant: o.doubleQuant });
      const peft = PeftModel.fromPretrained(loaded.model, o.adapter, { allowNonFinite });
      // safe: a NaN/Inf from the adapter must never reach the written checkpoint (unless asked for);
      // a value the stored dtype cannot hold (F16 past 65504) is refused when the checkpoint is written
      const merged = peft.mergeAndUnload({ safe: !allowNonFinite });
      savePretrained(o.out, merged, loaded.configJson, loaded.checkpoint, readCompanionFiles(o.model), write);
      if (!o.quiet) console.log(`merged ${o.adapter} into ${o.model} → ${o.out}`);
    });
}
