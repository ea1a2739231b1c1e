// `vera inspect`: what an adapter or a model holds — trainable parameters, bytes, and per layer the
// norms of the trained vectors (the paper's Figure 3 view: which layers moved most).
import type { WeightFormat } from '../../tensor/quant.js';
import { DOUBLE_QUANT_HELP, WEIGHTS_HELP, weightFormat } from '../options.js';
import { existsSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { VeraError } from '../../io/errors.js';
import { readJsonFile } from '../../io/atomic.js';
import { SafetensorsFile } from '../../io/safetensors.js';
import { Linear } from '../../nn/index.js';
import { loadPretrained } from '../../models/index.js';
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapterTensors, assertFinite, checkAdapterFitsMemory, peftMethod, countAdapterParams, loraConfig, modelShapesFromConfig, parsePeftConfig, veraConfig, type ParamCount } from '../../peft/index.js';
import { parseTargetModules, positiveInt } from '../options.js';
import { preparePlotFile } from '../out.js';
import { adapterNormsSpec } from '../plots.js';
import { renderSvg, writeSvg } from '../../plot/index.js';

export interface AdapterLayerRow {
  module: string;
  /** ‖λd‖, ‖λb‖ for VeRA; ‖A‖, ‖B‖ (Frobenius) for LoRA; ‖m‖ (`magnitude`) with use_dora. */
  norms: Record<string, number>;
  params: number;
}

export interface AdapterReport {
  peftType: string;
  r: number;
  /** use_dora: DoRA (LoRA) or DVoRA (VeRA), with a magnitude vector per layer. */
  useDora: boolean;
  /** Whether Hugging Face PEFT can load the adapter (not a DVoRA one: PEFT's VeraConfig has no use_dora). */
  peftLoadable: boolean;
  trainableParams: number;
  /** The frozen shared matrices stored in the file (0 when regenerated from the seed). */
  projectionParams: number;
  otherParams: number;
  trainableBytesF32: number;
  fileBytes: number;
  /** adapter_config.json fields this version does not know (from a newer PEFT), ignored on load. */
  ignoredFields: string[];
  layers: AdapterLayerRow[];
}

const norm = (d: Float32Array): number => Math.sqrt(d.reduce((a, v) => a + v * v, 0));

export function inspectAdapter(dir: string, opts: { allowNonFinite?: boolean } = {}): AdapterReport {
  const configPath = join(dir, ADAPTER_CONFIG);
  const weightsPath = join(dir, ADAPTER_WEIGHTS);
  if (!existsSync(configPath)) throw new VeraError(`${configPath}: not found`);
  const config = parsePeftConfig(readJsonFile(configPath, 'adapter config'), configPath);
  if (!existsSync(weightsPath)) throw new VeraError(`${weightsPath}: not found`);
  const st = SafetensorsFile.open(weightsPath);
  checkAdapterFitsMemory(st, weightsPath); // declared sizes, before any tensor is read
  const r = (config as unknown as { r: number }).r;
  // the r printed must be the one the tensors have (λd is (r); LoRA's A (r, in)), checked from the headers
  peftMethod(config.peftType).checkStoredSizes?.(config, adapterTensors(st), weightsPath);
  const useDora = (config as { useDora?: boolean }).useDora === true;
  const suffixes = config.peftType === 'VERA' ? ['vera_lambda_d', 'vera_lambda_b', 'vera_magnitude_vector'] : ['lora_A.weight', 'lora_B.weight', 'lora_magnitude_vector'];
  const rows = new Map<string, AdapterLayerRow>();
  let trainable = 0;
  let projection = 0;
  let other = 0;
  for (const key of st.keys()) {
    const size = st.info(key).shape.reduce((a, b) => a * b, 1);
    const suffix = suffixes.find((s) => key.endsWith(`.${s}`));
    if (suffix) {
      const module = key.slice('base_model.model.'.length, key.length - suffix.length - 1);
      const row = rows.get(module) ?? { module, norms: {}, params: 0 };
      const data = st.getFloat32(key);
      if (!opts.allowNonFinite) assertFinite(data, weightsPath, key, '; pass --allow-non-finite to inspect it anyway');
      row.norms[suffix.endsWith('magnitude_vector') ? 'magnitude' : suffix.replace('vera_lambda_', 'lambda_').replace('.weight', '')] = norm(data);
      row.params += size;
      rows.set(module, row);
      trainable += size;
    } else if (/(^|\.)vera_[AB]$/.test(key)) projection += size;
    else other += size; // modules_to_save, biases
  }
  return {
    peftType: config.peftType,
    r,
    useDora,
    peftLoadable: !(useDora && config.peftType === 'VERA'),
    trainableParams: trainable + other,
    projectionParams: projection,
    otherParams: other,
    trainableBytesF32: 4 * (trainable + other),
    fileBytes: statSync(weightsPath).size,
    ignoredFields: [...(config.ignoredFields ?? [])],
    layers: [...rows.values()],
  };
}

