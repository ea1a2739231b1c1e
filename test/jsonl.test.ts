import '../src/backends/index.js';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { collateCausalLm, EpochSampler, IGNORE_INDEX, parseJsonlRecords, readCausalLmJsonl, sequentialBatches } from '../src/data/jsonl.js';
import { loadTokenizer, type Tokenizer } from '../src/data/tokenizer.js';
import { rejectsVera, throwsVera } from './helpers.js';
import { causalLmLoss, loadPretrained, type GPT2LMHeadModel } from '../src/models/index.js';
import { ReplayRng } from '../src/train/index.js';
import { Rng, noGrad } from '../src/tensor/index.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/', import.meta.url));

function withTmp<T>(fn: (dir: string) => Promise<T> | T): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vera-jsonl-'));
  return Promise.resolve()
    .then(() => fn(dir))
    .finally(() => fs.rmSync(dir, { recursive: true, force: true }));
}

/**
 * A GPT-2 style byte-level BPE tokenizer.json small enough for gpt2-tiny's 101-token vocabulary:
 * the printable ASCII bytes and the space (as GPT-2's byte-to-unicode map spells them: 'Ġ' for
 * ' '), five merges, and <|endoftext|> as id 100.
 */
function tinyTokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  let id = 0;
  vocab['Ġ'] = id++; // byte 32
  for (let b = 33; b <= 126; b++) vocab[String.fromCharCode(b)] = id++;
  const merges = ['Ġ t', 'h e', 'Ġt he', 'Ġ a', 'l l'];
  for (const m of merges) vocab[m.replace(' ', '')] = id++;
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [{ id, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab, merges },
  };
}

describe('parseJsonlRecords', () => {
  test('reads input_ids and text lines, skipping empty ones, with their line numbers', () => {
    const recs = parseJsonlRecords('{"input_ids": [1, 2, 3]}\n\n   \n{"text": "hi"}\r\n{"input_ids": [], "text": "x"}\n', 'd.jsonl', 101);
    assert.equal(recs.length, 3);
    assert.deepEqual([...recs[0].ids!], [1, 2, 3]);
    assert.equal(recs[0].line, 1);
    assert.equal(recs[1].text, 'hi');
    assert.equal(recs[1].line, 4);
    assert.deepEqual([...recs[2].ids!], [], '"input_ids" wins over "text"');
  });

  test('errors name the file and the line', () => {
    throwsVera(() => parseJsonlRecords('{"input_ids": [1]}\n\n{not json\n', 'data.jsonl', 101), /^data\.jsonl:3: invalid JSON$/);
    throwsVera(() => parseJsonlRecords('{"input_ids": [1]}\n{"label": 1}\n', 'data.jsonl', 101), /^data\.jsonl:2: needs "text" or "input_ids"$/);
    throwsVera(() => parseJsonlRecords('[1, 2]\n', 'data.jsonl', 101), /^data\.jsonl:1: expected a JSON object/);
    throwsVera(() => parseJsonlRecords('{"text": 5}\n', 'data.jsonl', 101), /^data\.jsonl:1: "text" must be a string$/);
    for (const bad of ['[1, 101]', '[-1]', '[1.5]', '"1 2"', '[[1]]', '["1"]']) {
      throwsVera(
        () => parseJsonlRecords(`{"input_ids": [0]}\n{"input_ids": [0]}\n{"input_ids": [0]}\n{"input_ids": [0]}\n{"input_ids": ${bad}}\n`, 'data.jsonl', 101),
        /^data\.jsonl:5: "input_ids" must be an array of integers in \[0, 101\)$/,
      );
    }
  });
});

