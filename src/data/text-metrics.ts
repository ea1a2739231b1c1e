// Metrics of generated text against several references each, as the E2E NLG Challenge's
// e2e-metrics scripts compute them (the VeRA and LoRA papers report those):
//   BLEU     corpus-level, n-grams up to 4, each n-gram's count clipped by its largest count in any
//            one reference, brevity penalty against the sum of the references closest in length to
//            each prediction (ties: the shorter); case-insensitive, on mteval-v13a's basic
//            tokenization. e2e-metrics floors a zero hit count at 1e-15 (so BLEU is tiny, not 0)
//            and counts len − n + 1 n-gram slots per sentence even when that is negative; NLTK's
//            corpus_bleu (our reference) agrees on every sentence of 4 tokens or more with a hit
//            at every order.
//   NIST     e2e-metrics' NIST (mteval-v13a's, n-grams up to 5): each clipped n-gram hit weighs its
//            information log2(count of its first n−1 words / count of the n-gram) over all
//            references of the corpus; the sum per order over the prediction n-gram slots, summed
//            over orders, times the length penalty exp(−β·ln²(ratio)) for a prediction/average-
//            reference length ratio below 1 (β = −ln 0.5 / ln² 1.5). Same tokenization as BLEU.
//   ROUGE-L  pycocoevalcap's scorer: per prediction, the longest common subsequence with each
//            reference gives a precision and a recall; the best of each makes an F-measure with
//            β = 1.2; the corpus score is the mean. e2e-metrics tokenizes with Stanford's
//            PTBTokenizer (Java), which lowercases and drops punctuation; we drop the same
//            punctuation tokens from the mteval tokenization, which differs from PTB's on
//            contractions ("isn't") and a few symbols.
//   CIDEr    pycocoevalcap's Cider (the CIDEr-D variant) on the ROUGE-L tokens: n-grams 1..4 weighted
//            tf × (log #MRs − log document frequency over the MRs' reference sets), per order the
//            cosine with each reference with the prediction's weights clipped by the reference's,
//            times exp(−Δ²/2σ²) for the difference Δ of their bigram counts (σ = 6); averaged over
//            orders and references, × 10, mean over MRs.

