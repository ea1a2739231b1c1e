// The machinery every PEFT method shares: a layer that wraps a frozen base Linear and carries
// named adapters, merging with a NaN/Inf guard, and the method interface the PeftModel drives.
import { writeStderr } from '../io/node.js';
import { VeraError } from '../io/errors.js';
import { F, Tensor, noGrad, quantize } from '../tensor/index.js';
import { Linear, Module } from '../nn/index.js';
import type { BasePeftConfig } from './config.js';
import { baseTimesRt, doraOutput, lowRankRowNorms, rowFactor, storedRowNorms, storedRowSquares } from './dora.js';

/** ΔW = L·R of one adapter, detached: L (out × k) carries every scale, R (k × in); `frozenR` when R never changes (VeRA's Aₛ). */
export interface LowRankFactors {
  L: Tensor;
  R: Tensor;
  frozenR: boolean;
}

/** Per-adapter terms of the DoRA norm that depend only on frozen tensors (W0; R when frozen). */
interface NormCache {
  weight: Tensor;
  w0Sq: Tensor;
  P: Tensor | null;
  G: Tensor | null;
}

/** A wrapped Linear (or Conv1D) carrying one or more adapters; `base_layer` is the frozen original. */
export abstract class AdapterLayer<A = unknown> extends Module {
  protected readonly adapters = new Map<string, A>();
  readonly base_layer: Linear;
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** The adapters this layer runs, summed in this order (PEFT's active_adapters); names it does not carry are skipped. */
  activeAdapters: string[] = [];
  mergedAdapters: string[] = [];
  disabled = false;

  constructor(base: Linear) {
    super();
    this.base_layer = this.addModule('base_layer', base);
    this.inFeatures = base.inFeatures;
    this.outFeatures = base.outFeatures;
  }

  /** The tensors adapter `name` trains (what the PeftModel unfreezes when it is active). */
  abstract trainableTensors(name: string): Tensor[];
  /** Names of the parameters adapter `name` registered on this layer. */
  protected abstract parameterNames(name: string): string[];

  adapter(name: string): A {
    const a = this.adapters.get(name);
    if (a === undefined) throw new Error(`${this.constructor.name} has no adapter '${name}'`);
    return a;
  }

  adapterNames(): string[] {
    return [...this.adapters.keys()];
  }

  /** Whether any adapter is folded into the base weight. */
  get merged(): boolean {
    return this.mergedAdapters.length > 0;
  }

  /**
   * Remove adapter `name` (PEFT's BaseTunerLayer.delete_adapter): if it was active, the other
   * active ones stay; if none is left, the alphabetically first adapter of this layer becomes active.
   */
  deleteAdapter(name: string): void {
    for (const p of this.parameterNames(name)) this.removeParameter(p);
    this.adapters.delete(name);
    this.normCache.delete(name);
    if (!this.activeAdapters.includes(name)) return;
    const rest = this.activeAdapters.filter((n) => n !== name);
    this.activeAdapters = rest.length > 0 ? rest : this.availableAdapterNames().sort().slice(0, 1);
  }

  /** The adapters this layer knows of (PEFT's _all_available_adapter_names): its own, and for VeRA those sharing its pair. */
  protected availableAdapterNames(): string[] {
    return this.adapterNames();
  }
  /** ΔW in the base weight's storage layout ((out, in), or (in, out) for fan-in-fan-out). */
  abstract deltaWeight(name: string): Tensor;
  /** The adapter's input: dropout(x) while training with p > 0, else x itself. */
  protected abstract dropInput(name: string, x: Tensor): Tensor;
  /** The adapter's low-rank branch on its (dropped) input: ΔW·xd. */
  protected abstract branch(name: string, xd: Tensor): Tensor;
  /** DoRA/DVoRA: the adapter's magnitude vector m (out); null for a plain adapter. */
  magnitude(name: string): Tensor | null {
    void name;
    return null;
  }
  /** ΔW's factors for the DoRA norm (only called for adapters with a magnitude). */
  protected lowRankFactors(name: string): LowRankFactors {
    throw new Error(`${this.constructor.name} has no low-rank factors for '${name}'`);
  }

  /** The adapter's contribution to the output for input x (plain adapters). */
  protected adapterForward(name: string, x: Tensor): Tensor {
    return this.branch(name, this.dropInput(name, x));
  }

  forward(x: Tensor): Tensor {
    if (this.disabled) {
      // merged weights must come out before the base alone can answer
      if (this.merged) this.unmerge();
      return this.base_layer.forward(x);
    }
    // as PEFT: once anything is merged the layer answers with its (merged) base weight alone
    if (this.merged) return this.base_layer.forward(x);
    let y = this.base_layer.forward(x);
    for (const name of this.activeAdapters) {
      if (!this.adapters.has(name)) continue;
      const m = this.magnitude(name);
      y = F.add(y, m === null ? this.adapterForward(name, x) : this.doraForward(name, x, y, m));
    }
    return y;
  }

  /**
   * PEFT's DoRA term (lora/dora.py, variants.py): (m/‖W0 + ΔW‖ − 1)·base + (m/‖W0 + ΔW‖)·ΔW·xd.
   * Without live dropout `base` is the running result minus the bias — as in PEFT, that includes
   * the outputs of active adapters summed before this one; with dropout live it is W0·dropout(x).
   */
  private doraForward(name: string, x: Tensor, running: Tensor, m: Tensor): Tensor {
    const xd = this.dropInput(name, x);
    const bias = this.base_layer.bias;
    const base = xd !== x ? F.linear(xd, this.base_layer.weight, null, this.base_layer.fanInFanOut) : bias ? F.sub(running, bias) : running;
    return doraOutput(base, this.branch(name, xd), m, this.doraNorm(name));
  }

  private normCache = new Map<string, NormCache>();

  /** Forget cached W0 terms of the DoRA norm (after W0 or a frozen projection changed in place). */
  clearNormCache(): void {
    this.normCache.clear();
  }

  /** ‖W0 + ΔW‖ per output row, detached, from ΔW's factors (dora.ts); W0's terms cached while W0 is unchanged. */
  doraNorm(name: string): Tensor {
    const q = this.base_layer.quantized;
    if (q) throw new VeraError(`use_dora: DoRA/DVoRA on a ${q.format} base is not supported (the row norms need W0 in float32); load the base with weights 'f32'`);
    return noGrad(() => {
      const w = this.base_layer.weight;
      const fio = this.base_layer.fanInFanOut;
      const { L, R, frozenR } = this.lowRankFactors(name);
      let c = this.normCache.get(name);
      if (!c || c.weight !== w) {
        c = { weight: w, w0Sq: storedRowSquares(w, fio), P: null, G: null };
        this.normCache.set(name, c);
      }
      const P = c.P ?? baseTimesRt(w, fio, R);
      const G = c.G ?? F.matmul(R, R, { transB: true });
      if (frozenR) {
        c.P = P;
        c.G = G;
      }
      return lowRankRowNorms(c.w0Sq, L, P, G);
    });
  }

  /** Set m to ‖W0 + ΔW‖ (PEFT's DoRA init: 1·(W0 + ΔW) at the start, whatever ΔW is). */
  initMagnitude(name: string): void {
    const m = this.magnitude(name);
    if (m) m.copyFrom(this.doraNorm(name).data());
  }

  /**
   * Fold adapters (default: the active ones this layer carries and has not merged yet) into the
   * base weight; returns the names merged. With `safe`, an adapter whose ΔW would put NaN/Inf into
   * the weight is refused before it touches it, and those this call merged before it come out again.
   */
  merge(names: string[] = this.activeAdapters, safe = false, where = `${this.constructor.name} weights`): string[] {
    const done: string[] = [];
    noGrad(() => {
      try {
        this.mergeEach(names, safe, done, where);
      } catch (e) {
        this.unmerge(done.length); // all or nothing
        throw e;
      }
    });
    return done;
  }

  /** Throw what merge(names, safe) would throw, changing nothing (so a model-wide merge can be all or nothing). */
  checkMerge(names: readonly string[], safe: boolean, where = `${this.constructor.name} weights`): void {
    noGrad(() => {
      for (const name of names) {
        if (this.mergedAdapters.includes(name) || !this.adapters.has(name)) continue;
        // only a safe merge needs the merged values; otherwise what can fail is checked cheaply
        const base = this.base_layer;
        if (safe) this.checkFinite(name, this.mergedWeight(name, base.quantized ? base.dequantizedWeight() : base.weight).weight, where);
        else this.assertMergeable(name);
      }
    });
  }

  /** Throw what deltaWeight(name) would throw, without computing it (default: nothing can). */
  protected assertMergeable(name: string): void {
    void name;
  }

  /** `where` names the weight in the message (the layer's path when the PeftModel merges). */
  private checkFinite(name: string, merged: Tensor, where: string): void {
    const data = merged.data();
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i])) throw new VeraError(`merge: adapter '${name}' would put NaN/Inf into ${where} (${data[i]} at index ${i}); refusing to merge`);
    }
  }

  private mergeEach(names: string[], safe: boolean, done: string[], where: string): void {
    for (const name of names) {
      if (this.mergedAdapters.includes(name) || !this.adapters.has(name)) continue;
      const base = this.base_layer;
      const { weight: merged, norm } = this.mergedWeight(name, base.quantized ? base.dequantizedWeight() : base.weight);
      if (safe) this.checkFinite(name, merged, where);
      if (base.quantized) requantize(base, merged);
      else base.weight.copyFrom(merged);
      if (norm) this.mergeNorms.set(name, norm);
      this.normCache.clear();
      this.mergedAdapters.push(name);
      done.push(name);
    }
  }

  /** Take merged adapters out of the base weight, last merged first (default: all). */
  unmerge(count = this.mergedAdapters.length): void {
    noGrad(() => {
      for (let i = 0; i < count && this.mergedAdapters.length > 0; i++) {
        const name = this.mergedAdapters.pop()!;
        const base = this.base_layer;
        const w = base.quantized ? base.dequantizedWeight() : base.weight;
        const norm = this.mergeNorms.get(name);
        const m = this.magnitude(name);
        this.mergeNorms.delete(name);
        this.normCache.clear();
        // DoRA: W0 = W' / (m / n) − ΔW with n the norm cached at merge time (PEFT's unmerge)
        const restored = m && norm ? F.sub(F.div(w, rowFactor(m, norm, base.fanInFanOut)), this.deltaWeight(name)) : F.sub(w, this.deltaWeight(name));
        if (base.quantized) requantize(base, restored);
        else base.weight.copyFrom(restored);
      }
    });
  }

  /** Norms of W0 + ΔW taken when a DoRA adapter was merged (unmerging needs them, as PEFT's cache). */
  private readonly mergeNorms = new Map<string, Tensor>();

  /**
   * The base weight with adapter `name` folded in, computed without changing anything: W0 + ΔW, or
   * for DoRA (m / ‖W0 + ΔW‖) ⊙ (W0 + ΔW) row-wise, with the norm taken (returned for unmerging).
   */
  protected mergedWeight(name: string, w: Tensor): { weight: Tensor; norm: Tensor | null } {
    const sum = F.add(w, this.deltaWeight(name));
    const m = this.magnitude(name);
    if (!m) return { weight: sum, norm: null };
    const fio = this.base_layer.fanInFanOut;
    const norm = storedRowNorms(sum, fio);
    return { weight: F.mul(sum, rowFactor(m, norm, fio)), norm };
  }
}

