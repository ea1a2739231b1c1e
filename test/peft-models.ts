// The small models PEFT's own tests use (tests/test_custom_models.py, tests/test_vera.py), built
// with vera's nn so the ported tests run the same shapes: layer names, sizes and forward as there.
import { F, Rng, Tensor } from '../src/tensor/index.js';
import { Conv1D, Dropout, Embedding, Linear, Module, ModuleList } from '../src/nn/index.js';

/** test_custom_models' MLP: lin0 (10 → 20), relu, dropout 0.5, lin1 (20 → 2), log-softmax. */
export class MLP extends Module {
  lin0: Linear;
  drop: Dropout;
  lin1: Linear;
  constructor(opts: { bias?: boolean; seed?: number } = {}) {
    super();
    const rng = new Rng(opts.seed ?? 0);
    this.lin0 = this.addModule('lin0', new Linear(10, 20, { bias: opts.bias, rng }));
    this.drop = this.addModule('drop', new Dropout(0.5));
    this.lin1 = this.addModule('lin1', new Linear(20, 2, { bias: opts.bias, rng }));
  }
  forward(x: Tensor): Tensor {
    return F.logSoftmax(this.lin1.forward(this.drop.forward(F.relu(this.lin0.forward(x)))));
  }
}

/**
 * test_vera's MLP and test_custom_models' MLP_2x_same_shape: lin0 (10 → 20), lin1 and lin2 (20 → 20,
 * the same shape), lin3 (20 → 2), relu between, log-softmax at the end.
 */
export class MLP4 extends Module {
  lin0: Linear;
  lin1: Linear;
  lin2: Linear;
  lin3: Linear;
  constructor(opts: { bias?: boolean; seed?: number } = {}) {
    super();
    const rng = new Rng(opts.seed ?? 0);
    this.lin0 = this.addModule('lin0', new Linear(10, 20, { bias: opts.bias, rng }));
    this.lin1 = this.addModule('lin1', new Linear(20, 20, { bias: opts.bias, rng }));
    this.lin2 = this.addModule('lin2', new Linear(20, 20, { bias: opts.bias, rng }));
    this.lin3 = this.addModule('lin3', new Linear(20, 2, { bias: opts.bias, rng }));
  }
  forward(x: Tensor): Tensor {
    let h = F.relu(this.lin0.forward(x));
    h = F.relu(this.lin1.forward(h));
    h = F.relu(this.lin2.forward(h));
    return F.logSoftmax(this.lin3.forward(h));
  }
}

/** test_custom_models' Block: lin0, relu, dropout, lin1 (size → size). */
export class Block extends Module {
  lin0: Linear;
  drop: Dropout;
  lin1: Linear;
  constructor(size: number, rng: Rng, bias = true) {
    super();
    this.lin0 = this.addModule('lin0', new Linear(size, size, { bias, rng }));
    this.drop = this.addModule('drop', new Dropout(0.5));
    this.lin1 = this.addModule('lin1', new Linear(size, size, { bias, rng }));
  }
  forward(x: Tensor): Tensor {
    return this.lin1.forward(this.drop.forward(F.relu(this.lin0.forward(x))));
  }
}

/** test_custom_models' DeepMLP: `layers` (a list of Blocks, at the root) then out (size → 2), log-softmax. */
export class DeepMLP extends Module {
  layers: ModuleList<Block>;
  out: Linear;
  constructor(opts: { bias?: boolean; numHiddenLayers?: number; size?: number; seed?: number } = {}) {
    super();
    const rng = new Rng(opts.seed ?? 0);
    const size = opts.size ?? 10;
    const blocks = Array.from({ length: opts.numHiddenLayers ?? 12 }, () => new Block(size, rng, opts.bias ?? true));
    this.layers = this.addModule('layers', new ModuleList(blocks));
    this.out = this.addModule('out', new Linear(size, 2, { bias: opts.bias, rng }));
  }
  forward(x: Tensor): Tensor {
    for (const b of this.layers.items) x = b.forward(x);
    return F.logSoftmax(this.out.forward(x));
  }
}

/** test_custom_models' ModelEmbConv1D: emb (100 × 5), a transformers Conv1D (5 → 1), relu, flatten, lin0 (10 → 2), log-softmax. */
export class ModelEmbConv1D extends Module {
  emb: Embedding;
  conv1d: Conv1D;
  lin0: Linear;
  constructor(opts: { embSize?: number; seed?: number } = {}) {
    super();
    const rng = new Rng(opts.seed ?? 0);
    this.emb = this.addModule('emb', new Embedding(opts.embSize ?? 100, 5, rng));
    this.conv1d = this.addModule('conv1d', new Conv1D(1, 5, rng));
    this.lin0 = this.addModule('lin0', new Linear(10, 2, { rng }));
  }
  /** ids: (batch, 10) token ids. */
  forwardIds(ids: Int32Array, batch: number): Tensor {
    const h = F.relu(this.conv1d.forward(this.emb.forward(ids, [batch, ids.length / batch])));
    return F.logSoftmax(this.lin0.forward(F.reshape(h, [batch, ids.length / batch])));
  }
  forward(x: Tensor): Tensor {
    const ids = Int32Array.from(x.toFloat32Array());
    return this.forwardIds(ids, x.shape[0]);
  }
}

/** PEFT's test input for the MLPs: X = arange(90).view(9, 10) as floats. */
export function arangeInput(rows = 9, cols = 10): Tensor {
  return Tensor.fromArray(Float32Array.from({ length: rows * cols }, (_, i) => i), [rows, cols]);
}

/** A standard-normal (rows, cols) input from `seed`. */
export function randomInput(rows: number, cols: number, seed = 0): Tensor {
  return Tensor.fromArray(new Rng(seed).fillNormal(new Float32Array(rows * cols)), [rows, cols]);
}