/** mteval-v13a's basic tokenization (what e2e-metrics' BLEU and NIST use). */
export function mtevalTokenize(text: string): string[] {
  let s = text
    .replaceAll('<skipped>', '')
    .replaceAll('-\n', '')
    .replaceAll('\n', ' ')
    .replaceAll('&quot;', '"')
    .replaceAll('&amp;', '&')
    .replaceAll('&lt;', '<')
    .replaceAll('&gt;', '>');
  s = ` ${s} `;
  // ASCII punctuation and symbols other than ' . , - are tokens of their own
  s = s.replace(/([{-~[-` -&(-+:-@/])/g, ' $1 ');
  s = s.replace(/([^0-9])([.,])/g, '$1 $2 '); // . and , split off unless after a digit
  s = s.replace(/([.,])([^0-9])/g, ' $1 $2'); // ... or before one
  s = s.replace(/([0-9])(-)/g, '$1 $2 '); // a dash after a digit
  return s.replace(/\s+/g, ' ').trim().split(' ');
}

function checkCorpus(predictions: readonly string[], references: readonly (readonly string[])[], what: string): void {
  if (predictions.length !== references.length) throw new Error(`${what}: ${predictions.length} predictions for ${references.length} reference sets`);
  if (predictions.length === 0) throw new Error(`${what}: no predictions`);
  const empty = references.findIndex((r) => r.length === 0);
  if (empty >= 0) throw new Error(`${what}: prediction ${empty + 1} has no reference`);
}

function ngramCounts(tokens: readonly string[], n: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i + n <= tokens.length; i++) {
    const key = tokens.slice(i, i + n).join('\u0001');
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

export interface BleuResult {
  bleu: number;
  /** Clipped n-gram precision of each order 1..maxN. */
  precisions: number[];
  brevityPenalty: number;
  /** Prediction tokens, and the summed lengths of the closest references. */
  predictionLength: number;
  referenceLength: number;
}

/** Corpus BLEU of `predictions` (one string each) against their `references` (several strings each). */
export function corpusBleu(predictions: readonly string[], references: readonly (readonly string[])[], maxN = 4): BleuResult {
  checkCorpus(predictions, references, 'BLEU');
  const hits = new Array<number>(maxN).fill(0);
  const slots = new Array<number>(maxN).fill(0);
  let referenceLength = 0;
  predictions.forEach((prediction, i) => {
    const pred = mtevalTokenize(prediction.toLowerCase());
    const refs = references[i].map((r) => mtevalTokenize(r.toLowerCase()));
    for (let n = 1; n <= maxN; n++) {
      const clip = new Map<string, number>();
      for (const ref of refs) for (const [k, c] of ngramCounts(ref, n)) clip.set(k, Math.max(clip.get(k) ?? 0, c));
      for (const [k, c] of ngramCounts(pred, n)) hits[n - 1] += Math.min(c, clip.get(k) ?? 0);
      slots[n - 1] += pred.length - n + 1;
    }
    const closest = refs.reduce((best, r) => {
      const d = Math.abs(r.length - pred.length) - Math.abs(best.length - pred.length);
      return d < 0 || (d === 0 && r.length < best.length) ? r : best;
    });
    referenceLength += closest.length;
  });
  const precisions = hits.map((h, n) => Math.max(h, 1e-15) / Math.max(slots[n], 1e-9));
  const predictionLength = slots[0];
  const brevityPenalty = predictionLength > referenceLength ? 1 : Math.exp(1 - referenceLength / (predictionLength || 1e-5));
  const logMean = precisions.reduce((s, p) => s + Math.log(p), 0) / maxN;
  return { bleu: brevityPenalty * Math.exp(logMean), precisions, brevityPenalty, predictionLength, referenceLength };
}

/** Corpus NIST of `predictions` against their `references`, as e2e-metrics computes it. */
export function corpusNist(predictions: readonly string[], references: readonly (readonly string[])[], maxN = 5): number {
  checkCorpus(predictions, references, 'NIST');
  // refCounts[n]: every n-gram of every reference (n = 0: the empty prefix, counting all words)
  const refCounts = Array.from({ length: maxN + 1 }, () => new Map<string, number>());
  const hits: Map<string, number>[][] = Array.from({ length: maxN }, () => []);
  const slots = new Array<number>(maxN).fill(0);
  let averageRefLength = 0;
  predictions.forEach((prediction, i) => {
    const pred = mtevalTokenize(prediction.toLowerCase());
    const refs = references[i].map((r) => mtevalTokenize(r.toLowerCase()));
    for (let n = 1; n <= maxN; n++) {
      slots[n - 1] += pred.length - n + 1;
      const clip = new Map<string, number>();
      for (const ref of refs) {
        for (const [k, c] of ngramCounts(ref, n)) {
          clip.set(k, Math.max(clip.get(k) ?? 0, c));
          refCounts[n].set(k, (refCounts[n].get(k) ?? 0) + c);
        }
      }
      const sentenceHits = new Map<string, number>();
      for (const [k, c] of ngramCounts(pred, n)) if (clip.has(k)) sentenceHits.set(k, Math.min(c, clip.get(k)!));
      hits[n - 1].push(sentenceHits);
    }
    const refWords = refs.reduce((sum, r) => sum + r.length, 0);
    refCounts[0].set('', (refCounts[0].get('') ?? 0) + refWords);
    averageRefLength += refWords / refs.length;
  });
  const info = (ngram: string, n: number): number => {
    const count = refCounts[n].get(ngram);
    if (count === undefined) return 0;
    const prefix = n === 1 ? '' : ngram.slice(0, ngram.lastIndexOf('\u0001'));
    return Math.log2(refCounts[n - 1].get(prefix)! / count);
  };
  let score = 0;
  for (let n = 1; n <= maxN; n++) {
    let weighted = 0;
    for (const sentenceHits of hits[n - 1]) for (const [k, c] of sentenceHits) weighted += info(k, n) * c;
    score += weighted / slots[n - 1];
  }
  const ratio = slots[0] / averageRefLength;
  const beta = -Math.log(0.5) / Math.log(1.5) ** 2;
  const penalty = ratio >= 1 ? 1 : ratio <= 0 ? 0 : Math.exp(-beta * Math.log(ratio) ** 2);
  return penalty * score;
}

/** Punctuation tokens that PTBTokenizer's output for pycocoevalcap leaves out. */
const PUNCTUATION = new Set(["''", "'", '``', '`', '.', '?', '!', ',', ':', '-', '--', '...', ';']);

/** Lowercased tokens without punctuation (the COCO caption tokenization, approximated). */
export function cocoTokenize(text: string): string[] {
  return mtevalTokenize(text.toLowerCase()).filter((t) => t !== '' && !PUNCTUATION.has(t));
}

function lcsLength(a: readonly string[], b: readonly string[]): number {
  let prev = new Array<number>(b.length + 1).fill(0);
  for (const x of a) {
    const cur = [0];
    for (let j = 0; j < b.length; j++) cur.push(x === b[j] ? prev[j] + 1 : Math.max(prev[j + 1], cur[j]));
    prev = cur;
  }
  return prev[b.length];
}

/** ROUGE-L F-measure (β = 1.2) of one tokenized prediction against its tokenized references. */
export function rougeLSentence(prediction: readonly string[], references: readonly (readonly string[])[], beta = 1.2): number {
  let precision = 0;
  let recall = 0;
  for (const ref of references) {
    const lcs = lcsLength(prediction, ref);
    if (prediction.length > 0) precision = Math.max(precision, lcs / prediction.length);
    if (ref.length > 0) recall = Math.max(recall, lcs / ref.length);
  }
  if (precision === 0 || recall === 0) return 0;
  return ((1 + beta ** 2) * precision * recall) / (recall + beta ** 2 * precision);
}

/** Mean ROUGE-L over the corpus, and each prediction's score. */
export function corpusRougeL(predictions: readonly string[], references: readonly (readonly string[])[], beta = 1.2): { rougeL: number; sentences: number[] } {
  checkCorpus(predictions, references, 'ROUGE-L');
  const sentences = predictions.map((p, i) => rougeLSentence(cocoTokenize(p), references[i].map(cocoTokenize), beta));
  return { rougeL: sentences.reduce((a, b) => a + b, 0) / sentences.length, sentences };
}

/** TF-IDF vectors of one text's n-grams (orders 1..4), their norms and its bigram count (CIDEr's length). */
interface CiderVector {
  vec: Map<string, number>[];
  norm: number[];
  length: number;
}

function ciderVector(tokens: readonly string[], documentFrequency: Map<string, number>, logDocuments: number, maxN: number): CiderVector {
  const vec: Map<string, number>[] = [];
  const norm: number[] = [];
  for (let n = 1; n <= maxN; n++) {
    const weights = new Map<string, number>();
    let squares = 0;
    for (const [k, tf] of ngramCounts(tokens, n)) {
      const w = tf * (logDocuments - Math.log(Math.max(1, documentFrequency.get(`${n}:${k}`) ?? 0)));
      weights.set(k, w);
      squares += w * w;
    }
    vec.push(weights);
    norm.push(Math.sqrt(squares));
  }
  return { vec, norm, length: Math.max(0, tokens.length - 1) };
}

/** Corpus CIDEr (pycocoevalcap's CIDEr-D: clipped, with the Gaussian length penalty, × 10). */
export function corpusCider(predictions: readonly string[], references: readonly (readonly string[])[], maxN = 4, sigma = 6): number {
  checkCorpus(predictions, references, 'CIDEr');
  const refTokens = references.map((refs) => refs.map(cocoTokenize));
  // document frequency: in how many MRs' reference sets an n-gram appears
  const documentFrequency = new Map<string, number>();
  for (const refs of refTokens) {
    const seen = new Set<string>();
    for (const ref of refs) for (let n = 1; n <= maxN; n++) for (const k of ngramCounts(ref, n).keys()) seen.add(`${n}:${k}`);
    for (const k of seen) documentFrequency.set(k, (documentFrequency.get(k) ?? 0) + 1);
  }
  const logDocuments = Math.log(predictions.length);
  let total = 0;
  predictions.forEach((prediction, i) => {
    const hyp = ciderVector(cocoTokenize(prediction), documentFrequency, logDocuments, maxN);
    const perOrder = new Array<number>(maxN).fill(0);
    for (const tokens of refTokens[i]) {
      const ref = ciderVector(tokens, documentFrequency, logDocuments, maxN);
      const delta = hyp.length - ref.length;
      for (let n = 0; n < maxN; n++) {
        let dot = 0;
        for (const [k, w] of hyp.vec[n]) {
          const r = ref.vec[n].get(k) ?? 0;
          dot += Math.min(w, r) * r;
        }
        if (hyp.norm[n] !== 0 && ref.norm[n] !== 0) dot /= hyp.norm[n] * ref.norm[n];
        perOrder[n] += dot * Math.exp(-(delta * delta) / (2 * sigma * sigma));
      }
    }
    total += (10 * perOrder.reduce((a, b) => a + b, 0)) / maxN / refTokens[i].length;
  });
  return total / predictions.length;
}

/** The E2E metrics we compute (BLEU and ROUGE-L as 0..1 fractions; NIST and CIDEr unscaled, as e2e-metrics prints them). */
export function e2eMetrics(predictions: readonly string[], references: readonly (readonly string[])[]): { bleu: number; nist: number; rouge_l: number; cider: number } {
  return {
    bleu: corpusBleu(predictions, references).bleu,
    nist: corpusNist(predictions, references),
    rouge_l: corpusRougeL(predictions, references).rougeL,
    cider: corpusCider(predictions, references),
  };
}
