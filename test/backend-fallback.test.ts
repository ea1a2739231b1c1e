// Backend selection in a fresh process each time: VERA_BACKEND picks, native is the default when
// the addon loads, and a missing addon (VERA_NATIVE_ADDON pointing nowhere, as on a machine where
// the install could not build it) gives one notice line and the WebAssembly backend (the
// TypeScript one when wasm/vera.wasm is missing too). The install
// hook itself must succeed, with one line, when the build fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { defaultAddonPath } from '../src/backends/native/index.js';
import { withTmp } from './helpers.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const registry = join(root, 'dist', 'src', 'backends', 'index.js');
const tensor = join(root, 'dist', 'src', 'tensor', 'index.js');

/** Active backend name and stderr of a process that imports the registry under `env`. */
function probe(env: Record<string, string | undefined>): { name: string; stderr: string } {
  const script = `await import(${JSON.stringify(registry)}); const t = await import(${JSON.stringify(tensor)}); console.log(t.kernels().name);`;
  const clean = { ...process.env };
  delete clean.VERA_BACKEND;
  delete clean.VERA_NATIVE_ADDON;
  delete clean.VERA_WASM_MODULE;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...clean, ...env },
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  return { name: r.stdout.trim(), stderr: r.stderr };
}

const missing = '/nonexistent/vera_native.node';

test('a missing addon: one notice line, the WebAssembly backend (the same kernels)', () => {
  for (const backend of [undefined, 'native']) {
    const { name, stderr } = probe({ VERA_NATIVE_ADDON: missing, VERA_BACKEND: backend });
    assert.equal(name, 'wasm');
    const lines = stderr.trim().split('\n');
    assert.equal(lines.length, 1, stderr);
    assert.match(lines[0], /^vera: native backend not available \(.*vera_native\.node not built\); using the WebAssembly backend$/);
  }
});

test('a missing addon and a missing WebAssembly module: one notice line, the TypeScript backend', () => {
  const { name, stderr } = probe({ VERA_NATIVE_ADDON: missing, VERA_WASM_MODULE: '/nonexistent/vera.wasm' });
  assert.equal(name, 'ts');
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, stderr);
  assert.match(lines[0], /^vera: native backend not available \(.*\); using the TypeScript backend \(WebAssembly: \/nonexistent\/vera\.wasm not found\)$/);
});

test('VERA_BACKEND=ts uses the reference backend without a notice', () => {
  const { name, stderr } = probe({ VERA_BACKEND: 'ts', VERA_NATIVE_ADDON: missing });
  assert.equal(name, 'ts');
  assert.equal(stderr, '');
});

test('an unknown VERA_BACKEND falls back with a notice', () => {
  const { name, stderr } = probe({ VERA_BACKEND: 'cuda' });
  assert.match(stderr, /VERA_BACKEND=cuda is not available here/);
  assert.ok(name === 'ts' || name === 'native');
});

test('native is the default when the addon is built', { skip: existsSync(defaultAddonPath()) ? false : 'native addon not built' }, () => {
  const { name, stderr } = probe({});
  assert.equal(name, 'native');
  assert.equal(stderr, '');
});

test('the install hook prints one line and succeeds when the build fails', () => {
  withTmp((dir) => {
    // a copy of the build inputs, built against Node headers that do not exist
    mkdirSync(join(dir, 'scripts'));
    cpSync(join(root, 'scripts', 'build-native.mjs'), join(dir, 'scripts', 'build-native.mjs'));
    cpSync(join(root, 'binding.gyp'), join(dir, 'binding.gyp'));
    cpSync(join(root, 'native'), join(dir, 'native'), { recursive: true });
    const r = spawnSync(process.execPath, [join(dir, 'scripts', 'build-native.mjs')], {
      env: { ...process.env, npm_config_nodedir: join(dir, 'no-node-headers') },
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^vera: native backend not built \(.+\); using the WebAssembly backend\n$/);
    assert.equal(existsSync(join(dir, 'build', 'Release', 'vera_native.node')), false);
  });
});
