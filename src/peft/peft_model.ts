// PeftModel: a base model plus named adapters, with PEFT's API (getPeftModel, addAdapter,
// setAdapter, merge/unmerge/mergeAndUnload, saveAdapter, PeftModel.fromPretrained) and its on-disk
// layout (adapter_config.json + adapter_model.safetensors). Methods plug in through PeftMethod.
import { availableMemory, fs, maxBufferBytes, path } from '../io/node.js';
import { VeraError } from '../io/errors.js';
import { filesToBlobs, isFileSource, readJson, readRequired, sourcePath, type FileSource } from '../io/source.js';
import { readJsonFile, writeDirAtomic, writeFileAtomic, type WriteDirOptions } from '../io/atomic.js';
import { SafetensorsFile, serializeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { Tensor, withAllocationBudget } from '../tensor/index.js';
import { Linear, ModuleList, type Module } from '../nn/index.js';
import { isModuleToSave, isTargetModule, sortedJson, type BasePeftConfig } from './config.js';
import { AdapterLayer, assertFinite, type AdapterTensors, type PeftMethod } from './tuner.js';
import { MIN_TARGET_MODULES_FOR_OPTIMIZATION, SEQ_CLS_HEAD_NAMES, allLinearTargets, defaultTargetModules, findMinimalTargetModules, isAllLinear } from './targets.js';
import { vera } from './vera/model.js';
import { lora } from './lora/model.js';
import { LoraLinear } from './lora/layer.js';
import type { LoraConfig } from './lora/config.js';
import { checkWeightedAdapter, combineIntoLayer, type WeightedAdapterOptions } from './lora/weighted.js';
import { checkVeraWeighted, combineVeraLayer } from './vera/weighted.js';
import { VeraLinear } from './vera/layer.js';
import type { VeraConfig } from './vera/config.js';

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
  /** How an existing folder is treated (default `merge`, as save_pretrained); the CLI uses create/replace. */
  write?: WriteDirOptions;
}

/** 'f16' → 'F16'. */
export function adapterDtype(d: AdapterDtype | undefined): 'F32' | 'F16' | 'BF16' {
  return (d ?? 'F32').toUpperCase() as 'F32' | 'F16' | 'BF16';
}

export interface LoadOptions {
  adapterName?: string;
  isTrainable?: boolean;
  /** fromPretrained: use this config (kept as the adapter's, inferenceMode set) instead of the folder's adapter_config.json. */
  config?: BasePeftConfig;
  /** Load tensors holding NaN/±Inf as they are (default: refused with one line naming the tensor). */
  allowNonFinite?: boolean;
}

export interface ParamCounts {
  trainable: number;
  all: number;
}

export class PeftModel<M extends Module = Module> {
  readonly model: M;
  readonly peftConfig = new Map<string, BasePeftConfig>();
  private method: PeftMethod;
  /** PEFT's active_adapter(s): pushed to every adapter layer by setAdapter and addAdapter. */
  private active: string[];
  /** PeftModel.active_adapter: the one name set last (kept when a deletion leaves zero or several active, as PEFT). */
  private current: string;
  /** modules_to_save: per module path, the original parameters and one trainable copy per adapter. */
  private readonly savedModules = new Map<string, { original: Map<string, Tensor>; copies: Map<string, Map<string, Tensor>> }>();
  private disabled = false;
  /** Host copies of tensors read ahead by saveToBytesAsync, used by adapterFiles instead of a synchronous read. */
  private hostCopies: Map<Tensor, Float32Array> | null = null;
  /** Adapters in inference mode (loaded without isTrainable, or inferenceMode in their config) never unfreeze. */
  private readonly frozen = new Set<string>();

  constructor(model: M, config: BasePeftConfig, adapterName = 'default') {
    this.model = model;
    this.method = peftMethod(config.peftType);
    this.active = [adapterName];
    this.current = adapterName;
    model.requiresGrad_(false); // the base is frozen: no gradient buffers, no weight-gradient matmuls
    this.addAdapter(adapterName, config);
  }

  /** The active adapters, in the order their outputs are summed. */
  get activeAdapters(): readonly string[] {
    return this.active;
  }

  /** The active adapter, as PEFT's PeftModel.active_adapter: the name last set alone (see activeAdapters for the list). */
  get activeAdapter(): string {
    return this.current;
  }

  /**
   * Add adapter `name`; the active adapters do not change (PEFT's add_adapter). VeRA adapters share
   * the model's one projection pair, made by the first: a later one must use the same
   * projection_prng_key and save_projection, an r and layer sizes no larger than the first's.
   */
  addAdapter(name: string, requested: BasePeftConfig): void {
    this.add(name, requested);
  }