let warnedRounding = false;

/**
 * A merge into a quantized base: W0 (dequantized) ± ΔW is quantized again in the same format, which
 * rounds it; one line says so per process (as PEFT warns for 4/8-bit merges).
 */
function requantize(base: Linear, merged: Tensor): void {
  const q = base.quantized!;
  if (!warnedRounding) {
    warnedRounding = true;
    writeStderr(`vera: warning: merging into a ${q.format} base quantizes the merged weights again (dequantize, add ΔW, requantize); outputs may differ slightly from the unmerged model through rounding\n`);
  }
  base.setQuantized(quantize(merged.data(), base.outFeatures, base.inFeatures, q.format, { transposed: base.fanInFanOut, doubleQuant: q.nested !== null }));
}

/** The layers of class `cls` in `model` that carry adapter `name`, with their paths. */
export function layersWithAdapter<L extends AdapterLayer>(model: Module, name: string, cls: abstract new (...args: never[]) => L): [string, L][] {
  const out: [string, L][] = [];
  for (const [path, m] of model.namedModules()) if (m instanceof cls && m.adapterNames().includes(name)) out.push([path, m]);
  return out;
}

/** Wrap each target in `cls` (reusing an existing wrapper of that class); refuses other methods' layers. */
export function wrapTargets<L extends AdapterLayer>(model: Module, targets: [string, Linear | AdapterLayer][], cls: new (base: Linear) => L): [string, L][] {
  return targets.map(([path, layer]) => {
    if (layer instanceof cls) return [path, layer];
    if (layer instanceof AdapterLayer) throw new VeraError(`cannot add a ${cls.name} adapter to ${path}: it already carries a ${layer.constructor.name} adapter`);
    const wrapper = new cls(layer);
    model.setSubmodule(path, wrapper);
    return [path, wrapper];
  });
}

