// esbuild for the browser pages of the tests and the bench: one ESM bundle per entry, Node's
// builtins (imported by modules a page never calls into, e.g. checkpoint files) replaced by stubs
// that throw when used, and a minimal `process` for modules that read process.env at load.
import { build, type Plugin } from 'esbuild';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const nodeStubs: Plugin = {
  name: 'node-stubs',
  setup(b) {
    const builtins = /^(node:.*|fs|path|os|crypto|child_process|worker_threads|url|util|stream|zlib|events|http|https|net|readline|buffer|module|perf_hooks|process|assert|string_decoder|v8|vm|tty)(\/.*)?$/;
    b.onResolve({ filter: builtins }, (a) => ({ path: a.path, namespace: 'node-stub' }));
    b.onLoad({ filter: /.*/, namespace: 'node-stub' }, (a) => ({
      // a plain object (esbuild copies own keys for named imports); anything else is undefined, failing where called
      contents: `module.exports = { endianness: () => 'LE', EOL: '\\n', platform: () => 'browser', tmpdir: () => '/tmp', cpus: () => [], totalmem: () => 2 ** 33, freemem: () => 2 ** 32, sep: '/', constants: {} };`,
      loader: 'js',
    }));
  },
};

const PROCESS_SHIM = `globalThis.process ??= { env: {}, platform: 'browser', argv: [], versions: {}, cwd: () => '/', `
  + `stderr: { write: (s) => console.warn(String(s).trimEnd()) }, stdout: { write: (s) => console.log(String(s).trimEnd()) }, on: () => undefined, exit: () => undefined };`;

/** Bundles `entry` (a .ts path from the repository root) into a fresh folder with an index.html that loads it. */
export async function bundlePage(entry: string, title = 'vera test'): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'vera-page-'));
  await build({
    entryPoints: [join(process.cwd(), entry)], bundle: true, format: 'esm', platform: 'browser', target: 'es2022',
    outfile: join(dir, 'page.js'), plugins: [nodeStubs], banner: { js: PROCESS_SHIM }, logLevel: 'error', sourcemap: false,
  });
  writeFileSync(join(dir, 'index.html'), `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head><body><pre id="log"></pre><script type="module" src="page.js"></script></body></html>`);
  return dir;
}
