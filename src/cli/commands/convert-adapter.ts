// `vera convert-adapter`: rewrite a saved adapter in another storage dtype, or in VeRA's compact
// form (--no-save-projection: the vectors plus projection_prng_key). Without --model the files alone
// are rewritten (dropping projections is checked bit for bit against the key); with --model the
// adapter is loaded onto the base model first, which also lets --save-projection add A and B.
// `--to lora` exports a VeRA adapter as the LoRA adapter that computes the same (peft/vera/to-lora.ts);
// --model gives the layers' in_features (its config.json only is read).
import { Option, type Command } from 'commander';
import { loadPretrained } from '../../models/index.js';
import { PeftModel, convertAdapter, type AdapterDtype, type VeraConfig } from '../../peft/index.js';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { ADAPTER_WEIGHTS } from '../../peft/index.js';
import { convertVeraToLora } from '../../peft/vera/to-lora.js';
import { readAdapterFolder } from '../../peft/peft_model.js';
import { fail } from '../../io/errors.js';
import { OVERWRITE_HELP, prepareOut } from '../out.js';

interface ConvertCliOptions {
  adapter: string;
  out: string;
  dtype?: AdapterDtype;
  saveProjection?: boolean;
  model?: string;
  to?: 'lora' | 'vera';
  json?: boolean;
  overwrite?: boolean;
  allowNonFinite?: boolean;
}

export function registerConvertAdapter(program: Command): void {
  program
    .command('convert-adapter')
    .description('rewrite an adapter: storage dtype (f32, f16, bf16) and, for VeRA, with or without the shared projections')
    .requiredOption('--adapter <dir>', 'adapter folder (PEFT layout)')
    .requiredOption('--out <dir>', 'output folder (written atomically)')
    .addOption(new Option('--dtype <dtype>', 'storage dtype of the tensors (default: as stored; f32 with --model)').choices(['f32', 'f16', 'bf16']))
    .option('--save-projection', 'VeRA: store A and B in the file (needs --model if the adapter has none)')
    .option('--no-save-projection', 'VeRA: compact form, A and B regenerated from projection_prng_key on load')
    .option('--model <dir>', 'base model folder: load the adapter onto it first')
    .addOption(new Option('--to <method>', 'lora: the exact LoRA form of a VeRA adapter (lora_A = λd·A, lora_B = λb·B, lora_alpha = r; needs --model); vera: keep the method').choices(['lora', 'vera']))
    .option('--json', 'print {"inBytes", "outBytes"} as JSON')
    .option('--overwrite', OVERWRITE_HELP)
    .option('--allow-non-finite', 'without --model: copy tensors holding NaN/Inf instead of refusing them')
    .action((o: ConvertCliOptions) => {
      const write = prepareOut('--out', o.out, [['--adapter', o.adapter], ['--model', o.model]], o.overwrite === true);
      if (o.to !== undefined) {
        const { config, configFile } = readAdapterFolder(o.adapter);
        if (o.to === 'vera' && config.peftType !== 'VERA') fail(`--to vera: ${configFile} is a ${config.peftType} adapter; only VeRA → LoRA is an exact conversion`);
        if (o.to === 'lora') {
          if (config.peftType !== 'VERA') fail(`--to lora: ${configFile} is a ${config.peftType} adapter, not VeRA`);
          if (o.saveProjection !== undefined) fail(`--${o.saveProjection ? '' : 'no-'}save-projection does not apply with --to lora (a LoRA adapter has no projections)`);
          if (o.model === undefined) fail("--to lora needs --model DIR (the base model folder: its config.json gives each layer's in_features)");
          const report = convertVeraToLora(o.adapter, o.out, o.model, { dtype: o.dtype }, write);
          if (o.json) console.log(JSON.stringify({ ...report, method: 'LORA' }));
          else console.log(`wrote ${o.out}: LoRA r ${(config as VeraConfig).r} on ${report.layers} layers, ${report.outBytes.toLocaleString('en-US')} bytes of tensors (VeRA: ${report.inBytes.toLocaleString('en-US')})`);
          return;
        }
      }
      let inBytes: number;
      let outBytes: number;
      if (o.model !== undefined) {
        const peft = PeftModel.fromPretrained(loadPretrained(o.model).model, o.adapter);
        peft.saveAdapter(o.out, { dtype: o.dtype, saveProjection: o.saveProjection, write });
        inBytes = statSync(join(o.adapter, ADAPTER_WEIGHTS)).size;
        outBytes = statSync(join(o.out, ADAPTER_WEIGHTS)).size;
      } else {
        ({ inBytes, outBytes } = convertAdapter(o.adapter, o.out, { dtype: o.dtype, saveProjection: o.saveProjection, write, allowNonFinite: o.allowNonFinite }));
      }
      if (o.json) console.log(JSON.stringify({ inBytes, outBytes }));
      else console.log(`wrote ${o.out}: ${outBytes.toLocaleString('en-US')} bytes of tensors (was ${inBytes.toLocaleString('en-US')})`);
    });
}
