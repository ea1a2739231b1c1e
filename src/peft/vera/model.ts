// VeRA as a PEFT method: size and generate the shared projections, wrap the targeted layers,
// and map adapters to and from PEFT's saved keys.
import { VeraError } from '../../io/errors.js';
import { Rng, Tensor, checkAllocation, defaultRng } from '../../tensor/index.js';
import type { Linear, Module } from '../../nn/index.js';
import { AdapterLayer, expectShape, layersWithAdapter, wrapTargets, type AdapterStateDict, type AdapterTensors, type PeftMethod } from '../tuner.js';
import { parseVeraConfig, veraConfigToJson, type ProjectionInit, type VeraConfig } from './config.js';
import { VeraLinear, type VeraProjections } from './layer.js';

/**
 * PEFT's _kaiming_init bound for fan_in `fan`, evaluated in the same order as its Python
 * (gain √2, std = gain/√fan, bound = √3·std), then rounded to the float32 torch's uniform_ uses.
 */
export function kaimingBound(fan: number): number {
  return Math.fround(Math.sqrt(3) * (Math.SQRT2 / Math.sqrt(fan)));
}

/**
 * Fill an (rows, cols) matrix as PEFT's _kaiming_init does: fan_in = cols, drawn with torch's
 * float32 uniform_ from the generator's stream (A first, then B).
 */
function initMatrix(rows: number, cols: number, init: ProjectionInit, rng: Rng): Tensor {
  checkAllocation(rows * cols); // before the host array: r comes from a file
  const data = new Float32Array(rows * cols);
  if (init === 'kaiming_uniform') {
    const bound = kaimingBound(cols);
    rng.fillUniform(data, -bound, bound);
  } else if (init === 'kaiming_normal') {
    rng.fillNormal(data, 0, Math.sqrt(2 / cols));
  } else {
    rng.fillUniform(data, 0, 0.1); // the paper's "uniform [0, 0.1]" ablation
  }
  return new Tensor(Tensor.fromArray(data).storage, [rows, cols]);
}

/** The shared pair as PEFT makes it from projection_prng_key: A (r, maxIn), then B (maxOut, r), from one generator. */
export function generateProjections(r: number, maxIn: number, maxOut: number, key: number | bigint, init: ProjectionInit = 'kaiming_uniform', rng = new Rng(key)): VeraProjections {
  const A = initMatrix(r, maxIn, init, rng);
  const B = initMatrix(maxOut, r, init, rng);
  return { A, B };
}

function baseOf(layer: Linear | AdapterLayer): Linear {
  return layer instanceof AdapterLayer ? layer.base_layer : layer;
}

const veraLayers = (model: Module, name: string): [string, VeraLinear][] => layersWithAdapter(model, name, VeraLinear);

/**
 * The one vera_A / vera_B pair every VeRA adapter on `model` computes with (PEFT's
 * `model.vera_A[name]`, the same tensors for every name), or null before the first adapter. It is
 * made by the first adapter, sized by that adapter's targets, and kept while any adapter uses it.
 */
export function sharedProjections(model: Module): VeraProjections | null {
  for (const [, m] of model.namedModules()) {
    if (!(m instanceof VeraLinear)) continue;
    for (const name of m.adapterNames()) {
      const a = m.adapter(name);
      if (a.shared) return a.projections;
    }
  }
  return null;
}

const keyText = (k: number | bigint): string => BigInt(k).toString();

/** The largest (in, out) over the layers, as PEFT's _find_dim sizes the pair. */
export function largestShape(layers: Iterable<{ inFeatures: number; outFeatures: number }>): [number, number] {
  let maxIn = 0;
  let maxOut = 0;
  for (const l of layers) {
    maxIn = Math.max(maxIn, l.inFeatures);
    maxOut = Math.max(maxOut, l.outFeatures);
  }
  return [maxIn, maxOut];
}

/** PEFT's update_layer checks: the shared pair must be at least as wide, tall and deep as this adapter needs. */
function checkFitsShared(p: VeraProjections, targets: [string, Linear | AdapterLayer][], r: number): void {
  const [rows, maxIn] = p.A.shape;
  const [maxOut, cols] = p.B.shape;
  const shapeHint = 'this probably happened because an additional VeRA adapter was added after the first one with incompatible shapes';
  const rankHint = 'this probably happened because an additional VeRA adapter with a lower rank was added after the first one; loading the adapters in reverse order may solve this';
  for (const [path, layer] of targets) {
    const base = baseOf(layer);
    if (maxIn < base.inFeatures) throw new VeraError(`vera_A has a size of ${maxIn} but ${base.inFeatures} or greater is required (${path}); ${shapeHint}`);
    if (maxOut < base.outFeatures) throw new VeraError(`vera_B has a size of ${maxOut} but ${base.outFeatures} or greater is required (${path}); ${shapeHint}`);
    if (rows < r) throw new VeraError(`vera_A has a size of ${rows} but ${r} or greater is required; ${rankHint}`);
    if (cols < r) throw new VeraError(`vera_B has a size of ${cols} but ${r} or greater is required; ${rankHint}`);
  }
}

