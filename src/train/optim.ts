// AdamW with decoupled weight decay, as torch.optim.AdamW: p ← p·(1 − lr·wd), then the Adam step
// with bias correction. The arithmetic lives in `kernels().adamw` so whichever backend holds the
// tensors runs the update in place; this class only keeps the bookkeeping (groups, lr, moments).
import { Tensor, kernels } from '../tensor/index.js';
import { fail } from '../io/errors.js';

export interface ParamGroup {
  /** Names the group in state-dict keys; defaults to its index. */
  name?: string;
  params: Tensor[];
  /** Base learning rate; schedules scale it through `setLrMultiplier`. */
  lr: number;
  /** Overrides the optimizer-wide weight decay for this group. */
  weightDecay?: number;
}

export interface AdamWOptions {
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/** Moments and per-parameter step counts, keyed `<group>.<index>` (torch keys by position too). */
export interface AdamWStateDict {
  /** `<key>.exp_avg` and `<key>.exp_avg_sq` for every parameter that has state. */
  tensors: Record<string, Tensor>;
  /** `<key>` → number of updates applied (bias correction); kept out of float32 tensors. */
  steps: Record<string, number>;
}

interface ParamState {
  m: Tensor;
  v: Tensor;
  step: number;
}

interface Slot {
  key: string;
  param: Tensor;
  group: number;
}

function checkNumber(what: string, x: number, lo: number, hi = Infinity, hiOpen = false): void {
  if (!(Number.isFinite(x) && x >= lo && (hiOpen ? x < hi : x <= hi))) {
    fail(`AdamW: ${what} must be in [${lo}, ${hi}${hiOpen ? ')' : ']'}, got ${x}`);
  }
}

export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  private readonly groups: Required<Omit<ParamGroup, 'name'>>[];
  private readonly slots: Slot[] = [];
  // Created on the first update a param receives: frozen or unused params cost no memory.
  private readonly state = new Map<Tensor, ParamState>();
  private multiplier = 1;

  constructor(groups: ParamGroup[], opts: AdamWOptions = {}) {
    const [beta1, beta2] = opts.betas ?? [0.9, 0.999];
    checkNumber('beta1', beta1, 0, 1, true);
    checkNumber('beta2', beta2, 0, 1, true);
    this.beta1 = beta1;
    this.beta2 = beta2;
    this.eps = opts.eps ?? 1e-8;
    checkNumber('eps', this.eps, 0);
    this.weightDecay = opts.weightDecay ?? 0.01;
    checkNumber('weight decay', this.weightDecay, 0);

    const names = new Set<string>();
    const seen = new Set<Tensor>();
    this.groups = groups.map((g, gi) => {
      const name = g.name ?? String(gi);
      if (names.has(name)) fail(`AdamW: duplicate parameter group name '${name}'`);
      names.add(name);
      checkNumber(`lr of group '${name}'`, g.lr, 0);
      const weightDecay = g.weightDecay ?? this.weightDecay;
      checkNumber(`weight decay of group '${name}'`, weightDecay, 0);
      g.params.forEach((p, i) => {
        if (seen.has(p)) fail(`AdamW: a parameter appears twice (group '${name}', index ${i})`);
        seen.add(p);
        this.slots.push({ key: `${name}.${i}`, param: p, group: gi });
      });
      return { params: [...g.params], lr: g.lr, weightDecay };
    });
  }

  /** Scales every group's base lr (learning-rate schedules); the base lrs are kept. */
  setLrMultiplier(f: number): void {
    if (!(Number.isFinite(f) && f >= 0)) fail(`AdamW: lr multiplier must be a finite number ≥ 0, got ${f}`);
    this.multiplier = f;
  }

  /** Current (scheduled) lr of each group. */
  lrs(): number[] {
    return this.groups.map((g) => g.lr * this.multiplier);
  }

  /** All parameters, in group order. */
  params(): Tensor[] {
    return this.slots.map((s) => s.param);
  }

  step(): void {
    const k = kernels();
    for (const { param, group } of this.slots) {
      const grad = param.grad;
      if (grad === null) continue;
      if (grad.size !== param.size) throw new Error(`AdamW: gradient of ${grad.size} elements for a parameter of ${param.size}`);
      let st = this.state.get(param);
      if (st === undefined) {
        st = { m: Tensor.zeros(param.shape), v: Tensor.zeros(param.shape), step: 0 };
        this.state.set(param, st);
      }
      st.step++;
      const g = this.groups[group];
      k.adamw(param.storage, grad.storage, st.m.storage, st.v.storage, {
        lr: g.lr * this.multiplier,
        beta1: this.beta1,
        beta2: this.beta2,
        eps: this.eps,
        weightDecay: g.weightDecay,
        step: st.step,
      });
    }
  }

  zeroGrad(): void {
    for (const s of this.slots) s.param.grad = null;
  }

  stateDict(): AdamWStateDict {
    const tensors: Record<string, Tensor> = {};
    const steps: Record<string, number> = {};
    for (const { key, param } of this.slots) {
      const st = this.state.get(param);
      if (st === undefined) continue;
      tensors[`${key}.exp_avg`] = st.m;
      tensors[`${key}.exp_avg_sq`] = st.v;
      steps[key] = st.step;
    }
    return { tensors, steps };
  }

  /** Replaces all state (copies the tensors). Unknown keys or wrong shapes are VeraErrors. */
  loadStateDict(sd: AdamWStateDict, source = 'optimizer state'): void {
    const byKey = new Map(this.slots.map((s) => [s.key, s.param]));
    const next = new Map<Tensor, ParamState>();
    const used = new Set<string>();
    for (const [key, step] of Object.entries(sd.steps)) {
      const param = byKey.get(key);
      if (param === undefined) fail(`${source}: no parameter '${key}' in this optimizer (were the parameter groups changed?)`);
      if (!(Number.isSafeInteger(step) && step >= 1)) fail(`${source}: step count of '${key}' must be a positive integer, got ${step}`);
      const moment = (suffix: string): Tensor => {
        const t = sd.tensors[`${key}.${suffix}`];
        if (t === undefined) fail(`${source}: missing tensor '${key}.${suffix}'`);
        if (t.size !== param.size) fail(`${source}: '${key}.${suffix}' has ${t.size} elements, the parameter has ${param.size}`);
        used.add(`${key}.${suffix}`);
        return new Tensor(kernels().fromArray(t.toFloat32Array()), param.shape);
      };
      next.set(param, { m: moment('exp_avg'), v: moment('exp_avg_sq'), step });
    }
    for (const name of Object.keys(sd.tensors)) {
      if (!used.has(name)) fail(`${source}: unexpected tensor '${name}'`);
    }
    this.state.clear();
    for (const [p, st] of next) this.state.set(p, st);
  }
}
