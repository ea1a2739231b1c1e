// Browser entry of test/browser-wasm.test.ts (bundled by esbuild): loads the WebAssembly backend
// from ./vera.wasm beside the page (asking for 2 threads: a cross-origin isolated page gets
// ./vera-threads.wasm on workers, a plain page one thread), runs the kernel conformance suite
// against the TypeScript backend, and where threads run, compares them bit for bit with the
// single-threaded module (GEMMs, a training step); leaves the results in globalThis.veraSuite.
import { loadWasmKernels } from '../../src/backends/wasm/index.js';
import { tsKernels } from '../../src/backends/ts/index.js';
import { runKernelSuite, type SuiteResult } from '../conformance/kernel-suite.js';
import { threadAgreement, type AgreementReport } from '../conformance/thread-agreement.js';

export interface BrowserSuiteReport {
  results: SuiteResult[];
  crossOriginIsolated: boolean;
  name: string;
  threads: number;
  /** Threaded against single-threaded module (null on one thread). */
  agreement: AgreementReport | null;
  /** Chunks of parallel work the workers ran (0 on one thread). */
  workerChunks: number;
  error?: string;
}

const g = globalThis as unknown as { veraSuite?: Promise<BrowserSuiteReport>; crossOriginIsolated?: boolean };
g.veraSuite = (async () => {
  const k = await loadWasmKernels({ url: './vera.wasm', threads: 2 });
  const results = await runKernelSuite(k, tsKernels, { onResult: (r) => console.log(`${r.ok ? 'ok' : 'FAIL'} ${r.name} (${r.ms} ms)${r.message ? `: ${r.message}` : ''}`) });
  let agreement: AgreementReport | null = null;
  if (k.threads > 1) {
    const one = await loadWasmKernels({ url: './vera.wasm', threads: 1 });
    agreement = threadAgreement(one, k);
  }
  const report = { results, crossOriginIsolated: g.crossOriginIsolated === true, name: k.name, threads: k.threads, agreement, workerChunks: k.workerChunks };
  k.dispose();
  return report;
})().catch((e: unknown) => ({ results: [], crossOriginIsolated: g.crossOriginIsolated === true, name: '', threads: 0, agreement: null, workerChunks: 0, error: e instanceof Error ? `${e.message}\n${e.stack}` : String(e) }));
