// Float32 N-d tensors and reverse-mode autograd.
//
// A tensor is a shape plus backend storage, always contiguous row-major (views that would need
// strides — transpose, slice, broadcast — are materialized by one gather kernel). An op records a
// GradFn only when grad mode is on and some input requires grad, so frozen weights cost nothing in
// backward: each GradFn checks `inputs[i].requiresGrad` and skips gradients no one needs.
import { kernels } from './device.js';
import type { Storage } from './kernels.js';
import { chargeAllocation } from './alloc-budget.js';

export type Shape = readonly number[];

/**
 * A tensor's place in the autograd graph, without its storage: what backward needs of an input
 * (shape, whether it wants a gradient, the node that made it, the leaf's accumulated gradient).
 * The graph links these, not tensors, so a forward intermediate's storage lives only as long as a
 * backward closure saved it or the caller holds it (a GPT-2 step's unsaved intermediates were
 * half its activation memory while the tape held every op's inputs).
 */
export class GradNode {
  readonly shape: readonly number[];
  readonly size: number;
  requiresGrad: boolean;
  grad: Tensor | null = null;
  gradFn: GradFn | null = null;

  constructor(shape: readonly number[], size: number, requiresGrad: boolean) {
    this.shape = shape;
    this.size = size;
    this.requiresGrad = requiresGrad;
  }
}

/** What a GradFn's inputs may be: graph nodes (as `record` stores them) or tensors (a hand-built GradFn). */
export type GradInput = GradNode | Tensor;

export interface GradFn {
  readonly name: string;
  readonly inputs: readonly GradInput[];
  /** Gradients for each input, null where the input needs none. Called at most once. */
  backward(gradOut: Tensor): (Tensor | null)[];
}

let gradEnabled = true;

/** Run `fn` without recording a tape (inference mode). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/**
 * Frees the storages of intermediates a forward pass is done with, now rather than at the next
 * garbage collection, when no tape is recorded (nothing was saved for a backward pass): decoding
 * then reuses warm memory instead of growing the heap until a collection. Only for tensors (and
 * views of their storage) that nothing else holds; with a tape, and on backends without `free`,
 * it does nothing.
 */
export function releaseIntermediates(...tensors: Tensor[]): void {
  if (gradEnabled) return;
  const k = kernels();
  if (!k.free) return;
  const done = new Set<Storage>();
  for (const t of tensors) {
    if (t.requiresGrad || done.has(t.storage)) continue; // a parameter is never an intermediate
    done.add(t.storage);
    k.free(t.storage);
  }
}

