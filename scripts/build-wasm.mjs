// Builds wasm/vera.wasm (one thread) and wasm/vera-threads.wasm (shared memory, workers started by
// src/backends/wasm/threads.ts), the WebAssembly backend, from the C++ kernels in native/ with
// emscripten's emcc (SIMD128), and records the hash of their sources and flags in
// wasm/vera.wasm.sources.sha256. The binaries are committed: a fresh clone needs no toolchain; run
// this after changing native/ (a test fails until the hash matches). EMCC, WASM_LD and WASM_OPT
// name other tools (default: emcc, and the wasm-ld and wasm-opt emcc itself uses).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  COMPILE_FLAGS, LINK_FLAGS, SOURCES, THREAD_COMPILE_FLAGS, THREAD_LD_FLAGS, THREAD_LIBS, THREAD_OPT_FLAGS, THREAD_SOURCES, sourcesHash,
} from './wasm-recipe.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const emcc = process.env.EMCC ?? 'emcc';
const obj = mkdtempSync(join(tmpdir(), 'vera-wasm-'));

function run(tool, args) {
  return new Promise((resolve, reject) => {
    const p = spawn(tool, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
    p.on('error', (e) => reject(new Error(`${tool}: ${e.message} (install emscripten or set EMCC, WASM_LD, WASM_OPT)`)));
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${tool} ${args.join(' ')} exited with ${code}`))));
  });
}

/** emcc's configuration value `key` (from em-config beside emcc). */
function emConfig(key) {
  const emConfigTool = emcc.includes('/') ? join(dirname(emcc), 'em-config') : 'em-config';
  const r = spawnSync(emConfigTool, [key], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${emConfigTool} ${key}: ${r.stderr || r.error?.message}`);
  return r.stdout.trim();
}

/** The first of `names` in LLVM_ROOT or BINARYEN_ROOT/bin that exists. */
function tool(envName, dir, names) {
  if (process.env[envName]) return process.env[envName];
  for (const n of names) if (existsSync(join(dir, n))) return join(dir, n);
  throw new Error(`${names[0]} not found in ${dir} (set ${envName})`);
}

/** Compiles `sources` with `flags` into obj/<tag>/, four at a time; returns the object files. */
async function compile(sources, flags, tag) {
  mkdirSync(join(obj, tag), { recursive: true });
  const queue = [...sources];
  const objects = sources.map((s) => join(obj, tag, basename(s, '.cc') + '.o'));
  const workers = Array.from({ length: Math.max(1, Math.min(availableParallelism(), 4)) }, async () => {
    for (let s = queue.shift(); s !== undefined; s = queue.shift()) await run(emcc, [...flags, '-c', s, '-o', join(obj, tag, basename(s, '.cc') + '.o')]);
  });
  await Promise.all(workers);
  return objects;
}

try {
  mkdirSync(join(root, 'wasm'), { recursive: true });
  const out = join(root, 'wasm', 'vera.wasm');
  await run(emcc, [...LINK_FLAGS, '-o', out, ...(await compile(SOURCES, COMPILE_FLAGS, 'single'))]);
  console.log(`vera: built wasm/vera.wasm (${(statSync(out).size / 1024).toFixed(0)} KB)`);

  const llvm = emConfig('LLVM_ROOT');
  const lib = join(emConfig('CACHE'), 'sysroot', 'lib', 'wasm32-emscripten');
  const wasmLd = tool('WASM_LD', llvm, ['wasm-ld', 'wasm-ld-14']);
  const wasmOpt = tool('WASM_OPT', join(emConfig('BINARYEN_ROOT'), 'bin'), ['wasm-opt']);
  const threaded = join(root, 'wasm', 'vera-threads.wasm');
  const objects = await compile(THREAD_SOURCES, THREAD_COMPILE_FLAGS, 'threads');
  const libs = THREAD_LIBS.map((l) => (l.endsWith('.o') ? join(lib, l) : l));
  await run(wasmLd, ['-o', threaded, ...objects, `-L${lib}`, ...libs, ...THREAD_LD_FLAGS]);
  await run(wasmOpt, [threaded, '-o', threaded, ...THREAD_OPT_FLAGS]);
  console.log(`vera: built wasm/vera-threads.wasm (${(statSync(threaded).size / 1024).toFixed(0)} KB)`);

  writeFileSync(join(root, 'wasm', 'vera.wasm.sources.sha256'), `${sourcesHash(root)}\n`);
} finally {
  rmSync(obj, { recursive: true, force: true });
}
