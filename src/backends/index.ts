// Backend selection. `VERA_BACKEND=ts|native|wasm` chooses; native (the C++ addon) is the default
// when it was built at install, else the same kernels compiled to WebAssembly (wasm/vera.wasm), else
// the reference TypeScript backend, with a one-line notice saying why.
import { setKernels, hasKernels } from '../tensor/device.js';
import type { Kernels } from '../tensor/kernels.js';
import { checkedKernels } from '../tensor/kernel-checks.js';
import { tsKernels } from './ts/index.js';
import { loadAddon, nativeKernels } from './native/index.js';
import { tryLoadWasm } from './wasm/node.js';

// every registered backend runs behind the same argument checks (buffer lengths against the
// sizes a kernel will touch), so a new backend is as safe as these two
const available: Record<string, Kernels> = { ts: checkedKernels(tsKernels) };

const wanted = process.env.VERA_BACKEND;
// VERA_BACKEND=ts never touches the addon
const native = wanted === 'ts' ? null : loadAddon();
if (native?.addon) available.native = checkedKernels(nativeKernels(native.addon));
// the WebAssembly build of the same kernels, loaded only when asked for or when there is no addon
const wasm = wanted === 'ts' || (native?.addon && wanted !== 'wasm') ? null : tryLoadWasm();
if (wasm?.kernels) available.wasm = checkedKernels(wasm.kernels);

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
  const fallback = 'native' in available ? 'native' : 'wasm' in available ? 'wasm' : 'ts';
  if (native && native.addon === null && wanted !== 'wasm') {
    const using = fallback === 'wasm' ? 'the WebAssembly backend' : `the TypeScript backend${wasm?.reason ? ` (WebAssembly: ${wasm.reason})` : ''}`;
    process.stderr.write(`vera: native backend not available (${native.reason}); using ${using}\n`);
  } else if (wanted && !(wanted in available)) process.stderr.write(`vera: VERA_BACKEND=${wanted} is not available here (have: ${backendNames().join(', ')}); using ${fallback}\n`);
  useBackend(wanted && wanted in available ? wanted : fallback);
}
