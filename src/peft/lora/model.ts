// LoRA as a PEFT method: wrap the targeted layers, map adapters to PEFT's lora_A/lora_B keys.
import { defaultRng } from '../../tensor/index.js';
import { VeraError } from '../../io/errors.js';
import type { Module } from '../../nn/index.js';
import { expectShape, layersWithAdapter, wrapTargets, type AdapterStateDict, type PeftMethod } from '../tuner.js';
import { loraConfigToJson, parseLoraConfig, type LoraConfig } from './config.js';
import { LoraLinear } from './layer.js';

const loraLayers = (model: Module, name: string): [string, LoraLinear][] => layersWithAdapter(model, name, LoraLinear);

export const lora: PeftMethod<LoraConfig> = {
  peftType: 'LORA',
  parseConfig: parseLoraConfig,
  configToJson: loraConfigToJson,

  inject(model, targets, config, name) {
    const scaling = config.useRslora ? config.loraAlpha / Math.sqrt(config.r) : config.loraAlpha / config.r;
    const rng = defaultRng(); // seeded by manualSeed, so runs reproduce
    for (const [, wrapper] of wrapTargets(model, targets, LoraLinear)) {
      wrapper.addAdapter(name, config.r, scaling, config.loraDropout, config.initLoraWeights !== false, rng, config.useDora);
    }
  },

  stateDict(model, _config, name) {
    const sd: AdapterStateDict = { layers: new Map(), shared: new Map() };
    for (const [path, layer] of loraLayers(model, name)) {
      const a = layer.adapter(name);
      sd.layers.set(`${path}.lora_A.weight`, a.A);
      sd.layers.set(`${path}.lora_B.weight`, a.B);
      // PEFT saves DoRA's magnitude without the adapter name and without ".weight"
      if (a.magnitude) sd.layers.set(`${path}.lora_magnitude_vector`, a.magnitude);
    }
    return sd;
  },

  checkStoredSizes(config, tensors, file) {
    // A is (r, in) and B (out, r): refused from the headers, before anything sized by r is built
    for (const key of tensors.keys()) {
      const axis = key.endsWith('.lora_A.weight') ? 0 : key.endsWith('.lora_B.weight') ? 1 : -1;
      if (axis < 0) continue;
      const shape = tensors.shape(key);
      if (shape.length !== 2 || shape[axis] !== config.r) throw new VeraError(`${file}: ${key} has shape [${shape.join(', ')}], but adapter_config.json says r = ${config.r}`);
    }
  },

  loadStateDict(model, config, name, tensors, file) {
    for (const [path, layer] of loraLayers(model, name)) {
      const a = layer.adapter(name);
      const key = `base_model.model.${path}`;
      a.A.copyFrom(expectShape(tensors, `${key}.lora_A.weight`, [config.r, layer.inFeatures], file, `(r, in_features) of ${path}`));
      a.B.copyFrom(expectShape(tensors, `${key}.lora_B.weight`, [layer.outFeatures, config.r], file, `(out_features, r) of ${path}`));
      if (a.magnitude) a.magnitude.copyFrom(expectShape(tensors, `${key}.lora_magnitude_vector`, [layer.outFeatures], file, `DoRA magnitude (out_features) of ${path}; adapter_config.json says use_dora: true`));
    }
  },
};
