// The browser build: a script importing 'vera' bundles for the browser (esbuild, platform browser)
// through the package's `exports` (the browser condition → dist/src/browser.js) with no Node
// built-in among its inputs; a page importing a few names pulls in only what they use. Prints the
// bundle sizes (README's "In the browser" quotes them).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { bundleForBrowser, nodeImports } from './browser/bundle.js';

const kb = (n: number): string => `${(n / 1024).toFixed(0)} KiB`;

function report(what: string, code: Uint8Array): void {
  console.log(`browser bundle (${what}): ${kb(code.byteLength)} minified, ${kb(gzipSync(code).byteLength)} gzipped`);
}

test("import * from 'vera' bundles for the browser through the browser entry, without a Node built-in", async () => {
  const { code, metafile } = await bundleForBrowser("import * as vera from 'vera'; globalThis.vera = vera;");
  assert.deepEqual(nodeImports(metafile), []);
  const ours = Object.keys(metafile.inputs).filter((f) => f.includes('dist/src/'));
  assert.ok(ours.some((f) => f.endsWith('dist/src/browser.js')), 'resolved through the browser condition');
  for (const nodeOnly of ['dist/src/index.js', 'dist/src/io/node-preload.js', 'dist/src/cli/', 'dist/src/serve/']) {
    assert.ok(!ours.some((f) => f.includes(nodeOnly)), `${nodeOnly} is not in the browser bundle`);
  }
  assert.ok(!Object.keys(metafile.inputs).some((f) => /node_modules\/(cli-progress|fastify|better-sqlite3|commander)\//.test(f)), 'no Node-only dependency');
  report('everything', code);
});

test('a page importing a few names gets only what they use (sideEffects, tree shaking)', async () => {
  const all = await bundleForBrowser("import * as vera from 'vera'; globalThis.vera = vera;");
  const app = await bundleForBrowser(`
    import { AutoModelForCausalLM, PeftModel, urlSource, noGrad } from 'vera';
    const model = await AutoModelForCausalLM.fromPretrained(urlSource('/model'));
    const peft = await PeftModel.fromPretrained(model, urlSource('/adapter'));
    globalThis.out = noGrad(() => peft.model.forward(Int32Array.of(1, 2), [1, 2]).data());
  `);
  assert.deepEqual(nodeImports(app.metafile), []);
  report('load a model and an adapter, run a forward', app.code);
  assert.ok(app.code.byteLength < all.code.byteLength * 0.8, `${app.code.byteLength} bytes vs ${all.code.byteLength} for everything`);
  // the tokenizer, jinja and the engine are not pulled in by a page that does not use them
  const [output] = Object.values(app.metafile.outputs);
  const inputs = Object.entries(output.inputs).filter(([, v]) => v.bytesInOutput > 0).map(([f]) => f).join('\n');
  for (const unused of ['@huggingface/tokenizers', '@huggingface/jinja', 'dist/src/engine/engine.js']) assert.ok(!inputs.includes(unused), `${unused} left out`);
});
