// The published package, as a user gets it (offline): `npm pack` into a temporary folder; the file
// list (the library, bin and the addon's sources; no data sets, tests or source maps); the tarball
// installed into a fresh ESM project (extracted into node_modules/vera, its dependencies linked
// from this checkout), a program type-checked there under --strict and run; `vera demo` without the
// data is one line; the README's esbuild recipe bundles the program and the bundle runs, also
// moved away from node_modules; a minimal import's bundle leaves the unused heavy dependencies out.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const LLAMA = join(ROOT, 'test', 'fixtures', 'decoders', 'llama-gqa');
const ADDON = join(ROOT, 'build', 'Release', 'vera_native.node');
/** Dependencies a minimal import must not bundle (the CLI's, the server's, the tokenizer's, the plots'). */
const HEAVY = ['@huggingface/jinja', '@huggingface/tokenizers', 'csv-parse', 'cli-progress', 'commander', 'fastify', 'better-sqlite3', 'vega', 'vega-lite'];

const tmp = mkdtempSync(join(tmpdir(), 'vera-package-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function run(cmd: string, args: string[], cwd: string, env: Record<string, string | undefined> = {}): SpawnSyncReturns<string> {
  const clean: Record<string, string | undefined> = { ...process.env };
  delete clean.VERA_NATIVE_ADDON;
  delete clean.VERA_DATA_DIR;
  return spawnSync(cmd, args, { cwd, env: { ...clean, ...env }, encoding: 'utf8', timeout: 60_000 });
}

function ok(r: SpawnSyncReturns<string>, what: string): string {
  assert.equal(r.status, 0, `${what}: exit ${r.status} ${r.error?.message ?? ''}\n${r.stderr}`);
  return r.stdout;
}

// npm pack without the prepare script (the suite has just built dist/)
interface PackResult { filename: string; size: number; unpackedSize: number; files: { path: string }[] }
const packed = JSON.parse(ok(run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', tmp], ROOT), 'npm pack')) as PackResult[];
const pack = packed[0];
const files = pack.files.map((f) => f.path).sort();
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  name: string; main: string; types: string; bin: Record<string, string>; sideEffects: string[]; dependencies: Record<string, string>;
  exports: Record<string, unknown>;
};

// the fresh project: the tarball extracted as node_modules/vera, the dependencies linked
const app = join(tmp, 'app');
const installed = join(app, 'node_modules', 'vera');
mkdirSync(installed, { recursive: true });
ok(run('tar', ['-xzf', join(tmp, pack.filename), '-C', installed, '--strip-components=1'], tmp), 'tar');
for (const dep of [...Object.keys(pkg.dependencies), 'esbuild', 'typescript', '@types/node']) {
  const link = join(app, 'node_modules', dep);
  mkdirSync(dirname(link), { recursive: true });
  symlinkSync(join(ROOT, 'node_modules', dep), link, 'dir');
}
// what the install hook builds, when this checkout has it
const haveAddon = existsSync(ADDON);
if (haveAddon) {
  mkdirSync(join(installed, 'build', 'Release'), { recursive: true });
  copyFileSync(ADDON, join(installed, 'build', 'Release', 'vera_native.node'));
}
writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));

/** A user's program: load a model and its tokenizer, a forward, two VeRA training steps. Valid as TypeScript and as JavaScript. */
const PROGRAM = `import { AdamW, AutoModelForCausalLM, AutoTokenizer, causalLmTask, getPeftModel, kernels, noGrad, train, veraConfig } from 'vera';

const dir = process.argv[2];
const model = AutoModelForCausalLM.fromPretrained(dir);
const tokenizer = await AutoTokenizer.fromPretrained(dir);
const ids = Int32Array.from(tokenizer.encode('hello world'));
const logits = noGrad(() => model.forward(ids, [1, ids.length]));
const peft = getPeftModel(model, veraConfig({ r: 8 }));
const params = peft.trainableParameters();
model.train();
const optimizer = new AdamW([{ params: params.map(([, t]) => t), lr: 1e-2 }]);
const result = train(params, optimizer, causalLmTask(peft, [ids, ids], 2), { steps: 2, progress: false });
console.log(JSON.stringify({ backend: kernels().name, shape: logits.shape, loss: result.finalLoss }));
`;
writeFileSync(join(app, 'app.mjs'), PROGRAM);
writeFileSync(join(app, 'app.ts'), PROGRAM);

/** The program's JSON line: the backend, the logits' shape, a finite loss. */
function checkOutput(stdout: string): { backend: string } {
  const out = JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as { backend: string; shape: number[]; loss: number };
  assert.deepEqual(out.shape.slice(0, 2), [1, out.shape[1]]);
  assert.equal(out.shape[2], 105); // the fixture's vocabulary
  assert.ok(Number.isFinite(out.loss), `loss ${out.loss}`);
  return out;
}

/** Every file an `exports` map points at, through nested conditions ({ browser: { types, default } }). */
function exportTargets(e: unknown): string[] {
  return typeof e === 'string' ? [e] : Object.values(e as Record<string, unknown>).flatMap(exportTargets);
}