  /** addAdapter, returning the paths it wrapped anew (what a failed load must unwrap again). */
  private add(name: string, requested: BasePeftConfig): string[] {
    if (this.peftConfig.has(name)) throw new VeraError(`Adapter with name '${name}' already exists.`);
    if (requested.peftType !== this.method.peftType) throw new VeraError(`Cannot combine adapters with different peft types. Found ${this.method.peftType} and ${requested.peftType}.`);
    // as PEFT, the config object itself is kept and completed (resolved targets, fan_in_fan_out)
    const config = Object.assign(requested, resolveConfig(this.model, requested));
    const existing = [...this.peftConfig.values()];
    if (config.bias !== 'none' && existing.some((c) => c.bias !== 'none')) {
      throw new VeraError(`${tunerName(this.method)} supports only 1 adapter with bias. When using multiple adapters, set bias to 'none' for all adapters.`);
    }
    this.method.checkNewAdapter?.(config, existing);
    for (const [path, m] of this.model.namedModules()) {
      // PEFT's ModulesToSaveWrapper.check_module: a container has no forward of its own to swap
      if (path !== '' && isModuleToSave(config, path) && m instanceof ModuleList) throw new VeraError(`modules_to_save cannot be applied to modules of type ModuleList (${path}); name the layers inside it`);
    }
    // the layers as the list names them size VeRA's pair; then, as PEFT, a list of 20 or more
    // condenses to the fewest suffixes (saved so), which layers_to_transform may then filter
    const sizing = this.matchTargets(config);
    const t = config.targetModules;
    if (Array.isArray(t) && t.length >= MIN_TARGET_MODULES_FOR_OPTIMIZATION) {
      const others = [...this.model.namedModules()].map(([p]) => p).filter((p) => !t.includes(p) && !t.some((n) => p.endsWith(`.${n}`)));
      const minimal = findMinimalTargetModules(t, others);
      if (minimal.length < t.length) config.targetModules = minimal;
    }
    const targets = config.targetModules === t ? sizing : this.matchTargets(config);
    // PEFT forces fan_in_fan_out to what the layers are (Conv1D: true) and saves that
    config.fanInFanOut = targets.every(([, m]) => (m instanceof AdapterLayer ? m.base_layer : m).fanInFanOut);
    const newlyWrapped = targets.filter(([, m]) => !(m instanceof AdapterLayer)).map(([p]) => p);
    try {
      // no stored tensors to compare sizes with here: memory is the bound on what a config may allocate
      const available = availableMemory();
      withAllocationBudget(Math.floor(available / 4), (need) => {
        throw new VeraError(`adapter '${name}': its config (r over the targeted layers) needs ${need} float32 values, more than the ${(available / 2 ** 30).toFixed(1)} GB of memory available`);
      }, () => this.method.inject(this.model, targets, config, name, sizing));
    } catch (e) {
      this.removeAdapterLayers(name, newlyWrapped);
      throw e;
    }
    this.peftConfig.set(name, config);
    if (config.inferenceMode) this.frozen.add(name);
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
    this.activate(this.active.filter((n) => this.peftConfig.has(n)));
    return newlyWrapped;
  }

  /**
   * The layers `config` adapts, as PEFT matches them: every module path but those inside an adapter
   * layer (a regex like "l1.*" must not reach "l1.base_layer" of an adapted l1).
   */
  private matchTargets(config: BasePeftConfig): [string, Linear | AdapterLayer][] {
    const targets: [string, Linear | AdapterLayer][] = [];
    const unsupported: string[] = [];
    const inside: string[] = [];
    for (const [path, m] of this.model.namedModules()) {
      if (path === '' || inside.some((p) => path.startsWith(p))) continue;
      if (m instanceof AdapterLayer) inside.push(`${path}.`);
      if (!isTargetModule(config, path)) continue;
      if (m instanceof Linear || m instanceof AdapterLayer) targets.push([path, m]);
      else unsupported.push(path);
    }
    if (targets.length === 0) {
      const t = config.targetModules ?? [];
      const what = typeof t === 'string' ? `regex ${JSON.stringify(t)}` : `[${t.join(', ')}]`;
      const layers = config.layersToTransform !== null ? ` with layers_to_transform ${JSON.stringify(config.layersToTransform)}${config.layersPattern !== null ? ` and layers_pattern ${JSON.stringify(config.layersPattern)}` : ''}` : '';
      const extra = unsupported.length > 0 ? ` (matched only non-linear modules: ${unsupported.slice(0, 3).join(', ')})` : '';
      throw new TargetModulesError(`target_modules ${what}${layers} matched no linear layer in the model${extra}`, true);
    }
    if (unsupported.length > 0) throw new TargetModulesError(`target_modules: ${unsupported[0]} is a ${this.model.getSubmodule(unsupported[0]).constructor.name}; only linear layers can be adapted`, false);
    return targets;
  }

