// Beam search against an independent PyTorch beam search (scripts/fixtures/make_beam_fixtures.py)
// on the tiny GPT-2 and Llama fixtures, and the no-repeat-n-gram rule on its own.
import '../src/backends/index.js';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPretrained } from '../src/models/auto.js';
import { bannedNgramTokens, beamSearch, generate, generateStream, type CausalLM } from '../src/models/generation.js';
import { VeraError } from '../src/io/errors.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DIRS: Record<string, string> = {
  'gpt2-tiny': path.join(ROOT, 'test/fixtures/gpt2-tiny'),
  'llama-gqa': path.join(ROOT, 'test/fixtures/decoders/llama-gqa'),
};

interface BeamCase {
  model: string;
  prompt: number[];
  num_beams: number;
  max_new_tokens: number;
  eos: number;
  length_penalty: number;
  no_repeat_ngram_size: number;
  early_stopping: boolean | 'never';
  tokens: number[];
}
const CASES = JSON.parse(fs.readFileSync(path.join(ROOT, 'test/fixtures/beam/beam.json'), 'utf8')) as BeamCase[];
const models = new Map<string, CausalLM>();
function lm(name: string): CausalLM {
  if (!models.has(name)) models.set(name, loadPretrained(DIRS[name]).model as unknown as CausalLM);
  return models.get(name)!;
}

/** Whether some n-gram occurs twice in seq. */
function repeatsNgram(seq: readonly number[], n: number): boolean {
  const seen = new Set<string>();
  for (let i = 0; i + n <= seq.length; i++) {
    const key = seq.slice(i, i + n).join(',');
    if (seen.has(key)) return true;
    seen.add(key);
  }
  return false;
}

describe('beam search against PyTorch', () => {
  for (const c of CASES) {
    const name = `${c.model}: ${c.num_beams} beams, length penalty ${c.length_penalty}, no-repeat ${c.no_repeat_ngram_size}, early stopping ${c.early_stopping}`;
    test(name, () => {
      const result = beamSearch(lm(c.model), c.prompt, {
        numBeams: c.num_beams, maxNewTokens: c.max_new_tokens, eosTokenIds: [c.eos],
        lengthPenalty: c.length_penalty, noRepeatNgramSize: c.no_repeat_ngram_size, earlyStopping: c.early_stopping,
      });
      assert.deepEqual(result.tokens, c.tokens);
      assert.equal(result.finishReason, c.tokens.at(-1) === c.eos ? 'eos' : 'length');
      if (c.no_repeat_ngram_size > 0) {
        const generated = c.tokens.at(-1) === c.eos ? c.tokens.slice(0, -1) : c.tokens;
        assert.ok(!repeatsNgram([...c.prompt, ...generated], c.no_repeat_ngram_size));
      }
    });
  }

  test('the fixtures cover eos and length endings', () => {
    const endings = new Set(CASES.map((c) => c.tokens.at(-1) === c.eos));
    assert.deepEqual([...endings].sort(), [false, true]);
  });

  test('generate and generateStream with numBeams > 1 give the beam search result', () => {
    const c = CASES[1];
    const opts = { numBeams: c.num_beams, maxNewTokens: c.max_new_tokens, eosTokenIds: [c.eos], lengthPenalty: c.length_penalty, noRepeatNgramSize: c.no_repeat_ngram_size };
    assert.deepEqual(generate(lm(c.model), c.prompt, opts).tokens, c.tokens);
    const streamed = [...generateStream(lm(c.model), c.prompt, opts)].map((s) => s.token);
    assert.deepEqual(streamed, c.tokens);
  });

  test('the length penalty changes which hypothesis wins: a strongly negative one prefers the shortest', () => {
    const c = CASES[1];
    const short = beamSearch(lm(c.model), c.prompt, { numBeams: 3, maxNewTokens: 12, eosTokenIds: [c.eos], lengthPenalty: -20, earlyStopping: 'never' });
    const long = beamSearch(lm(c.model), c.prompt, { numBeams: 3, maxNewTokens: 12, eosTokenIds: [c.eos], lengthPenalty: 20, earlyStopping: 'never' });
    assert.ok(short.tokens.length <= long.tokens.length, `${short.tokens} vs ${long.tokens}`);
  });

  test('numBeams 1 is greedy search, and bad options are refused', () => {
    const c = CASES[0];
    const greedy = generate(lm(c.model), c.prompt, { maxNewTokens: 6, eosTokenIds: [] }).tokens;
    assert.deepEqual(generate(lm(c.model), c.prompt, { maxNewTokens: 6, eosTokenIds: [], numBeams: 1 }).tokens, greedy);
    assert.throws(() => generate(lm(c.model), c.prompt, { numBeams: 0 }), VeraError);
    assert.throws(() => generate(lm(c.model), c.prompt, { numBeams: 2, doSample: true }), /does not sample/);
  });
});

describe('no-repeat n-grams', () => {
  test('bannedNgramTokens: the tokens that followed earlier occurrences of the last n-1 tokens', () => {
    assert.deepEqual(bannedNgramTokens([1, 2, 3, 1, 2], 3), [3]);
    assert.deepEqual(bannedNgramTokens([1, 2, 3, 1, 2, 4, 1, 2], 3).sort(), [3, 4]);
    assert.deepEqual(bannedNgramTokens([5, 5], 2), [5]);
    assert.deepEqual(bannedNgramTokens([1, 2], 4), []);
    assert.deepEqual(bannedNgramTokens([1, 2, 1], 0), []);
  });

  test('greedy search with noRepeatNgramSize never repeats an n-gram', () => {
    const c = CASES[0];
    const plain = generate(lm(c.model), c.prompt, { maxNewTokens: 16, eosTokenIds: [] }).tokens;
    assert.ok(repeatsNgram([...c.prompt, ...plain], 2), 'the fixture model repeats itself without the rule');
    const tokens = generate(lm(c.model), c.prompt, { maxNewTokens: 16, eosTokenIds: [], noRepeatNgramSize: 2 }).tokens;
    assert.ok(!repeatsNgram([...c.prompt, ...tokens], 2));
  });
});
