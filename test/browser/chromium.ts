// Headless Chromium for the browser tests: Debian's `chromium` (or VERA_CHROMIUM) driven by
// playwright-core, WebGPU on the CPU through SwiftShader, pages served from a folder over loopback
// (a secure context, as WebGPU requires; with COOP/COEP when the page must be cross-origin isolated
// for SharedArrayBuffer). A missing browser is an error, not a skip: these tests must run in CI.
import { createServer, type Server } from 'node:http';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join, normalize, sep } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';

export const CHROMIUM_FLAGS = ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader', '--enable-unsafe-swiftshader', '--no-sandbox'];

const TYPES: Record<string, string> = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.json': 'application/json',
  '.wasm': 'application/wasm', '.css': 'text/css', '.map': 'application/json',
};

export function chromiumPath(): string {
  const candidates = [process.env.VERA_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].filter((p): p is string => !!p);
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error(`no Chromium found (tried ${candidates.join(', ')}); install Debian's chromium or set VERA_CHROMIUM`);
  return found;
}

/** Serves `root` read-only on 127.0.0.1 (a random port); `isolated` adds COOP/COEP headers. */
export async function serveFolder(root: string, isolated = false): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const file = normalize(join(root, path.endsWith('/') ? path + 'index.html' : path));
    if (!file.startsWith(normalize(root + sep)) && file !== normalize(root) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    const headers: Record<string, string> = { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' };
    if (isolated) {
      headers['cross-origin-opener-policy'] = 'same-origin';
      headers['cross-origin-embedder-policy'] = 'require-corp';
    }
    res.writeHead(200, headers).end(readFileSync(file));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('serveFolder: no port');
  return { server, url: `http://127.0.0.1:${address.port}/` };
}

export interface BrowserSession {
  browser: Browser;
  page: Page;
  /** The served folder's URL, ending in '/'. */
  url: string;
  /** Page console lines and uncaught errors, for failure messages. */
  log: string[];
  close(): Promise<void>;
}

/** Launches Chromium and opens `root`'s `page` (default index.html) from a loopback server. */
export async function openPage(root: string, opts: { page?: string; isolated?: boolean } = {}): Promise<BrowserSession> {
  // the browser first: a listening server left behind by a failed launch kept the test process
  // alive, so a machine without Chromium hung instead of failing
  const executablePath = chromiumPath();
  const { server, url } = await serveFolder(root, opts.isolated ?? false);
  let browser: Browser;
  try {
    browser = await chromium.launch({ executablePath, args: CHROMIUM_FLAGS });
  } catch (e) {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    throw e;
  }
  const page = await browser.newPage();
  const log: string[] = [];
  page.on('console', (m) => log.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));
  await page.goto(url + (opts.page ?? 'index.html'));
  return {
    browser, page, url, log,
    close: async () => {
      await browser.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Runs `body` on an open session and closes it; on failure writes a screenshot to
 * test-results/NAME.png (and appends the page's log to the error) before rethrowing.
 */
export async function withPage<T>(name: string, session: BrowserSession, body: (s: BrowserSession) => Promise<T>): Promise<T> {
  try {
    return await body(session);
  } catch (e) {
    const dir = join(process.cwd(), 'test-results');
    mkdirSync(dir, { recursive: true });
    const shot = join(dir, `${name.replace(/[^a-z0-9-]+/gi, '_')}.png`);
    await session.page.screenshot({ path: shot, fullPage: true }).catch(() => undefined);
    const err = e instanceof Error ? e : new Error(String(e));
    err.message += `\n(screenshot: ${shot})\npage log:\n${session.log.slice(-40).join('\n')}`;
    throw err;
  } finally {
    await session.close();
  }
}
