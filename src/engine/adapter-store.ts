// Resident adapters for the inference engine. Every VeRA adapter on one base shares the engine's
// projection pair (one projection_prng_key, one r, one set of target layers), so an adapter is just
// its vectors: each adapted layer keeps two slabs, λd (slots × r) and λb (slots × out), and an
// adapter is a slot, the same in every layer. Slots live under a byte budget with least-recently-
// used eviction; adapters registered from a folder are read again from disk when needed; a VeRA
// adapter registered from bytes lives in its slot, and only an evicted one keeps its vectors aside. LoRA adapters (whose A and B differ per
// adapter) sit beside them under the same budget.
import { availableMemory } from '../io/node.js';
import { VeraError } from '../io/errors.js';
import { parseJsonExact } from '../io/json.js';
import { SafetensorsFile } from '../io/safetensors.js';
import { Tensor, kernels } from '../tensor/index.js';
import {
  ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapterTensors, allLinearTargets, defaultTargetModules, expectShape, generateProjections, isAllLinear, largestShape,
  isTargetModule, parsePeftConfig, readAdapterFolder, vera, type AdapterTensors, type BasePeftConfig, type LoraConfig, type VeraConfig,
} from '../peft/index.js';

/** A linear layer of the base model the engine may route adapters through. */
export interface LayerShape {
  inFeatures: number;
  outFeatures: number;
}

/** The shared VeRA setting of an engine: every VeRA adapter must have it. */
export interface VeraSpec {
  projectionPrngKey: number | bigint;
  r: number;
  /** Adapted layer paths (as in the base model). */
  targets: string[];
}

/** Where an adapter comes from: a PEFT folder, or its two files' contents. */
export type AdapterSource = string | { config: unknown; weights: Uint8Array };

interface LoraLayerWeights {
  A: Tensor; // (r, in)
  B: Tensor; // (out, r)
  scaling: number;
}

interface Entry {
  name: string;
  method: 'VERA' | 'LORA';
  /** What to read again after an eviction: the folder, or a LoRA adapter's bytes; null for VeRA bytes (`cold` holds them). */
  reload: AdapterSource | null;
  /** VeRA from bytes while evicted: per target layer, λd and λb (null while resident: the slabs hold them). */
  cold: Map<string, { d: Float32Array; b: Float32Array }> | null;
  /** VeRA: resident slot, or -1. */
  slot: number;
  /** LoRA: resident weights per layer, or null. */
  lora: Map<string, LoraLayerWeights> | null;
  /** Requests using it now: it is not evicted while > 0. */
  pins: number;
  lastUse: number;
  /** Replaced or removed while pinned: freed when the last pin goes. */
  retired: boolean;
  bytes: number;
}

export interface AdapterStoreOptions {
  /** Bytes of resident adapter weights (slabs and LoRA matrices) before least-recently-used ones are evicted. */
  maxBytes?: number;
}

export interface AdapterStoreStats {
  registered: number;
  resident: number;
  residentBytes: number;
  /** Resident bytes one VeRA adapter takes: Σ over the adapted layers of (r + out) float32 values. */
  veraBytesPerAdapter: number;
  slabCapacity: number;
}

/** A handle on a resident adapter for one request: its VeRA slot or LoRA weights. */
export interface AdapterLease {
  name: string;
  method: 'VERA' | 'LORA';
  slot: number;
  lora: ReadonlyMap<string, LoraLayerWeights> | null;
}

/** The model facts the store checks adapters against (taken before the engine wraps any layer). */
export interface BaseModelInfo {
  modelType: string | null;
  /** Linear layers by path, in module order. */
  layers: ReadonlyMap<string, LayerShape>;
  /** What all-linear leaves out (the LM head). */
  outputLayer: string | null;
}

export class AdapterStore {
  private readonly entries = new Map<string, Entry>();
  private vera: { spec: VeraSpec; A: Tensor; B: Tensor; slabD: Map<string, Tensor>; slabB: Map<string, Tensor>; capacity: number; free: number[] } | null = null;
  private clock = 0;
  private readonly maxBytes: number;

  constructor(
    private readonly base: BaseModelInfo,
    opts: AdapterStoreOptions = {},
  ) {
    this.maxBytes = opts.maxBytes ?? 1 << 30;
    if (!(this.maxBytes > 0)) throw new VeraError(`maxAdapterBytes must be positive, got ${this.maxBytes}`);
  }

