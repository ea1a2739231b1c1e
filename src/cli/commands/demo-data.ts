// Where the demos find their data. The repository holds it in data/ (fortune-llama, the fortunes,
// the Fashion-MNIST subset: 16 MB); the npm package does not ship it, so an installed `vera demo`
// says in one line where the data was expected and how to get it. VERA_DATA_DIR names another
// folder laid out as the repository's data/.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fail, VeraError } from '../../io/errors.js';

/** The package root (the folder holding package.json): a clone, or node_modules/vera when installed. */
function packageRoot(): string {
  const start = dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new VeraError(`cannot locate the package root (no package.json above ${start})`);
  }
}

/** The demo data folder: VERA_DATA_DIR when set, else data/ at the package root (present in a clone). */
export function demoDataDir(): string {
  return process.env.VERA_DATA_DIR || join(packageRoot(), 'data');
}

/** Fails in one line when a demo's data folder is missing: where it was expected, how to get it. */
export function requireDemoData(what: string, dir: string, flag: string): void {
  if (existsSync(dir)) return;
  const env = process.env.VERA_DATA_DIR;
  if (env) fail(`${what} not found at ${dir} (VERA_DATA_DIR=${env} must be laid out as the vera repository's data/ folder), or pass ${flag}`);
  fail(`${what} not found at ${dir}: the npm package does not ship the demo data (data/ in the vera repository, 16 MB); ` +
    `run the demo from a clone (npm ci && npm run demo), or set VERA_DATA_DIR to a copy of the repository's data/ folder, or pass ${flag}`);
}
