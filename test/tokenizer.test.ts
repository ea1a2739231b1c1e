// The tokenizer wrapper on three real tokenizers (test/fixtures/tokenizers/, rebuilt from npm
// packages by scripts/fixtures/make_tokenizer_fixtures.py): GPT-2 byte-level BPE, BERT WordPiece
// and Mistral SentencePiece-style BPE with byte fallback. reference.json holds what the Rust
// `tokenizers` library gives for the same files; the known ids below come from elsewhere (model
// documentation, another implementation's tests).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createTokenizer, loadTokenizer, truncatePair, type Tokenizer, type TruncationStrategy } from '../src/data/tokenizer.js';
import { rejectsVera, throwsVera, withTmp } from './helpers.js';

const FIXTURES = path.join(process.cwd(), 'test', 'fixtures', 'tokenizers');
const NAMES = ['gpt2', 'bert-base-uncased', 'mistral'] as const;

interface Reference {
  single: { text: string; ids: number[]; idsNoSpecial: number[]; decoded: string; decodedSkipSpecial: string }[];
  pairs: { a: string; b: string; ids: number[]; typeIds: number[] }[];
  truncation: { a: string; b: string; strategy: TruncationStrategy; maxLength: number; ids?: number[]; typeIds?: number[]; error?: string }[];
  padding: { texts: string[]; side: 'right' | 'left'; length: number | null; padId: number; ids: number[][]; attentionMask: number[][] }[];
}
const REF = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'reference.json'), 'utf8')) as Record<(typeof NAMES)[number], Reference> & {
  'gpt2-roberta-style': { addedTokens: object[]; postProcessor: object; pairs: Reference['pairs']; single: { text: string; ids: number[] }[] };
};

const cache = new Map<string, Tokenizer>();
async function load(name: string): Promise<Tokenizer> {
  let tok = cache.get(name);
  if (!tok) {
    const loaded = await loadTokenizer(path.join(FIXTURES, name));
    assert.ok(loaded);
    cache.set(name, (tok = loaded));
  }
  return tok;
}
const readJson = (name: string, file: string): Record<string, unknown> => JSON.parse(fs.readFileSync(path.join(FIXTURES, name, file), 'utf8')) as Record<string, unknown>;

/** Rows of a flat (batch, seq) array. */
function rows<T extends Int32Array | Float32Array>(a: T, [batch, seq]: readonly [number, number]): number[][] {
  return Array.from({ length: batch }, (_, b) => Array.from(a.subarray(b * seq, (b + 1) * seq)));
}

describe('tokenizer: known ids from documentation and other implementations', () => {
  test('GPT-2 (transformers GPT2Tokenizer docstring): "Hello world" and " Hello world"', async () => {
    const tok = await load('gpt2');
    assert.deepEqual(tok.encode('Hello world'), [15496, 995]);
    assert.deepEqual(tok.encode(' Hello world'), [18435, 995]);
    assert.equal(tok.specialTokens.eos?.id, 50256);
    assert.equal(tok.vocabSize, 50257);
    assert.equal(tok.modelMaxLength, 1024);
  });

  test('bert-base-uncased (transformers docs): "Hello, my dog is cute"', async () => {
    const tok = await load('bert-base-uncased');
    assert.deepEqual(tok.encode('Hello, my dog is cute'), [101, 7592, 1010, 2026, 3899, 2003, 10140, 102]);
    const s = tok.specialTokens;
    assert.deepEqual([s.pad?.id, s.unk?.id, s.cls?.id, s.sep?.id, s.mask?.id], [0, 100, 101, 102, 103]);
    assert.equal(tok.modelMaxLength, 512);
  });

  test("Mistral (mistral-tokenizer-js's own test cases, from SentencePiece): spaces, byte fallback, emoji", async () => {
    const tok = await load('mistral');
    const cases: [string, number[]][] = [
      ['grabbed', [1, 13300]],
      [' grabbed', [1, 28705, 13300]],
      ['           grabbed', [1, 17422, 13300]],
      ['\n', [1, 28705, 13]],
      [' \n', [1, 259, 13]],
      ['\ttabs\t\t\t\tout here', [1, 28705, 12, 24856, 12, 12, 12, 12, 406, 1236]],
      ['ax\n####\nboo', [1, 6056, 13, 2000, 13, 1798, 28709]],
      ['镇', [1, 28705, 29780]],
      ['🦙', [1, 28705, 243, 162, 169, 156]],
      ['🦙Ꙋ', [1, 28705, 243, 162, 169, 156, 237, 156, 141]],
      ['Ꙋ🦙', [1, 28705, 237, 156, 141, 243, 162, 169, 156]],
    ];
    for (const [text, ids] of cases) {
      assert.deepEqual(tok.encode(text), ids, JSON.stringify(text));
      assert.equal(tok.decode(ids, { skipSpecialTokens: true }), text);
    }
    assert.equal(tok.modelMaxLength, null, 'int(1e30) means no limit');
  });
});