export function sizeOf(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * A tensor whose contents are unspecified (the backend's `allocUnset`, else zero-filled): only for
 * the output of a kernel that writes every element of it before anything reads it.
 */
export function unsetTensor(shape: Shape): Tensor {
  const k = kernels();
  const n = sizeOf(shape);
  return new Tensor(k.allocUnset ? k.allocUnset(n) : k.alloc(n), shape);
}

export function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

export class Tensor {
  readonly shape: readonly number[];
  readonly size: number;
  // private and exposed by a getter only: a storage swapped under a tensor (e.g. a 4-element
  // buffer under a 1024×1024 shape) would let kernels index past the buffer's end
  readonly #storage: Storage;
  /** The autograd state (requiresGrad, grad, gradFn) lives on the node, which the graph links. */
  readonly node: GradNode;

  constructor(storage: Storage, shape: Shape, requiresGrad = false) {
    const size = sizeOf(shape);
    if (storage.length !== size) throw new Error(`tensor storage holds ${storage.length} elements, shape [${shape.join(', ')}] needs ${size}`);
    for (const d of shape) {
      if (!Number.isInteger(d) || d < 0) throw new Error(`invalid tensor shape [${shape.join(', ')}]`);
    }
    this.#storage = storage;
    this.shape = Object.freeze([...shape]);
    this.size = size;
    this.node = new GradNode(this.shape, size, requiresGrad);
  }

  get storage(): Storage {
    return this.#storage;
  }

  get requiresGrad(): boolean {
    return this.node.requiresGrad;
  }

  set requiresGrad(flag: boolean) {
    this.node.requiresGrad = flag;
  }

  get grad(): Tensor | null {
    return this.node.grad;
  }

  set grad(g: Tensor | null) {
    this.node.grad = g;
  }

  get gradFn(): GradFn | null {
    return this.node.gradFn;
  }

  set gradFn(fn: GradFn | null) {
    this.node.gradFn = fn;
  }

  get ndim(): number {
    return this.shape.length;
  }

  static fromArray(data: ArrayLike<number>, shape?: Shape, requiresGrad = false): Tensor {
    const arr = data instanceof Float32Array ? data : Float32Array.from(data);
    chargeAllocation(arr.length);
    return new Tensor(kernels().fromArray(arr), shape ?? [arr.length], requiresGrad);
  }

  static zeros(shape: Shape, requiresGrad = false): Tensor {
    chargeAllocation(sizeOf(shape));
    return new Tensor(kernels().alloc(sizeOf(shape)), shape, requiresGrad);
  }

  static full(shape: Shape, value: number, requiresGrad = false): Tensor {
    const t = Tensor.zeros(shape, requiresGrad);
    if (value !== 0) kernels().fill(t.storage, value);
    return t;
  }

  static ones(shape: Shape, requiresGrad = false): Tensor {
    return Tensor.full(shape, 1, requiresGrad);
  }

  static scalar(value: number): Tensor {
    return Tensor.full([], value);
  }

  /** Host copy of the data. */
  toFloat32Array(): Float32Array {
    return kernels().read(this.storage).slice();
  }

  /**
   * Read-only host view (no copy on CPU backends); do not mutate or keep across ops that write. It
   * need not start at offset 0 of its ArrayBuffer: use its byteOffset and byteLength.
   */
  data(): Float32Array {
    return kernels().read(this.storage);
  }

  /**
   * Host copy, asynchronously: the way to read a tensor on a GPU backend (whose synchronous reads
   * refuse); CPU backends resolve with their synchronous read.
   */
  async dataAsync(): Promise<Float32Array> {
    const k = kernels();
    return k.readAsync ? k.readAsync(this.storage) : k.read(this.storage).slice();
  }

  async itemAsync(): Promise<number> {
    if (this.size !== 1) throw new Error(`itemAsync() needs a one-element tensor, got shape [${this.shape.join(', ')}]`);
    return (await this.dataAsync())[0];
  }

  item(): number {
    if (this.size !== 1) throw new Error(`item() needs a one-element tensor, got shape [${this.shape.join(', ')}]`);
    return kernels().read(this.storage)[0];
  }

  /** Same storage, cut from the tape. */
  detach(): Tensor {
    return new Tensor(this.storage, this.shape);
  }

  clone(): Tensor {
    const out = new Tensor(kernels().alloc(this.size), this.shape);
    kernels().axpy(out.storage, 1, this.storage, out.storage);
    return out;
  }

  /** Overwrite this tensor's values (no autograd). */
  copyFrom(src: Tensor | Float32Array): void {
    if (src instanceof Tensor) {
      if (src.size !== this.size) throw new Error(`copyFrom: ${src.size} values into a tensor of ${this.size}`);
      // a device copy: no host round trip (which a GPU backend could not do synchronously)
      kernels().gather(src.storage, [src.size], [1], 0, this.storage);
      return;
    }
    if (src.length !== this.size) throw new Error(`copyFrom: ${src.length} values into a tensor of ${this.size}`);
    kernels().write(this.storage, src, 0);
  }

  requiresGrad_(flag = true): this {
    this.requiresGrad = flag;
    return this;
  }

  zeroGrad(): void {
    this.grad = null;
  }

  /** Backpropagate from this tensor (a scalar unless `gradOut` is given). */
  backward(gradOut?: Tensor): void {
    backward(this, gradOut);
  }
}

/**
 * Reverse-mode sweep over graph nodes. Nodes run in reverse topological order; each node's saved
 * tensors and the gradient it consumed are dropped right after it runs, so activations die as
 * early as possible.
 */
export function backward(root: Tensor, gradOut?: Tensor): void {
  if (!root.requiresGrad) throw new Error('backward(): tensor does not require grad (were all inputs frozen, or was it computed under noGrad?)');
  if (gradOut === undefined && root.size !== 1) throw new Error('backward(): gradOut is needed for a non-scalar tensor');
  if (gradOut !== undefined && gradOut.size !== root.size) throw new Error(`backward(): gradOut of shape [${gradOut.shape}] for a tensor of shape [${root.shape}]`);
  if (root.gradFn === null) {
    // a leaf, or an op that returned its input unchanged (full slice, identity permute, …)
    accumulateLeaf(root.node, gradOut ?? Tensor.ones(root.shape));
    return;
  }
  const order = topoOrder(root.node);
  const grads = new Map<GradNode, Tensor>();
  grads.set(root.node, gradOut ?? Tensor.ones(root.shape));
  noGrad(() => {
    for (let i = order.length - 1; i >= 0; i--) {
      const t = order[i];
      order.length = i; // the sweep holds no node it has passed
      const g = grads.get(t);
      const fn = t.gradFn;
      if (fn === null) continue;
      grads.delete(t);
      t.gradFn = null; // frees the saved activations held by the closure
      if (g === undefined) continue;
      const inputGrads = fn.backward(g);
      // gradients consumed here: released at once (below) unless a pending gradient shares them
      const consumed: Tensor[] = [g];
      for (let j = 0; j < fn.inputs.length; j++) {
        const x = nodeOf(fn.inputs[j]);
        const gx = inputGrads[j];
        if (gx === null || gx === undefined) continue;
        if (!x.requiresGrad) {
          consumed.push(gx);
          continue;
        }
        if (gx.size !== x.size) throw new Error(`internal: ${fn.name} gave a gradient of shape [${gx.shape}] for an input of shape [${x.shape}]`);
        if (x.gradFn === null) {
          accumulateLeaf(x, gx); // copies
          consumed.push(gx);
        } else {
          const prev = grads.get(x);
          if (prev === undefined) grads.set(x, gx);
          else {
            // never in place: gradient tensors may share storage with each other
            const sum = new Tensor(kernels().alloc(x.size), x.shape);
            kernels().axpy(prev.storage, 1, gx.storage, sum.storage);
            grads.set(x, sum);
            consumed.push(prev, gx);
          }
        }
      }
      release(consumed, grads, gradOut);
    }
  });
}

function nodeOf(x: GradInput): GradNode {
  return x instanceof Tensor ? x.node : x;
}

/**
 * Frees the storages of gradients backward has consumed, now rather than at the next garbage
 * collection (a GPT-2 step's logits gradient alone is 200 MB), except the caller's `gradOut` and
 * any storage a pending gradient still uses (reshape views, an add's one gradient for both inputs).
 */
function release(consumed: readonly Tensor[], pending: ReadonlyMap<GradNode, Tensor>, gradOut: Tensor | undefined): void {
  const k = kernels();
  if (!k.free) return;
  const live = new Set<Storage>();
  for (const t of pending.values()) live.add(t.storage);
  if (gradOut) live.add(gradOut.storage);
  for (const t of consumed) {
    if (live.has(t.storage)) continue;
    live.add(t.storage); // once
    k.free(t.storage);
  }
}

function accumulateLeaf(x: GradNode, g: Tensor): void {
  const k = kernels();
  if (x.grad === null) {
    // the leaf owns its grad buffer, so later accumulation can be in place
    const own = new Tensor(k.alloc(x.size), x.shape);
    k.axpy(own.storage, 1, g.storage, own.storage);
    x.grad = own;
  } else {
    k.axpy(x.grad.storage, 1, g.storage, x.grad.storage);
  }
}

function topoOrder(root: GradNode): GradNode[] {
  const order: GradNode[] = [];
  const seen = new Set<GradNode>();
  // iterative DFS: deep models would overflow the call stack
  const stack: [GradNode, number][] = [[root, 0]];
  seen.add(root);
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    const [t, idx] = top;
    const inputs = t.gradFn?.inputs ?? [];
    if (idx < inputs.length) {
      top[1]++;
      const x = nodeOf(inputs[idx]);
      if (x.requiresGrad && !seen.has(x)) {
        seen.add(x);
        stack.push([x, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  return order;
}

/** Attach a GradFn to `out` when the tape is on and some input needs a gradient. */
export function record(out: Tensor, name: string, inputs: readonly Tensor[], backwardFn: (gradOut: Tensor) => (Tensor | null)[]): Tensor {
  if (!gradEnabled) return out;
  let needs = false;
  for (const x of inputs) if (x.requiresGrad) needs = true;
  if (!needs) return out;
  out.requiresGrad = true;
  // the nodes, not the tensors: an input's storage stays alive only if backwardFn saved it
  out.gradFn = { name, inputs: inputs.map((x) => x.node), backward: backwardFn };
  return out;
}
