// Modules as in PyTorch: a tree of named children holding named parameters and buffers, so that
// dotted paths ("transformer.h.0.attn.c_attn") name the same things as in Hugging Face checkpoints
// and PEFT adapters. Children are registered explicitly and mirrored as properties, which lets PEFT
// swap a layer by path and the parent's forward pick up the replacement.
import { Tensor } from '../tensor/index.js';

export class Module {
  training = true;
  private readonly params = new Map<string, Tensor>();
  private readonly buffers = new Map<string, { tensor: Tensor; persistent: boolean }>();
  private readonly children = new Map<string, Module>();

  protected addParameter(name: string, t: Tensor, trainable = true): Tensor {
    t.requiresGrad = trainable;
    this.params.set(name, t);
    return t;
  }

  /** Drop a parameter (PEFT deleting an adapter). */
  protected removeParameter(name: string): void {
    this.params.delete(name);
  }

  protected addBuffer(name: string, t: Tensor, persistent = true): Tensor {
    this.buffers.set(name, { tensor: t, persistent });
    return t;
  }

  protected addModule<M extends Module>(name: string, m: M): M {
    this.children.set(name, m);
    return m;
  }

  /** Replace a direct child (and the property of the same name that forward() uses). */
  setChild(name: string, m: Module): void {
    if (!this.children.has(name)) throw new Error(`${this.constructor.name} has no child '${name}'`);
    this.children.set(name, m);
    if (name in this) (this as unknown as Record<string, unknown>)[name] = m;
  }

  /** Replace or drop a parameter tensor (loading weights, PEFT modules_to_save). */
  setParameter(name: string, t: Tensor): void {
    if (!this.params.has(name)) throw new Error(`${this.constructor.name} has no parameter '${name}'`);
    t.requiresGrad = this.params.get(name)!.requiresGrad;
    this.params.set(name, t);
    if (name in this) (this as unknown as Record<string, unknown>)[name] = t;
  }

  setBuffer(name: string, t: Tensor): void {
    const b = this.buffers.get(name);
    if (!b) throw new Error(`${this.constructor.name} has no buffer '${name}'`);
    b.tensor = t;
    if (name in this) (this as unknown as Record<string, unknown>)[name] = t;
  }

  child(name: string): Module | undefined {
    return this.children.get(name);
  }

  namedChildren(): [string, Module][] {
    return [...this.children];
  }

  ownParameters(): [string, Tensor][] {
    return [...this.params];
  }

  *namedModules(prefix = ''): Generator<[string, Module]> {
    yield [prefix, this];
    for (const [name, m] of this.children) yield* m.namedModules(prefix ? `${prefix}.${name}` : name);
  }

  namedParameters(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    const seen = new Set<Tensor>();
    for (const [path, m] of this.namedModules(prefix)) {
      for (const [name, t] of m.params) {
        if (seen.has(t)) continue; // tied weights count once
        seen.add(t);
        out.push([path ? `${path}.${name}` : name, t]);
      }
    }
    return out;
  }

  namedBuffers(prefix = '', persistentOnly = false): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [path, m] of this.namedModules(prefix)) {
      for (const [name, b] of m.buffers) if (!persistentOnly || b.persistent) out.push([path ? `${path}.${name}` : name, b.tensor]);
    }
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  /** Parameters and persistent buffers by dotted name (tied weights listed under every name). */
  stateDict(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [path, m] of this.namedModules()) {
      for (const [name, t] of m.params) out.set(path ? `${path}.${name}` : name, t);
      for (const [name, b] of m.buffers) if (b.persistent) out.set(path ? `${path}.${name}` : name, b.tensor);
    }
    return out;
  }

  getSubmodule(path: string): Module {
    if (path === '') return this;
    let m: Module = this;
    for (const part of path.split('.')) {
      const c = m.children.get(part);
      if (!c) throw new Error(`no module '${path}' (missing '${part}')`);
      m = c;
    }
    return m;
  }

  setSubmodule(path: string, replacement: Module): void {
    const dot = path.lastIndexOf('.');
    const parent = dot < 0 ? this : this.getSubmodule(path.slice(0, dot));
    parent.setChild(dot < 0 ? path : path.slice(dot + 1), replacement);
  }

  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Freeze or unfreeze every parameter. */
  requiresGrad_(flag: boolean): this {
    for (const t of this.parameters()) t.requiresGrad = flag;
    return this;
  }

  zeroGrad(): void {
    for (const t of this.parameters()) t.grad = null;
  }
}

/** Children named "0", "1", … as torch.nn.ModuleList. */
export class ModuleList<M extends Module = Module> extends Module {
  readonly items: M[];

  constructor(items: M[]) {
    super();
    this.items = items;
    items.forEach((m, i) => this.addModule(String(i), m));
  }

  override setChild(name: string, m: Module): void {
    super.setChild(name, m);
    this.items[Number(name)] = m as M;
  }

  get length(): number {
    return this.items.length;
  }
}
