// PeftModel: a base model plus named adapters, with PEFT's API (getPeftModel, addAdapter,
// setAdapter, merge/unmerge/mergeAndUnload, saveAdapter, PeftModel.fromPretrained) and its on-disk
// layout (adapter_config.json + adapter_model.safetensors). Methods plug in through PeftMethod.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { VeraError } from '../io/errors.js';
import { readJsonFile, writeDirAtomic } from '../io/atomic.js';
import { SafetensorsFile, serializeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { Tensor } from '../tensor/index.js';
import { Linear, type Module } from '../nn/index.js';
import { isModuleToSave, isTargetModule, sortedJson, type BasePeftConfig } from './config.js';
import { AdapterLayer, type AdapterTensors, type PeftMethod } from './tuner.js';
import { SEQ_CLS_HEAD_NAMES, allLinearTargets, defaultTargetModules, isAllLinear } from './targets.js';
import { vera } from './vera/model.js';
import { lora } from './lora/model.js';

/** Registered methods by PEFT's peft_type. Adding a method: one folder plus one line here. */
const METHODS: Record<string, PeftMethod> = {
  VERA: vera as unknown as PeftMethod,
  LORA: lora as unknown as PeftMethod,
};

export function peftMethod(peftType: string): PeftMethod {
  const m = METHODS[peftType];
  if (!m) throw new VeraError(`peft_type "${peftType}" is not supported (supported: ${Object.keys(METHODS).join(', ')})`);
  return m;
}

/** Parse an adapter_config.json object into the right method's config. */
export function parsePeftConfig(json: unknown, file: string): BasePeftConfig {
  const t = (json as { peft_type?: unknown } | null)?.peft_type;
  if (typeof t !== 'string') throw new VeraError(`${file}: field "peft_type" is missing`);
  return peftMethod(t).parseConfig(json, file);
}

/** target_modules matched no linear layer, or matched a layer that cannot be adapted; callers may rephrase it for their own flags. */
export class TargetModulesError extends VeraError {
  constructor(message: string, readonly matchedNothing: boolean) {
    super(message);
  }
}

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';

/** Storage dtype of saved adapter tensors (either case). */
export type AdapterDtype = 'F32' | 'F16' | 'BF16' | 'f32' | 'f16' | 'bf16';

export interface SaveOptions {
  adapterName?: string;
  /** Storage dtype of the saved tensors; F16 halves the file. */
  dtype?: AdapterDtype;
  /**
   * VeRA: override save_projection. false is the compact form (vectors + projection_prng_key);
   * refused when the projections held are not the ones the key regenerates.
   */
  saveProjection?: boolean;
}

/** 'f16' → 'F16'. */
export function adapterDtype(d: AdapterDtype | undefined): 'F32' | 'F16' | 'BF16' {
  return (d ?? 'F32').toUpperCase() as 'F32' | 'F16' | 'BF16';
}

export interface LoadOptions {
  adapterName?: string;
  isTrainable?: boolean;
}

export interface ParamCounts {
  trainable: number;
  all: number;
}

export class PeftModel<M extends Module = Module> {
  readonly model: M;
  readonly peftConfig = new Map<string, BasePeftConfig>();
  activeAdapter: string;
  private method: PeftMethod;
  /** modules_to_save: per module path, the original parameters and one trainable copy per adapter. */
  private readonly savedModules = new Map<string, { original: Map<string, Tensor>; copies: Map<string, Map<string, Tensor>> }>();
  private disabled = false;
  /** Adapters loaded for inference only (isTrainable false) never unfreeze. */
  private readonly frozen = new Set<string>();

  constructor(model: M, config: BasePeftConfig, adapterName = 'default') {
    this.model = model;
    this.method = peftMethod(config.peftType);
    this.activeAdapter = adapterName;
    model.requiresGrad_(false); // the base is frozen: no gradient buffers, no weight-gradient matmuls
    this.addAdapter(adapterName, config);
    this.setAdapter(adapterName);
  }

  /** Add adapter `name`; the active adapter does not change. */
  addAdapter(name: string, requested: BasePeftConfig): void {
    if (this.peftConfig.has(name)) throw new VeraError(`adapter '${name}' already exists`);
    if (requested.peftType !== this.method.peftType) throw new VeraError(`adapter '${name}' is ${requested.peftType}, but this model carries ${this.method.peftType} adapters; mixing methods is not supported`);
    let config = resolveConfig(this.model, requested);
    const targets: [string, Linear | AdapterLayer][] = [];
    const unsupported: string[] = [];
    for (const [path, m] of this.model.namedModules()) {
      if (path === '' || !isTargetModule(config, path)) continue;
      if (m instanceof Linear || m instanceof AdapterLayer) targets.push([path, m]);
      else unsupported.push(path);
    }
    if (targets.length === 0) {
      const t = config.targetModules ?? [];
      const what = typeof t === 'string' ? `regex ${JSON.stringify(t)}` : `[${t.join(', ')}]`;
      const extra = unsupported.length > 0 ? ` (matched only non-linear modules: ${unsupported.slice(0, 3).join(', ')})` : '';
      throw new TargetModulesError(`target_modules ${what} matched no linear layer in the model${extra}`, true);
    }
    if (unsupported.length > 0) throw new TargetModulesError(`target_modules: ${unsupported[0]} is a ${this.model.getSubmodule(unsupported[0]).constructor.name}; only linear layers can be adapted`, false);
    // PEFT forces fan_in_fan_out to what the layers are (Conv1D: true) and saves that
    const fanInFanOut = targets.every(([, m]) => (m instanceof AdapterLayer ? m.base_layer : m).fanInFanOut);
    if (fanInFanOut !== config.fanInFanOut) config = { ...config, fanInFanOut };
    this.method.inject(this.model, targets, config, name);
    this.peftConfig.set(name, config);
    for (const [path, m] of this.model.namedModules()) {
      if (path === '' || !isModuleToSave(config, path) || m instanceof AdapterLayer) continue;
      // PEFT copies the whole module: a head made of layers (RoBERTa's classifier.dense/out_proj)
      // trains all of them; a module inside one already saved is covered by it
      if ([...this.savedModules.keys()].some((p) => path.startsWith(`${p}.`))) continue;
      let entry = this.savedModules.get(path);
      if (!entry) {
        entry = { original: new Map(m.namedParameters()), copies: new Map() };
        this.savedModules.set(path, entry);
      }
      entry.copies.set(name, new Map([...entry.original].map(([p, t]) => [p, t.clone()])));
    }
    this.applyState();
  }

  /** Make `name` the active adapter: it alone trains and runs. */
  setAdapter(name: string): void {
    if (!this.peftConfig.has(name)) throw new VeraError(`no adapter named '${name}' (have: ${[...this.peftConfig.keys()].join(', ')})`);
    this.activeAdapter = name;
    this.applyState();
  }

  deleteAdapter(name: string): void {
    if (!this.peftConfig.has(name)) throw new VeraError(`no adapter named '${name}'`);
    if (this.peftConfig.size === 1) throw new VeraError(`cannot delete '${name}': it is the only adapter (use unload())`);
    for (const layer of this.adapterLayers()) {
      if (layer.mergedAdapters.includes(name)) layer.unmerge();
      if (layer.adapterNames().includes(name)) layer.deleteAdapter(name);
    }
    for (const entry of this.savedModules.values()) entry.copies.delete(name);
    this.peftConfig.delete(name);
    if (this.activeAdapter === name) this.activeAdapter = [...this.peftConfig.keys()][0];
    this.applyState();
  }

  /** Run the base model alone until enableAdapters(). */
  disableAdapters(): void {
    this.disabled = true;
    this.applyState();
  }

  enableAdapters(): void {
    this.disabled = false;
    this.applyState();
  }

  /** Run `fn` with adapters disabled (PEFT's `with model.disable_adapter():`). */
  withAdaptersDisabled<T>(fn: () => T): T {
    const prev = this.disabled;
    this.disableAdapters();
    try {
      return fn();
    } finally {
      if (!prev) this.enableAdapters();
    }
  }

  get adaptersDisabled(): boolean {
    return this.disabled;
  }

  private adapterLayers(): AdapterLayer[] {
    const out: AdapterLayer[] = [];
    for (const [, m] of this.model.namedModules()) if (m instanceof AdapterLayer) out.push(m);
    return out;
  }

  /** Push active adapter, disabled flag and trainability down to every layer. */
  private applyState(): void {
    const name = this.activeAdapter;
    const config = this.peftConfig.get(name);
    for (const layer of this.adapterLayers()) {
      layer.disabled = this.disabled;
      layer.activeAdapters = layer.adapterNames().includes(name) ? [name] : [];
      for (const n of layer.adapterNames()) {
        const train = n === name && !this.disabled && !this.frozen.has(n);
        for (const t of layer.trainableTensors(n)) t.requiresGrad = train;
      }
    }
    for (const [path, entry] of this.savedModules) {
      const m = this.model.getSubmodule(path);
      const copy = this.disabled ? undefined : entry.copies.get(name);
      for (const [p, original] of entry.original) {
        const use = copy?.get(p) ?? original;
        const dot = p.lastIndexOf('.');
        (dot < 0 ? m : m.getSubmodule(p.slice(0, dot))).setParameter(p.slice(dot + 1), use);
        use.requiresGrad = copy !== undefined;
      }
    }
    if (config) for (const [, t] of this.biasParameters(config)) t.requiresGrad = !this.disabled;
  }

  /** Saved keys of the biases adapter `name` trains (see config.bias). */
  trainedBiasKeys(name = this.activeAdapter): string[] {
    return this.biasParameters(this.configOf(name)).map(([k]) => `base_model.model.${k}`);
  }

  /** Paths of the modules_to_save modules. */
  modulesToSavePaths(): string[] {
    return [...this.savedModules.keys()];
  }

  /** Biases trained under config.bias: every bias ('all') or those of adapted layers. */
  private biasParameters(config: BasePeftConfig): [string, Tensor][] {
    if (config.bias === 'none') return [];
    const out: [string, Tensor][] = [];
    for (const [path, m] of this.model.namedModules()) {
      const adapted = m instanceof Linear && path.endsWith('.base_layer');
      if (config.bias !== 'all' && !adapted) continue;
      for (const [p, t] of m.ownParameters()) if (p === 'bias') out.push([path ? `${path}.bias` : 'bias', t]);
    }
    return out;
  }

  /** Fold adapters (default: the active one) into the base weights. */
  merge(names: string[] = [this.activeAdapter], opts: { safe?: boolean } = {}): void {
    for (const n of names) if (!this.peftConfig.has(n)) throw new VeraError(`no adapter named '${n}'`);
    for (const layer of this.adapterLayers()) {
      layer.merge(names.filter((n) => layer.adapterNames().includes(n)), opts.safe ?? false);
    }
  }

  unmerge(): void {
    for (const layer of this.adapterLayers()) layer.unmerge();
  }

  /** Merge the active adapter and return the plain base model (adapter layers removed). */
  mergeAndUnload(opts: { safe?: boolean; adapterNames?: string[] } = {}): M {
    this.merge(opts.adapterNames ?? [this.activeAdapter], opts);
    return this.unload();
  }

  /** Remove every adapter layer without merging; modules_to_save keep the active adapter's weights. */
  unload(): M {
    for (const [path, m] of [...this.model.namedModules()]) {
      if (m instanceof AdapterLayer) this.model.setSubmodule(path, m.base_layer);
    }
    this.savedModules.clear();
    return this.model;
  }

  /** Trainable tensors with their parameter paths. */
  trainableParameters(): [string, Tensor][] {
    return this.model.namedParameters().filter(([, t]) => t.requiresGrad);
  }

  getNbTrainableParameters(): ParamCounts {
    let trainable = 0;
    let all = 0;
    for (const [, t] of this.model.namedParameters()) {
      all += t.size;
      if (t.requiresGrad) trainable += t.size;
    }
    return { trainable, all };
  }

  /** PEFT's one-liner: "trainable params: N || all params: M || trainable%: P". */
  printTrainableParameters(log: (line: string) => void = console.log): void {
    const { trainable, all } = this.getNbTrainableParameters();
    log(`trainable params: ${trainable.toLocaleString('en-US')} || all params: ${all.toLocaleString('en-US')} || trainable%: ${((100 * trainable) / all).toFixed(4)}`);
  }

  /** The adapter's tensors under PEFT's saved key names. */
  adapterStateDict(name = this.activeAdapter, config = this.configOf(name)): Map<string, Tensor> {
    const sd = this.method.stateDict(this.model, config, name);
    const out = new Map<string, Tensor>();
    for (const [k, t] of sd.layers) out.set(`base_model.model.${k}`, t);
    for (const [k, t] of sd.shared) out.set(`base_model.${k}`, t);
    for (const [k, t] of this.biasParameters(config)) out.set(`base_model.model.${k}`, t);
    for (const [path, entry] of this.savedModules) {
      const copy = entry.copies.get(name);
      if (copy) for (const [p, t] of copy) out.set(`base_model.model.${path}.${p}`, t);
    }
    return out;
  }

  private configOf(name: string): BasePeftConfig {
    const c = this.peftConfig.get(name);
    if (!c) throw new VeraError(`no adapter named '${name}'`);
    return c;
  }

  /** Write adapter_config.json + adapter_model.safetensors (atomically) into `dir`. */
  saveAdapter(dir: string, opts: SaveOptions = {}): void {
    const name = opts.adapterName ?? this.activeAdapter;
    let config: BasePeftConfig = { ...this.configOf(name), inferenceMode: true };
    if (opts.saveProjection !== undefined) {
      if (!('saveProjection' in config)) throw new VeraError(`saveAdapter: saveProjection applies to VeRA adapters, not ${config.peftType}`);
      if (!opts.saveProjection) this.method.checkRegenerable?.(this.model, config, name);
      config = { ...config, saveProjection: opts.saveProjection } as BasePeftConfig;
    }
    const dtype = adapterDtype(opts.dtype);
    const tensors: Record<string, TensorToWrite> = {};
    for (const [k, t] of this.adapterStateDict(name, config)) {
      const data = t.toFloat32Array();
      for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) throw new VeraError(`saveAdapter: ${k} contains NaN or Inf; refusing to save`);
      tensors[k] = { data, shape: [...t.shape], dtype };
    }
    writeDirAtomic(dir, {
      [ADAPTER_CONFIG]: sortedJson(this.method.configToJson(config)),
      [ADAPTER_WEIGHTS]: serializeSafetensors(tensors, { format: 'pt' }),
    });
  }

  /** PEFT's name for saveAdapter. */
  savePretrained(dir: string, opts: SaveOptions = {}): void {
    this.saveAdapter(dir, opts);
  }

  /** Load an adapter folder (ours or PEFT's) as a new adapter on this model. */
  loadAdapter(dir: string, opts: LoadOptions = {}): string {
    const name = opts.adapterName ?? 'default';
    const { config, tensors, file } = readAdapterFolder(dir);
    this.addAdapter(name, config);
    try {
      loadInto(this, name, config, tensors, file);
    } catch (e) {
      this.deleteAdapterQuietly(name);
      throw e;
    }
    if (!(opts.isTrainable ?? false)) this.freezeAdapter(name);
    return name;
  }

  private deleteAdapterQuietly(name: string): void {
    for (const layer of this.adapterLayers()) if (layer.adapterNames().includes(name)) layer.deleteAdapter(name);
    for (const entry of this.savedModules.values()) entry.copies.delete(name);
    this.peftConfig.delete(name);
  }

  private freezeAdapter(name: string): void {
    this.frozen.add(name);
    for (const t of this.adapterStateDict(name).values()) t.requiresGrad = false;
  }

  /** Put tensors (PEFT keys) into adapter `name`; used by loadAdapter and checkpoints. */
  loadAdapterTensors(name: string, tensors: AdapterTensors, file: string): void {
    loadInto(this, name, this.configOf(name), tensors, file);
  }

  /** PeftModel.from_pretrained(model, dir): wrap `model` with the adapter saved in `dir`. */
  static fromPretrained<M extends Module>(model: M, dir: string, opts: LoadOptions = {}): PeftModel<M> {
    const name = opts.adapterName ?? 'default';
    const { config, tensors, file } = readAdapterFolder(dir);
    const peft = new PeftModel(model, config, name);
    loadInto(peft, name, config, tensors, file);
    if (!(opts.isTrainable ?? false)) peft.freezeAdapter(name);
    return peft;
  }
}

