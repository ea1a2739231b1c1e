// kill -9 at random (seeded) moments during `vera merge`, `vera convert-adapter` and training
// checkpoints, on the tiny fixtures. After every kill the output folder is the old one or the new
// one, complete and byte-equal to what an uninterrupted run writes (or absent when there was no old
// one; an old folder set aside mid-swap counts, as the next run puts it back), and once the next
// run has started no temp file or folder is left. Half the kills land at a uniform time over a whole run (mostly startup
// and loading), half a few milliseconds after a temp folder appears (inside the write and swap).
// VERA_KILL_TRIALS sets the kills per command (default 7).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { SafetensorsFile } from '../src/io/safetensors.js';
import { runVera as vera } from './helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = path.join(ROOT, 'bin', 'vera.js');
const FIX = path.join(ROOT, 'test', 'fixtures');
const TRIALS = Number(process.env.VERA_KILL_TRIALS ?? 7);

let tmp = '';
const tmpPath = (...parts: string[]): string => path.join(tmp, ...parts);

/** mulberry32: a small seeded generator, so a failing kill moment can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Every file under `dir` by relative path, with its bytes. */
function readTree(dir: string, rel = ''): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const r = path.join(rel, e.name);
    if (e.isDirectory()) for (const [k, v] of readTree(dir, r)) out.set(k, v);
    else out.set(r, fs.readFileSync(path.join(dir, r)));
  }
  return out;
}

function sameTree(a: Map<string, Buffer>, b: Map<string, Buffer>): boolean {
  return a.size === b.size && [...a].every(([k, v]) => b.get(k)?.equals(v) === true);
}

/** The temp files and folders writers leave beside `target` (see io/atomic.ts). */
function leftovers(target: string): string[] {
  const prefix = `.${path.basename(target)}.`;
  return fs.readdirSync(path.dirname(target)).filter((n) => n.startsWith(prefix));
}

/**
 * The folder a reader gets once recovery has run, found without running it (the next run must do
 * that): `target` itself, or an old folder a swap set aside when `target` is missing.
 */
function visible(target: string): string | null {
  if (fs.existsSync(target)) return target;
  const aside = leftovers(target).filter((n) => n.includes('.vera-old-'));
  assert.ok(aside.length <= 1, `${target}: more than one old folder set aside: ${aside.join(', ')}`);
  return aside.length === 1 ? path.join(path.dirname(target), aside[0]) : null;
}

/**
 * Runs vera and SIGKILLs it: after `delayMs`, or (`onTemp`) `delayMs` after the `nth` temp entry
 * for `watched` appears beside it. Resolves once the child is gone; `killed` says whether the kill
 * came before it finished.
 */
function runAndKill(args: string[], delayMs: number, onTemp: { watched: string; nth: number } | null): Promise<{ killed: boolean; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, stdio: 'ignore' });
    let watcher: fs.FSWatcher | null = null;
    let timer: NodeJS.Timeout | null = null;
    let killed = false;
    const kill = (): void => {
      if (child.exitCode === null && child.signalCode === null) killed = child.kill('SIGKILL');
    };
    if (onTemp === null) timer = setTimeout(kill, delayMs);
    else {
      const prefix = `.${path.basename(onTemp.watched)}.vera-`;
      let seen = 0;
      watcher = fs.watch(path.dirname(onTemp.watched), (_event, name) => {
        if (typeof name === 'string' && name.startsWith(prefix) && ++seen === onTemp.nth) timer = setTimeout(kill, delayMs);
      });
    }
    child.on('error', reject);
    child.on('exit', (code) => {
      watcher?.close();
      if (timer) clearTimeout(timer);
      resolve({ killed, code });
    });
  });
}

async function runOk(args: string[]): Promise<void> {
  const r = await vera(args);
  assert.equal(r.code, 0, `vera ${args.join(' ')}: ${r.stderr}`);
}

function copyTree(from: string, to: string): void {
  fs.rmSync(to, { recursive: true, force: true });
  fs.cpSync(from, to, { recursive: true });
}

/**
 * The shared check for a command writing `--out`: odd trials replace an existing folder holding
 * `old` (with --overwrite), even ones write a new folder.
 */