export interface ModelReport {
  modelType: string;
  params: number;
  linearLayers: { module: string; in: number; out: number }[];
}

export function inspectModel(dir: string, opts: { allowNonFinite?: boolean; weights?: WeightFormat; doubleQuant?: boolean } = {}): ModelReport {
  const loaded = loadPretrained(dir, { allowNonFinite: opts.allowNonFinite ?? false, weights: opts.weights, doubleQuant: opts.doubleQuant });
  const linearLayers: ModelReport['linearLayers'] = [];
  for (const [path, m] of loaded.model.namedModules()) if (m instanceof Linear) linearLayers.push({ module: path, in: m.inFeatures, out: m.outFeatures });
  const params = loaded.model.parameters().reduce((a, t) => a + t.size, 0);
  return { modelType: loaded.modelType, params, linearLayers };
}

export interface ConfigReport extends ParamCount {
  modelType: string;
  method: 'vera' | 'lora';
  r: number;
}

/** Parameter counts of a VeRA or LoRA adapter on the model config.json describes (no weights read). */
export function inspectConfig(file: string, method: 'vera' | 'lora', r: number, targetModules: string[] | string | null): ConfigReport {
  const shapes = modelShapesFromConfig(readJsonFile(file, 'model config'), file);
  const config = method === 'vera' ? veraConfig({ r, targetModules }) : loraConfig({ r, targetModules });
  return { modelType: shapes.modelType, method, r, ...countAdapterParams(shapes, config) };
}

function printConfigReport(rep: ConfigReport, file: string): void {
  const names = [...new Set(rep.targets.map((l) => l.path.replace(/^.*\.\d+\./, '')))];
  console.log(`${rep.modelType} (${file}): ${rep.method === 'vera' ? 'VeRA' : 'LoRA'} r = ${rep.r} on ${rep.targets.length} layers (${names.join(', ')})`);
  console.log(`trainable params: ${rep.trainableParams.toLocaleString('en-US')} (${rep.adapterBytes.toLocaleString('en-US')} bytes as F32)`);
  if (rep.method === 'vera') console.log(`shared projections A, B: ${rep.projectionParams.toLocaleString('en-US')} params (frozen; regenerated from projection_prng_key)`);
}