/** config.json's model_type of a model built by this library (its `modelType`), else null. */
export function modelTypeOf(model: Module): string | null {
  const t = (model as { modelType?: unknown }).modelType;
  return typeof t === 'string' ? t : null;
}

/** Paths of the linear layers (plain or already wrapped), not counting the base layers inside wrappers. */
export function linearLayerPaths(model: Module): string[] {
  const out: string[] = [];
  const wrapped: string[] = [];
  for (const [path, m] of model.namedModules()) {
    if (path === '' || wrapped.some((w) => path.startsWith(`${w}.`))) continue;
    if (m instanceof AdapterLayer) wrapped.push(path);
    if (m instanceof Linear || m instanceof AdapterLayer) out.push(path);
  }
  return out;
}

/**
 * The model's output layer, which 'all-linear' leaves out: transformers' output embeddings (a root
 * `lm_head`), or for this library's image classifiers (vera_cnn, vera_mlp) their last linear layer.
 */
export function outputLayerOf(model: Module): string | null {
  const head = model.child('lm_head');
  if (head instanceof Linear || head instanceof AdapterLayer) return 'lm_head';
  const type = modelTypeOf(model);
  if (type === 'vera_cnn' || type === 'vera_mlp') return linearLayerPaths(model).at(-1) ?? null;
  return null;
}