export const vera: PeftMethod<VeraConfig> = {
  peftType: 'VERA',
  parseConfig: parseVeraConfig,
  configToJson: veraConfigToJson,

  checkNewAdapter(config, existing) {
    // PEFT's VeraModel._check_new_adapter_config: one key and one save_projection for all adapters
    for (const other of existing) {
      if (BigInt(other.projectionPrngKey) !== BigInt(config.projectionPrngKey)) {
        throw new VeraError(`Vera PRNG initialisation key must be the same for all adapters. Got config.projection_prng_key=${keyText(config.projectionPrngKey)} but previous config had ${keyText(other.projectionPrngKey)}.`);
      }
    }
    const values = [...new Set([...existing, config].map((c) => c.saveProjection))].sort();
    if (values.length > 1) {
      throw new VeraError(`VeRA projection weights must be saved for all adapters or none, but got multiple different values: [${values.map((v) => (v ? 'True' : 'False')).join(', ')}]`);
    }
  },

  inject(model, targets, config, name, sizing = targets) {
    const existing = config.uniqueProjections ? null : sharedProjections(model);
    if (existing) checkFitsShared(existing, targets, config.r);
    const rng = new Rng(config.projectionPrngKey);
    let shared = existing;
    if (!shared && !config.uniqueProjections) {
      const [maxIn, maxOut] = largestShape(sizing.map(([, l]) => baseOf(l)));
      shared = generateProjections(config.r, maxIn, maxOut, config.projectionPrngKey, config.projectionInit, rng);
    }
    const onlyD = config.ablation === 'only_d';
    const onlyB = config.ablation === 'only_b';
    for (const [, wrapper] of wrapTargets(model, targets, VeraLinear)) {
      const base = wrapper.base_layer;
      const projections = shared ?? generateProjections(config.r, base.inFeatures, base.outFeatures, config.projectionPrngKey, config.projectionInit, rng);
      wrapper.addAdapter(name, projections, {
        r: config.r,
        shared: shared !== null,
        dInitial: onlyB ? 1 : config.dInitial,
        bInitial: onlyD ? 1 : 0,
        dropout: config.veraDropout,
        trainD: !onlyB,
        trainB: !onlyD,
        useDora: config.useDora,
      });
      if (!config.initWeights) {
        // PEFT's non-identity start: λd ~ N(0, 1) from the global generator (so two such adapters differ), λb = 1
        const a = wrapper.adapter(name);
        a.lambdaD.copyFrom(defaultRng().fillNormal(new Float32Array(config.r)));
        a.lambdaB.copyFrom(new Float32Array(base.outFeatures).fill(1));
      }
      if (config.useDora) wrapper.initMagnitude(name); // m = ‖W0 + ΔW‖ at the start, as DoRA
    }
  },

  stateDict(model, config, name) {
    const sd: AdapterStateDict = { layers: new Map(), shared: new Map() };
    const layers = veraLayers(model, name);
    for (const [path, layer] of layers) {
      const a = layer.adapter(name);
      sd.layers.set(`${path}.vera_lambda_b`, a.lambdaB);
      sd.layers.set(`${path}.vera_lambda_d`, a.lambdaD);
      // DVoRA: PEFT's naming pattern (<prefix>_magnitude_vector, no adapter name)
      if (a.magnitude) sd.layers.set(`${path}.vera_magnitude_vector`, a.magnitude);
      if (config.saveProjection && !a.shared) {
        sd.layers.set(`${path}.vera_A`, a.projections.A);
        sd.layers.set(`${path}.vera_B`, a.projections.B);
      }
    }
    const first = layers[0]?.[1].adapter(name);
    if (config.saveProjection && first?.shared) {
      // the model's shared pair, as PEFT saves it for every adapter (sized by the model's first adapter)
      sd.shared.set('vera_A', first.projections.A);
      sd.shared.set('vera_B', first.projections.B);
    }
    return sd;
  },

  checkRegenerable(model, config, name) {
    // regenerate what this adapter alone would make from its key (same targets, same order, same
    // generator stream) and compare bits: a pair sized by another (first) adapter does not pass
    const layers = veraLayers(model, name);
    if (layers.length === 0) return;
    const rng = new Rng(config.projectionPrngKey);
    const unique = !layers[0][1].adapter(name).shared;
    const [maxIn, maxOut] = largestShape(layers.map(([, l]) => l));
    const shared = unique ? null : generateProjections(config.r, maxIn, maxOut, config.projectionPrngKey, config.projectionInit, rng);
    for (const [path, layer] of layers) {
      const held = layer.adapter(name).projections;
      const fresh = shared ?? generateProjections(config.r, layer.inFeatures, layer.outFeatures, config.projectionPrngKey, config.projectionInit, rng);
      for (const [which, a, b] of [['vera_A', held.A, fresh.A], ['vera_B', held.B, fresh.B]] as const) {
        const x = a.data();
        const y = b.data();
        if (a.shape.join() !== b.shape.join() || x.some((v, i) => !Object.is(v, y[i]))) {
          const why = unique ? `of ${path}` : `(shape [${a.shape.join(', ')}], shared by the model's adapters)`;
          throw new VeraError(`${which} ${why} is not what projection_prng_key ${keyText(config.projectionPrngKey)} regenerates for adapter '${name}''s own targets; keep save_projection true for this adapter`);
        }
      }
      if (shared) break;
    }
  },

  checkStoredSizes(config, tensors, file) {
    // λd is (r) and the stored projections (r, in) / (out, r): each must agree with the config's r
    for (const key of tensors.keys()) {
      const shape = tensors.shape(key);
      const at = key.endsWith('.vera_lambda_d') ? 0 : key.endsWith('vera_A') ? 0 : key.endsWith('vera_B') ? 1 : -1;
      if (at < 0) continue;
      const want = key.endsWith('.vera_lambda_d') ? 1 : 2;
      if (shape.length !== want || shape[at] !== config.r) {
        throw new VeraError(`${file}: ${key} has shape [${shape.join(', ')}], but adapter_config.json says r = ${config.r}`);
      }
    }
  },

  loadStateDict(model, config, name, tensors, file) {
    const layers = veraLayers(model, name);
    const loadProjection = (key: string, target: Tensor, why: string): void => {
      // PEFT writes vera_A/vera_B when save_projection is true, and loads them into the pair the
      // model holds (for a second adapter, the shared one: the shapes must be equal); otherwise
      // they are regenerated from the seed, and PEFT ignores stored ones: so do we
      if (!tensors.has(key)) {
        if (config.saveProjection) throw new VeraError(`${file}: missing ${key} although adapter_config.json says save_projection: true`);
        return;
      }
      if (!config.saveProjection) {
        tensors.get(key); // accounted for, not used
        return;
      }
      target.copyFrom(expectShape(tensors, key, target.shape, file, why));
    };
    const first = layers[0]?.[1].adapter(name);
    if (first?.shared) {
      const why = 'the VeRA projections this model\'s adapters share: (r, max in) / (max out, r) over the first adapter\'s targets';
      loadProjection('base_model.vera_A', first.projections.A, why);
      loadProjection('base_model.vera_B', first.projections.B, why);
    }
    for (const [path, layer] of layers) {
      const a = layer.adapter(name);
      const key = `base_model.model.${path}`;
      a.lambdaB.copyFrom(expectShape(tensors, `${key}.vera_lambda_b`, [layer.outFeatures], file, `out_features of ${path}`));
      a.lambdaD.copyFrom(expectShape(tensors, `${key}.vera_lambda_d`, [config.r], file, 'r'));
      if (a.magnitude) a.magnitude.copyFrom(expectShape(tensors, `${key}.vera_magnitude_vector`, [layer.outFeatures], file, `DVoRA magnitude (out_features) of ${path}; adapter_config.json says use_dora: true`));
      if (!a.shared) {
        loadProjection(`${key}.vera_A`, a.projections.A, 'VeRA projection (r, in) of this layer');
        loadProjection(`${key}.vera_B`, a.projections.B, 'VeRA projection (out, r) of this layer');
      }
    }
    // the projections may have changed in place: the norm's cached W0·Aₛᵀ must be recomputed
    for (const [, l] of model.namedModules()) if (l instanceof VeraLinear) l.clearNormCache();
  },
};

export type { AdapterTensors };