  /** Undo a failed injection: drop adapter `name` wherever it landed and unwrap the layers wrapped for it. */
  private removeAdapterLayers(name: string, newlyWrapped: string[]): void {
    for (const layer of this.adapterLayers()) if (layer.adapterNames().includes(name)) layer.deleteAdapter(name);
    for (const path of newlyWrapped) {
      const m = this.model.getSubmodule(path);
      if (m instanceof AdapterLayer && m.adapterNames().length === 0) this.model.setSubmodule(path, m.base_layer);
    }
  }

  /**
   * Make `names` the active adapters: they run (several are summed, in this order) and, unless
   * loaded for inference or `inferenceMode` is set, train. As PEFT's set_adapter, a merged model is
   * unmerged first; a modules_to_save module may have a copy from at most one of them.
   */
  setAdapter(names: string | readonly string[], opts: { inferenceMode?: boolean } = {}): void {
    const list = typeof names === 'string' ? [names] : [...names];
    for (const n of list) if (!this.peftConfig.has(n)) throw new VeraError(`Adapter ${n} not found (have: ${[...this.peftConfig.keys()].join(', ')})`);
    if (new Set(list).size !== list.length) throw new VeraError(`setAdapter: adapter names repeat: ${list.join(', ')}`);
    this.activate(list, opts.inferenceMode ?? false);
    if (list.length === 1) this.current = list[0];
  }

  /**
   * PEFT's add_weighted_adapter (LoRA; combinations linear, cat and svd): a new adapter `newName`
   * made from `names` with `weights`, of rank r (linear: the adapters' common r; cat: Σ r; svd:
   * `svdRank` or the largest r) and lora_alpha = that rank, on the union of their targets. It is
   * added, not activated; as in PEFT a name already in use leaves everything as it is.
   */
  addWeightedAdapter(names: readonly string[], weights: readonly number[], newName: string, opts: WeightedAdapterOptions = {}): void {
    if (this.peftConfig.has(newName)) return; // PEFT: `if adapter_name in self.peft_config: return`
    for (const n of names) if (!this.peftConfig.has(n)) throw new VeraError(`Adapter ${n} does not exist`);
    if (weights.length !== names.length) throw new VeraError(`addWeightedAdapter: ${names.length} adapters but ${weights.length} weights`);
    if (this.method.peftType === 'VERA') return this.addWeightedVera(names, weights, newName, opts);
    if (this.method.peftType !== 'LORA') throw new VeraError(`addWeightedAdapter combines LoRA and VeRA adapters; this model's adapters are ${this.method.peftType}`);
    const configs = names.map((n) => this.configOf(n) as LoraConfig);
    const shared = [...this.savedModules.values()].filter((e) => names.filter((n) => e.copies.has(n)).length > 1);
    if (shared.length > 0) throw new VeraError(`Cannot add weighted adapters if they target the same module with modules_to_save, but found ${shared.length} such instance(s).`);
    const { type, rank, targets } = checkWeightedAdapter(configs, names, opts);
    if (opts.svdClamp !== undefined && !(opts.svdClamp >= 0 && opts.svdClamp <= 1)) throw new VeraError(`addWeightedAdapter: svdClamp must be a quantile in [0, 1], got ${opts.svdClamp}`);
    const config: LoraConfig = { ...configs[0], r: rank, loraAlpha: rank, targetModules: targets, ignoredFields: [] };
    const wrapped = this.add(newName, config);
    try {
      for (const layer of this.adapterLayers()) {
        if (layer instanceof LoraLinear && layer.adapterNames().includes(newName)) combineIntoLayer(layer, names, weights, newName, type, rank, opts.svdClamp);
      }
    } catch (e) {
      this.discardAdapter(newName, wrapped);
      throw e;
    }
  }

  /** VeRA adapters on one shared pair, combined exactly where the sum is one VeRA adapter (vera/weighted.ts). */
  private addWeightedVera(names: readonly string[], weights: readonly number[], newName: string, opts: WeightedAdapterOptions): void {
    const configs = names.map((n) => this.configOf(n) as VeraConfig);
    checkVeraWeighted(configs, names, opts);
    const wrapped = this.add(newName, { ...configs[0], ignoredFields: [] } as VeraConfig);
    try {
      for (const [path, m] of this.model.namedModules()) {
        if (m instanceof VeraLinear && m.adapterNames().includes(newName)) combineVeraLayer(m, path, names, weights, newName);
      }
    } catch (e) {
      this.discardAdapter(newName, wrapped);
      throw e;
    }
  }

