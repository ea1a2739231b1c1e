// The WebAssembly backend in headless Chromium: the kernel conformance suite and the backend bundled
// for the browser (esbuild), served from a loopback folder with wasm/vera.wasm and
// wasm/vera-threads.wasm beside the page, run against the TypeScript backend in the page, one result
// per case. A plain page runs one thread; a cross-origin isolated (COOP/COEP) page runs the
// threaded module on 2 threads (workers over a shared memory), whose GEMMs and training step must
// equal the single-threaded module's bit for bit. Fails (never skips) without Chromium.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

import { openPage, withPage } from './browser/chromium.js';
import { withTmp } from './helpers.js';
import type { BrowserSuiteReport } from './browser/wasm-suite.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

async function runInChromium(isolated: boolean): Promise<BrowserSuiteReport> {
  return withTmp(async (dir) => {
    await build({
      entryPoints: [join(root, 'dist', 'test', 'browser', 'wasm-suite.js')],
      bundle: true, platform: 'browser', format: 'esm', outfile: join(dir, 'suite.js'), logLevel: 'error',
    });
    copyFileSync(join(root, 'wasm', 'vera.wasm'), join(dir, 'vera.wasm'));
    copyFileSync(join(root, 'wasm', 'vera-threads.wasm'), join(dir, 'vera-threads.wasm'));
    writeFileSync(join(dir, 'index.html'), '<!doctype html><meta charset="utf-8"><title>vera wasm suite</title><script type="module" src="suite.js"></script>\n');
    const session = await openPage(dir, { isolated });
    return withPage(`browser-wasm${isolated ? '-isolated' : ''}`, session, async ({ page }) => {
      await page.waitForFunction('globalThis.veraSuite !== undefined', undefined, { timeout: 30_000 });
      return (await page.evaluate('globalThis.veraSuite')) as BrowserSuiteReport;
    });
  }, 'vera-browser-wasm-');
}

for (const isolated of [false, true]) {
  test(`the wasm backend passes the kernel conformance suite in Chromium${isolated ? ' on 2 threads (cross-origin isolated page), bit for bit as on one' : ' on one thread (plain page)'}`, { timeout: 300_000 }, async (t) => {
    const report = await runInChromium(isolated);
    assert.equal(report.error, undefined);
    assert.equal(report.name, 'wasm');
    assert.equal(report.crossOriginIsolated, isolated);
    // threads only where memory can be shared
    assert.equal(report.threads, isolated ? 2 : 1);
    if (isolated) {
      assert.ok(report.agreement, 'no agreement check ran');
      assert.deepEqual(report.agreement.differences, []);
      assert.ok(report.agreement.compared >= 10, `${report.agreement.compared} comparisons`);
      assert.ok(report.workerChunks > 0, 'the workers ran no chunk');
    } else {
      assert.equal(report.agreement, null);
      assert.equal(report.workerChunks, 0);
    }
    assert.ok(report.results.length >= 20, `${report.results.length} cases ran`);
    const failed = report.results.filter((r) => !r.ok);
    assert.deepEqual(failed.map((r) => `${r.name}: ${r.message}`), []);
    t.diagnostic(`${report.results.length} cases passed in ${report.results.reduce((s, r) => s + r.ms, 0)} ms`);
  });
}