describe('readCausalLmJsonl', () => {
  test('truncates to seqLen, skips sequences under 2 tokens and counts both', () =>
    withTmp(async (dir) => {
      const file = path.join(dir, 'd.jsonl');
      fs.writeFileSync(file, '{"input_ids": [1, 2, 3, 4, 5, 6]}\n{"input_ids": [7]}\n{"input_ids": []}\n{"input_ids": [8, 9]}\n');
      let asked = 0;
      const data = await readCausalLmJsonl(file, { vocabSize: 101, seqLen: 4, tokenizer: async () => (asked++, null) });
      assert.deepEqual(data.sequences.map((s) => [...s]), [[1, 2, 3, 4], [8, 9]]);
      assert.equal(data.records, 4);
      assert.equal(data.skipped, 2);
      assert.equal(data.truncated, 1);
      assert.equal(data.tokens, 6);
      assert.equal(asked, 0, 'no tokenizer is loaded for input_ids data');
    }));

  test('a missing file is "<path>: not found"', async () => {
    await rejectsVera(readCausalLmJsonl('/nonexistent/data.jsonl', { vocabSize: 101, seqLen: 8 }), /^\/nonexistent\/data\.jsonl: not found$/);
  });

  test('"text" without a tokenizer names the line and the model folder', () =>
    withTmp(async (dir) => {
      const file = path.join(dir, 'data.jsonl');
      fs.writeFileSync(file, '{"input_ids": [1, 2]}\n{"text": "hello"}\n');
      await rejectsVera(
        readCausalLmJsonl(file, { vocabSize: 101, seqLen: 8, tokenizerDir: 'models/tiny', tokenizer: async () => null }),
        /data\.jsonl:2: "text" needs a tokenizer\.json in models\/tiny \(or give "input_ids"\)$/,
      );
    }));

  test('"text" is tokenized with the tokenizer; ids outside the vocabulary are an error', () =>
    withTmp(async (dir) => {
      const file = path.join(dir, 'data.jsonl');
      fs.writeFileSync(file, '{"text": "hello the ball"}\n');
      const calls: string[] = [];
      const fake = (ids: number[]): Pick<Tokenizer, 'file' | 'encode'> => ({ file: 'tok/tokenizer.json', encode: (t) => (calls.push(t), ids) });
      const data = await readCausalLmJsonl(file, { vocabSize: 101, seqLen: 8, tokenizer: async () => fake([4, 5, 6]) });
      assert.deepEqual([...data.sequences[0]], [4, 5, 6]);
      assert.deepEqual(calls, ['hello the ball']);
      await rejectsVera(readCausalLmJsonl(file, { vocabSize: 101, seqLen: 8, tokenizer: async () => fake([4, 500]) }), /data\.jsonl:1: tok\/tokenizer\.json gave token id 500, outside the model's vocabulary \[0, 101\)/);
    }));
});

describe('tokenizer', () => {
  test('loadTokenizer: null without tokenizer.json; a GPT-2 byte-level BPE tokenizer.json round-trips', () =>
    withTmp(async (dir) => {
      assert.equal(await loadTokenizer(dir), null);
      fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tinyTokenizerJson()));
      const tok = await loadTokenizer(dir);
      assert.ok(tok);
      const text = 'hello the world, all at the ball!';
      const ids = tok.encode(text);
      // merges applied: "he", "ll", "Ġthe", "Ġa"
      assert.deepEqual(ids.slice(0, 4), [96, 99, 79, 97]);
      assert.ok(ids.every((id) => Number.isInteger(id) && id >= 0 && id < 101));
      assert.equal(tok.decode(ids), text);
      assert.deepEqual(tok.encode('a<|endoftext|>b'), [65, 100, 66], 'special tokens are recognized');
    }));

  test('a broken tokenizer.json is a one-line error naming it', () =>
    withTmp(async (dir) => {
      fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{"version": "1.0"}');
      await rejectsVera(loadTokenizer(dir), /tokenizer\.json: not a tokenizer\.json/);
      fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{oops');
      await rejectsVera(loadTokenizer(dir), /tokenizer\.json: invalid JSON/);
    }));
});

