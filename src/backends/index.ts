// Backend selection. `VERA_BACKEND=ts|native` chooses; the reference TypeScript backend is the
// default until a faster one is registered here.
import { setKernels, hasKernels } from '../tensor/device.js';
import type { Kernels } from '../tensor/kernels.js';
import { tsKernels } from './ts/index.js';

const available: Record<string, Kernels> = { ts: tsKernels };

export function backendNames(): string[] {
  return Object.keys(available);
}

/** Activate a backend by name. */
export function useBackend(name: string): Kernels {
  const k = available[name];
  if (k === undefined) throw new Error(`VERA_BACKEND: unknown backend '${name}' (available: ${backendNames().join(', ')})`);
  setKernels(k);
  return k;
}

export { tsKernels };

if (!hasKernels()) {
  const wanted = process.env.VERA_BACKEND;
  if (wanted && !(wanted in available)) process.stderr.write(`vera: VERA_BACKEND=${wanted} is not available here (have: ${backendNames().join(', ')}); using ts\n`);
  useBackend(wanted && wanted in available ? wanted : 'ts');
}
