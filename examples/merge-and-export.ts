// Merge an adapter into its base and save a Hugging Face model folder, reload it and check that it
// answers as the unmerged model; then export the adapter itself in PEFT's layout, full and compact.
//
//   node dist/examples/merge-and-export.js [--model DIR] [--adapter DIR] [--out DIR] [--steps N]
//
// Without --adapter a VeRA adapter is trained here for --steps steps on the "tao" fortunes. Without
// --out the folders go to a temporary folder that is removed at the end.
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  AutoModelForCausalLM, AutoTokenizer, PeftModel, modelConfigJson, noGrad, savePretrained,
  type CausalLMModel,
} from 'vera';
import { FORTUNE_LLAMA, quickVeraAdapter, userFortunes } from './shared.js';

const { values: args } = parseArgs({
  options: {
    model: { type: 'string', default: FORTUNE_LLAMA },
    adapter: { type: 'string' },
    out: { type: 'string' },
    steps: { type: 'string', default: '10' },
    r: { type: 'string', default: '64' },
    tolerance: { type: 'string', default: '1e-4' },
  },
});
const modelDir = args.model;
const tolerance = Number(args.tolerance);
const tempDir = mkdtempSync(join(tmpdir(), 'vera-example-'));
const outDir = args.out ?? tempDir;

/** A listing of a folder: each file with its size. */
function listing(dir: string): string {
  return readdirSync(dir).sort().map((f) => `${f} (${statSync(join(dir, f)).size.toLocaleString('en-US')} B)`).join(', ');
}

try {
  const tokenizer = await AutoTokenizer.fromPretrained(modelDir);
  // a few held-out-style probes: the logits of every position of each
  const probes = ['Tao is the way.', 'The sage does not', 'Knowledge is power; and'].map((t) => tokenizer.encode(t));
  const logitsOf = (model: CausalLMModel | PeftModel<CausalLMModel>): Float32Array[] =>
    noGrad(() => probes.map((ids) => {
      const lm = model instanceof PeftModel ? model.model : model;
      return lm.forward(Int32Array.from(ids), [1, ids.length]).toFloat32Array();
    }));
  const maxAbsDiff = (a: Float32Array[], b: Float32Array[]): number =>
    Math.max(...a.map((x, i) => x.reduce((m, v, j) => Math.max(m, Math.abs(v - b[i][j])), 0)));

  // 1. the adapted model: an adapter folder, or one made here
  const base = AutoModelForCausalLM.fromPretrained(modelDir);
  let peft: PeftModel<CausalLMModel>;
  if (args.adapter === undefined) {
    peft = quickVeraAdapter(base, await userFortunes('tao', base, tokenizer), { r: Number(args.r), steps: Number(args.steps), targetModules: ['q_proj', 'v_proj', 'o_proj', 'down_proj'] });
    console.log(`trained a VeRA adapter for ${args.steps} steps on the tao fortunes`);
  } else {
    peft = PeftModel.fromPretrained(base, args.adapter);
  }
  const unmerged = logitsOf(peft);

  // 2. export the adapter in PEFT's layout: as PEFT writes it (F32, with the projections A and B) ...
  const adapterDir = join(outDir, 'adapter');
  peft.saveAdapter(adapterDir);
  console.log(`adapter (PEFT layout): ${adapterDir}: ${listing(adapterDir)}`);
  // ... and compact: F16 vectors only, A and B regenerated from projection_prng_key when loaded
  const compactDir = join(outDir, 'adapter-compact');
  peft.saveAdapter(compactDir, { dtype: 'f16', saveProjection: false });
  console.log(`adapter (compact):     ${compactDir}: ${listing(compactDir)}`);
  const reloadedAdapter = PeftModel.fromPretrained(AutoModelForCausalLM.fromPretrained(modelDir), adapterDir);
  const adapterDiff = maxAbsDiff(unmerged, logitsOf(reloadedAdapter));
  console.log(`reloaded adapter vs the adapter in memory: max |logit diff| = ${adapterDiff.toExponential(2)}`);

  // 3. merge: W0 + ΔW in every adapted layer, the adapter layers removed (NaN/Inf refused)
  const merged = peft.mergeAndUnload({ safe: true });
  const mergedDir = join(outDir, 'merged');
  // F32, tensors under their parameter names; the base's tokenizer files are copied along
  savePretrained(mergedDir, merged, modelConfigJson(merged));
  console.log(`merged model: ${mergedDir}: ${listing(mergedDir)}`);

  // 4. reload the merged folder as any model folder: no adapter, the same outputs
  const reloaded = AutoModelForCausalLM.fromPretrained(mergedDir);
  const mergedDiff = maxAbsDiff(unmerged, logitsOf(reloaded));
  const ok = mergedDiff <= tolerance && adapterDiff <= tolerance;
  console.log(`reloaded merged model vs unmerged adapter: max |logit diff| = ${mergedDiff.toExponential(2)} (tolerance ${tolerance}): ${ok ? 'equal' : 'DIFFERENT'}`);
  const reloadedTokenizer = await AutoTokenizer.fromPretrained(mergedDir);
  console.log(`the merged folder's tokenizer encodes as the base's: ${reloadedTokenizer.encode('Tao is the way.').join(' ') === probes[0].join(' ') ? 'yes' : 'NO'}`);
  if (!ok) process.exitCode = 1;
} finally {
  if (args.out === undefined) rmSync(tempDir, { recursive: true, force: true });
}