describe('batching', () => {
  test('collateCausalLm pads to the longest sequence, masks the padding and labels it -100', () => {
    const b = collateCausalLm([Int32Array.of(1, 2, 3), Int32Array.of(4, 5), Int32Array.of(6, 7, 8, 9)], 100);
    assert.deepEqual(b.shape, [3, 4]);
    assert.deepEqual([...b.inputIds], [1, 2, 3, 100, 4, 5, 100, 100, 6, 7, 8, 9]);
    assert.deepEqual([...b.attentionMask], [1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 1]);
    const I = IGNORE_INDEX;
    assert.deepEqual([...b.labels], [1, 2, 3, I, 4, 5, I, I, 6, 7, 8, 9]);
    assert.equal(b.tokens, 9);
    assert.equal(b.targets, 6);
  });

  test('padding never contributes to the loss', () => {
    const loaded = loadPretrained(path.join(FIXTURES, 'gpt2-tiny'));
    assert.equal(loaded.modelType, 'gpt2');
    const model = loaded.model as GPT2LMHeadModel;
    const seqs = [Int32Array.of(5, 17, 3, 99, 42, 8, 1), Int32Array.of(60, 2, 33), Int32Array.of(7, 7)];
    const lossOf = (group: Int32Array[], padId: number): { loss: number; targets: number } =>
      noGrad(() => {
        const b = collateCausalLm(group, padId);
        const logits = model.forward(b.inputIds, b.shape, { attentionMask: b.attentionMask });
        return { loss: causalLmLoss(logits, b.inputIds, b.shape, IGNORE_INDEX, b.labels).item(), targets: b.targets };
      });
    let sum = 0;
    let count = 0;
    for (const s of seqs) {
      const one = lossOf([s], 0);
      sum += one.loss * one.targets;
      count += one.targets;
    }
    for (const padId of [0, 100]) {
      const batched = lossOf(seqs, padId);
      assert.equal(batched.targets, count);
      assert.ok(Math.abs(batched.loss - sum / count) < 1e-5, `padded batch loss ${batched.loss} vs ${sum / count}`);
    }
  });

  test('EpochSampler visits every item once per epoch, in a new order each epoch', () => {
    const s = new EpochSampler(10, 5);
    const rng = new Rng(3);
    const epochs = [0, 1, 2].map(() => [...s.next(rng), ...s.next(rng)]);
    for (const e of epochs) assert.deepEqual([...e].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.notDeepEqual(epochs[0], epochs[1]);
    assert.equal(s.epoch, 3);
    assert.equal(s.batches, 6);
  });

  test('EpochSampler batches are full size and may span an epoch boundary', () => {
    const s = new EpochSampler(3, 4);
    const rng = new Rng(1);
    const a = s.next(rng);
    const b = s.next(rng);
    assert.equal(a.length, 4);
    assert.equal(b.length, 4);
    const all = [...a, ...b];
    // 8 draws = 2 full epochs of 3 + 2 of the third
    for (const e of [all.slice(0, 3), all.slice(3, 6)]) assert.deepEqual([...e].sort(), [0, 1, 2]);
    assert.equal(s.epoch, 3);
  });

  test('EpochSampler is reproducible, and skip() puts a fresh sampler in the same state with the same draws', () => {
    const draw = (seed: number, n: number): number[][] => {
      const s = new EpochSampler(7, 3);
      const rng = new Rng(seed);
      return Array.from({ length: n }, () => s.next(rng));
    };
    assert.deepEqual(draw(42, 9), draw(42, 9));
    assert.notDeepEqual(draw(42, 9), draw(43, 9));

    const reference = new ReplayRng(42);
    const original = new EpochSampler(7, 3);
    const seen: number[][] = [];
    for (let i = 0; i < 9; i++) seen.push(original.next(reference));
    for (const k of [0, 1, 2, 5, 7]) {
      const rng = new ReplayRng(42);
      const fresh = new EpochSampler(7, 3);
      fresh.skip(k, rng);
      assert.equal(fresh.batches, k);
      const sim = new ReplayRng(42);
      new EpochSampler(7, 3).skip(k, sim);
      assert.deepEqual(rng.state(), sim.state());
      for (let i = k; i < 9; i++) assert.deepEqual(fresh.next(rng), seen[i], `after skip(${k}), batch ${i}`);
    }
  });

  test('sequentialBatches keeps the order and ends with the remainder', () => {
    assert.deepEqual([...sequentialBatches([1, 2, 3, 4, 5], 2)], [[1, 2], [3, 4], [5]]);
  });
});
