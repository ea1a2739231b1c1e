// npm install hook: build the native backend with node-gyp. The addon is optional: when it cannot
// be built (no compiler, no Node headers, not x86/ARM Linux…) say so in one line and succeed, and
// the runtime uses the WebAssembly backend (the same kernels, prebuilt in wasm/vera.wasm).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

if (process.env.VERA_SKIP_NATIVE_BUILD) {
  console.log('vera: native backend not built (VERA_SKIP_NATIVE_BUILD is set); using the WebAssembly backend');
  process.exit(0);
}

/** node-gyp: the one npm ships with (always present), else one on PATH. */
function nodeGyp() {
  const candidates = [
    process.env.npm_execpath && join(dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  for (const c of candidates) if (c && existsSync(c)) return [process.execPath, c];
  try {
    const require = createRequire(import.meta.url);
    return [process.execPath, require.resolve('node-gyp/bin/node-gyp.js')];
  } catch {
    return ['node-gyp'];
  }
}

// Build against the headers of the running Node when it ships them (offline: no download).
const prefix = join(dirname(process.execPath), '..');
const nodedir = process.env.npm_config_nodedir ?? (existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? prefix : null);
const [cmd, ...pre] = nodeGyp();
const r = spawnSync(cmd, [...pre, 'rebuild', '--release', ...(nodedir ? [`--nodedir=${nodedir}`] : [])], {
  cwd: join(dirname(fileURLToPath(import.meta.url)), '..'),
  stdio: ['ignore', 'pipe', 'pipe'],
  encoding: 'utf8',
  // a node-gyp that tries to download headers behind a firewall must not hang the install
  timeout: 300_000,
  killSignal: 'SIGKILL',
});
if (r.status !== 0) {
  console.log(`vera: native backend not built (${failureReason(r).slice(0, 200)}); using the WebAssembly backend`);
  process.exit(0);
}
console.log('vera: native backend built (build/Release/vera_native.node)');

/** The most telling line of node-gyp's output: gyp's own message, a compiler error, else the status. */
function failureReason(r) {
  if (r.error) return r.error.message;
  const lines = `${r.stderr}\n${r.stdout}`.split('\n').map((l) => l.trim());
  const pick = (re) => lines.find((l) => re.test(l));
  return pick(/^gyp: /) ?? pick(/\berror:/i) ?? pick(/ERR! stack Error/)?.replace(/^gyp ERR! stack /, '') ?? `node-gyp exited with ${r.status}`;
}