  /** The shared VeRA pair and slabs (null before the engine has a VeRA spec). */
  get veraState(): { spec: VeraSpec; A: Tensor; B: Tensor; slabD: ReadonlyMap<string, Tensor>; slabB: ReadonlyMap<string, Tensor> } | null {
    return this.vera;
  }

  /** Fix the engine's VeRA setting and make its projection pair (sized over the targets, as PEFT). */
  setVeraSpec(spec: VeraSpec): void {
    if (this.vera) throw new VeraError('the engine already has its VeRA setting');
    if (spec.targets.length === 0) throw new VeraError('vera: no target layers');
    const missing = spec.targets.find((t) => !this.base.layers.has(t));
    if (missing !== undefined) throw new VeraError(`vera: target ${missing} is not a linear layer of the model`);
    const [maxIn, maxOut] = largestShape(spec.targets.map((t) => this.base.layers.get(t)!));
    // r comes from an adapter's config: refuse a pair no memory holds before generating it
    const bytes = 4 * spec.r * (maxIn + maxOut + 4 * spec.targets.length);
    const available = availableMemory();
    if (!(bytes <= available)) throw new VeraError(`vera: r ${spec.r} needs about ${(bytes / 2 ** 30).toFixed(1)} GB for the shared projections, more than the ${(available / 2 ** 30).toFixed(1)} GB available`);
    const { A, B } = generateProjections(spec.r, maxIn, maxOut, spec.projectionPrngKey);
    const slabD = new Map<string, Tensor>();
    const slabB = new Map<string, Tensor>();
    const capacity = 4;
    for (const t of spec.targets) {
      slabD.set(t, Tensor.zeros([capacity, spec.r]));
      slabB.set(t, Tensor.zeros([capacity, this.base.layers.get(t)!.outFeatures]));
    }
    this.vera = { spec: { ...spec, targets: [...spec.targets] }, A, B, slabD, slabB, capacity, free: [3, 2, 1, 0] };
  }

