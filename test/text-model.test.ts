// The embedded text model's build pieces: the BPE trainer against merges worked out by hand
// (Sennrich et al.'s low/lower/newest/widest example), its tokenizer.json as @huggingface/tokenizers
// reads it (same ids as applying the merges by rank, lossless round trips), the fortune parser,
// and the shipped data splits (users held out of the general eval, deterministic order).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { createTokenizer } from '../src/data/tokenizer.js';
import { bytesToUnicode, PRETOKENIZE, tokenizerConfigFiles, tokenizerJson, trainBpe } from '../scripts/text-model/train-tokenizer.js';
import { hashOrder, parseFortuneFile, USER_CATEGORIES } from '../scripts/text-model/fortunes.js';

const words = (w: string, n: number): string[] => Array.from({ length: n }, () => w);
const corpus = [...words(' low', 5), ...words(' lower', 2), ...words(' newest', 6), ...words(' widest', 3)];

test('BPE merges: the most frequent pair first, ties to the smaller merged string', () => {
  const bpe = trainBpe(corpus, 1 + 256 + 5);
  // counts: es 9 = st 9 → "es"; est 9; then lo = ow = Ġl (7) → "lo"; low (7) < Ġlo; Ġlow (7)
  assert.deepEqual(bpe.merges, [['e', 's'], ['es', 't'], ['l', 'o'], ['lo', 'w'], ['Ġ', 'low']]);
  assert.equal(bpe.vocab[0], '<|endoftext|>');
  assert.equal(bpe.vocab[1 + 'a'.charCodeAt(0)], 'a');
  assert.equal(bpe.vocab[1 + 32], 'Ġ', "GPT-2's byte map sends the space to Ġ");
  assert.deepEqual(bpe.vocab.slice(257), ['es', 'est', 'lo', 'low', 'Ġlow']);
  // pairs seen once are never merged (min frequency 2): the vocabulary stops short
  assert.equal(trainBpe([' xy'], 300).merges.length, 0);
});

/** Encoding by hand: each pre-token's bytes, the lowest-ranked applicable merge first, until none applies. */
function encodeByRank(text: string, merges: [string, string][], vocab: string[]): number[] {
  const rank = new Map(merges.map(([a, b], i) => [`${a} ${b}`, i]));
  const id = new Map(vocab.map((t, i) => [t, i]));
  const byteChar = bytesToUnicode();
  const out: number[] = [];
  for (const m of text.matchAll(PRETOKENIZE)) {
    let s = [...new TextEncoder().encode(m[0])].map((b) => byteChar[b]);
    for (;;) {
      let best = -1;
      let at = -1;
      for (let i = 0; i + 1 < s.length; i++) {
        const r = rank.get(`${s[i]} ${s[i + 1]}`);
        if (r !== undefined && (best < 0 || r < best)) [best, at] = [r, i];
      }
      if (at < 0) break;
      s = [...s.slice(0, at), s[at] + s[at + 1], ...s.slice(at + 2)];
    }
    out.push(...s.map((t) => id.get(t)!));
  }
  return out;
}

test("the trained tokenizer.json, read by @huggingface/tokenizers, encodes as the merges say and round-trips any text", async () => {
  const texts = readFileSync(path.join('data', 'fortunes', 'users', 'zippy', 'train.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { text: string }).text);
  const bpe = trainBpe(texts, 600);
  assert.equal(bpe.vocab.length, 600);
  const files = tokenizerConfigFiles(256);
  const tok = await createTokenizer(tokenizerJson(bpe), files['tokenizer_config.json'] as Record<string, unknown>, 'tokenizer.json');
  assert.equal(tok.vocabSize, 600);
  assert.equal(tok.tokenToId('<|endoftext|>'), 0);
  const samples = [...texts.slice(0, 50), 'Tabs\tand\nnew lines,  double  spaces', 'naïve café — 日本語 🎉', "it's we'll they've"];
  for (const t of samples) {
    const ids = tok.encode(t);
    assert.deepEqual(ids, encodeByRank(t, bpe.merges, bpe.vocab), JSON.stringify(t));
    assert.equal(tok.decode(ids), t);
  }
  // the end-of-text token is one id inside a text
  assert.deepEqual(tok.encode('Yow!<|endoftext|>').slice(-1), [0]);
  // same corpus, same tokenizer
  assert.deepEqual(trainBpe(texts, 600), bpe);
});

test('fortune files: entries split on % lines, tabs to spaces, empty entries dropped', () => {
  const raw = '%\nFirst line\n\twith a tab\n%\n\n%\nQ:\tWhy?\nA:\tBecause.   \n\t\t-- Someone\n%\n';
  assert.deepEqual(parseFortuneFile(raw, 'x').map((f) => f.text), ['First line\n with a tab', 'Q: Why?\nA: Because.\n -- Someone']);
});

test('shipped splits: users held out of the general eval, files in hash order', () => {
  const read = (...p: string[]): { text: string; category: string }[] =>
    readFileSync(path.join('data', 'fortunes', ...p), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { text: string; category: string });
  const general = read('general', 'eval.jsonl');
  assert.ok(general.length > 500);
  const generalTexts = new Set(general.map((f) => f.text.toLowerCase().replace(/\s+/g, ' ').trim()));
  for (const u of USER_CATEGORIES) {
    const train = read('users', u, 'train.jsonl');
    const evalSet = read('users', u, 'eval.jsonl');
    assert.ok(train.length > 50 && evalSet.length > 10, u);
    assert.ok(train.every((f) => f.category === u) && evalSet.every((f) => f.category === u));
    assert.deepEqual(hashOrder(evalSet), evalSet, `${u} eval in hash order`);
    const trainTexts = new Set(train.map((f) => f.text));
    assert.ok(evalSet.every((f) => !trainTexts.has(f.text)), `${u}: eval and train disjoint`);
    for (const f of [...train, ...evalSet]) assert.ok(!generalTexts.has(f.text.toLowerCase().replace(/\s+/g, ' ').trim()), `${u} fortune in the general eval`);
  }
  assert.ok(general.every((f) => !(USER_CATEGORIES as readonly string[]).includes(f.category)));
});
