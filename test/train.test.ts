import '../src/backends/index.js';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';

import { Tensor, F, Rng, defaultRng } from '../src/tensor/index.js';
import { VeraError } from '../src/io/errors.js';
import { serializeSafetensors } from '../src/io/safetensors.js';
import {
  AdamW,
  lrMultiplier,
  clipGradNorm,
  ProgressReporter,
  ReplayRng,
  train,
  accuracy,
  TRAINER_STATE_FILE,
  OPTIMIZER_FILE,
  TRAINABLE_FILE,
  type TrainTask,
  type TrainerOptions,
} from '../src/train/index.js';
import { withTmp } from './helpers.js';


function close(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what = ''): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    assert.ok(err <= tol * Math.max(1, Math.abs(expected[i])), `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

// ---------------------------------------------------------------- AdamW

/** torch.optim.AdamW's documented algorithm for one tensor, in float64, written out independently. */
class RefAdamW {
  m: number[];
  v: number[];
  t = 0;
  constructor(public p: number[], private b1: number, private b2: number, private eps: number, private wd: number) {
    this.m = p.map(() => 0);
    this.v = p.map(() => 0);
  }
  step(g: number[], lr: number): void {
    this.t++;
    for (let i = 0; i < this.p.length; i++) {
      this.p[i] = this.p[i] - lr * this.wd * this.p[i]; // θ ← θ − γλθ
      this.m[i] = this.b1 * this.m[i] + (1 - this.b1) * g[i];
      this.v[i] = this.b2 * this.v[i] + (1 - this.b2) * g[i] * g[i];
      const mHat = this.m[i] / (1 - this.b1 ** this.t);
      const vHat = this.v[i] / (1 - this.b2 ** this.t);
      this.p[i] = this.p[i] - (lr * mHat) / (Math.sqrt(vHat) + this.eps);
    }
  }
}

describe('AdamW', () => {
  test('matches the torch AdamW formulas over several steps (groups, lr multiplier, late-starting param)', () => {
    const p1 = Tensor.fromArray([0.5, -1.0, 2.0], [3], true);
    const p2 = Tensor.fromArray([1, 2, 3, 4], [2, 2], true);
    const p3 = Tensor.fromArray([7, 8], [2], true); // never gets a gradient
    const opt = new AdamW(
      [
        { name: 'a', params: [p1], lr: 0.1 },
        { name: 'b', params: [p2, p3], lr: 0.05, weightDecay: 0.2 },
      ],
      { betas: [0.8, 0.95], eps: 1e-6 },
    );
    const r1 = new RefAdamW([0.5, -1.0, 2.0], 0.8, 0.95, 1e-6, 0.01); // optimizer-wide default wd
    const r2 = new RefAdamW([1, 2, 3, 4], 0.8, 0.95, 1e-6, 0.2);
    const mults = [1, 1, 0.5, 0.25];
    for (let t = 1; t <= 4; t++) {
      const g1 = [0.1 * t, -0.2, 0.3 / t];
      const g2 = [1, -1, 0.5, 0].map((x) => x * (t % 2 === 0 ? 1 : -1) * 0.3);
      opt.setLrMultiplier(mults[t - 1]);
      p1.grad = Tensor.fromArray(g1, [3]);
      r1.step(g1, 0.1 * mults[t - 1]);
      if (t >= 2) {
        // p2's state starts at step 2, so its bias correction counts from there
        p2.grad = Tensor.fromArray(g2, [2, 2]);
        r2.step(g2, 0.05 * mults[t - 1]);
      }
      opt.step();
      opt.zeroGrad();
      assert.equal(p1.grad, null);
      close(p1.toFloat32Array(), r1.p, 2e-6, `p1 step ${t}`);
      close(p2.toFloat32Array(), r2.p, 2e-6, `p2 step ${t}`);
    }
    assert.deepEqual([...p3.toFloat32Array()], [7, 8]);
    const sd = opt.stateDict();
    assert.deepEqual(Object.keys(sd.tensors).sort(), ['a.0.exp_avg', 'a.0.exp_avg_sq', 'b.0.exp_avg', 'b.0.exp_avg_sq']);
    assert.deepEqual(sd.steps, { 'a.0': 4, 'b.0': 3 });
    close(sd.tensors['a.0.exp_avg'].toFloat32Array(), r1.m, 1e-6, 'm');
    close(sd.tensors['b.0.exp_avg_sq'].toFloat32Array(), r2.v, 1e-6, 'v');
  });

  test('defaults are torch AdamW defaults', () => {
    const opt = new AdamW([{ params: [], lr: 1e-3 }]);
    assert.deepEqual([opt.beta1, opt.beta2, opt.eps, opt.weightDecay], [0.9, 0.999, 1e-8, 0.01]);
  });

  test('weight decay is decoupled: a zero gradient still shrinks p by (1 − lr·wd) per step', () => {
    const p = Tensor.fromArray([2, -4], [2], true);
    const opt = new AdamW([{ params: [p], lr: 0.1, weightDecay: 0.5 }]);
    for (let t = 0; t < 3; t++) {
      p.grad = Tensor.zeros([2]);
      opt.step();
    }
    // coupled L2 (Adam on g + wd·p) would move p by ≈ lr per step regardless of its size
    close(p.toFloat32Array(), [2 * 0.95 ** 3, -4 * 0.95 ** 3], 1e-6);
  });

  test('state dict round-trips into a fresh optimizer and continues identically', () => {
    const mk = (): [Tensor, AdamW] => {
      const p = Tensor.fromArray([1, 2, 3], [3], true);
      return [p, new AdamW([{ params: [p], lr: 0.01 }])];
    };
    const [pa, oa] = mk();
    const [pb, ob] = mk();
    for (let t = 0; t < 3; t++) {
      pa.grad = Tensor.fromArray([t, -1, 0.5]);
      oa.step();
    }
    ob.loadStateDict(oa.stateDict());
    pb.copyFrom(pa);
    pa.grad = Tensor.fromArray([1, 1, 1]);
    pb.grad = Tensor.fromArray([1, 1, 1]);
    oa.step();
    ob.step();
    assert.deepEqual(pb.toFloat32Array(), pa.toFloat32Array());
    assert.throws(() => ob.loadStateDict({ tensors: {}, steps: { 'nope.0': 1 } }), VeraError);
    assert.throws(() => ob.loadStateDict({ tensors: {}, steps: { '0.0': 1 } }), VeraError);
  });

  test('rejects bad hyperparameters and shared params', () => {
    const p = Tensor.zeros([1], true);
    assert.throws(() => new AdamW([{ params: [p], lr: -1 }]), VeraError);
    assert.throws(() => new AdamW([{ params: [p], lr: 1 }], { betas: [1, 0.9] }), VeraError);
    assert.throws(() => new AdamW([{ params: [p], lr: 1 }, { params: [p], lr: 1 }]), VeraError);
  });
});

// ---------------------------------------------------------------- schedules

describe('lrMultiplier (Hugging Face schedules)', () => {
  // warmup 10, total 110: decay phase spans 100 steps
  test('warmup ramps linearly from 0 for every kind', () => {
    for (const kind of ['constant', 'linear', 'cosine'] as const) {
      assert.equal(lrMultiplier(kind, 0, 10, 110), 0);
      assert.equal(lrMultiplier(kind, 3, 10, 110), 0.3);
      assert.equal(lrMultiplier(kind, 10, 10, 110), 1);
    }
  });
  test('constant', () => {
    assert.equal(lrMultiplier('constant', 50, 10, 110), 1);
    assert.equal(lrMultiplier('constant', 500, 10, 110), 1);
    assert.equal(lrMultiplier('constant', 0, 0, 110), 1);
  });
  test('linear: (total − step)/(total − warmup), floored at 0', () => {
    assert.equal(lrMultiplier('linear', 60, 10, 110), 0.5);
    assert.equal(lrMultiplier('linear', 85, 10, 110), 0.25);
    assert.equal(lrMultiplier('linear', 110, 10, 110), 0);
    assert.equal(lrMultiplier('linear', 120, 10, 110), 0);
    assert.equal(lrMultiplier('linear', 0, 0, 4), 1);
  });
  test('cosine: 0.5·(1 + cos(π·progress)), half a cycle', () => {
    assert.ok(Math.abs(lrMultiplier('cosine', 60, 10, 110) - 0.5) < 1e-15); // mid-way
    assert.ok(Math.abs(lrMultiplier('cosine', 35, 10, 110) - (0.5 + Math.SQRT1_2 / 2)) < 1e-15); // progress 1/4
    assert.ok(Math.abs(lrMultiplier('cosine', 110, 10, 110)) < 1e-15); // end
    assert.ok(lrMultiplier('cosine', 130, 10, 110) > 0); // HF lets it rise again past the end
  });
  test('rejects bad input', () => {
    assert.throws(() => lrMultiplier('linear', -1, 0, 10), VeraError);
    assert.throws(() => lrMultiplier('bogus' as 'linear', 1, 0, 10), VeraError);
  });
});

// ---------------------------------------------------------------- clipping

describe('clipGradNorm', () => {
  test('scales by maxNorm/(norm + 1e-6) over all grads together and returns the pre-clip norm', () => {
    const a = Tensor.zeros([2], true);
    const b = Tensor.zeros([1], true);
    const c = Tensor.zeros([3], true); // no grad: skipped
    a.grad = Tensor.fromArray([3, 4]);
    b.grad = Tensor.fromArray([12]);
    const norm = clipGradNorm([a, b, c], 6.5);
    assert.ok(Math.abs(norm - 13) < 1e-12);
    const coef = 6.5 / (13 + 1e-6);
    close(a.grad.toFloat32Array(), [3 * coef, 4 * coef], 1e-7);
    close(b.grad.toFloat32Array(), [12 * coef], 1e-7);
    assert.equal(c.grad, null);
  });
  test('leaves grads untouched below the threshold', () => {
    const a = Tensor.zeros([2], true);
    a.grad = Tensor.fromArray([0.3, 0.4]);
    const norm = clipGradNorm([a], 1);
    assert.ok(Math.abs(norm - 0.5) < 1e-7);
    assert.deepEqual(a.grad.toFloat32Array(), Float32Array.from([0.3, 0.4]));
  });
});

// ---------------------------------------------------------------- tasks

/** Two Gaussian blobs, separable; logits = X·W + b. */
function blobs(n: number, seed: number): { x: Float32Array; y: Int32Array } {
  const r = new Rng(seed);
  const x = new Float32Array(n * 2);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    y[i] = i % 2;
    const c = y[i] === 0 ? -1.5 : 1.5;
    x[2 * i] = c + 0.5 * r.normal();
    x[2 * i + 1] = -c + 0.5 * r.normal();
  }
  return { x, y };
}

function rows(x: Float32Array, width: number, idx: Int32Array): Float32Array {
  const out = new Float32Array(idx.length * width);
  idx.forEach((r, i) => out.set(x.subarray(r * width, (r + 1) * width), i * width));
  return out;
}

function sampleIdx(rng: Rng, n: number, batch: number): Int32Array {
  const idx = new Int32Array(batch);
  for (let i = 0; i < batch; i++) idx[i] = rng.int(n);
  return idx;
}

function logisticSetup(opts: { batch: number; dropout?: number; seed?: number } = { batch: 16 }) {
  const data = blobs(200, 7);
  const W = Tensor.fromArray([0.1, -0.1, 0.05, 0.2], [2, 2], true);
  const b = Tensor.fromArray([0, 0], [2], true);
  const forward = (x: Tensor, training: boolean): Tensor => {
    const h = opts.dropout ? F.dropout(x, opts.dropout, defaultRng(), training) : x;
    return F.add(F.matmul(h, W), b);
  };
  const task: TrainTask<Int32Array> = {
    nextBatch: (rng) => {
      const idx = sampleIdx(rng, 200, opts.batch);
      rng.normal(); // exercises the Box–Muller spare in checkpointed rng state
      return idx;
    },
    loss: (idx) => {
      const x = Tensor.fromArray(rows(data.x, 2, idx), [idx.length, 2]);
      const y = Int32Array.from(idx, (i) => data.y[i]);
      return { loss: F.crossEntropy(forward(x, true), y), items: idx.length };
    },
    evaluate: () => {
      const logits = forward(Tensor.fromArray(data.x, [200, 2]), false);
      return { loss: F.crossEntropy(logits, data.y).item(), accuracy: accuracy(logits, data.y) };
    },
  };
  const params: [string, Tensor][] = [['W', W], ['b', b]];
  const optimizer = new AdamW([{ params: [W, b], lr: 0.05 }]);
  return { W, b, params, optimizer, task };
}

describe('train', () => {
  test('logistic regression trains to low loss and high accuracy', () => {
    const { params, optimizer, task } = logisticSetup();
    const res = train(params, optimizer, task, { steps: 150, schedule: 'linear', warmupSteps: 10, progress: false, evalEvery: 50, logEvery: 10 });
    assert.equal(res.steps, 150);
    const last = res.history[res.history.length - 1];
    assert.equal(last.step, 150);
    assert.ok(last.eval_loss! < 0.1, `eval loss ${last.eval_loss}`);
    assert.ok(last.eval_accuracy! > 0.97, `accuracy ${last.eval_accuracy}`);
    assert.ok(res.finalLoss < 0.2, `final loss ${res.finalLoss}`);
    assert.ok(res.itemsPerSecond > 0);
    assert.deepEqual(res.history.filter((h) => h.eval_loss !== undefined).map((h) => h.step), [50, 100, 150]);
    assert.equal(res.history.length, 15);
    // the row at step 10 reports the lr of that update: base · multiplier(9) = 0.05 · 9/10
    assert.ok(Math.abs(res.history[0].lr - 0.045) < 1e-12);
  });

  test('with warmup the first update uses multiplier(0) = 0, as the HF Trainer', () => {
    const { W, params, optimizer, task } = logisticSetup();
    const before = W.toFloat32Array();
    const res = train(params, optimizer, task, { steps: 1, schedule: 'constant', warmupSteps: 2, progress: false });
    assert.equal(res.history[0].lr, 0);
    assert.deepEqual(W.toFloat32Array(), before);
  });

  test('linear regression reaches near-zero loss', () => {
    const r = new Rng(3);
    const n = 64;
    const X = new Float32Array(n * 3).map(() => r.normal());
    const Y = new Float32Array(n);
    for (let i = 0; i < n; i++) Y[i] = 2 * X[3 * i] - X[3 * i + 1] + 0.5 * X[3 * i + 2] + 0.3;
    const w = Tensor.zeros([3, 1], true);
    const bias = Tensor.zeros([1], true);
    const task: TrainTask<Int32Array> = {
      nextBatch: (rng) => sampleIdx(rng, n, 16),
      loss: (idx) => {
        const pred = F.add(F.matmul(Tensor.fromArray(rows(X, 3, idx), [idx.length, 3]), w), bias);
        const y = Tensor.fromArray(rows(Y, 1, idx), [idx.length, 1]);
        return { loss: F.mean(F.square(F.sub(pred, y))), items: idx.length };
      },
    };
    const opt = new AdamW([{ params: [w, bias], lr: 0.05, weightDecay: 0 }]);
    const res = train([['w', w], ['b', bias]], opt, task, { steps: 400, schedule: 'cosine', progress: false });
    assert.ok(res.finalLoss < 1e-3, `final loss ${res.finalLoss}`);
    close(w.toFloat32Array(), [2, -1, 0.5], 0.02);
  });

  test('gradient accumulation over n micro-batches equals one batch of the same data', () => {
    const a = logisticSetup({ batch: 8 });
    const b = logisticSetup({ batch: 32 });
    // without the extra normal() draw, 4 draws of 8 indices are exactly one draw of 32
    a.task.nextBatch = (rng) => sampleIdx(rng, 200, 8);
    b.task.nextBatch = (rng) => sampleIdx(rng, 200, 32);
    const common: TrainerOptions = { steps: 3, progress: false, maxGradNorm: 1 };
    const ra = train(a.params, a.optimizer, a.task, { ...common, gradAccumulation: 4 });
    const rb = train(b.params, b.optimizer, b.task, common);
    close(a.W.toFloat32Array(), b.W.toFloat32Array(), 1e-6, 'W');
    close(a.b.toFloat32Array(), b.b.toFloat32Array(), 1e-6, 'b');
    assert.ok(Math.abs(ra.finalLoss - rb.finalLoss) < 1e-6);
    assert.ok(Math.abs(ra.history[0].gradNorm! - rb.history[0].gradNorm!) < 1e-6);
  });

  test('is reproducible from the seed (batches and dropout)', () => {
    const run = (seed: number): Float32Array => {
      const s = logisticSetup({ batch: 8, dropout: 0.3 });
      train(s.params, s.optimizer, s.task, { steps: 5, seed, progress: false });
      return s.W.toFloat32Array();
    };
    assert.deepEqual(run(1), run(1));
    assert.notDeepEqual(run(1), run(2));
  });

  test('checkpoint + resume equals the uninterrupted run bit for bit', () => {
    withTmp((dir) => {
      const opts: TrainerOptions = {
        steps: 9, gradAccumulation: 3, schedule: 'cosine', warmupSteps: 2, maxGradNorm: 0.5,
        evalEvery: 4, logEvery: 2, seed: 11, progress: false,
      };
      const setup = () => logisticSetup({ batch: 8, dropout: 0.2 });

      const full = setup();
      const ref = train(full.params, full.optimizer, full.task, opts);

      // crash in step 5 (loss call 13 of 3 per step): the last checkpoint is step 3, taken after
      // 9 normal() draws, so the batch rng holds a cached Box–Muller spare there
      const crashed = setup();
      let calls = 0;
      const inner = crashed.task.loss;
      crashed.task.loss = (batch) => {
        if (++calls === 13) throw new Error('simulated crash');
        return inner(batch);
      };
      assert.throws(() => train(crashed.params, crashed.optimizer, crashed.task, { ...opts, checkpointDir: dir, checkpointEvery: 3 }), /simulated crash/);
      const saved = JSON.parse(fs.readFileSync(path.join(dir, TRAINER_STATE_FILE), 'utf8')) as { step: number; rng: { spareFrom: number | null } };
      assert.equal(saved.step, 3);
      assert.notEqual(saved.rng.spareFrom, null);

      // a fresh process: new tensors with other values, new optimizer
      const resumed = setup();
      resumed.W.copyFrom(new Float32Array(4));
      const res = train(resumed.params, resumed.optimizer, resumed.task, { ...opts, checkpointDir: dir, checkpointEvery: 3, resume: true });
      assert.equal(res.steps, 9);
      assert.deepEqual(resumed.W.toFloat32Array(), full.W.toFloat32Array());
      assert.deepEqual(resumed.b.toFloat32Array(), full.b.toFloat32Array());
      assert.deepEqual(res.history, ref.history);
      assert.equal(res.finalLoss, ref.finalLoss);
      assert.deepEqual(resumed.optimizer.stateDict().steps, full.optimizer.stateDict().steps);

      // resuming a finished run is a no-op
      const again = train(resumed.params, resumed.optimizer, resumed.task, { ...opts, checkpointDir: dir, resume: true });
      assert.equal(again.steps, 9);
      assert.deepEqual(resumed.W.toFloat32Array(), full.W.toFloat32Array());
    });
  });

  test('a missing or corrupt checkpoint is a VeraError', () => {
    withTmp((dir) => {
      const s = logisticSetup();
      const resume = (d: string) => train(s.params, s.optimizer, s.task, { steps: 4, progress: false, checkpointDir: d, resume: true });
      assert.throws(() => resume(path.join(dir, 'nothing-here')), VeraError);

      const ck = path.join(dir, 'ck');
      train(s.params, s.optimizer, s.task, { steps: 2, progress: false, checkpointDir: ck });
      const files = Object.fromEntries([TRAINER_STATE_FILE, TRAINABLE_FILE, OPTIMIZER_FILE].map((f) => [f, fs.readFileSync(path.join(ck, f))]));
      const restore = () => { for (const [f, b] of Object.entries(files)) fs.writeFileSync(path.join(ck, f), b); };
      const before = s.W.toFloat32Array();

      const cases: [string, () => void][] = [
        ['bad json', () => fs.writeFileSync(path.join(ck, TRAINER_STATE_FILE), '{"step": 2,')],
        ['wrong format', () => fs.writeFileSync(path.join(ck, TRAINER_STATE_FILE), '{"format": "other"}')],
        ['truncated optimizer', () => fs.writeFileSync(path.join(ck, OPTIMIZER_FILE), files[OPTIMIZER_FILE].subarray(0, 40))],
        ['missing weights', () => fs.rmSync(path.join(ck, TRAINABLE_FILE))],
        ['weights from another step', () => fs.writeFileSync(path.join(ck, TRAINABLE_FILE), serializeSafetensors(
          { W: { data: new Float32Array(4), shape: [2, 2] }, b: { data: new Float32Array(2), shape: [2] } }, { format: 'vera-trainer', step: '1' }))],
        ['wrong shape', () => fs.writeFileSync(path.join(ck, TRAINABLE_FILE), serializeSafetensors(
          { W: { data: new Float32Array(2), shape: [2] }, b: { data: new Float32Array(2), shape: [2] } }, { format: 'vera-trainer', step: '2' }))],
      ];
      for (const [what, corrupt] of cases) {
        corrupt();
        assert.throws(() => resume(ck), (e: unknown) => e instanceof VeraError && !e.message.includes('\n'), what);
        assert.deepEqual(s.W.toFloat32Array(), before, `${what}: params untouched`);
        restore();
      }
      // other parameter names
      const other = logisticSetup();
      assert.throws(() => train([['W2', other.W], ['b', other.b]], other.optimizer, other.task,
        { steps: 4, progress: false, checkpointDir: ck, resume: true }), VeraError);
      // and the intact checkpoint still resumes
      assert.equal(resume(ck).steps, 4);
    });
  });

  test('rejects inconsistent setups', () => {
    const s = logisticSetup();
    assert.throws(() => train([['W', s.W]], s.optimizer, s.task, { steps: 1, progress: false }), VeraError);
    assert.throws(() => train(s.params, s.optimizer, s.task, { steps: 1, progress: false, resume: true }), VeraError);
    assert.throws(() => train(s.params, s.optimizer, s.task, { steps: 1, progress: false, gradAccumulation: 0 }), VeraError);
    const frozen = { ...s.task, loss: () => ({ loss: Tensor.scalar(1), items: 1 }) };
    assert.throws(() => train(s.params, s.optimizer, frozen, { steps: 1, progress: false }), VeraError);
  });
});

describe('ReplayRng', () => {
  test('restored state continues the same stream, including a cached normal', () => {
    const a = new ReplayRng(5);
    a.int(10);
    a.normal(); // leaves a spare
    a.random();
    const b = ReplayRng.restore(a.state());
    const seq = (r: Rng) => [r.normal(), r.normal(), r.int(1000), r.random()];
    assert.deepEqual(seq(b), seq(a));
    const plain = new Rng(5);
    const c = new ReplayRng(5);
    assert.deepEqual([plain.random(), plain.normal()], [c.random(), c.normal()]);
  });
});

// ---------------------------------------------------------------- progress, accuracy

class Capture extends Writable {
  text = '';
  columns = 120;
  constructor(public isTTY: boolean) {
    super();
  }
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

describe('ProgressReporter', () => {
  test('without a TTY prints one line every logEvery steps', () => {
    const out = new Capture(false);
    const p = new ProgressReporter({ total: 10, logEvery: 4, unit: 'tokens', stream: out });
    for (let s = 1; s <= 10; s++) p.update(s, { loss: 1 / s, items: 100, extra: { lr: 1e-4 } });
    p.log('eval accuracy 0.9');
    p.stop();
    const lines = out.text.trim().split('\n');
    assert.equal(lines.length, 4, out.text);
    assert.match(lines[0], /^train {2}4\/10 \| loss \d\.\d{4} \| [\d.kM]+ tokens\/s \| eta \S+ \| lr 1\.00e-4$/);
    assert.match(lines[2], /10\/10.*eta 0s/);
    assert.equal(lines[3], 'eval accuracy 0.9');
    assert.ok(!out.text.includes('\r'));
  });

  test('draws a bar on a TTY and stays silent when quiet', () => {
    const tty = new Capture(true);
    const p = new ProgressReporter({ total: 3, stream: tty });
    p.update(1, { loss: 2, items: 4 });
    p.log('hello');
    p.update(3, { loss: 1, items: 4 });
    p.stop();
    assert.ok(tty.text.includes('█'), tty.text);
    assert.ok(tty.text.includes('hello\n'));
    assert.ok(tty.text.endsWith('\n'));

    const quiet = new Capture(false);
    const q = new ProgressReporter({ total: 3, stream: quiet, quiet: true, logEvery: 1 });
    q.update(1, { loss: 2, items: 4 });
    q.log('x');
    q.stop();
    assert.equal(quiet.text, '');
  });

  test('smooths the loss with a bias-corrected EMA', () => {
    const p = new ProgressReporter({ total: 3, quiet: true, smoothing: 0.5 });
    p.update(1, { loss: 4, items: 1 });
    assert.equal(p.smoothedLoss, 4);
    p.update(2, { loss: 2, items: 1 });
    assert.ok(Math.abs(p.smoothedLoss - (0.5 * 2 + 0.25 * 4) / 0.75) < 1e-12);
  });

  test('trainer progress goes to the given stream', () => {
    const out = new Capture(false);
    const s = logisticSetup();
    train(s.params, s.optimizer, s.task, { steps: 4, logEvery: 2, throughputUnit: 'samples', progressStream: out });
    assert.match(out.text, /train 2\/4 .*samples\/s/);
    assert.match(out.text, /step 4: eval_loss/);
  });
});

test('accuracy counts argmax hits and skips negative labels', () => {
  const logits = Tensor.fromArray([0.1, 0.9, 0.8, 0.2, 0.3, 0.7, 0.5, 0.5], [4, 2]);
  assert.equal(accuracy(logits, Int32Array.from([1, 0, 0, -100])), 2 / 3);
});
