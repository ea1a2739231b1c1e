// E2E text metrics against NLTK's corpus_bleu and a Python ROUGE-L (scripts/fixtures/make_text_metrics_fixtures.py).
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cocoTokenize, corpusBleu, corpusCider, corpusNist, corpusRougeL, e2eMetrics, mtevalTokenize, rougeLSentence } from '../src/data/text-metrics.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
interface MetricsCase {
  name: string;
  predictions: string[];
  references: string[][];
  tokens: string[];
  bleu: number;
  nist: number;
  cider: number;
  rouge_l: number;
  rouge_l_sentences: number[];
}
const CASES = JSON.parse(fs.readFileSync(path.join(ROOT, 'test/fixtures/text-metrics/text-metrics.json'), 'utf8')) as MetricsCase[];

describe('E2E metrics against the Python references', () => {
  for (const c of CASES) {
    test(`${c.name}: BLEU is NLTK's corpus_bleu, NIST, CIDEr and ROUGE-L the references'`, () => {
      assert.deepEqual(mtevalTokenize(c.predictions[0].toLowerCase()), c.tokens);
      const bleu = corpusBleu(c.predictions, c.references);
      assert.ok(Math.abs(bleu.bleu - c.bleu) < 1e-12, `BLEU ${bleu.bleu} vs NLTK ${c.bleu}`);
      const nist = corpusNist(c.predictions, c.references);
      assert.ok(Math.abs(nist - c.nist) < 1e-12, `NIST ${nist} vs ${c.nist}`);
      const cider = corpusCider(c.predictions, c.references);
      assert.ok(Math.abs(cider - c.cider) < 1e-12, `CIDEr ${cider} vs ${c.cider}`);
      const rouge = corpusRougeL(c.predictions, c.references);
      assert.ok(Math.abs(rouge.rougeL - c.rouge_l) < 1e-12, `ROUGE-L ${rouge.rougeL} vs ${c.rouge_l}`);
      rouge.sentences.forEach((s, i) => assert.ok(Math.abs(s - c.rouge_l_sentences[i]) < 1e-12));
    });
  }
  test('the fixtures include a brevity penalty below 1', () => {
    assert.ok(CASES.some((c) => corpusBleu(c.predictions, c.references).brevityPenalty < 1));
  });
});

describe('E2E metrics by hand', () => {
  test('mteval tokenization splits punctuation, keeps decimals and contractions', () => {
    assert.deepEqual(mtevalTokenize('The Eagle: £20-25, rated 5.5 (ok).'), ['The', 'Eagle', ':', '£20', '-', '25', ',', 'rated', '5.5', '(', 'ok', ')', '.']);
    assert.deepEqual(cocoTokenize("It's near the river, OK."), ["it's", 'near', 'the', 'river', 'ok']);
  });

  test('a prediction equal to a reference scores 1; case does not matter', () => {
    const refs = [['The Vaults is a pub near the river.', 'A pub.']];
    assert.equal(corpusBleu(['the vaults is a PUB near the river.'], refs).bleu, 1);
    assert.equal(corpusRougeL(['the vaults is a PUB near the river.'], refs).rougeL, 1);
    // one MR: every idf is log(1) − log(1) = 0, so CIDEr is 0 whatever the text
    assert.equal(corpusCider(['the vaults is a pub near the river.'], refs), 0);
    assert.deepEqual(Object.keys(e2eMetrics(['a pub'], refs)), ['bleu', 'nist', 'rouge_l', 'cider']);
  });

  test('ROUGE-L takes the best precision and the best recall separately, β = 1.2', () => {
    // LCS 2 with both: precision max(2/2) = 1, recall max(2/4, 2/3) = 2/3
    const f = rougeLSentence(['a', 'b'], [['a', 'x', 'b', 'y'], ['a', 'b', 'z']]);
    const p = 1;
    const r = 2 / 3;
    assert.ok(Math.abs(f - ((1 + 1.44) * p * r) / (r + 1.44 * p)) < 1e-15);
    assert.equal(rougeLSentence(['q'], [['a']]), 0);
  });

  test('BLEU: clipping by the largest count in one reference; no 4-gram hit gives a tiny score, as e2e-metrics', () => {
    const b = corpusBleu(['the the the the'], [['the cat', 'the the dog']]);
    assert.equal(b.precisions[0], 2 / 4);
    assert.ok(b.bleu < 1e-3 && b.bleu > 0);
    assert.throws(() => corpusBleu(['a'], []), /1 predictions for 0 reference sets/);
  });
});