/** What a PEFT method (one folder under peft/) provides to the PeftModel. */
export interface PeftMethod<C extends BasePeftConfig = BasePeftConfig> {
  readonly peftType: string;
  parseConfig(json: unknown, file: string): C;
  configToJson(config: C): Record<string, unknown>;
  /**
   * Throw a VeraError if `config` cannot join the adapters already on the model (`existing`, in the
   * order they were added), with PEFT's _check_new_adapter_config rules for this method.
   */
  checkNewAdapter?(config: C, existing: readonly C[]): void;
  /**
   * Wrap the targeted layers of `model` (already matched) and create adapter `name` on them. Checks
   * that can fail run before anything is changed. `sizing`: the layers the config's own list names,
   * which size shared state (VeRA's pair) where PEFT's target condensing then matched others.
   */
  inject(model: Module, targets: [string, Linear | AdapterLayer][], config: C, name: string, sizing?: [string, Linear | AdapterLayer][]): void;
  /** The adapter's trainable tensors as PEFT saves them (keys without the "base_model.model." prefix for per-layer tensors). */
  stateDict(model: Module, config: C, name: string): AdapterStateDict;
  /** Load tensors saved by `stateDict` (or by PEFT) into adapter `name`; throw VeraError on mismatch. */
  loadStateDict(model: Module, config: C, name: string, tensors: AdapterTensors, file: string): void;
  /** Throw a VeraError unless the adapter's frozen tensors are what its config regenerates (before saving without them). */
  checkRegenerable?(model: Module, config: C, name: string): void;
  /**
   * Before anything is built for a saved adapter: throw a VeraError when the config's sizes
   * disagree with the stored tensors' shapes (headers only), so a config saying r: 1e9 is refused
   * before the layers and projections it describes are allocated.
   */
  checkStoredSizes?(config: C, tensors: AdapterTensors, file: string): void;
}

