// Splits the Unix fortunes into the embedded model's data:
//   data/fortunes/users/<category>/{train,eval}.jsonl   the held-out categories (80/20), one "user" each
//   data/fortunes/general/eval.jsonl                    5% of the pretraining categories, never trained on
//   <work>/pretrain.jsonl                               the other 95%: the pretraining corpus (not shipped)
// Each line is {"text": "...", "category": "..."}. Splits depend only on the texts (hash order), so
// a rerun writes the same bytes. A fortune that also appears in a held-out category is dropped from
// pretraining, and duplicates (the collection repeats some) are kept once.
//
//   node dist/scripts/text-model/prepare-data.js [--src ../shared/datasets/fortunes] [--work build/text-model]
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { fnv1a, hashOrder, readFortunes, USER_CATEGORIES, type Fortune } from './fortunes.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const { values } = parseArgs({
  options: {
    src: { type: 'string', default: resolve(root, '..', 'shared', 'datasets', 'fortunes') },
    work: { type: 'string', default: join(root, 'build', 'text-model') },
    data: { type: 'string', default: join(root, 'data', 'fortunes') },
  },
});
const src = values.src!;
const work = values.work!;
const dataDir = values.data!;

/** Case and spacing do not make a different fortune. */
const key = (text: string): string => text.toLowerCase().replace(/\s+/g, ' ').trim();

function writeJsonl(file: string, items: readonly Fortune[]): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, items.map((f) => `${JSON.stringify({ text: f.text, category: f.category })}\n`).join(''));
}

const all = readFortunes(src);
const users = new Set<string>(USER_CATEGORIES);
for (const c of USER_CATEGORIES) if (!all.has(c)) throw new Error(`${src}: category ${c} not found`);

const heldOut = new Set<string>();
for (const c of USER_CATEGORIES) for (const f of all.get(c)!) heldOut.add(key(f.text));

const seen = new Set<string>();
const pretrainTrain: Fortune[] = [];
const pretrainEval: Fortune[] = [];
let dropped = 0;
for (const [category, fortunes] of all) {
  if (users.has(category)) continue;
  for (const f of fortunes) {
    const k = key(f.text);
    if (heldOut.has(k) || seen.has(k)) {
      dropped++;
      continue;
    }
    seen.add(k);
    (fnv1a(k) % 20 === 0 ? pretrainEval : pretrainTrain).push(f);
  }
}
writeJsonl(join(work, 'pretrain.jsonl'), hashOrder(pretrainTrain));
writeJsonl(join(dataDir, 'general', 'eval.jsonl'), hashOrder(pretrainEval));

const summary: Record<string, { train: number; eval: number; chars: number }> = {};
for (const c of USER_CATEGORIES) {
  const uniq = new Map<string, Fortune>();
  for (const f of all.get(c)!) if (!uniq.has(key(f.text))) uniq.set(key(f.text), f);
  const ordered = hashOrder([...uniq.values()]);
  const nEval = Math.round(ordered.length * 0.2);
  writeJsonl(join(dataDir, 'users', c, 'eval.jsonl'), ordered.slice(0, nEval));
  writeJsonl(join(dataDir, 'users', c, 'train.jsonl'), ordered.slice(nEval));
  summary[c] = { train: ordered.length - nEval, eval: nEval, chars: ordered.reduce((a, f) => a + f.text.length, 0) };
}
copyFileSync(join(src, 'COPYRIGHT'), join(dataDir, 'COPYRIGHT'));

const chars = (xs: Fortune[]): number => xs.reduce((a, f) => a + f.text.length, 0);
console.log(JSON.stringify({
  pretrain: { train: pretrainTrain.length, eval: pretrainEval.length, trainChars: chars(pretrainTrain), evalChars: chars(pretrainEval), droppedDuplicates: dropped, categories: [...all.keys()].filter((c) => !users.has(c)).length },
  users: summary,
}, null, 2));