/**
 * What PEFT does to a config before injecting it: no target_modules → the model_type's default;
 * 'all-linear' → every linear layer path but the output layer; task_type SEQ_CLS → the usual
 * classifier head names join modules_to_save. The result is what the adapter saves.
 */
export function resolveConfig<C extends BasePeftConfig>(model: Module, config: C): C {
  let targetModules = config.targetModules;
  if (targetModules === null) targetModules = defaultTargetModules(config.peftType, modelTypeOf(model));
  else if (isAllLinear(targetModules)) targetModules = allLinearTargets(linearLayerPaths(model), outputLayerOf(model), config.taskType);
  let modulesToSave = config.modulesToSave;
  if (config.taskType === 'SEQ_CLS') modulesToSave = [...new Set([...(modulesToSave ?? []), ...SEQ_CLS_HEAD_NAMES])];
  return { ...config, targetModules, modulesToSave };
}

/** getPeftModel(model, config): PEFT's entry point. The base model is modified in place. */
export function getPeftModel<M extends Module>(model: M, config: BasePeftConfig, adapterName = 'default'): PeftModel<M> {
  return new PeftModel(model, config, adapterName);
}

function readAdapterFolder(dir: string): { config: BasePeftConfig; tensors: AdapterTensors; file: string } {
  const configPath = join(dir, ADAPTER_CONFIG);
  const weightsPath = join(dir, ADAPTER_WEIGHTS);
  if (!existsSync(configPath)) throw new VeraError(`${configPath}: not found (is ${dir} an adapter folder?)`);
  const config = parsePeftConfig(readJsonFile(configPath, 'adapter config'), configPath);
  if (!existsSync(weightsPath)) throw new VeraError(`${weightsPath}: not found`);
  const st = SafetensorsFile.open(weightsPath);
  const tensors: AdapterTensors = {
    has: (k) => st.has(k),
    shape: (k) => st.info(k).shape,
    get: (k) => st.getFloat32(k),
    keys: () => st.keys(),
  };
  return { config, tensors, file: weightsPath };
}

