// A multi-layer perceptron classifier: Linear layers `layers.0`, `layers.1`, … with ReLU between.
import { F, defaultRng, type Rng, type Tensor } from '../tensor/index.js';
import { Linear, Module, ModuleList } from '../nn/index.js';
import { ConfigReader, asJsonObject, type JsonObject } from './config.js';
import type { TensorLayer } from './common.js';

export interface MLPConfig {
  inputSize: number;
  hiddenSizes: number[];
  numClasses: number;
}

export function mlpConfigFromJson(json: unknown, file: string): MLPConfig {
  const r = new ConfigReader(asJsonObject(json, file), file);
  r.modelType('vera_mlp');
  return {
    inputSize: r.positiveInt('input_size'),
    hiddenSizes: r.positiveIntArray('hidden_sizes'),
    numClasses: r.positiveInt('num_classes'),
  };
}

export function mlpConfigToJson(c: MLPConfig): JsonObject {
  return { model_type: 'vera_mlp', architectures: ['MLP'], input_size: c.inputSize, hidden_sizes: [...c.hiddenSizes], num_classes: c.numClasses };
}

export class MLP extends Module {
  readonly modelType = 'vera_mlp' as const;
  readonly config: MLPConfig;
  layers: ModuleList<TensorLayer>;

  constructor(config: MLPConfig, rng: Rng = defaultRng()) {
    super();
    this.config = config;
    const sizes = [config.inputSize, ...config.hiddenSizes, config.numClasses];
    const layers = sizes.slice(1).map((out, i) => new Linear(sizes[i], out, { rng }));
    this.layers = this.addModule('layers', new ModuleList<TensorLayer>(layers));
  }

  /** Features (N, inputSize) → logits (N, numClasses). */
  forward(x: Tensor): Tensor {
    if (x.ndim !== 2 || x.shape[1] !== this.config.inputSize) {
      throw new Error(`MLP: expected input (N, ${this.config.inputSize}), got [${x.shape.join(', ')}]`);
    }
    const layers = this.layers.items;
    layers.forEach((layer, i) => {
      x = layer.forward(x);
      if (i < layers.length - 1) x = F.relu(x);
    });
    return x;
  }
}
