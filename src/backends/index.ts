// Backend selection. `VERA_BACKEND=ts|native` chooses; native (the C++ addon) is the default when
// it was built at install, else the reference TypeScript backend, with a one-line notice saying why.
import { setKernels, hasKernels } from '../tensor/device.js';
import type { Kernels } from '../tensor/kernels.js';
import { checkedKernels } from '../tensor/kernel-checks.js';
import { tsKernels } from './ts/index.js';
import { loadAddon, nativeKernels } from './native/index.js';

// every registered backend runs behind the same argument checks (buffer lengths against the
// sizes a kernel will touch), so a new backend is as safe as these two
const available: Record<string, Kernels> = { ts: checkedKernels(tsKernels) };

const wanted = process.env.VERA_BACKEND;
// VERA_BACKEND=ts never touches the addon
const native = wanted === 'ts' ? null : loadAddon();
if (native?.addon) available.native = checkedKernels(nativeKernels(native.addon));

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
  if (native && native.addon === null) process.stderr.write(`vera: native backend not available (${native.reason}); using the TypeScript backend\n`);
  else if (wanted && !(wanted in available)) process.stderr.write(`vera: VERA_BACKEND=${wanted} is not available here (have: ${backendNames().join(', ')}); using ts\n`);
  const fallback = 'native' in available ? 'native' : 'ts';
  useBackend(wanted && wanted in available ? wanted : fallback);
}
