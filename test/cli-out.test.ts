// The --out rules every writing command shares (cli/out.ts, io/atomic.ts), a closed stdout pipe,
// Ctrl-C, and cutting long text before it is tokenized. The CLI runs as a child process.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { encodeCut, MAX_CHARS_PER_TOKEN } from '../src/data/jsonl.js';
import { loadTokenizer } from '../src/data/tokenizer.js';
import { runVera as vera } from './helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FIX = path.join(ROOT, 'test', 'fixtures');
const TINY = path.join(FIX, 'gpt2-tiny');
const ADAPTER = path.join(FIX, 'gpt2-tiny-vera');

let tmp = '';
const tmpPath = (...parts: string[]): string => path.join(tmp, ...parts);
const merge = (out: string, ...extra: string[]): string[] => ['merge', '--model', TINY, '--adapter', ADAPTER, '--out', out, '--quiet', ...extra];

function oneLine(stderr: string, re: RegExp): void {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line expected: ${stderr}`);
  assert.match(lines[0], re);
}

describe('--out rules', () => {
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vera-out-'));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  test('--out equal to, inside or containing an input is refused (real paths), and the input is untouched', async () => {
    const before = fs.readFileSync(path.join(TINY, 'model.safetensors'));
    fs.symlinkSync(TINY, tmpPath('link-to-model'));
    fs.mkdirSync(tmpPath('outer'));
    fs.cpSync(ADAPTER, tmpPath('outer', 'adapter'), { recursive: true });
    const cases: [string[], RegExp][] = [
      [merge(TINY), /^vera: --out .*gpt2-tiny: is the same path as --model .*gpt2-tiny; write to another folder$/],
      [merge(tmpPath('link-to-model')), /^vera: --out .*link-to-model: is the same path as --model /],
      [merge(path.join(TINY, '..', 'gpt2-tiny', 'sub')), /^vera: --out .*sub: lies inside --model /],
      [['merge', '--model', TINY, '--adapter', tmpPath('outer', 'adapter'), '--out', tmpPath('outer'), '--overwrite'], /^vera: --out .*outer: contains --adapter .*adapter, which writing there would replace/],
      [['convert-adapter', '--adapter', ADAPTER, '--out', ADAPTER, '--dtype', 'f16', '--overwrite'], /^vera: --out .*gpt2-tiny-vera: is the same path as --adapter /],
      [['train', '--model', TINY, '--data', path.join(TINY, 'config.json'), '--method', 'vera', '--r', '2', '--out', path.join(TINY, 'x')], /^vera: --out .*x: lies inside --model /],
    ];
    for (const [args, re] of cases) {
      const r = await vera(args);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      oneLine(r.stderr, re);
    }
    assert.ok(fs.readFileSync(path.join(TINY, 'model.safetensors')).equals(before));
    assert.deepEqual(fs.readdirSync(TINY).sort(), ['config.json', 'model.safetensors']);
  });

  test('an existing non-empty --out needs --overwrite, which replaces the whole folder', async () => {
    const out = tmpPath('merged');
    assert.equal((await vera(merge(out))).code, 0);
    const first = fs.readFileSync(path.join(out, 'model.safetensors'));
    fs.writeFileSync(path.join(out, 'stray.txt'), 'not part of the output');
    const r = await vera(merge(out));
    assert.equal(r.code, 1);
    oneLine(r.stderr, /^vera: --out .*merged: exists and is not empty \(give --overwrite to replace it\)$/);
    assert.ok(fs.existsSync(path.join(out, 'stray.txt')), 'a refused run changes nothing');
    const ok = await vera(merge(out, '--overwrite'));
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(fs.readdirSync(out).sort(), ['config.json', 'model.safetensors'], 'replaced as a whole: the stray file is gone');
    assert.ok(fs.readFileSync(path.join(out, 'model.safetensors')).equals(first));
    // an empty folder is fine without --overwrite
    fs.mkdirSync(tmpPath('empty'));
    assert.equal((await vera(merge(tmpPath('empty')))).code, 0);
    fs.writeFileSync(tmpPath('a-file'), 'x');
    const f = await vera(merge(tmpPath('a-file'), '--overwrite'));
    oneLine(f.stderr, /^vera: --out .*a-file: exists and is not a folder$/);
  });

  test('a write error names --out, never the temp path', async () => {
    fs.writeFileSync(tmpPath('plain-file'), 'x');
    const r = await vera(merge(tmpPath('plain-file', 'out')));
    assert.equal(r.code, 1);
    oneLine(r.stderr, /^vera: --out .*plain-file\/out: cannot write \(.*(ENOTDIR|EEXIST)\)$/);
    assert.doesNotMatch(r.stderr, /vera-tmp/);
  });

  test("stale temp folders of dead writers are removed, a live writer's are kept, and an old folder set aside mid-swap comes back", async () => {
    const out = tmpPath('stale');
    const dead = tmpPath('.stale.vera-tmp-999999999-0a1b');
    const live = tmpPath(`.stale.vera-tmp-${process.pid}-0a1b`);
    const aside = tmpPath('.stale.vera-old-999999998-0c0d');
    for (const d of [dead, live, aside]) fs.mkdirSync(d);
    fs.writeFileSync(path.join(aside, 'config.json'), '{}');
    // out is missing and an old folder was set aside by a dead writer: it is put back, so it is non-empty
    const r = await vera(merge(out));
    assert.equal(r.code, 1);
    oneLine(r.stderr, /exists and is not empty/);
    assert.deepEqual(fs.readdirSync(out), ['config.json']);
    assert.ok(!fs.existsSync(dead) && !fs.existsSync(aside));
    assert.ok(fs.existsSync(live), "a live process's temp folder is not touched");
  });

  test('--checkpoint-dir must not overlap --out and may hold only checkpoint files', async () => {
    const data = tmpPath('d.jsonl');
    fs.writeFileSync(data, `${JSON.stringify({ input_ids: [1, 2, 3, 4] })}\n`);
    const train = (out: string, ck: string): string[] => ['train', '--model', TINY, '--data', data, '--method', 'vera', '--r', '2', '--steps', '1', '--quiet', '--out', out, '--checkpoint-dir', ck];
    let r = await vera(train(tmpPath('run'), tmpPath('run', 'ck')));
    oneLine(r.stderr, /^vera: --checkpoint-dir .*ck: lies inside --out .*run; write to another folder$/);
    fs.mkdirSync(tmpPath('busy'));
    fs.writeFileSync(tmpPath('busy', 'notes.txt'), 'mine');
    r = await vera(train(tmpPath('run'), tmpPath('busy')));
    oneLine(r.stderr, /^vera: --checkpoint-dir .*busy: holds 'notes.txt' besides a trainer checkpoint/);
    assert.ok(fs.existsSync(tmpPath('busy', 'notes.txt')));
    assert.ok(!fs.existsSync(tmpPath('run')));
  });
});

/** Runs vera with stdout read by nobody: the pipe is closed as soon as the child starts. */
function runClosedStdout(args: string[]): Promise<{ code: number | null; signal: string | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'vera.js'), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stderr }));
  });
}

describe('EPIPE and SIGINT', () => {
  test('a closed stdout ends the command quietly (no stack trace, no signal)', async () => {
    for (const args of [['train', '--help'], ['--help'], ['inspect', '--model', TINY]]) {
      const r = await runClosedStdout(args);
      assert.equal(r.signal, null, args.join(' '));
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr, '', `${args.join(' ')}: nothing on stderr`);
    }
  });

  test('Ctrl-C during training: one line, exit 130, no --out', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vera-sigint-'));
    try {
      const data = path.join(dir, 'd.jsonl');
      fs.writeFileSync(data, `${JSON.stringify({ input_ids: [1, 2, 3, 4, 5, 6] })}\n`);
      const out = path.join(dir, 'out');
      const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'vera.js'), 'train', '--model', TINY, '--data', data, '--method', 'vera', '--r', '2', '--steps', '1000000', '--out', out, '--checkpoint-dir', path.join(dir, 'ck'), '--checkpoint-every', '1'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      // interrupt once training has saved its first checkpoint
      const closed = new Promise<[number | null, string | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
      while (!fs.existsSync(path.join(dir, 'ck', 'trainer_state.json')) && child.exitCode === null) await new Promise((r) => setTimeout(r, 20));
      assert.equal(child.exitCode, null, `training ended before it was interrupted: ${stderr}`);
      child.kill('SIGINT');
      const [code, signal] = await closed;
      assert.equal(signal, null);
      assert.equal(code, 130);
      assert.match(stderr, /(^|\n)vera: interrupted\n$/);
      assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace');
      assert.ok(!fs.existsSync(out), 'no partial output');
      assert.deepEqual(fs.readdirSync(dir).filter((n) => n.startsWith('.')), []);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('long text is cut before it is encoded', () => {
  test('the kept tokens are those of the whole text, and a huge line is never encoded whole', async () => {
    const tok = await loadTokenizer(path.join(FIX, 'tokenizers', 'gpt2'));
    assert.ok(tok);
    const longest: number[] = [];
    const encode = (t: string): number[] => {
      longest.push(t.length);
      return tok.encode(t);
    };
    const seqLen = 32;
    const texts = [
      'The quick brown fox jumps over the lazy dog. '.repeat(200),
      'short line',
      'ünïcödé 😀 text with emoji 😀😀 and    spaces\n\n'.repeat(100),
      ' '.repeat(5000) + 'after a long run of spaces '.repeat(50),
    ];
    for (const text of texts) {
      const whole = tok.encode(text).slice(0, seqLen);
      assert.deepEqual(encodeCut(encode, text, seqLen).slice(0, seqLen), whole, text.slice(0, 40));
    }
    longest.length = 0;
    const huge = 'word '.repeat(2_000_000); // 10 MB
    const ids = encodeCut(encode, huge, seqLen);
    assert.ok(ids.length >= seqLen);
    assert.deepEqual(ids.slice(0, seqLen), tok.encode(huge.slice(0, 4000)).slice(0, seqLen));
    assert.ok(Math.max(...longest) <= seqLen * MAX_CHARS_PER_TOKEN + 1024, `encoded ${Math.max(...longest)} characters at once`);
  });
});
