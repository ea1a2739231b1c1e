// `npm run demo:web`: the finetuning page (web/) bundled with esbuild for browsers, next to the
// files it fetches (the embedded model data/fortune-llama, the fortune categories, wasm/vera.wasm and
// wasm/vera-threads.wasm, which the page's worker runs on threads since the page is isolated),
// and served from 127.0.0.1 with COOP/COEP headers (cross-origin isolated, so SharedArrayBuffer is
// there for threaded builds). The tests build the same folder with `buildWebDemo`.
import { createServer, type Server } from 'node:http';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

/** The repository root (this file runs from dist/scripts/). */
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

const MODEL_FILES = ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];

/**
 * Builds the page into `outDir` (emptied first): index.html, style.css, page.js, worker.js,
 * model/ (the embedded model), fortunes/<category>/train.jsonl with fortunes/index.json listing the
 * categories, wasm/vera.wasm (where the WebAssembly loader looks by default: ../wasm/vera.wasm
 * resolved from the bundle's URL stays at the site's root). Needs `npm run build` first (the page
 * imports the package 'vera', i.e. dist/src/browser.js through the `browser` export condition).
 */
export async function buildWebDemo(outDir: string): Promise<void> {
  const web = join(repoRoot, 'web');
  const model = join(repoRoot, 'data', 'fortune-llama');
  const users = join(repoRoot, 'data', 'fortunes', 'users');
  if (!existsSync(join(repoRoot, 'dist', 'src', 'browser.js'))) throw new Error('demo:web: dist/src/browser.js is missing (run `npm run build` first)');
  if (!existsSync(join(model, 'model.safetensors'))) throw new Error(`demo:web: ${model}/model.safetensors is missing (the embedded model)`);
  const wasm = join(repoRoot, 'wasm', 'vera.wasm');
  if (!existsSync(wasm)) throw new Error(`demo:web: ${wasm} is missing (node scripts/build-wasm.mjs builds it)`);
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(join(outDir, 'model'), { recursive: true });
  await build({
    entryPoints: { page: join(web, 'page.ts'), worker: join(web, 'worker.ts') },
    bundle: true, format: 'esm', platform: 'browser', target: 'es2022', outdir: outDir,
    absWorkingDir: repoRoot, logLevel: 'error', sourcemap: true, minify: false,
  });
  for (const f of ['index.html', 'style.css']) copyFileSync(join(web, f), join(outDir, f));
  for (const f of MODEL_FILES) if (existsSync(join(model, f))) copyFileSync(join(model, f), join(outDir, 'model', f));
  mkdirSync(join(outDir, 'wasm'));
  copyFileSync(wasm, join(outDir, 'wasm', 'vera.wasm'));
  const threaded = join(repoRoot, 'wasm', 'vera-threads.wasm');
  if (existsSync(threaded)) copyFileSync(threaded, join(outDir, 'wasm', 'vera-threads.wasm'));
  const categories = readdirSync(users).filter((u) => existsSync(join(users, u, 'train.jsonl'))).sort();
  for (const c of categories) {
    mkdirSync(join(outDir, 'fortunes', c), { recursive: true });
    copyFileSync(join(users, c, 'train.jsonl'), join(outDir, 'fortunes', c, 'train.jsonl'));
  }
  writeFileSync(join(outDir, 'fortunes', 'index.json'), JSON.stringify({ categories }));
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json',
  '.jsonl': 'application/x-ndjson', '.wasm': 'application/wasm', '.map': 'application/json', '.safetensors': 'application/octet-stream',
};

/** Serves `root` read-only on `host:port` (0: any free port), cross-origin isolated. */
export async function serveWebDemo(root: string, port = 0, host = '127.0.0.1'): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    let path: string;
    try {
      path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    } catch {
      res.writeHead(400).end('bad request');
      return;
    }
    const file = normalize(join(root, path.endsWith('/') ? `${path}index.html` : path));
    if (!file.startsWith(normalize(root + sep)) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    res.writeHead(200, {
      'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
      'cache-control': 'no-cache',
      'cross-origin-opener-policy': 'same-origin',
      'cross-origin-embedder-policy': 'require-corp',
    }).end(readFileSync(file));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('demo:web: the server has no port');
  return { server, url: `http://${host}:${address.port}/` };
}

function parsePort(argv: string[]): number {
  const i = argv.findIndex((a) => a === '--port' || a.startsWith('--port='));
  if (i < 0) return 8080;
  const text = argv[i].includes('=') ? argv[i].slice('--port='.length) : argv[i + 1];
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port: expected an integer from 0 to 65535, got ${JSON.stringify(text)}`);
  return port;
}

async function main(argv: string[]): Promise<void> {
  if (argv.includes('--help')) {
    console.log('usage: npm run demo:web [-- --port N]   (default 8080; 0 picks a free port)');
    return;
  }
  const port = parsePort(argv);
  const out = join(repoRoot, 'dist', 'web');
  await buildWebDemo(out);
  const { url } = await serveWebDemo(out, port);
  console.log(`vera finetuning page: ${url}  (built in ${out}; Ctrl-C stops)`);
}

if (process.argv[1] && normalize(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    console.error(`demo:web: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  });
}