  /** The layers `config` adapts, resolved as PEFT does (defaults, all-linear, the matching rules). */
  resolveTargets(config: BasePeftConfig): string[] {
    let targets = config.targetModules;
    const paths = [...this.base.layers.keys()];
    if (targets === null) targets = defaultTargetModules(config.peftType, this.base.modelType);
    else if (isAllLinear(targets)) targets = allLinearTargets(paths, this.base.outputLayer, config.taskType);
    const resolved = { ...config, targetModules: targets };
    return paths.filter((p) => isTargetModule(resolved, p));
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  /**
   * Register (or replace) adapter `name`: read and check it now (a bad one is refused with one line
   * and changes nothing); it becomes resident when the budget allows, else when first used. A
   * replaced adapter keeps serving the requests already using it.
   */
  add(name: string, source: AdapterSource): { method: 'VERA' | 'LORA'; targets: string[] } {
    if (name === '' || /[\u0000-\u001f]/.test(name)) throw new VeraError(`adapter name ${JSON.stringify(name)} is not valid`);
    const parsed = this.read(name, source);
    // a VeRA adapter from bytes needs the bytes no more: its vectors are all it is
    const vectorsOnly = parsed.method === 'VERA' && typeof source !== 'string';
    const entry: Entry = { name, method: parsed.method, reload: vectorsOnly ? null : source, cold: vectorsOnly ? parsed.vectors : null, slot: -1, lora: null, pins: 0, lastUse: ++this.clock, retired: false, bytes: parsed.bytes };
    const old = this.entries.get(name);
    if (old) this.retire(old);
    this.entries.set(name, entry);
    // resident now if that needs no eviction: the first use pays nothing
    if (this.resident + entry.bytes <= this.maxBytes) this.makeResident(entry, parsed);
    return { method: parsed.method, targets: parsed.method === 'LORA' ? [...parsed.lora.keys()] : [...parsed.vectors.keys()] };
  }

  /** Read and check an adapter as `add` would, registering nothing: one line if it does not fit. */
  check(name: string, source: AdapterSource): 'VERA' | 'LORA' {
    return this.read(name, source).method;
  }

  /** Drop adapter `name`; requests already using it finish with it. */
  remove(name: string): void {
    const e = this.entries.get(name);
    if (!e) throw new VeraError(`no adapter named '${name}'`);
    this.entries.delete(name);
    this.retire(e);
  }

  /**
   * Pin adapter `name` for one request, loading it (and evicting least-recently-used unpinned
   * adapters) if needed; null when the budget is full of pinned adapters (try again later).
   */
  acquire(name: string): AdapterLease | null {
    const e = this.entries.get(name);
    if (!e) throw new VeraError(`no adapter named '${name}'`);
    if (!this.isResident(e)) {
      if (!this.makeRoom(e.bytes, e)) return null;
      this.makeResident(e, null);
    }
    e.pins++;
    e.lastUse = ++this.clock;
    const lease: AdapterLease = { name, method: e.method, slot: e.slot, lora: e.lora };
    this.leases.set(lease, e);
    return lease;
  }

  /** Unpin; a replaced or removed adapter goes once its last request is done. */
  release(lease: AdapterLease): void {
    const e = this.leases.get(lease);
    if (!e) return;
    this.leases.delete(lease);
    e.pins--;
    if (e.pins <= 0 && e.retired) this.evict(e);
  }

  stats(): AdapterStoreStats {
    const all = [...this.entries.values()];
    return {
      registered: all.length,
      resident: all.filter((e) => this.isResident(e)).length,
      residentBytes: this.resident,
      veraBytesPerAdapter: this.veraBytesPerAdapter(),
      slabCapacity: this.vera?.capacity ?? 0,
    };
  }

  // ---------------------------------------------------------------- internals

  private readonly retiredPinned: Entry[] = [];
  private readonly leases = new WeakMap<AdapterLease, Entry>();

  private retire(e: Entry): void {
    e.retired = true;
    if (e.pins > 0) this.retiredPinned.push(e);
    else this.evict(e);
  }

  private isResident(e: Entry): boolean {
    return e.method === 'VERA' ? e.slot >= 0 : e.lora !== null;
  }

  private veraBytesPerAdapter(): number {
    if (!this.vera) return 0;
    const { spec } = this.vera;
    return 4 * spec.targets.reduce((s, t) => s + spec.r + this.base.layers.get(t)!.outFeatures, 0);
  }

  /** Bytes of the resident adapters (retired ones still pinned included), kept as they come and go. */
  private resident = 0;


  /** Evict least-recently-used unpinned adapters until `bytes` more fit; false if they cannot. */
  private makeRoom(bytes: number, keep: Entry): boolean {
    if (bytes > this.maxBytes) throw new VeraError(`adapter '${keep.name}' takes ${bytes} bytes, more than the engine's whole adapter budget (${this.maxBytes})`);
    while (this.resident + bytes > this.maxBytes) {
      let victim: Entry | null = null;
      for (const e of this.entries.values()) {
        if (e !== keep && e.pins === 0 && this.isResident(e) && (victim === null || e.lastUse < victim.lastUse)) victim = e;
      }
      if (!victim) return false;
      this.evict(victim);
    }
    return true;
  }

  private evict(e: Entry): void {
    if (this.isResident(e)) this.resident -= e.bytes;
    if (e.method === 'VERA' && e.slot >= 0 && this.vera) {
      // an adapter registered from bytes has nowhere else to come back from: keep its vectors aside
      if (e.reload === null && !e.retired) e.cold = this.slotVectors(e.slot);
      this.vera.free.push(e.slot);
      e.slot = -1;
    }
    e.lora = null;
    const i = this.retiredPinned.indexOf(e);
    if (i >= 0) this.retiredPinned.splice(i, 1);
  }

  private makeResident(e: Entry, parsed: ParsedAdapter | null): void {
    const p = parsed ?? (e.cold ? { method: 'VERA' as const, vectors: e.cold, lora: null, bytes: e.bytes } : this.read(e.name, e.reload!));
    this.resident += e.bytes;
    if (p.method === 'LORA') {
      e.lora = p.lora;
      return;
    }
    const v = this.vera!;
    if (v.free.length === 0) this.growSlabs();
    const slot = v.free.pop()!;
    const k = kernels();
    for (const t of v.spec.targets) {
      const vec = p.vectors.get(t);
      const out = this.base.layers.get(t)!.outFeatures;
      // a layer the adapter does not target gets λb = 0: it adds nothing there
      k.write(v.slabD.get(t)!.storage, vec?.d ?? new Float32Array(v.spec.r), slot * v.spec.r);
      k.write(v.slabB.get(t)!.storage, vec?.b ?? new Float32Array(out), slot * out);
    }
    e.slot = slot;
    e.cold = null; // the slabs hold the vectors now
  }

  /** A slot's vectors, copied out of the slabs. */
  private slotVectors(slot: number): Map<string, { d: Float32Array; b: Float32Array }> {
    const v = this.vera!;
    const out = new Map<string, { d: Float32Array; b: Float32Array }>();
    for (const t of v.spec.targets) {
      const width = this.base.layers.get(t)!.outFeatures;
      out.set(t, {
        d: v.slabD.get(t)!.data().slice(slot * v.spec.r, (slot + 1) * v.spec.r),
        b: v.slabB.get(t)!.data().slice(slot * width, (slot + 1) * width),
      });
    }
    return out;
  }

  /** Double the slabs (between steps: a running step holds the old tensors until it ends). */
  private growSlabs(): void {
    const v = this.vera!;
    const capacity = v.capacity * 2;
    const k = kernels();
    for (const map of [v.slabD, v.slabB]) {
      for (const [t, old] of map) {
        const grown = Tensor.zeros([capacity, old.shape[1]]);
        k.write(grown.storage, k.read(old.storage), 0);
        map.set(t, grown);
      }
    }
    for (let s = capacity - 1; s >= v.capacity; s--) v.free.unshift(s);
    v.capacity = capacity;
  }

  /** Read and check one adapter against the engine: one line naming the file and field on any problem. */
  private read(name: string, source: AdapterSource): ParsedAdapter {
    const { config, tensors, file, configFile } = openSource(name, source);
    if (config.modulesToSave !== null && config.modulesToSave.length > 0) throw new VeraError(`${configFile}: modules_to_save is set; the engine serves adapters of linear layers only`);
    // DoRA/DVoRA rescale each output row by m/‖W0 + ΔW‖, which the slabs and routed LoRA rows do not compute
    if ((config as { useDora?: boolean }).useDora) throw new VeraError(`${configFile}: use_dora is set; the engine serves plain VeRA and LoRA adapters (merge a DoRA/DVoRA adapter into the base with vera merge, or run it through PeftModel)`);
    // every key in the file must land somewhere (the tensor getters below note what they read)
    const used = new Set<string>();
    const tracked: AdapterTensors = { ...tensors, get: (k) => (used.add(k), tensors.get(k)) };
    let parsed: ParsedAdapter;
    if (config.peftType === 'VERA') parsed = this.readVera(config as VeraConfig, configFile, file, tracked);
    else if (config.peftType === 'LORA') parsed = this.readLora(config as LoraConfig, configFile, file, tracked);
    else throw new VeraError(`${configFile}: peft_type ${config.peftType} is not served by the engine`);
    for (const k of tensors.keys()) {
      if (used.has(k)) continue;
      if (k.endsWith('.bias')) throw new VeraError(`${file}: ${k}: the adapter trains biases (bias: ${config.bias}); the engine serves adapters that leave the base biases alone`);
      throw new VeraError(`${file}: tensor ${k} matches no layer the engine adapts`);
    }
    return parsed;
  }

  private readVera(config: VeraConfig, configFile: string, file: string, tensors: AdapterTensors): ParsedAdapter {
    if (config.ablation !== null || config.uniqueProjections || config.projectionInit !== 'kaiming_uniform') {
      throw new VeraError(`${configFile}: the paper's ablation fields are set; the engine serves adapters on the shared kaiming_uniform pair only`);
    }
    const targets = this.resolveTargets(config);
    if (targets.length === 0) throw new VeraError(`${configFile}: target_modules match no linear layer of the engine's model`);
    // r against the stored λd before a first adapter sizes (and generates) the shared projections
    vera.checkStoredSizes?.(config, tensors, file);
    if (!this.vera) this.setVeraSpec({ projectionPrngKey: config.projectionPrngKey, r: config.r, targets });
    const v = this.vera!;
    if (BigInt(config.projectionPrngKey) !== BigInt(v.spec.projectionPrngKey)) {
      throw new VeraError(`${configFile}: projection_prng_key ${BigInt(config.projectionPrngKey)} is not the engine's ${BigInt(v.spec.projectionPrngKey)} (every VeRA adapter of one base shares the projections made from one key)`);
    }
    if (config.r !== v.spec.r) throw new VeraError(`${configFile}: r ${config.r} is not the engine's ${v.spec.r} (the shared projections have one rank)`);
    const outside = targets.filter((t) => !v.spec.targets.includes(t));
    if (outside.length > 0) throw new VeraError(`${configFile}: target_modules reach ${outside[0]}, which the engine's VeRA setting does not adapt`);
    // the pair this adapter computes with is the one its own targets size: it must be the engine's
    const [maxIn, maxOut] = largestShape(targets.map((t) => this.base.layers.get(t)!));
    if (maxIn !== v.A.shape[1] || maxOut !== v.B.shape[0]) {
      throw new VeraError(`${configFile}: target_modules size its projections (${config.r}, ${maxIn}) / (${maxOut}, ${config.r}), not the engine's shared (${v.A.shape.join(', ')}) / (${v.B.shape.join(', ')}); it would compute with other A and B`);
    }
    if (config.saveProjection) {
      for (const [key, held] of [['base_model.vera_A', v.A], ['base_model.vera_B', v.B]] as const) {
        const stored = expectShape(tensors, key, held.shape, file);
        const mine = held.data();
        if (stored.some((x, i) => !Object.is(x, mine[i]))) throw new VeraError(`${file}: ${key} is not the pair projection_prng_key ${BigInt(config.projectionPrngKey)} makes; the engine computes every adapter with that one pair`);
      }
    }
    const vectors = new Map<string, { d: Float32Array; b: Float32Array }>();
    for (const t of targets) {
      const key = `base_model.model.${t}`;
      vectors.set(t, { d: expectShape(tensors, `${key}.vera_lambda_d`, [config.r], file), b: expectShape(tensors, `${key}.vera_lambda_b`, [this.base.layers.get(t)!.outFeatures], file) });
    }
    return { method: 'VERA', vectors, lora: null, bytes: this.veraBytesPerAdapter() };
  }

  private readLora(config: LoraConfig, configFile: string, file: string, tensors: AdapterTensors): ParsedAdapter {
    const targets = this.resolveTargets(config);
    if (targets.length === 0) throw new VeraError(`${configFile}: target_modules match no linear layer of the engine's model`);
    const scaling = config.useRslora ? config.loraAlpha / Math.sqrt(config.r) : config.loraAlpha / config.r;
    const lora = new Map<string, LoraLayerWeights>();
    let bytes = 0;
    const load = (key: string, shape: number[]): Tensor => {
      bytes += 4 * shape[0] * shape[1];
      return Tensor.fromArray(expectShape(tensors, key, shape, file), shape);
    };
    for (const t of targets) {
      const { inFeatures, outFeatures } = this.base.layers.get(t)!;
      const key = `base_model.model.${t}`;
      lora.set(t, { A: load(`${key}.lora_A.weight`, [config.r, inFeatures]), B: load(`${key}.lora_B.weight`, [outFeatures, config.r]), scaling });
    }
    return { method: 'LORA', vectors: new Map(), lora, bytes };
  }
}

type ParsedAdapter =
  | { method: 'VERA'; vectors: Map<string, { d: Float32Array; b: Float32Array }>; lora: null; bytes: number }
  | { method: 'LORA'; vectors: Map<string, { d: Float32Array; b: Float32Array }>; lora: Map<string, LoraLayerWeights>; bytes: number };

/** An adapter's config and tensors, from its PEFT folder or from its two files' contents. */
function openSource(name: string, source: AdapterSource): { config: BasePeftConfig; tensors: AdapterTensors; file: string; configFile: string } {
  if (typeof source === 'string') return readAdapterFolder(source);
  const configFile = `adapter '${name}' ${ADAPTER_CONFIG}`;
  const file = `adapter '${name}' ${ADAPTER_WEIGHTS}`;
  let json = source.config;
  if (typeof json === 'string') {
    try {
      json = parseJsonExact(json);
    } catch (e) {
      throw new VeraError(`${configFile}: invalid JSON: ${(e as Error).message}`);
    }
  }
  return { config: parsePeftConfig(json, configFile), tensors: adapterTensors(SafetensorsFile.fromBytes(source.weights, file)), file, configFile };
}
