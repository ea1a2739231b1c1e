// The README's library snippet is test/readme-library.ts: compiled with the suite (so it
// type-checks with no casts), checked here to be the README's block word for word, and run on a tiny
// Llama copied to models/SmolLM-135M in a temporary folder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { TextGenerator } from '../src/index.js';
import { withTmp } from './helpers.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const LLAMA = path.join(ROOT, 'test', 'fixtures', 'decoders', 'llama-gqa');

/** The first ```ts block after `heading` in README.md. */
function readmeBlock(heading: string): string {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const at = readme.indexOf(`\n${heading}\n`);
  assert.ok(at >= 0, `README.md has no "${heading}" heading`);
  const m = /```ts\n([\s\S]*?)```/.exec(readme.slice(at));
  assert.ok(m, `no ts block under "${heading}"`);
  return m[1];
}

/** The snippet file as the README shows it: without its leading comment, importing from 'vera'. */
function snippetFile(file: string): string {
  const lines = readFileSync(path.join(ROOT, 'test', file), 'utf8').split('\n');
  const first = lines.findIndex((l) => !l.startsWith('//'));
  return lines.slice(first).join('\n').replace("from '../src/index.js';", "from 'vera';");
}

test('README "## The library" is test/readme-library.ts', () => {
  assert.equal(readmeBlock('## The library'), snippetFile('readme-library.ts'));
});

test('the README library snippet runs: train, save, reload, generate, stream, merge and export', async () => {
  await withTmp(async (dir) => {
    cpSync(LLAMA, path.join(dir, 'models', 'SmolLM-135M'), { recursive: true });
    const cwd = process.cwd();
    process.chdir(dir); // the snippet's paths are relative
    try {
      await import('./readme-library.js');
    } finally {
      process.chdir(cwd);
    }
    assert.ok(existsSync(path.join(dir, 'adapters', 'alice', 'adapter_model.safetensors')));
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) {
      assert.ok(existsSync(path.join(dir, 'models', 'SmolLM-alice', f)), `the merged folder holds ${f}`);
    }
    // the merged folder answers as the base with the adapter
    const opts = { maxNewTokens: 12 };
    const adapted = await (await TextGenerator.fromPretrained(path.join(dir, 'models', 'SmolLM-135M'), { adapter: path.join(dir, 'adapters', 'alice') })).generate('Dear Bob,', opts);
    const merged = await (await TextGenerator.fromPretrained(path.join(dir, 'models', 'SmolLM-alice'))).generate('Dear Bob,', opts);
    assert.deepEqual(merged.tokens, adapted.tokens);
  });
});
