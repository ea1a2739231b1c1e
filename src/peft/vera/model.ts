// VeRA as a PEFT method: size and generate the shared projections, wrap the targeted layers,
// and map adapters to and from PEFT's saved keys.
import { VeraError } from '../../io/errors.js';
import { Rng, Tensor } from '../../tensor/index.js';
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

/** The shared pair for one adapter, exactly as PEFT makes it from projection_prng_key. */
export function generateProjections(r: number, maxIn: number, maxOut: number, key: number, init: ProjectionInit = 'kaiming_uniform', rng = new Rng(key)): VeraProjections {
  const A = initMatrix(r, maxIn, init, rng);
  const B = initMatrix(maxOut, r, init, rng);
  return { A, B };
}

function baseOf(layer: Linear | AdapterLayer): Linear {
  return layer instanceof AdapterLayer ? layer.base_layer : layer;
}

const veraLayers = (model: Module, name: string): [string, VeraLinear][] => layersWithAdapter(model, name, VeraLinear);

export const vera: PeftMethod<VeraConfig> = {
  peftType: 'VERA',
  parseConfig: parseVeraConfig,
  configToJson: veraConfigToJson,

  inject(model, targets, config, name) {
    let maxIn = 0;
    let maxOut = 0;
    for (const [, layer] of targets) {
      maxIn = Math.max(maxIn, baseOf(layer).inFeatures);
      maxOut = Math.max(maxOut, baseOf(layer).outFeatures);
    }
    const rng = new Rng(config.projectionPrngKey);
    const shared = config.uniqueProjections ? null : generateProjections(config.r, maxIn, maxOut, config.projectionPrngKey, config.projectionInit, rng);
    const onlyD = config.ablation === 'only_d';
    const onlyB = config.ablation === 'only_b';
    for (const [, wrapper] of wrapTargets(model, targets, VeraLinear)) {
      const base = wrapper.base_layer;
      const projections = shared ?? generateProjections(config.r, base.inFeatures, base.outFeatures, config.projectionPrngKey, config.projectionInit, rng);
      wrapper.addAdapter(name, projections, {
        dInitial: onlyB ? 1 : config.dInitial,
        bInitial: onlyD ? 1 : 0,
        dropout: config.veraDropout,
        trainD: !onlyB,
        trainB: !onlyD,
      });
      if (!config.initWeights) {
        const a = wrapper.adapter(name);
        a.lambdaD.copyFrom(rng.fillNormal(new Float32Array(config.r)));
        a.lambdaB.copyFrom(new Float32Array(base.outFeatures).fill(1));
      }
    }
  },

  stateDict(model, config, name) {
    const sd: AdapterStateDict = { layers: new Map(), shared: new Map() };
    const layers = veraLayers(model, name);
    for (const [path, layer] of layers) {
      const a = layer.adapter(name);
      sd.layers.set(`${path}.vera_lambda_b`, a.lambdaB);
      sd.layers.set(`${path}.vera_lambda_d`, a.lambdaD);
      if (config.saveProjection && config.uniqueProjections) {
        sd.layers.set(`${path}.vera_A`, a.projections.A);
        sd.layers.set(`${path}.vera_B`, a.projections.B);
      }
    }
    if (config.saveProjection && !config.uniqueProjections && layers.length > 0) {
      const p = layers[0][1].adapter(name).projections;
      sd.shared.set('vera_A', p.A);
      sd.shared.set('vera_B', p.B);
    }
    return sd;
  },

  checkRegenerable(model, config, name) {
    // regenerate as inject does (same targets, same order, same generator stream) and compare bits
    const layers = veraLayers(model, name);
    if (layers.length === 0) return;
    const maxIn = Math.max(...layers.map(([, l]) => l.inFeatures));
    const maxOut = Math.max(...layers.map(([, l]) => l.outFeatures));
    const rng = new Rng(config.projectionPrngKey);
    const shared = config.uniqueProjections ? null : generateProjections(config.r, maxIn, maxOut, config.projectionPrngKey, config.projectionInit, rng);
    for (const [path, layer] of layers) {
      const held = layer.adapter(name).projections;
      const fresh = shared ?? generateProjections(config.r, layer.inFeatures, layer.outFeatures, config.projectionPrngKey, config.projectionInit, rng);
      if (!shared && !config.initWeights) rng.fillNormal(new Float32Array(config.r)); // inject drew λd here
      for (const [which, a, b] of [['vera_A', held.A, fresh.A], ['vera_B', held.B, fresh.B]] as const) {
        const x = a.data();
        const y = b.data();
        if (x.length !== y.length || x.some((v, i) => !Object.is(v, y[i]))) {
          throw new VeraError(`${which} of ${path} is not what projection_prng_key ${config.projectionPrngKey} regenerates; keep save_projection true for this adapter`);
        }
      }
      if (shared) break;
    }
  },

  loadStateDict(model, config, name, tensors, file) {
    const layers = veraLayers(model, name);
    const loadProjection = (key: string, target: Tensor): void => {
      // PEFT writes vera_A/vera_B when save_projection is true; otherwise they are regenerated from
      // the seed, and PEFT ignores stored ones (they are non-persistent buffers then): so do we
      if (!tensors.has(key)) {
        if (config.saveProjection) throw new VeraError(`${file}: missing ${key} although adapter_config.json says save_projection: true`);
        return;
      }
      if (!config.saveProjection) {
        tensors.get(key); // accounted for, not used
        return;
      }
      target.copyFrom(expectShape(tensors, key, target.shape, file, 'VeRA projection (r, max in) / (max out, r) over the targeted layers'));
    };
    if (!config.uniqueProjections && layers.length > 0) {
      const p = layers[0][1].adapter(name).projections;
      loadProjection('base_model.vera_A', p.A);
      loadProjection('base_model.vera_B', p.B);
    }
    for (const [path, layer] of layers) {
      const a = layer.adapter(name);
      const key = `base_model.model.${path}`;
      a.lambdaB.copyFrom(expectShape(tensors, `${key}.vera_lambda_b`, [layer.outFeatures], file, `out_features of ${path}`));
      a.lambdaD.copyFrom(expectShape(tensors, `${key}.vera_lambda_d`, [config.r], file, 'r'));
      if (config.uniqueProjections) {
        loadProjection(`${key}.vera_A`, a.projections.A);
        loadProjection(`${key}.vera_B`, a.projections.B);
      }
    }
  },
};

export type { AdapterTensors };
