// Browser entry of test/browser-wasm.test.ts (bundled by esbuild): loads the WebAssembly backend
// from ./vera.wasm beside the page, runs the kernel conformance suite against the TypeScript
// backend, and leaves the results in globalThis.veraSuite for the test to collect.
import { loadWasmKernels } from '../../src/backends/wasm/index.js';
import { tsKernels } from '../../src/backends/ts/index.js';
import { runKernelSuite, type SuiteResult } from '../conformance/kernel-suite.js';

export interface BrowserSuiteReport {
  results: SuiteResult[];
  crossOriginIsolated: boolean;
  name: string;
}

const g = globalThis as unknown as { veraSuite?: Promise<BrowserSuiteReport>; crossOriginIsolated?: boolean };
g.veraSuite = (async () => {
  const k = await loadWasmKernels({ url: './vera.wasm' });
  const results = await runKernelSuite(k, tsKernels, { onResult: (r) => console.log(`${r.ok ? 'ok' : 'FAIL'} ${r.name} (${r.ms} ms)${r.message ? `: ${r.message}` : ''}`) });
  return { results, crossOriginIsolated: g.crossOriginIsolated === true, name: k.name };
})();
