// GLUE TSV and E2E CSV readers, and the GLUE metrics against scikit-learn / SciPy values
// (test/fixtures/metrics/metrics.json, from scripts/fixtures/make_metrics_fixtures.py).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GLUE_TASKS, parseGlueTsv, readGlueTsv, type GlueTask } from '../src/data/glue.js';
import { encodeE2e, groupReferences, parseE2eCsv, readE2eCsv } from '../src/data/e2e.js';
import { accuracy, averageRanks, f1, glueMetric, GLUE_METRICS, matthewsCorrelation, pearson, spearman } from '../src/data/metrics.js';
import { loadTokenizer } from '../src/data/tokenizer.js';
import { IGNORE_INDEX } from '../src/data/jsonl.js';
import { throwsVera, withTmp } from './helpers.js';

const FIXTURES = path.join(process.cwd(), 'test', 'fixtures');

/** A file of each task in the GLUE distribution's layout (header names and column order as shipped). */
const GLUE_SAMPLES: Record<GlueTask, string> = {
  cola: 'gj04\t1\t\tOur friends won\'t buy this analysis, let alone the next one we propose.\nbc01\t0\t*\tThe more we study verbs, the crazier they get get.\n',
  sst2: 'sentence\tlabel\nhide new secretions from the parental units \t0\nthe greatest musicians \t1\n',
  mrpc: '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t702876\t702977\tAmrozi accused his brother.\tReferring to him as only " the witness " , Amrozi accused his brother.\n0\t2108705\t2108831\tYucaipa owned Dominick \'s.\tYucaipa bought Dominick \'s in 1995.\n',
  stsb: 'index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000\n1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man is playing a large flute.\tA man is playing a flute.\t3.800\n',
  qqp: 'id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n133273\t213221\t213222\tHow is the life of a math student?\tWhich level of prepration is enough?\t0\n402555\t536040\t536041\tHow do I control my horny emotions?\tHow do you control your horniness?\t1\n',
  mnli: 'index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n0\t31193\t31193n\tgovernment\t( ( Conceptually cream ) )\t( ( Product and ) )\t(ROOT (S))\t(ROOT (S))\tConceptually cream skimming has two basic dimensions.\tProduct and geography are what make cream skimming work. \tneutral\tneutral\n1\t101457\t101457e\ttelephone\t( you )\t( You )\t(ROOT)\t(ROOT)\tyou know during the season.\tYou lose the things.\tentailment\tentailment\n2\t134793\t134793c\tfiction\t( x )\t( y )\t(ROOT)\t(ROOT)\tOne of our number.\tA member of my team.\tcontradiction\tcontradiction\n',
  qnli: 'index\tquestion\tsentence\tlabel\n0\tWhen did the third Digimon series begin?\tUnlike the two seasons before it.\tnot_entailment\n1\tWhich missile batteries often have individual launchers?\tThe MIM-104 Patriot has batteries.\tentailment\n',
  rte: 'index\tsentence1\tsentence2\tlabel\n0\tNo Weapons of Mass Destruction Found in Iraq Yet.\tWeapons of Mass Destruction Found in Iraq.\tnot_entailment\n1\tA place of sorrow.\tPope Benedict XVI is the new leader.\tentailment\n',
  wnli: 'index\tsentence1\tsentence2\tlabel\n0\tI stuck a pin through a carrot.\tThe carrot had a hole.\t1\n1\tJohn couldn\'t see the stage.\tJohn is so short.\t0\n',
};