export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description('trainable parameters, bytes and per-layer ‖λd‖/‖λb‖ of an adapter, the layers of a model, or an adapter\'s size from a model config alone')
    .option('--adapter <dir>', 'adapter folder')
    .option('--model <dir>', 'model folder')
    .option('--config <file>', 'a model config.json alone: count an adapter\'s parameters without weights (with --method, --r)')
    .addOption(new Option('--method <method>', 'with --config: adapter type').choices(['vera', 'lora']))
    .option('--r <n>', 'with --config: rank', positiveInt)
    .option('--target-modules <names>', 'with --config: comma list, regex or all-linear (default: PEFT\'s for the model_type)')
    .option('--json', 'machine-readable output')
    .option('--allow-non-finite', 'with --adapter or --model: report weights holding NaN/Inf instead of refusing them')
    .option('--plot <file>', 'with --adapter: also draw the per-layer norms as grouped bars (‖λd‖, ‖λb‖; LoRA ‖A‖, ‖B‖) into this SVG file')
    .option('--overwrite', 'with --plot: replace an existing file')
    .option('--weights <format>', WEIGHTS_HELP, weightFormat)
    .option('--double-quant', DOUBLE_QUANT_HELP)
    .action(async (o: { adapter?: string; model?: string; config?: string; method?: 'vera' | 'lora'; r?: number; targetModules?: string; json?: boolean; allowNonFinite?: boolean; plot?: string; overwrite?: boolean; weights?: WeightFormat; doubleQuant?: boolean }) => {
      const modes = [o.adapter, o.model, o.config].filter((v) => v !== undefined).length;
      if (modes !== 1) throw new VeraError('inspect: give exactly one of --adapter DIR, --model DIR or --config FILE');
      if (o.plot !== undefined && o.adapter === undefined) throw new VeraError('inspect: --plot FILE.svg goes with --adapter DIR');
      if (o.overwrite && o.plot === undefined) throw new VeraError('inspect: --overwrite goes with --plot FILE.svg');
      const plot = o.plot === undefined ? undefined : preparePlotFile('--plot', o.plot, [['--adapter', o.adapter]], o.overwrite === true);
      if (o.config === undefined && (o.method !== undefined || o.r !== undefined || o.targetModules !== undefined)) throw new VeraError('inspect: --method, --r and --target-modules go with --config FILE');
      if (o.config !== undefined) {
        if (o.method === undefined) throw new VeraError('inspect --config: --method vera|lora is required');
        if (o.r === undefined) throw new VeraError('inspect --config: --r N is required');
        const rep = inspectConfig(o.config, o.method, o.r, o.targetModules === undefined ? null : parseTargetModules(o.targetModules));
        if (o.json) return void console.log(JSON.stringify({ trainableParams: rep.trainableParams, projectionParams: rep.projectionParams, adapterBytes: rep.adapterBytes }));
        return printConfigReport(rep, o.config);
      }
      if (o.adapter !== undefined) {
        const rep = inspectAdapter(o.adapter, { allowNonFinite: o.allowNonFinite });
        if (plot?.kind === 'file') writeSvg(plot.file, await renderSvg(adapterNormsSpec(rep, `${rep.peftType === 'VERA' ? 'VeRA' : 'LoRA'} adapter ${basename(resolve(o.adapter))} (r = ${rep.r}): norms per layer`)));
        if (o.json) return void console.log(JSON.stringify(rep));
        console.log(`${rep.peftType} adapter, r = ${rep.r}`);
        if (rep.useDora) {
          console.log(rep.peftType === 'VERA'
            ? 'use_dora: DVoRA (VeRA with a DoRA magnitude per output row); PEFT cannot load it (its VeraConfig has no use_dora): load it with vera'
            : 'use_dora: DoRA (a magnitude per output row, lora_magnitude_vector); PEFT loads it');
        }
        console.log(`trainable params: ${rep.trainableParams.toLocaleString('en-US')} (${rep.trainableBytesF32.toLocaleString('en-US')} bytes as F32)`);
        if (rep.peftType === 'VERA') console.log(`stored projections: ${rep.projectionParams === 0 ? 'none (regenerated from projection_prng_key)' : rep.projectionParams.toLocaleString('en-US') + ' params'}`);
        console.log(`file: ${rep.fileBytes.toLocaleString('en-US')} bytes`);
        if (rep.ignoredFields.length > 0) console.log(`ignored adapter_config.json fields (unknown to this version, as PEFT ignores them): ${rep.ignoredFields.join(', ')}`);
        const cols = Object.keys(rep.layers[0]?.norms ?? {});
        const width = Math.max(6, ...rep.layers.map((l) => l.module.length));
        console.log(`\n${'module'.padEnd(width)}  ${cols.map((c) => `‖${c}‖`.padStart(12)).join('')}  params`);
        for (const l of rep.layers) console.log(`${l.module.padEnd(width)}  ${cols.map((c) => (l.norms[c] ?? NaN).toFixed(5).padStart(12)).join('')}  ${l.params}`);
        if (o.plot !== undefined) console.log(`\nplot: ${o.plot}`);
      } else {
        const rep = inspectModel(o.model!, { allowNonFinite: o.allowNonFinite, weights: o.weights, doubleQuant: o.doubleQuant });
        if (o.json) return void console.log(JSON.stringify(rep));
        console.log(`${rep.modelType}: ${rep.params.toLocaleString('en-US')} parameters, ${rep.linearLayers.length} linear layers`);
        for (const l of rep.linearLayers) console.log(`  ${l.module}  ${l.in} → ${l.out}`);
      }
    });
}