  /** PEFT's delete_adapter: refused while the adapter is merged; the last one may go too (the model then runs its base). */
  deleteAdapter(name: string): void {
    if (!this.peftConfig.has(name)) throw new VeraError(`Adapter ${name} does not exist`);
    const merged = this.adapterLayers().some((l) => l.mergedAdapters.includes(name));
    if (merged) throw new VeraError(`Cannot delete adapter(s) ['${name}'] while they are merged. Please unmerge them first.`);
    this.peftConfig.delete(name);
    this.frozen.delete(name);
    // each layer picks its next active adapter as PEFT's layers do; the model takes the first layer's
    let next: string[] | null = null;
    for (const layer of this.adapterLayers()) {
      layer.deleteAdapter(name);
      next ??= [...layer.activeAdapters];
    }
    this.active = next ?? [];
    if (this.active.length === 1) this.current = this.active[0];
    // modules_to_save follow the new active adapter where it has a copy
    const choice = new Map(this.modulesToSaveChoice);
    for (const [path, entry] of this.savedModules) {
      if (!entry.copies.delete(name) && choice.get(path) !== name) continue;
      const now = this.active[0];
      choice.set(path, now !== undefined && entry.copies.has(now) && this.active.length === 1 ? now : undefined);
    }
    this.applyState(choice);
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

  /** Set the active list on every layer (unmerging merged ones, as PEFT's set_adapter) and on modules_to_save. */
  private activate(names: string[], inferenceMode = false): void {
    const modules = this.modulesToSaveFor(names);
    for (const layer of this.adapterLayers()) {
      if (layer.merged) layer.unmerge();
      layer.activeAdapters = [...names];
    }
    this.active = [...names];
    this.applyState(modules, inferenceMode);
  }

  /** Per modules_to_save path, the one active adapter with a copy there (PEFT refuses two). */
  private modulesToSaveFor(names: readonly string[]): Map<string, string | undefined> {
    const out = new Map<string, string | undefined>();
    for (const [path, entry] of this.savedModules) {
      const withCopy = names.filter((n) => entry.copies.has(n));
      if (withCopy.length > 1) throw new VeraError(`Only one adapter can be set at a time for ModulesToSaveWrapper(${path}), got ${withCopy.length} (${withCopy.join(', ')})`);
      out.set(path, withCopy[0]);
    }
    return out;
  }

  private modulesToSaveChoice = new Map<string, string | undefined>();

  /** Push the disabled flag, the modules_to_save copies in use and trainability down. */
  private applyState(modules = this.modulesToSaveChoice, inferenceMode = false): void {
    this.modulesToSaveChoice = modules;
    for (const layer of this.adapterLayers()) layer.disabled = this.disabled;
    for (const [path, entry] of this.savedModules) {
      const m = this.model.getSubmodule(path);
      const name = modules.get(path);
      const copy = this.disabled || name === undefined ? undefined : entry.copies.get(name);
      for (const [p, original] of entry.original) {
        const use = copy?.get(p) ?? original;
        const dot = p.lastIndexOf('.');
        (dot < 0 ? m : m.getSubmodule(p.slice(0, dot))).setParameter(p.slice(dot + 1), use);
      }
    }
    this.applyTrainability(inferenceMode);
  }

  /** Only the active adapters' tensors train (and their modules_to_save copies and biases), unless disabled or frozen. */
  private applyTrainability(inferenceMode = false): void {
    const trains = (n: string): boolean => this.active.includes(n) && !this.disabled && !inferenceMode && !this.frozen.has(n);
    const adapterTensors = new Set<Tensor>();
    for (const layer of this.adapterLayers()) {
      for (const n of layer.adapterNames()) {
        for (const t of layer.trainableTensors(n)) {
          adapterTensors.add(t);
          t.requiresGrad = trains(n);
        }
      }
    }
    for (const entry of this.savedModules.values()) {
      for (const [n, copy] of entry.copies) {
        for (const t of copy.values()) {
          adapterTensors.add(t);
          t.requiresGrad = trains(n);
        }
      }
    }
    for (const [, t] of this.model.namedParameters()) if (!adapterTensors.has(t)) t.requiresGrad = false;
    for (const n of this.active) {
      const config = this.peftConfig.get(n);
      if (config && trains(n)) for (const [, t] of this.biasParameters(config)) t.requiresGrad = true;
    }
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

  /**
   * Fold adapters (default: the active ones) into the base weights; already merged ones are skipped.
   * All or nothing: every layer's merge is checked (with `safe`, for NaN/Inf) before any weight changes.
   */
  merge(names: readonly string[] = this.active, opts: { safe?: boolean } = {}): void {
    for (const n of names) if (!this.peftConfig.has(n)) throw new VeraError(`no adapter named '${n}'`);
    const layers: [string, AdapterLayer][] = [];
    for (const [path, m] of this.model.namedModules()) if (m instanceof AdapterLayer) layers.push([`${path}.weight`, m]);
    if (layers.length > 1) for (const [where, layer] of layers) layer.checkMerge(names, opts.safe ?? false, where);
    for (const [where, layer] of layers) layer.merge([...names], opts.safe ?? false, where);
  }

  /** PEFT's merge_adapter. */
  mergeAdapter(names?: readonly string[], opts: { safe?: boolean } = {}): void {
    this.merge(names, opts);
  }

  /** Take every merged adapter out of the base weights. */
  unmerge(): void {
    for (const layer of this.adapterLayers()) layer.unmerge();
  }

  /** PEFT's unmerge_adapter. */
  unmergeAdapter(): void {
    this.unmerge();
  }

  /** Merge adapters (default: the active ones) and return the plain base model (adapter layers removed). */
  mergeAndUnload(opts: { safe?: boolean; adapterNames?: readonly string[] } = {}): M {
    this.merge(opts.adapterNames ?? this.active, opts);
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

  /** PEFT's set_requires_grad: switch training of these adapters' tensors (and modules_to_save copies) on or off; what is active does not change. */
  setRequiresGrad(names: string | readonly string[], requiresGrad = true): void {
    const set = new Set(typeof names === 'string' ? [names] : names);
    for (const n of set) this.configOf(n);
    for (const layer of this.adapterLayers()) {
      for (const n of layer.adapterNames()) if (set.has(n)) for (const t of layer.trainableTensors(n)) t.requiresGrad = requiresGrad;
    }
    for (const entry of this.savedModules.values()) {
      for (const [n, copy] of entry.copies) if (set.has(n)) for (const t of copy.values()) t.requiresGrad = requiresGrad;
    }
  }

  /**
   * PEFT's get_base_model_state_dict: the base model's tensors under its own keys ("lin0.weight",
   * not "lin0.base_layer.weight"), without adapter tensors; modules_to_save give their originals.
   */
  getBaseModelStateDict(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    const adapterPaths = this.adapterLayers().length > 0 ? new Set([...this.model.namedModules()].filter(([, m]) => m instanceof AdapterLayer).map(([p]) => p)) : new Set<string>();
    for (const [key, t] of this.model.stateDict()) {
      const owner = [...adapterPaths].find((p) => key.startsWith(`${p}.`));
      let base = key;
      if (owner !== undefined) {
        if (!key.startsWith(`${owner}.base_layer.`)) continue; // an adapter's own tensor
        base = `${owner}.${key.slice(`${owner}.base_layer.`.length)}`;
      }
      out.set(base, t);
    }
    for (const [path, entry] of this.savedModules) for (const [p, t] of entry.original) out.set(`${path}.${p}`, t);
    return out;
  }

  /** PEFT's set_base_model_state_dict: copy `sd` (base keys, as getBaseModelStateDict gives them) into the base model. */
  setBaseModelStateDict(sd: ReadonlyMap<string, Tensor | Float32Array>, opts: { strict?: boolean } = {}): { missingKeys: string[]; unexpectedKeys: string[] } {
    const own = this.getBaseModelStateDict();
    const missingKeys = [...own.keys()].filter((k) => !sd.has(k));
    const unexpectedKeys = [...sd.keys()].filter((k) => !own.has(k));
    if ((opts.strict ?? true) && (missingKeys.length > 0 || unexpectedKeys.length > 0)) {
      throw new VeraError(`setBaseModelStateDict: ${missingKeys.length > 0 ? `missing ${missingKeys.join(', ')}` : ''}${missingKeys.length > 0 && unexpectedKeys.length > 0 ? '; ' : ''}${unexpectedKeys.length > 0 ? `unexpected ${unexpectedKeys.join(', ')}` : ''}`);
    }
    for (const [k, v] of sd) {
      const t = own.get(k);
      if (!t) continue;
      const data = v instanceof Tensor ? v.toFloat32Array() : v;
      if (data.length !== t.size) throw new VeraError(`setBaseModelStateDict: ${k} has ${data.length} values, the model needs ${t.size} (shape [${t.shape.join(', ')}])`);
      t.copyFrom(data);
    }
    for (const layer of this.adapterLayers()) layer.clearNormCache(); // W0 changed in place: DoRA's cached W0 terms go
    return { missingKeys, unexpectedKeys };
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
    writeDirAtomic(dir, this.adapterFiles(opts), opts.write);
  }

  /** The config an adapter is saved with (inference mode, saveProjection as asked). */
  private savedConfig(name: string, saveProjection: boolean | undefined): BasePeftConfig {
    let config: BasePeftConfig = { ...this.configOf(name), inferenceMode: true };
    if (saveProjection !== undefined) {
      if (!('saveProjection' in config)) throw new VeraError(`saveAdapter: saveProjection applies to VeRA adapters, not ${config.peftType}`);
      if (!saveProjection) this.method.checkRegenerable?.(this.model, config, name);
      config = { ...config, saveProjection } as BasePeftConfig;
    }
    return config;
  }

  /** The files saveAdapter writes, by name (to write them together with others in one atomic step). */
  adapterFiles(opts: Omit<SaveOptions, 'write'> = {}): Record<string, Uint8Array | string> {
    const name = opts.adapterName ?? this.activeAdapter;
    const config = this.savedConfig(name, opts.saveProjection);
    const dtype = adapterDtype(opts.dtype);
    const tensors: Record<string, TensorToWrite> = {};
    for (const [k, t] of this.adapterStateDict(name, config)) {
      const data = this.hostCopies?.get(t) ?? t.toFloat32Array();
      for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) throw new VeraError(`saveAdapter: ${k} contains NaN or Inf; refusing to save`);
      tensors[k] = { data, shape: [...t.shape], dtype };
    }
    return {
      [ADAPTER_CONFIG]: sortedJson(this.method.configToJson(config)),
      [ADAPTER_WEIGHTS]: serializeSafetensors(tensors, { format: 'pt' }),
    };
  }

  /**
   * PEFT's save_pretrained: every adapter (or those in `selectedAdapters`), the one named "default"
   * in `dir` and each other one in `dir/<name>`.
   */
  savePretrained(dir: string, opts: Omit<SaveOptions, 'adapterName'> & { selectedAdapters?: readonly string[] } = {}): void {
    const names = opts.selectedAdapters ?? [...this.peftConfig.keys()];
    for (const n of names) this.configOf(n);
    for (const name of names) this.saveAdapter(name === 'default' ? dir : path.join(dir, name), { ...opts, adapterName: name });
    const card = path.join(dir, 'README.md');
    writeFileAtomic(card, modelCard(fs.existsSync(card) ? fs.readFileSync(card, 'utf8') : null, names.map((n) => this.configOf(n))));
  }

  /**
   * The files `savePretrained` writes into a new folder, as bytes by relative path
   * ('adapter_config.json', 'adapter_model.safetensors', 'README.md', '<name>/adapter_config.json',
   * …): the same bytes, without a file system (a page offers them as downloads or uploads them).
   */
  saveToBytes(opts: Omit<SaveOptions, 'adapterName' | 'write'> & { selectedAdapters?: readonly string[] } = {}): Record<string, Uint8Array> {
    const names = opts.selectedAdapters ?? [...this.peftConfig.keys()];
    for (const n of names) this.configOf(n);
    const out: Record<string, Uint8Array> = {};
    const utf8 = new TextEncoder();
    for (const name of names) {
      for (const [file, data] of Object.entries(this.adapterFiles({ ...opts, adapterName: name }))) {
        out[name === 'default' ? file : `${name}/${file}`] = typeof data === 'string' ? utf8.encode(data) : data;
      }
    }
    out['README.md'] = utf8.encode(modelCard(null, names.map((n) => this.configOf(n))));
    return out;
  }

  /**
   * `saveToBytes` where reads are asynchronous (WebGPU, whose synchronous read throws): the saved
   * tensors are read with `dataAsync` first. The same bytes.
   */
  async saveToBytesAsync(opts: Omit<SaveOptions, 'adapterName' | 'write'> & { selectedAdapters?: readonly string[] } = {}): Promise<Record<string, Uint8Array>> {
    const host = new Map<Tensor, Float32Array>();
    for (const name of opts.selectedAdapters ?? [...this.peftConfig.keys()]) {
      for (const t of this.adapterStateDict(name, this.savedConfig(name, opts.saveProjection)).values()) host.set(t, await t.dataAsync());
    }
    this.hostCopies = host;
    try {
      return this.saveToBytes(opts);
    } finally {
      this.hostCopies = null;
    }
  }

  /** `saveToBytes` as one Blob per file (for a download link or a FormData upload). */
  saveToBlobs(opts: Omit<SaveOptions, 'adapterName' | 'write'> & { selectedAdapters?: readonly string[] } = {}): Record<string, Blob> {
    return filesToBlobs(this.saveToBytes(opts));
  }

  /**
   * Load an adapter folder (ours or PEFT's) as a new adapter on this model; it does not become
   * active. Loaded for inference (the default) it stays frozen, and the model goes to eval mode.
   */
  loadAdapter(source: FileSource, opts?: LoadOptions): Promise<string>;
  loadAdapter(dir: string, opts?: LoadOptions): string;
  loadAdapter(dir: string | FileSource, opts: LoadOptions = {}): string | Promise<string> {
    if (isFileSource(dir)) return readAdapterFromSource(dir).then((read) => this.loadAdapterRead(read, opts));
    return this.loadAdapterRead(readAdapterFolder(dir), opts);
  }

  private loadAdapterRead({ config, tensors, file }: AdapterRead, opts: LoadOptions): string {
    const name = opts.adapterName ?? 'default';
    peftMethod(config.peftType).checkStoredSizes?.(config, tensors, file);
    const wrapped = this.add(name, { ...config, inferenceMode: !(opts.isTrainable ?? false) });
    try {
      loadInto(this, name, this.configOf(name), tensors, file, opts.allowNonFinite ?? false);
    } catch (e) {
      this.discardAdapter(name, wrapped);
      throw e;
    }
    if (!(opts.isTrainable ?? false)) this.model.eval();
    return name;
  }

  /** Remove a just-added adapter without a trace (its layers, copies, config). */
  private discardAdapter(name: string, newlyWrapped: string[]): void {
    this.removeAdapterLayers(name, newlyWrapped);
    for (const entry of this.savedModules.values()) entry.copies.delete(name);
    for (const [path, entry] of [...this.savedModules]) if (entry.copies.size === 0) this.savedModules.delete(path);
    this.peftConfig.delete(name);
    this.frozen.delete(name);
    this.activate(this.active.filter((n) => this.peftConfig.has(n)));
  }

  /** Put tensors (PEFT keys) into adapter `name`; used by loadAdapter and checkpoints. */
  loadAdapterTensors(name: string, tensors: AdapterTensors, file: string): void {
    loadInto(this, name, this.configOf(name), tensors, file, tensors.allowNonFinite ?? false);
  }

  /** PeftModel.from_pretrained(model, dir): wrap `model` with the adapter saved in `dir`. */
  static fromPretrained<M extends Module>(model: M, source: FileSource, opts?: LoadOptions): Promise<PeftModel<M>>;
  static fromPretrained<M extends Module>(model: M, dir: string, opts?: LoadOptions): PeftModel<M>;
  static fromPretrained<M extends Module>(model: M, dir: string | FileSource, opts: LoadOptions = {}): PeftModel<M> | Promise<PeftModel<M>> {
    if (isFileSource(dir)) return readAdapterFromSource(dir).then((read) => PeftModel.fromRead(model, read, opts));
    return PeftModel.fromRead(model, readAdapterFolder(dir), opts);
  }

  private static fromRead<M extends Module>(model: M, { config: saved, tensors, file }: AdapterRead, opts: LoadOptions): PeftModel<M> {
    const name = opts.adapterName ?? 'default';
    const config = opts.config ?? saved;
    config.inferenceMode = !(opts.isTrainable ?? false);
    peftMethod(config.peftType).checkStoredSizes?.(config, tensors, file);
    const peft = new PeftModel(model, config, name);
    try {
      loadInto(peft, name, peft.configOf(name), tensors, file, opts.allowNonFinite ?? false);
    } catch (e) {
      peft.unload(); // leave the model as it was given
      throw e;
    }
    if (!(opts.isTrainable ?? false)) model.eval(); // as PEFT's load_adapter: an inference model runs without dropout
    return peft;
  }
}

/**
 * README.md beside saved adapters, as PEFT's create_or_update_model_card: YAML front matter with
 * `library_name: peft` and the methods as tags (PEFT adds base_model only from a transformers
 * model's own config, which these models do not carry); an existing card keeps its text and fields.
 */
function modelCard(existing: string | null, configs: readonly BasePeftConfig[]): string {
  const fields = new Map<string, string>([['library_name', 'peft']]);
  const tags = [...new Set(configs.map((c) => c.peftType.toLowerCase()))].sort();
  fields.set('tags', `[${tags.map((t) => JSON.stringify(t)).join(', ')}]`);
  let front: string[] = [];
  let body = '\n# Adapter\n\nAdapter weights saved by vera in the PEFT layout (adapter_config.json, adapter_model.safetensors).\n\n### Framework versions\n\n- vera 0.1.0\n';
  const m = existing === null ? null : /^---\n([\s\S]*?)\n---\n?([\s\S]*)$/.exec(existing);
  if (m) {
    front = m[1].split('\n').filter((l) => !fields.has(l.split(':')[0].trim()) || l.startsWith(' '));
    body = m[2];
  } else if (existing !== null) body = existing;
  const lines = [...front, ...[...fields].map(([k, v]) => `${k}: ${v}`)];
  return `---\n${lines.join('\n')}\n---\n${body.startsWith('\n') ? '' : '\n'}${body}`;
}

/** PEFT's tuner class name for messages ("VeraModel"). */
function tunerName(m: PeftMethod): string {
  return `${m.peftType[0]}${m.peftType.slice(1).toLowerCase()}Model`;
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

/** An adapter folder as read: its config, its tensors, and the two files' names for messages. */
export interface AdapterRead {
  config: BasePeftConfig;
  tensors: AdapterTensors;
  file: string;
  configFile: string;
}

/** readAdapterFolder for a FileSource (a URL, a page's files): both files are read whole. */
export async function readAdapterFromSource(source: FileSource): Promise<AdapterRead> {
  const configPath = sourcePath(source, ADAPTER_CONFIG);
  const weightsPath = sourcePath(source, ADAPTER_WEIGHTS);
  const json = await readJson(source, ADAPTER_CONFIG, 'adapter config');
  if (json === null) throw new VeraError(`${configPath}: not found (is ${source.label} an adapter folder?)`);
  const config = parsePeftConfig(json, configPath);
  const st = SafetensorsFile.fromBytes(await readRequired(source, ADAPTER_WEIGHTS, 'adapter weights'), weightsPath);
  checkAdapterFitsMemory(st, weightsPath);
  return { config, tensors: adapterTensors(st), file: weightsPath, configFile: configPath };
}

/** A PEFT adapter folder: its parsed config and its tensors (`file`: the weights' path, `configFile`: the config's). */
export function readAdapterFolder(dir: string): AdapterRead {
  const configPath = path.join(dir, ADAPTER_CONFIG);
  const weightsPath = path.join(dir, ADAPTER_WEIGHTS);
  if (!fs.existsSync(configPath)) throw new VeraError(`${configPath}: not found (is ${dir} an adapter folder?)`);
  const config = parsePeftConfig(readJsonFile(configPath, 'adapter config'), configPath);
  if (!fs.existsSync(weightsPath)) throw new VeraError(`${weightsPath}: not found`);
  const st = SafetensorsFile.open(weightsPath);
  checkAdapterFitsMemory(st, weightsPath);
  return { config, tensors: adapterTensors(st), file: weightsPath, configFile: configPath };
}

const gb = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(1)} GB`;

/**
 * Refuse, from the headers alone, an adapter file whose tensors cannot be read: one larger than a
 * buffer can hold, or all of them (as float32) more than the memory available. A header may declare
 * a 1e12-element tensor in a sparse file; reading it would end in a RangeError or the OOM killer.
 */
export function checkAdapterFitsMemory(st: SafetensorsFile, file: string, available = availableMemory()): void {
  let total = 0;
  for (const key of st.keys()) {
    const n = st.info(key).shape.reduce((a, b) => a * b, 1);
    if (n * 4 > maxBufferBytes()) throw new VeraError(`${file}: tensor ${key} declares ${n} values (${gb(n * 4)} as float32), more than one buffer can hold`);
    total += n;
  }
  if (total * 4 > available) throw new VeraError(`${file}: its tensors need about ${gb(total * 4)} in memory (${total} float32 values), more than the ${gb(available)} available`);
}

/** A safetensors file as the tensors an adapter loads from. */
export function adapterTensors(st: SafetensorsFile): AdapterTensors {
  return {
    has: (k) => st.has(k),
    shape: (k) => st.info(k).shape,
    get: (k) => st.getFloat32(k),
    keys: () => st.keys(),
  };
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

function loadInto(peft: PeftModel, name: string, config: BasePeftConfig, tensors: AdapterTensors, file: string, allowNonFinite = false): void {
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
    allowNonFinite,
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
    if (!allowNonFinite) assertFinite(data, file, key);
    t.copyFrom(data);
  }
  for (const k of tensors.keys()) {
    if (!used.has(k)) throw new VeraError(`${file}: tensor ${k} matches no adapted module of this model (adapter made for a different model?)`);
  }
}