describe('tokenizer: the Rust tokenizers library on the same files (reference.json)', () => {
  for (const name of NAMES) {
    test(`${name}: ids with and without special tokens, decodes`, async () => {
      const tok = await load(name);
      for (const r of REF[name].single) {
        assert.deepEqual(tok.encode(r.text), r.ids, JSON.stringify(r.text));
        assert.deepEqual(tok.encode(r.text, { addSpecialTokens: false }), r.idsNoSpecial, JSON.stringify(r.text));
        assert.equal(tok.decode(r.ids), r.decoded);
        assert.equal(tok.decode(r.ids, { skipSpecialTokens: true }), r.decodedSkipSpecial);
      }
    });

    test(`${name}: pairs with token type ids, and truncation by strategy`, async () => {
      const tok = await load(name);
      for (const p of REF[name].pairs) assert.deepEqual(tok.encodeWithTypes(p.a, p.b), { ids: p.ids, typeIds: p.typeIds });
      for (const t of REF[name].truncation) {
        const run = (): unknown => tok.encodeWithTypes(t.a, t.b, { maxLength: t.maxLength, truncation: t.strategy });
        if (t.error !== undefined) throwsVera(run, new RegExp(`truncation ${t.strategy}: .* too short`));
        else assert.deepEqual(run(), { ids: t.ids, typeIds: t.typeIds }, `${t.strategy} ${t.maxLength}`);
      }
    });

    test(`${name}: padded batches (right/left, longest/fixed length) and their masks`, async () => {
      const base = await load(name);
      // the Rust reference pads with id 0 where the tokenizer names no pad token
      const config = { ...readJson(name, 'tokenizer_config.json'), pad_token: base.idToToken(0) };
      const tok = await createTokenizer(readJson(name, 'tokenizer.json'), config, `${name}/tokenizer.json`);
      for (const p of REF[name].padding) {
        const enc = tok.encodeBatch(p.texts, p.length === null ? { paddingSide: p.side } : { padding: 'max_length', maxLength: p.length, paddingSide: p.side });
        assert.deepEqual(enc.shape, [p.texts.length, p.ids[0].length]);
        assert.deepEqual(rows(enc.inputIds, enc.shape), p.ids, `${p.side} ${p.length}`);
        assert.deepEqual(rows(enc.attentionMask, enc.shape), p.attentionMask);
        assert.ok(enc.tokenTypeIds.every((t) => t === 0));
      }
    });
  }

  test('RoBERTa template on GPT-2 BPE: <s> A </s></s> B </s>, every token type 0', async () => {
    const ref = REF['gpt2-roberta-style'];
    const json = { ...readJson('gpt2', 'tokenizer.json'), added_tokens: ref.addedTokens, post_processor: ref.postProcessor };
    const tok = await createTokenizer(json, { bos_token: '<s>', eos_token: '</s>', sep_token: '</s>', cls_token: '<s>', pad_token: '<pad>' }, 'roberta/tokenizer.json');
    for (const s of ref.single) assert.deepEqual(tok.encode(s.text), s.ids);
    for (const p of ref.pairs) assert.deepEqual(tok.encodeWithTypes(p.a, p.b), { ids: p.ids, typeIds: p.typeIds });
    assert.equal(tok.numSpecialTokensToAdd(false), 2);
    assert.equal(tok.numSpecialTokensToAdd(true), 4);
    assert.equal(tok.decode(ref.pairs[0].ids, { skipSpecialTokens: true }), ref.pairs[0].a + ref.pairs[0].b);
  });
});