/**
 * Keys a saved modules_to_save tensor may carry besides PEFT's own "<module>.<param>": a state dict
 * taken from a PeftModel (not through save_pretrained) keeps "<module>.modules_to_save.<adapter>.<param>".
 */
function moduleToSaveAliases(key: string, modulePaths: readonly string[]): string[] {
  const path = modulePaths.find((m) => key.startsWith(`base_model.model.${m}.`));
  if (path === undefined) return [];
  const param = key.slice(`base_model.model.${path}.`.length);
  return [`base_model.model.${path}.modules_to_save.default.${param}`, `base_model.model.${path}.modules_to_save.${param}`];
}

function loadInto(peft: PeftModel, name: string, config: BasePeftConfig, tensors: AdapterTensors, file: string): void {
  // every key in the file must land somewhere: a stray key means the adapter was made for another model
  const used = new Set<string>();
  const tracked: AdapterTensors = {
    has: (k) => tensors.has(k),
    shape: (k) => tensors.shape(k),
    get: (k) => {
      used.add(k);
      return tensors.get(k);
    },
    keys: () => tensors.keys(),
  };
  peftMethod(config.peftType).loadStateDict(peft.model, config, name, tracked, file);
  // PEFT's VeRA saves no biases whatever `bias` says: a missing trained bias keeps the base model's
  const biasKeys = new Set(config.peftType === 'VERA' ? peft.trainedBiasKeys(name) : []);
  const savedModules = peft.modulesToSavePaths();
  for (const [k, t] of peft.adapterStateDict(name)) {
    if (used.has(k)) continue;
    const key = [k, ...moduleToSaveAliases(k, savedModules)].find((c) => tracked.has(c));
    if (key === undefined) {
      if (biasKeys.has(k)) continue;
      throw new VeraError(`${file}: missing tensor ${k}`);
    }
    const shape = tracked.shape(key);
    if (shape.length !== t.shape.length || shape.some((d, i) => d !== t.shape[i])) {
      throw new VeraError(`${file}: ${key} has shape [${shape.join(', ')}], the model needs [${t.shape.join(', ')}]`);
    }
    const data = tracked.get(key);
    for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) throw new VeraError(`${file}: ${key} contains NaN or Inf`);
    t.copyFrom(data);
  }
  for (const k of tensors.keys()) {
    if (!used.has(k)) throw new VeraError(`${file}: tensor ${k} matches no adapted module of this model (adapter made for a different model?)`);
  }
}