describe('GLUE TSV reader', () => {
  test('every task: texts, pairs and label indices in the datasets order', () => {
    const expected: Record<GlueTask, { a: string; b: string | null; labels: number[] }> = {
      cola: { a: "Our friends won't buy this analysis, let alone the next one we propose.", b: null, labels: [1, 0] },
      sst2: { a: 'hide new secretions from the parental units ', b: null, labels: [0, 1] },
      mrpc: { a: 'Amrozi accused his brother.', b: 'Referring to him as only " the witness " , Amrozi accused his brother.', labels: [1, 0] },
      stsb: { a: 'A plane is taking off.', b: 'An air plane is taking off.', labels: [5, 3.8] },
      qqp: { a: 'How is the life of a math student?', b: 'Which level of prepration is enough?', labels: [0, 1] },
      mnli: { a: 'Conceptually cream skimming has two basic dimensions.', b: 'Product and geography are what make cream skimming work. ', labels: [1, 0, 2] },
      qnli: { a: 'When did the third Digimon series begin?', b: 'Unlike the two seasons before it.', labels: [1, 0] },
      rte: { a: 'No Weapons of Mass Destruction Found in Iraq Yet.', b: 'Weapons of Mass Destruction Found in Iraq.', labels: [1, 0] },
      wnli: { a: 'I stuck a pin through a carrot.', b: 'The carrot had a hole.', labels: [1, 0] },
    };
    for (const task of GLUE_TASKS) {
      const d = parseGlueTsv(GLUE_SAMPLES[task], `${task}.tsv`, task);
      assert.equal(d.examples[0].textA, expected[task].a, task);
      assert.equal(d.examples[0].textB, expected[task].b, task);
      assert.deepEqual(d.examples.map((e) => e.label), expected[task].labels, task);
      assert.equal(d.hasLabels, true);
      assert.equal(d.numLabels, task === 'stsb' ? 1 : task === 'mnli' ? 3 : 2);
    }
    assert.deepEqual(parseGlueTsv(GLUE_SAMPLES.mnli, 'm.tsv', 'mnli').labelNames, ['entailment', 'neutral', 'contradiction']);
    const cola = parseGlueTsv(GLUE_SAMPLES.cola, 'cola.tsv', 'cola');
    assert.deepEqual(cola.examples.map((e) => e.line), [1, 2], 'CoLA train/dev have no header');
  });

  test('test splits (no label column) read with labels null; CoLA test has a header', () => {
    const sst = parseGlueTsv('index\tsentence\n0\tuneasy mishmash of styles\n1\tthis film \'s relationship\n', 'test.tsv', 'sst2');
    assert.equal(sst.hasLabels, false);
    assert.deepEqual(sst.examples.map((e) => e.label), [null, null]);
    const cola = parseGlueTsv('index\tsentence\n0\tBill whistled past the house.\n', 'test.tsv', 'cola');
    assert.equal(cola.examples[0].textA, 'Bill whistled past the house.');
    assert.equal(cola.hasLabels, false);
    const mnli = parseGlueTsv('index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\n0\t1\t1n\tfiction\tA\tB\n', 'test_matched.tsv', 'mnli');
    assert.deepEqual([mnli.examples[0].textA, mnli.examples[0].textB, mnli.examples[0].label], ['A', 'B', null]);
  });

  test('bad files: one line naming file, line and column', () => {
    throwsVera(() => parseGlueTsv('sentence\tlabel\ngood\t1\nbad\t2\n', 'train.tsv', 'sst2'), /^train\.tsv:3: column 2 \("label"\): label "2" is not one of 0, 1$/);
    throwsVera(() => parseGlueTsv(GLUE_SAMPLES.stsb.replace('3.800', 'n/a'), 'dev.tsv', 'stsb'), /^dev\.tsv:3: column 10 \("score"\): "n\/a" is not a number$/);
    throwsVera(() => parseGlueTsv('sentence\tlabel\nonly one column\n', 'x.tsv', 'sst2'), /^x\.tsv:2: 1 columns, expected 2/);
    throwsVera(() => parseGlueTsv('question\tsentence\tlabel\nq\ts\tentailment\n', 'x.tsv', 'rte'), /^x\.tsv:1: header has no "sentence1" column \(is this a rte file\?/);
    throwsVera(() => parseGlueTsv('gj04\t1\t\n', 'cola.tsv', 'cola'), /^cola\.tsv:1: 3 columns, expected 4/);
    throwsVera(() => parseGlueTsv('\n\n', 'e.tsv', 'sst2'), /^e\.tsv: empty file$/);
    throwsVera(() => readGlueTsv('/no/such/dir/train.tsv', 'sst2'), /train\.tsv: not found$/);
  });
});

describe('E2E CSV reader', () => {
  const CSV = 'mr,ref\n"name[The Vaults], eatType[pub], priceRange[more than £30]","The Vaults pub near Café Adriatic has a 5 star rating.  Prices start at £30."\n"name[The Vaults], eatType[pub], priceRange[more than £30]","Close to Café Brazil, The Vaults pub has a ""5 star"" rating."\n"name[The Cambridge Blue], food[English]","The Cambridge Blue serves English food,\nnear the river."\n';

  test('quoted fields with commas, doubled quotes and newlines; references grouped per MR', () => {
    const rows = parseE2eCsv(CSV, 'trainset.csv');
    assert.equal(rows.length, 3);
    assert.equal(rows[0].mr, 'name[The Vaults], eatType[pub], priceRange[more than £30]');
    assert.equal(rows[1].ref, 'Close to Café Brazil, The Vaults pub has a "5 star" rating.');
    assert.equal(rows[2].ref, 'The Cambridge Blue serves English food,\nnear the river.');
    assert.deepEqual(rows.map((r) => r.line), [2, 3, 4]);
    const groups = groupReferences(rows);
    assert.deepEqual(groups.map((g) => g.refs.length), [2, 1]);
    assert.equal(groups[1].mr, 'name[The Cambridge Blue], food[English]');
    const test = parseE2eCsv('MR\n"name[Alimentum], area[city centre]"\n', 'testset.csv');
    assert.deepEqual(test, [{ line: 2, mr: 'name[Alimentum], area[city centre]', ref: null }]);
  });

  test('bad files: one line naming file and line', () => {
    throwsVera(() => parseE2eCsv('mr,ref\n"a","b"\n"c"\n', 'devset.csv'), /^devset\.csv:3: not valid CSV: Invalid Record Length/);
    throwsVera(() => parseE2eCsv('mr,ref\n"a","b\n', 'devset.csv'), /^devset\.csv:2: not valid CSV: Quote Not Closed/);
    throwsVera(() => parseE2eCsv('meaning,ref\na,b\n', 'x.csv'), /^x\.csv:1: header has no "mr" column/);
    throwsVera(() => parseE2eCsv('mr,ref\na,\n', 'x.csv'), /^x\.csv:2: column 2 \("ref"\) is empty$/);
    throwsVera(() => readE2eCsv('/no/such/devset.csv'), /devset\.csv: not found$/);
  });

  test('causal-LM encoding: MR prompt masked with -100, reference + eos are the targets (real GPT-2 tokenizer)', async () => {
    const tok = await loadTokenizer(path.join(FIXTURES, 'tokenizers', 'gpt2'));
    assert.ok(tok);
    const rows = parseE2eCsv(CSV, 'trainset.csv');
    const enc = encodeE2e(rows, tok, { seqLen: 128 }, 'trainset.csv');
    const first = enc.sequences[0];
    const prompt = tok.encode(`${rows[0].mr} ||`);
    const completion = [...tok.encode(` ${rows[0].ref}`), 50256];
    assert.deepEqual([...first.ids], [...prompt, ...completion]);
    assert.deepEqual([...first.labels], [...prompt.map(() => IGNORE_INDEX), ...completion]);
    assert.equal(tok.decode([...first.ids]), `${rows[0].mr} || ${rows[0].ref}<|endoftext|>`);
    // a short window: the reference is cut, a prompt that fills it is skipped
    const short = encodeE2e(rows, tok, { seqLen: prompt.length + 3 }, 't.csv');
    assert.equal(short.truncated, 3, 'every reference is longer than the room left');
    assert.equal(short.sequences[0].ids.length, prompt.length + 3);
    assert.equal(encodeE2e(rows, tok, { seqLen: 5 }, 't.csv').skipped, 3);
    throwsVera(() => encodeE2e(parseE2eCsv('mr\na\n', 'testset.csv'), tok, { seqLen: 8 }, 'testset.csv'), /testset\.csv: has no "ref" column/);
  });
});

describe('metrics against scikit-learn and SciPy', () => {
  interface Case {
    name: string;
    predictions: number[];
    references: number[];
    accuracy?: number;
    f1?: number | null;
    matthews_correlation?: number;
    pearson?: number | null;
    spearmanr?: number | null;
  }
  const ref = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'metrics', 'metrics.json'), 'utf8')) as { classification: Case[]; regression: Case[] };
  const close = (a: number, b: number | null | undefined, what: string): void => {
    if (b === null || b === undefined) assert.ok(Number.isNaN(a), `${what}: expected NaN, got ${a}`);
    else assert.ok(Math.abs(a - b) < 1e-12, `${what}: ${a} vs ${b}`);
  };

  test('accuracy, binary F1 and Matthews correlation (incl. constant predictions, no positives, 3 classes)', () => {
    for (const c of ref.classification) {
      close(accuracy(c.predictions, c.references), c.accuracy, `${c.name} accuracy`);
      close(matthewsCorrelation(c.predictions, c.references), c.matthews_correlation, `${c.name} mcc`);
      if (c.f1 !== null) close(f1(c.predictions, c.references), c.f1, `${c.name} f1`);
    }
  });

  test('Pearson and Spearman (ties get average ranks; a constant input gives NaN)', () => {
    for (const c of ref.regression) {
      close(pearson(c.predictions, c.references), c.pearson, `${c.name} pearson`);
      close(spearman(c.predictions, c.references), c.spearmanr, `${c.name} spearman`);
    }
    assert.deepEqual([...averageRanks([10, 20, 20, 5, 20])], [2, 4, 4, 1, 4]);
  });

  test('the GLUE metric of each task', () => {
    assert.deepEqual(GLUE_METRICS.cola, ['matthews_correlation']);
    const bin = ref.classification[0];
    assert.deepEqual(Object.keys(glueMetric('mrpc', bin.predictions, bin.references)), ['accuracy', 'f1']);
    assert.deepEqual(Object.keys(glueMetric('qqp', bin.predictions, bin.references)), ['accuracy', 'f1']);
    close(glueMetric('cola', bin.predictions, bin.references).matthews_correlation!, bin.matthews_correlation, 'cola');
    const reg = ref.regression[1];
    const stsb = glueMetric('stsb', reg.predictions, reg.references);
    close(stsb.pearson!, reg.pearson, 'stsb pearson');
    close(stsb.spearmanr!, reg.spearmanr, 'stsb spearman');
    for (const t of ['sst2', 'mnli', 'qnli', 'rte', 'wnli'] as const) assert.deepEqual(Object.keys(glueMetric(t, [0, 1], [0, 0])), ['accuracy']);
    assert.throws(() => accuracy([1], [1, 0]), /1 predictions for 2 references/);
  });
});

test('GLUE and E2E files read from disk (BOM, CRLF line ends)', () =>
  withTmp((dir) => {
    const file = path.join(dir, 'dev.tsv');
    fs.writeFileSync(file, '\ufeffsentence\tlabel\r\nit is good\t1\r\n\r\n');
    const d = readGlueTsv(file, 'sst2');
    assert.deepEqual(d.examples, [{ line: 2, textA: 'it is good', textB: null, label: 1 }]);
    const csv = path.join(dir, 'devset.csv');
    fs.writeFileSync(csv, '\ufeffmr,ref\r\n"name[A]","A is nice."\r\n');
    assert.deepEqual(readE2eCsv(csv), [{ line: 2, mr: 'name[A]', ref: 'A is nice.' }]);
  }));
