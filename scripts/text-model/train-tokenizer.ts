// Trains the embedded model's tokenizer: byte-level BPE as GPT-2's (the same pre-tokenizer regex and
// byte-to-character map), written as a Hugging Face tokenizer.json that @huggingface/tokenizers and
// Python's `tokenizers` load. Hand-written because no maintained npm package trains BPE (the JS
// ports only encode) and Python's `tokenizers` is not installable here; training BPE is a short,
// well-defined loop (Sennrich et al., 2016): count pre-tokenized words, merge the most frequent
// adjacent pair until the vocabulary is full. Ties go to the pair whose merged string sorts
// first, so the result is a function of the corpus alone.
//
//   node dist/scripts/text-model/train-tokenizer.js --data build/text-model/pretrain.jsonl --out DIR [--vocab-size 4096]
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

export const EOS = '<|endoftext|>';
/** GPT-2's pre-tokenizer: contractions, letters, digits, other symbols, each with one leading space; runs of whitespace. */
export const PRETOKENIZE = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** GPT-2's map from bytes to printable characters (so no token holds a space or a control byte). */
export function bytesToUnicode(): string[] {
  const chars: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    chars[b] = String.fromCodePoint(printable ? b : 256 + extra++);
  }
  return chars;
}

export interface TrainedBpe {
  vocab: string[];
  merges: [string, string][];
}

/** BPE over the texts: id 0 is the end-of-text token, ids 1..256 the bytes, then one id per merge. */
export function trainBpe(texts: Iterable<string>, vocabSize: number, minFrequency = 2): TrainedBpe {
  const byteChar = bytesToUnicode();
  const encoder = new TextEncoder();
  const wordCounts = new Map<string, number>();
  for (const text of texts) for (const m of text.matchAll(PRETOKENIZE)) wordCounts.set(m[0], (wordCounts.get(m[0]) ?? 0) + 1);

  const vocab: string[] = [EOS, ...byteChar];
  const words: { symbols: number[]; count: number }[] = [];
  for (const [w, count] of [...wordCounts].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    words.push({ symbols: [...encoder.encode(w)].map((b) => 1 + b), count });
  }

  const pairKey = (a: number, b: number): number => a * 65536 + b;
  const counts = new Map<number, number>();
  const where = new Map<number, Set<number>>();
  const addPairs = (wi: number, sign: 1 | -1): void => {
    const { symbols, count } = words[wi];
    for (let i = 0; i + 1 < symbols.length; i++) {
      const k = pairKey(symbols[i], symbols[i + 1]);
      counts.set(k, (counts.get(k) ?? 0) + sign * count);
      if (sign > 0) {
        let s = where.get(k);
        if (!s) where.set(k, (s = new Set()));
        s.add(wi);
      }
    }
  };
  for (let wi = 0; wi < words.length; wi++) addPairs(wi, 1);

  const merges: [string, string][] = [];
  while (vocab.length < vocabSize) {
    let best = -1;
    let bestCount = minFrequency - 1;
    let bestString = '';
    for (const [k, c] of counts) {
      if (c < bestCount || c <= 0) continue;
      const s = vocab[Math.floor(k / 65536)] + vocab[k % 65536];
      if (c > bestCount || s < bestString) {
        best = k;
        bestCount = c;
        bestString = s;
      }
    }
    if (best < 0) break; // no pair occurs often enough
    const a = Math.floor(best / 65536);
    const b = best % 65536;
    const id = vocab.length;
    vocab.push(bestString);
    merges.push([vocab[a], vocab[b]]);
    for (const wi of where.get(best) ?? []) {
      addPairs(wi, -1);
      const old = words[wi].symbols;
      const merged: number[] = [];
      for (let i = 0; i < old.length; i++) {
        if (i + 1 < old.length && old[i] === a && old[i + 1] === b) {
          merged.push(id);
          i++;
        } else merged.push(old[i]);
      }
      words[wi].symbols = merged;
      addPairs(wi, 1);
    }
    counts.delete(best);
    where.delete(best);
  }
  // vocab holds byte-level strings; the byte tokens as their mapped characters
  return { vocab, merges };
}

/** The Hugging Face tokenizer.json of a byte-level BPE (GPT-2's layout). */
export function tokenizerJson(bpe: TrainedBpe): object {
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [{ id: 0, content: EOS, single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      vocab: Object.fromEntries(bpe.vocab.map((t, i) => [t, i])),
      merges: bpe.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

/** tokenizer_config.json and special_tokens_map.json as transformers writes them for GPT-2. */
export function tokenizerConfigFiles(modelMaxLength: number): Record<string, object> {
  return {
    'tokenizer_config.json': {
      add_prefix_space: false,
      bos_token: EOS,
      eos_token: EOS,
      unk_token: EOS,
      clean_up_tokenization_spaces: false,
      model_max_length: modelMaxLength,
      tokenizer_class: 'GPT2Tokenizer',
    },
    'special_tokens_map.json': { bos_token: EOS, eos_token: EOS, unk_token: EOS },
  };
}

function main(): void {
  const { values } = parseArgs({
    options: {
      data: { type: 'string' },
      out: { type: 'string' },
      'vocab-size': { type: 'string', default: '4096' },
      'model-max-length': { type: 'string', default: '256' },
    },
  });
  if (!values.data || !values.out) throw new Error('usage: train-tokenizer --data FILE.jsonl --out DIR [--vocab-size N]');
  const texts = readFileSync(values.data, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => (JSON.parse(l) as { text: string }).text);
  const t0 = performance.now();
  const bpe = trainBpe(texts, Number(values['vocab-size']));
  mkdirSync(values.out, { recursive: true });
  writeFileSync(join(values.out, 'tokenizer.json'), `${JSON.stringify(tokenizerJson(bpe), null, 2)}\n`);
  for (const [name, obj] of Object.entries(tokenizerConfigFiles(Number(values['model-max-length'])))) {
    writeFileSync(join(values.out, name), `${JSON.stringify(obj, null, 2)}\n`);
  }
  console.log(`tokenizer: ${bpe.vocab.length} tokens (${bpe.merges.length} merges) from ${texts.length} texts in ${((performance.now() - t0) / 1000).toFixed(1)} s → ${values.out}`);
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) main();