describe('tokenizer: behaviour', () => {
  test('round trip decode(encode(x)) == x for byte-level and SentencePiece BPE, incl. unicode, emoji, whitespace', async () => {
    const texts = ['', 'plain ascii', '  two  spaces\tand\ttabs\n\nand newlines\r\n', 'Ünïcödé — 日本語 — עברית — русский', '👩‍👩‍👧 🦙🎉 👍🏽 flags 🇫🇷', 'code: `x => x ** 2` {"a": [1, 2]}', 'a , b . c ! ?', '\u00a0nbsp\u2009thin'];
    for (const name of ['gpt2', 'mistral']) {
      const tok = await load(name);
      for (const t of texts) assert.equal(tok.decode(tok.encode(t), { skipSpecialTokens: true }), t, `${name}: ${JSON.stringify(t)}`);
    }
  });

  test('BERT pair layout [CLS] a [SEP] b [SEP] with segment ids; a batch of pairs pads with [PAD]', async () => {
    const tok = await load('bert-base-uncased');
    const e = tok.encodeWithTypes('hello world', 'my dog');
    assert.deepEqual(e.ids, [101, 7592, 2088, 102, 2026, 3899, 102]);
    assert.deepEqual(e.typeIds, [0, 0, 0, 0, 1, 1, 1]);
    const batch = tok.encodeBatch([['hello world', 'my dog'], 'cute']);
    assert.deepEqual(batch.shape, [2, 7]);
    assert.deepEqual(rows(batch.inputIds, batch.shape), [[101, 7592, 2088, 102, 2026, 3899, 102], [101, 10140, 102, 0, 0, 0, 0]]);
    assert.deepEqual(rows(batch.tokenTypeIds, batch.shape), [[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]]);
    assert.deepEqual(rows(batch.attentionMask, batch.shape), [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0]]);
    assert.deepEqual(batch.lengths, [7, 3]);
    assert.equal(tok.decode(Array.from(batch.inputIds.subarray(0, 7)), { skipSpecialTokens: true }), 'hello world my dog');
  });

  test('truncation: model_max_length by default, left truncation side, max_length padding; only_second on one text fails', async () => {
    const tok = await load('bert-base-uncased');
    const long = 'word '.repeat(600);
    const enc = tok.encodeBatch([long, 'short']);
    assert.deepEqual(enc.shape, [2, 512], 'cut to model_max_length 512');
    assert.equal(enc.inputIds[511], 102, 'the [SEP] survives truncation');
    const fixed = tok.encodeBatch(['a b c d e f g h'], { padding: 'max_length', maxLength: 6 });
    assert.deepEqual(rows(fixed.inputIds, fixed.shape), [[101, 1037, 1038, 1039, 1040, 102]]);
    const config = { ...readJson('bert-base-uncased', 'tokenizer_config.json'), truncation_side: 'left', padding_side: 'left' };
    const left = await createTokenizer(readJson('bert-base-uncased', 'tokenizer.json'), config, 'bert/tokenizer.json');
    assert.deepEqual(left.encode('a b c d e f g h', { maxLength: 5 }), [101, 1042, 1043, 1044, 102]);
    const padded = left.encodeBatch(['a', 'a b']);
    assert.deepEqual(rows(padded.inputIds, padded.shape), [[0, 101, 1037, 102], [101, 1037, 1038, 102]]);
    throwsVera(() => tok.encode('a b c', { maxLength: 3, truncation: 'only_second' }), /only_second needs a pair/);
    throwsVera(() => tok.encode('a b c', { maxLength: 1 }), /max length 1 leaves no room for the 2 special tokens/);
  });

  test('truncatePair: longest_first splits the budget as the Rust library does', () => {
    const seq = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
    const lens = (a: number, b: number, budget: number): [number, number] => {
      const [x, y] = truncatePair(seq(a), seq(b), budget, 'longest_first');
      return [x.length, y!.length];
    };
    assert.deepEqual(lens(3, 3, 10), [3, 3]);
    assert.deepEqual(lens(2, 20, 10), [2, 8], 'the short part is kept whole');
    assert.deepEqual(lens(20, 2, 10), [8, 2]);
    assert.deepEqual(lens(7, 7, 5), [2, 3], 'both long: halves, the odd token to the second');
    assert.deepEqual(lens(20, 9, 9), [5, 4]);
  });

  test('add_bos_token / add_eos_token of a Llama-family config rebuild the template', async () => {
    const json = readJson('mistral', 'tokenizer.json');
    const config = readJson('mistral', 'tokenizer_config.json');
    const both = await createTokenizer(json, { ...config, add_eos_token: true }, 'mistral/tokenizer.json');
    assert.deepEqual(both.encode('grabbed'), [1, 13300, 2]);
    assert.deepEqual(both.encodeWithTypes('grabbed', 'grabbed'), { ids: [1, 13300, 2, 1, 13300, 2], typeIds: [0, 0, 0, 1, 1, 1] });
    const none = await createTokenizer(json, { ...config, add_bos_token: false }, 'mistral/tokenizer.json');
    assert.deepEqual(none.encode('grabbed'), [13300]);
    await rejectsVera(createTokenizer(json, { ...config, add_eos_token: true, eos_token: null }, 'm/tokenizer.json'), /add_eos_token is true but eos_token is not set/);
  });

  test('padding without a pad token is a one-line error naming tokenizer_config.json', async () => {
    const tok = await load('gpt2');
    throwsVera(() => tok.encodeBatch(['a', 'a b c']), /tokenizer_config\.json: padding needs a pad_token/);
    assert.deepEqual(tok.encodeBatch(['a b', 'c d']).shape, [2, 2], 'equal lengths need no padding');
  });

  test('special_tokens_map.json supplies the special tokens when tokenizer_config.json does not', () =>
    withTmp(async (dir) => {
      fs.copyFileSync(path.join(FIXTURES, 'bert-base-uncased', 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
      fs.copyFileSync(path.join(FIXTURES, 'bert-base-uncased', 'special_tokens_map.json'), path.join(dir, 'special_tokens_map.json'));
      const tok = await loadTokenizer(dir);
      assert.equal(tok?.specialTokens.pad?.id, 0);
      assert.equal(tok?.specialTokens.mask?.token, '[MASK]');
      assert.equal(tok?.modelMaxLength, null);
      fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), '{"padding_side": "middle"}');
      await rejectsVera(loadTokenizer(dir), /tokenizer_config\.json: padding_side must be "right" or "left"/);
    }));
});