async function killTrials(name: string, seed: number, args: (out: string) => string[], expectedDir: string, oldDir: string): Promise<void> {
  const expected = readTree(expectedDir);
  const old = readTree(oldDir);
  assert.ok(!sameTree(expected, old), 'the old and new outputs must differ for the check to mean anything');
  const random = rng(seed);
  let killedCount = 0;
  const t0 = performance.now();
  await runOk(args(tmpPath(`${name}-timing`)));
  const runMs = performance.now() - t0;
  for (let trial = 0; trial < TRIALS; trial++) {
    const out = tmpPath(`${name}-${trial}`);
    const replacing = trial % 2 === 1;
    if (replacing) copyTree(oldDir, out);
    const onTemp = random() < 0.5 ? { watched: out, nth: 1 } : null;
    const delay = onTemp ? Math.floor(random() * 3) : random() * runMs;
    const full = [...args(out), ...(replacing ? ['--overwrite'] : [])];
    const r = await runAndKill(full, delay, onTemp);
    if (r.killed) killedCount++;
    else assert.equal(r.code, 0, `${name} trial ${trial} failed on its own`);

    const where = `${name} trial ${trial} (seed ${seed}, ${onTemp ? `${delay} ms after the temp folder` : `${delay.toFixed(0)} ms`})`;
    const seen = visible(out);
    if (seen !== null) {
      const got = readTree(seen);
      assert.ok(sameTree(got, expected) || (replacing && sameTree(got, old)), `${where}: ${seen} is neither the old nor the new output: ${[...got.keys()].join(', ')}`);
    } else {
      assert.ok(!replacing, `${where}: the old folder was lost`);
    }

    // the next run recovers, completes and leaves nothing behind
    await runOk([...args(out), '--overwrite']);
    assert.ok(sameTree(readTree(out), expected), `${where}: the rerun's output differs`);
    assert.deepEqual(leftovers(out), [], `${where}: temp files left after the rerun`);
  }
  assert.ok(killedCount > 0, `${name}: no trial was killed before it finished`);
}

describe('kill -9 during writes', { concurrency: false }, () => {
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vera-kill-'));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  test('merge: --out is absent, old or new, never mixed; no temp files survive the next run', async () => {
    const args = (out: string): string[] => ['merge', '--model', path.join(FIX, 'gpt2-tiny'), '--adapter', path.join(FIX, 'gpt2-tiny-vera'), '--out', out, '--quiet'];
    await runOk(args(tmpPath('merge-expected')));
    await killTrials('merge', 101, args, tmpPath('merge-expected'), path.join(FIX, 'gpt2-tiny'));
  });

  test('convert-adapter: --out is absent, old or new, never mixed; no temp files survive the next run', async () => {
    const args = (out: string): string[] => ['convert-adapter', '--adapter', path.join(FIX, 'gpt2-tiny-vera'), '--dtype', 'f16', '--out', out];
    await runOk(args(tmpPath('convert-expected')));
    await killTrials('convert', 202, args, tmpPath('convert-expected'), path.join(FIX, 'gpt2-tiny-vera'));
  });

  test('training checkpoints: a killed run leaves a complete checkpoint (or none), and resuming gives the uninterrupted adapter', async () => {
    const data = tmpPath('train.jsonl');
    const rows = Array.from({ length: 16 }, (_, i) => JSON.stringify({ input_ids: Array.from({ length: 12 }, (_, j) => (i * 3 + j) % 50) }));
    fs.writeFileSync(data, `${rows.join('\n')}\n`);
    const STEPS = 10;
    const args = (out: string, ck: string): string[] => [
      'train', '--model', path.join(FIX, 'gpt2-tiny'), '--data', data, '--method', 'vera', '--r', '4', '--steps', String(STEPS),
      '--batch-size', '4', '--quiet', '--out', out, '--checkpoint-dir', ck, '--checkpoint-every', '1',
    ];
    await runOk(args(tmpPath('train-expected'), tmpPath('train-expected-ck')));
    const expected = fs.readFileSync(tmpPath('train-expected', 'adapter_model.safetensors'));
    const random = rng(303);
    let killedCount = 0;
    for (let trial = 0; trial < TRIALS; trial++) {
      const out = tmpPath(`train-${trial}`);
      const ck = tmpPath(`train-${trial}-ck`);
      // the nth save of the checkpoint folder, a few ms after it starts
      const nth = 1 + Math.floor(random() * STEPS);
      const delay = Math.floor(random() * 3);
      const r = await runAndKill(args(out, ck), delay, { watched: ck, nth });
      if (r.killed) killedCount++;
      const where = `train trial ${trial} (save ${nth}, +${delay} ms)`;

      const seen = visible(ck);
      const resumable = seen !== null;
      if (seen !== null) {
        assert.deepEqual(fs.readdirSync(seen).sort(), ['optimizer.safetensors', 'trainable.safetensors', 'trainer_state.json'], `${where}: ${seen} is not a complete checkpoint`);
        const state = JSON.parse(fs.readFileSync(path.join(seen, 'trainer_state.json'), 'utf8')) as { step: number };
        for (const f of ['trainable.safetensors', 'optimizer.safetensors']) {
          const file = SafetensorsFile.open(path.join(seen, f));
          assert.equal(file.metadata?.step, String(state.step), `${where}: ${f} belongs to another step than trainer_state.json`);
        }
      }

      // resuming (or starting over when nothing was saved) ends at the uninterrupted run's adapter
      fs.rmSync(out, { recursive: true, force: true });
      await runOk([...args(out, ck), ...(resumable ? ['--resume'] : [])]);
      assert.ok(fs.readFileSync(path.join(out, 'adapter_model.safetensors')).equals(expected), `${where}: the resumed adapter differs from the uninterrupted one`);
      assert.deepEqual(leftovers(ck), [], `${where}: temp files left after the rerun`);
      assert.deepEqual(leftovers(out), [], `${where}: temp files left beside --out`);
    }
    assert.ok(killedCount > 0, 'train: no trial was killed before it finished');
  });
});
