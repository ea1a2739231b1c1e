// A base model's linear layer as the engine runs it: the frozen layer for every token, plus, per
// token, the adapter its request names. VeRA adapters share A and B, so x·Aᵀ is computed once for
// the whole batch and each row is scaled by its own λd and λb (one fused kernel, F.veraRouted);
// LoRA adapters differ in A and B: one routed call gives each token its own adapter's product.
import { F, unsetTensor, type Tensor } from '../tensor/index.js';
import { Module, type Linear } from '../nn/index.js';
import type { AdapterStore } from './adapter-store.js';

/** Which adapter each token of one step uses. */
export interface StepRoute {
  /** Per token, the VeRA slab slot, −1 for none; null when no token uses a VeRA adapter. */
  veraSlots: Int32Array | null;
  /** LoRA adapters in the step, each with the indices of its tokens. */
  lora: { weights: ReadonlyMap<string, { A: Tensor; B: Tensor; scaling: number }>; rows: Int32Array }[];
  /**
   * The last input's x·Aₛᵀ: the layers reading one input in a row (q, k, v; gate, up) share it,
   * since Aₛ = A[:, :in] depends on the input width only. One entry, so it dies with the next input.
   */
  lastAx?: { x: Tensor; ax: Tensor };
}

export class RoutedLinear extends Module {
  readonly base_layer: Linear;
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** Set by the engine for the duration of one step; without it the layer is the base layer. */
  route: StepRoute | null = null;

  constructor(
    base: Linear,
    readonly path: string,
    private readonly store: AdapterStore,
  ) {
    super();
    this.base_layer = this.addModule('base_layer', base);
    this.inFeatures = base.inFeatures;
    this.outFeatures = base.outFeatures;
  }

  forward(x: Tensor): Tensor {
    const y = this.base_layer.forward(x);
    const route = this.route;
    if (!route) return y;
    const vera = this.store.veraState;
    const slabD = vera?.slabD.get(this.path);
    if (route.veraSlots && vera && slabD) {
      const ready = route.lastAx?.x === x;
      if (!ready) route.lastAx = { x, ax: unsetTensor([route.veraSlots.length, vera.spec.r]) }; // the kernel fills it
      F.veraRouted(x, vera.A, vera.B, slabD, vera.slabB.get(this.path)!, route.veraSlots, y, { ax: route.lastAx!.ax, ready });
    }
    if (route.lora.length > 0) {
      const groups = [];
      for (const group of route.lora) {
        const w = group.weights.get(this.path);
        if (w) groups.push({ ...w, rows: group.rows });
      }
      if (groups.length > 0) F.loraRouted(x, y, groups);
    }
    return y;
  }
}
