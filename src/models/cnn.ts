// The convolutional classifier of the walk-through (a LeNet-style ConvNet), sized for
// Fashion-MNIST's 1×28×28 images: conv1 pads by 2 so both pooling stages end at 16×5×5.
import { F, defaultRng, type Rng, type Tensor } from '../tensor/index.js';
import { Conv2d, Linear, MaxPool2d, Module } from '../nn/index.js';
import { ConfigReader, asJsonObject, type JsonObject } from './config.js';
import type { TensorLayer } from './common.js';

export interface CNNConfig {
  numClasses: number;
}

export function cnnConfigFromJson(json: unknown, file: string): CNNConfig {
  const r = new ConfigReader(asJsonObject(json, file), file);
  r.modelType('vera_cnn');
  return { numClasses: r.positiveInt('num_classes', 10) };
}

export function cnnConfigToJson(c: CNNConfig): JsonObject {
  return { model_type: 'vera_cnn', architectures: ['CNN'], num_classes: c.numClasses };
}

export class CNN extends Module {
  readonly modelType = 'vera_cnn' as const;
  readonly config: CNNConfig;
  conv1: TensorLayer;
  pool: MaxPool2d;
  conv2: TensorLayer;
  fc1: TensorLayer;
  fc2: TensorLayer;
  fc3: TensorLayer;
  fc4: TensorLayer;
  fc5: TensorLayer;

  constructor(config: CNNConfig = { numClasses: 10 }, rng: Rng = defaultRng()) {
    super();
    this.config = config;
    this.conv1 = this.addModule('conv1', new Conv2d(1, 6, 5, 1, 2, rng)); // 6×28×28
    this.pool = this.addModule('pool', new MaxPool2d(2, 2)); // halves; used after both convs
    this.conv2 = this.addModule('conv2', new Conv2d(6, 16, 5, 1, 0, rng)); // 16×10×10
    this.fc1 = this.addModule('fc1', new Linear(16 * 5 * 5, 120, { rng }));
    this.fc2 = this.addModule('fc2', new Linear(120, 84, { rng }));
    this.fc3 = this.addModule('fc3', new Linear(84, 84, { rng }));
    this.fc4 = this.addModule('fc4', new Linear(84, 84, { rng }));
    this.fc5 = this.addModule('fc5', new Linear(84, config.numClasses, { rng }));
  }

  /** Images (N, 1, 28, 28) → logits (N, numClasses). */
  forward(x: Tensor): Tensor {
    if (x.ndim !== 4 || x.shape[1] !== 1 || x.shape[2] !== 28 || x.shape[3] !== 28) {
      throw new Error(`CNN: expected images (N, 1, 28, 28), got [${x.shape.join(', ')}]`);
    }
    x = this.pool.forward(F.relu(this.conv1.forward(x)));
    x = this.pool.forward(F.relu(this.conv2.forward(x)));
    x = F.reshape(x, [x.shape[0], -1]); // flatten all but the batch
    x = F.relu(this.fc1.forward(x));
    x = F.relu(this.fc2.forward(x));
    x = F.relu(this.fc3.forward(x));
    x = F.relu(this.fc4.forward(x));
    return this.fc5.forward(x);
  }
}