export interface AdapterStateDict {
  /** "<module path>.<param>" → tensor; saved as "base_model.model.<key>". */
  layers: Map<string, Tensor>;
  /** Saved as "base_model.<key>" (e.g. vera_A). */
  shared: Map<string, Tensor>;
}

export interface AdapterTensors {
  has(key: string): boolean;
  shape(key: string): readonly number[];
  get(key: string): Float32Array;
  keys(): string[];
  /** true: NaN/±Inf values load as they are (the caller asked for it); otherwise they are refused. */
  readonly allowNonFinite?: boolean;
}

/** Check a loaded tensor's shape; one-line error naming the file and key. */
export function expectShape(tensors: AdapterTensors, key: string, shape: readonly number[], file: string, why = ''): Float32Array {
  if (!tensors.has(key)) throw new VeraError(`${file}: missing tensor ${key}`);
  const got = tensors.shape(key);
  if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) {
    throw new VeraError(`${file}: ${key} has shape [${got.join(', ')}], the model needs [${shape.join(', ')}]${why ? ` (${why})` : ''}`);
  }
  const data = tensors.get(key);
  if (!tensors.allowNonFinite) assertFinite(data, file, key);
  return data;
}

/** One line naming the tensor and its first non-finite value, so a poisoned file is found at load, not as a NaN result. */
export function assertFinite(data: Float32Array, file: string, key: string, hint = ''): void {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) throw new VeraError(`${file}: ${key} contains NaN or Inf (${data[i]} at index ${i})${hint}`);
  }
}
