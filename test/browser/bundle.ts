// Bundles a browser script that imports 'vera' the way an application would: through a
// node_modules/vera link to this package, so package.json's `exports` conditions (browser) apply.
import { mkdtempSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build, type Metafile } from 'esbuild';

const PACKAGE_ROOT = new URL('../../../', import.meta.url).pathname;

export interface BrowserBundle {
  code: Uint8Array;
  metafile: Metafile;
}

/** esbuild, platform browser, ESM, minified: `source` (a module importing 'vera') and what it pulls in. */
export async function bundleForBrowser(source: string, opts: { minify?: boolean } = {}): Promise<BrowserBundle> {
  const app = mkdtempSync(join(tmpdir(), 'vera-browser-app-'));
  try {
    mkdirSync(join(app, 'node_modules'));
    symlinkSync(PACKAGE_ROOT, join(app, 'node_modules', 'vera'), 'dir');
    const result = await build({
      stdin: { contents: source, resolveDir: app, sourcefile: 'app.js', loader: 'js' },
      bundle: true, platform: 'browser', format: 'esm', target: 'es2022',
      minify: opts.minify ?? true, write: false, metafile: true, logLevel: 'silent',
    });
    return { code: result.outputFiles[0].contents, metafile: result.metafile };
  } finally {
    rmSync(app, { recursive: true, force: true });
  }
}

const NODE_BUILTINS = ['fs', 'path', 'os', 'crypto', 'zlib', 'module', 'url', 'readline', 'worker_threads', 'child_process', 'buffer', 'events', 'stream', 'util', 'http', 'net', 'tty'];

/** The Node built-ins a bundle's inputs import (node:* or bare), as "importer → module". */
export function nodeImports(metafile: Metafile): string[] {
  const out: string[] = [];
  for (const [file, input] of Object.entries(metafile.inputs)) {
    for (const imp of input.imports) {
      // a bundled import's path is the file it resolved to; a built-in would stay a bare name (external)
      const named = [imp.path, imp.original ?? ''].some((p) => p.startsWith('node:') || NODE_BUILTINS.includes(p.split('/')[0]));
      if (named || imp.external) out.push(`${file} → ${imp.original ?? imp.path}`);
    }
  }
  return out;
}
