// Which backend runs the kernels. Backends register themselves (backends/index.ts); tensor code
// only ever asks for `kernels()`.
import type { Kernels } from './kernels.js';

let active: Kernels | null = null;

export function setKernels(k: Kernels): void {
  active = k;
}

export function kernels(): Kernels {
  if (active === null) throw new Error('no tensor backend registered: import the package entry (or backends/index.js) first');
  return active;
}

export function hasKernels(): boolean {
  return active !== null;
}
