// Builds wasm/vera.wasm, the WebAssembly backend (src/backends/wasm), from the C++ kernels in
// native/ with emscripten's emcc (SIMD128), and records the hash of its sources and flags in
// wasm/vera.wasm.sources.sha256. The binary is committed: a fresh clone needs no toolchain; run
// this after changing native/ (a test fails until the hash matches). EMCC names another emcc.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { COMPILE_FLAGS, LINK_FLAGS, SOURCES, sourcesHash } from './wasm-recipe.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const emcc = process.env.EMCC ?? 'emcc';
const obj = mkdtempSync(join(tmpdir(), 'vera-wasm-'));

function run(args) {
  return new Promise((resolve, reject) => {
    const p = spawn(emcc, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
    p.on('error', (e) => reject(new Error(`${emcc}: ${e.message} (install emscripten or set EMCC)`)));
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${emcc} ${args.join(' ')} exited with ${code}`))));
  });
}

try {
  const queue = [...SOURCES];
  const objects = SOURCES.map((s) => join(obj, basename(s, '.cc') + '.o'));
  const workers = Array.from({ length: Math.max(1, Math.min(availableParallelism(), 4)) }, async () => {
    for (let s = queue.shift(); s !== undefined; s = queue.shift()) await run([...COMPILE_FLAGS, '-c', s, '-o', join(obj, basename(s, '.cc') + '.o')]);
  });
  await Promise.all(workers);
  mkdirSync(join(root, 'wasm'), { recursive: true });
  const out = join(root, 'wasm', 'vera.wasm');
  await run([...LINK_FLAGS, '-o', out, ...objects]);
  writeFileSync(join(root, 'wasm', 'vera.wasm.sources.sha256'), `${sourcesHash(root)}\n`);
  console.log(`vera: built wasm/vera.wasm (${(statSync(out).size / 1024).toFixed(0)} KB)`);
} finally {
  rmSync(obj, { recursive: true, force: true });
}