test('the tarball holds the library, bin and the addon sources; no data sets, tests or source maps', (t) => {
  for (const f of ['package.json', 'README.md', 'LICENSE', 'bin/vera.js', 'binding.gyp', 'scripts/build-native.mjs', 'native/addon.cc', 'native/kernels.h',
    'dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/cli/main.js', 'dist/src/backends/native/addon.js', 'wasm/vera.wasm', 'wasm/vera-threads.wasm']) {
    assert.ok(files.includes(f), `${f} is packed`);
  }
  // every path package.json points at is in the tarball
  const pointed = [pkg.main, pkg.types, ...Object.values(pkg.bin), ...pkg.sideEffects,
    ...exportTargets(pkg.exports)];
  for (const p of pointed) assert.ok(files.includes(p.replace(/^\.\//, '')), `${p} (named in package.json) is packed`);
  const stray = files.filter((f) => /^(data|test|dist\/test|experiments|bench|examples|docs|build|src)\//.test(f) || f.endsWith('.map') || f.endsWith('.ts') && !f.endsWith('.d.ts'));
  assert.deepEqual(stray, []);
  assert.ok(files.every((f) => /^(dist\/src\/|native\/|bin\/|scripts\/build-native\.mjs$|binding\.gyp$|wasm\/vera(-threads)?\.wasm$|package\.json$|README\.md$|LICENSE)/.test(f)), files.join(' '));
  assert.ok(pack.size < 1_000_000, `packed ${pack.size} bytes`);
  t.diagnostic(`packed ${pack.size} B, unpacked ${pack.unpackedSize} B, ${files.length} files`);
});

test('installed from the tarball: vera imports, exports hold it to its entry points, a --strict program type-checks and runs', () => {
  const probe = `import * as vera from 'vera'; import { createRequire } from 'node:module';
    const pj = createRequire(import.meta.url)('vera/package.json');
    let deep = 'importable'; try { await import('vera/dist/src/tensor/index.js'); } catch (e) { deep = e.code; }
    console.log(JSON.stringify({ name: pj.name, fn: typeof vera.AutoModelForCausalLM.fromPretrained, deep }));`;
  const out = JSON.parse(ok(run(process.execPath, ['--input-type=module', '-e', probe], app), 'import vera')) as Record<string, string>;
  assert.deepEqual(out, { name: pkg.name, fn: 'function', deep: 'ERR_PACKAGE_PATH_NOT_EXPORTED' });

  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, types: ['node'], lib: ['ES2022'] },
    files: ['app.ts'],
  }));
  ok(run(process.execPath, [join(app, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', app], app), 'tsc --strict on the program');
  checkOutput(ok(run(process.execPath, ['app.mjs', LLAMA], app), 'the program'));
});

test('installed: `vera demo` without the data is one line saying where it looked and how to get it', () => {
  for (const [args, where] of [[['demo'], 'data/fortune-llama'], [['demo', 'fashion-mnist'], 'data/fashion-mnist']] as const) {
    const r = run(process.execPath, [join(installed, 'bin', 'vera.js'), ...args], app, { VERA_BACKEND: 'ts' });
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.ok(r.stderr.includes(join(installed, where)), r.stderr);
    assert.match(r.stderr, /^vera: .* not found at .*: the npm package does not ship the demo data .*npm ci && npm run demo.*VERA_DATA_DIR/);
  }
});

/** The ```js block under "### Bundling with esbuild" in README.md. */
function readmeRecipe(): string {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const at = readme.indexOf('\n### Bundling with esbuild\n');
  assert.ok(at >= 0, 'README.md has the bundling section');
  const m = /```js\n([\s\S]*?)```/.exec(readme.slice(at));
  assert.ok(m, 'a js block under "### Bundling with esbuild"');
  return m[1];
}

test("the README's esbuild recipe bundles the program; the bundle runs in place and away from node_modules", () => {
  writeFileSync(join(app, 'build.mjs'), readmeRecipe());
  ok(run(process.execPath, ['build.mjs'], app), 'node build.mjs');
  const bundle = join(app, 'dist', 'app.mjs');
  // in place: the addon of node_modules/vera, found from the bundle's folder
  const here = checkOutput(ok(run(process.execPath, [bundle, LLAMA], app, { VERA_BACKEND: undefined }), 'the bundle'));
  assert.equal(here.backend, haveAddon ? 'native' : 'ts');
  // alone: no node_modules, so one notice and the TypeScript backend
  const away = join(tmp, 'deployed');
  mkdirSync(away);
  copyFileSync(bundle, join(away, 'app.mjs'));
  const r = run(process.execPath, ['app.mjs', LLAMA], away, { VERA_BACKEND: undefined });
  assert.equal(checkOutput(ok(r, 'the moved bundle')).backend, 'ts');
  assert.match(r.stderr.trim(), /^vera: native backend not available \(.*vera_native\.node not built\); using the TypeScript backend \(WebAssembly: .*vera(-threads)?\.wasm not found\)$/);
});

test('a minimal import bundles without the unused heavy dependencies', async (t) => {
  writeFileSync(join(app, 'minimal.mjs'), "import { AutoModelForCausalLM } from 'vera';\nconsole.log(typeof AutoModelForCausalLM.fromPretrained);\n");
  const result = await esbuild.build({
    absWorkingDir: app, entryPoints: ['minimal.mjs'], outfile: 'dist/minimal.mjs', bundle: true, platform: 'node', format: 'esm', metafile: true, logLevel: 'silent',
  });
  const output = Object.values(result.metafile.outputs)[0];
  const kept = new Set<string>();
  for (const [input, { bytesInOutput }] of Object.entries(output.inputs)) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (bytesInOutput > 0 && m && !input.includes('node_modules/vera/')) kept.add(m[1]);
  }
  assert.deepEqual([...kept].filter((p) => HEAVY.includes(p)), [], `bundled: ${[...kept].join(', ')}`);
  assert.ok(output.bytes < 400_000, `minimal bundle ${output.bytes} B`);
  t.diagnostic(`minimal import bundle: ${output.bytes} B; packages: ${[...kept].join(', ') || 'none'}`);
  // and it runs without a require banner: nothing CommonJS is left in it
  assert.equal(ok(run(process.execPath, [join(app, 'dist', 'minimal.mjs')], app, { VERA_BACKEND: 'ts' }), 'the minimal bundle').trim(), 'function');
});
