// The GLUE benchmark's TSV files as its distribution has them (train.tsv, dev.tsv, test.tsv;
// MNLI's dev_matched.tsv / dev_mismatched.tsv): tab-separated, no quoting, a header row except
// CoLA's train and dev files. Each task names its text and label columns; label names and their
// order are those of the `datasets` glue loader (MNLI: entailment, neutral, contradiction), so
// index i is class i of a model's head. A file without the label column (a test split) reads with
// labels null. A bad row is a one-line error naming file, line and column.
import { fail } from '../io/errors.js';
import { readTextFile } from './text-file.js';
import { GLUE_TASKS, type GlueTask } from './metrics.js';

export { GLUE_TASKS, type GlueTask };

export interface GlueTaskSpec {
  /** Header names of the text columns (CoLA's headerless files: see `noHeader`). */
  textA: string;
  textB: string | null;
  label: string;
  /** Class names by index; null for STS-B's regression score. */
  labelNames: readonly string[] | null;
  /** How a label cell spells class i (the names themselves, or "0", "1", …). */
  labelValues: readonly string[] | null;
  /** CoLA's train/dev files have no header: columns source, label, original label, sentence. */
  noHeader?: { textA: number; label: number; columns: number };
}

export const GLUE_SPECS: Record<GlueTask, GlueTaskSpec> = {
  cola: { textA: 'sentence', textB: null, label: 'label', labelNames: ['unacceptable', 'acceptable'], labelValues: ['0', '1'], noHeader: { textA: 3, label: 1, columns: 4 } },
  sst2: { textA: 'sentence', textB: null, label: 'label', labelNames: ['negative', 'positive'], labelValues: ['0', '1'] },
  mrpc: { textA: '#1 String', textB: '#2 String', label: 'Quality', labelNames: ['not_equivalent', 'equivalent'], labelValues: ['0', '1'] },
  stsb: { textA: 'sentence1', textB: 'sentence2', label: 'score', labelNames: null, labelValues: null },
  qqp: { textA: 'question1', textB: 'question2', label: 'is_duplicate', labelNames: ['not_duplicate', 'duplicate'], labelValues: ['0', '1'] },
  mnli: { textA: 'sentence1', textB: 'sentence2', label: 'gold_label', labelNames: ['entailment', 'neutral', 'contradiction'], labelValues: ['entailment', 'neutral', 'contradiction'] },
  qnli: { textA: 'question', textB: 'sentence', label: 'label', labelNames: ['entailment', 'not_entailment'], labelValues: ['entailment', 'not_entailment'] },
  rte: { textA: 'sentence1', textB: 'sentence2', label: 'label', labelNames: ['entailment', 'not_entailment'], labelValues: ['entailment', 'not_entailment'] },
  wnli: { textA: 'sentence1', textB: 'sentence2', label: 'label', labelNames: ['not_entailment', 'entailment'], labelValues: ['0', '1'] },
};

export interface GlueExample {
  /** 1-based line in the file. */
  line: number;
  textA: string;
  textB: string | null;
  /** Class index, the STS-B score, or null in a test split. */
  label: number | null;
}

export interface GlueData {
  task: GlueTask;
  file: string;
  examples: GlueExample[];
  /** False for a test split (no label column). */
  hasLabels: boolean;
  /** 1 for STS-B (regression), else the number of classes. */
  numLabels: number;
  labelNames: readonly string[] | null;
}

/** Reads one GLUE TSV file of `task`. */
export function readGlueTsv(file: string, task: GlueTask): GlueData {
  return parseGlueTsv(readTextFile(file), file, task);
}

/** Parses GLUE TSV text (see the file comment); `file` names it in errors. */
export function parseGlueTsv(content: string, file: string, task: GlueTask): GlueData {
  const spec = GLUE_SPECS[task];
  if (content.charCodeAt(0) === 0xfeff) content = content.slice(1);
  const lines = content.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  const first = lines.findIndex((l) => l.trim() !== '');
  if (first < 0) fail(`${file}: empty file`);
  const header = lines[first].split('\t');

  // column indices: by header name, or CoLA's fixed layout when the first row is data
  let colA: number;
  let colB = -1;
  let colLabel: number;
  let columns: number;
  let start: number;
  const named = header.includes(spec.textA);
  if (!named && spec.noHeader) {
    ({ textA: colA, label: colLabel, columns } = spec.noHeader);
    start = first;
  } else {
    const col = (name: string): number => header.indexOf(name);
    colA = col(spec.textA);
    if (colA < 0) fail(`${file}:${first + 1}: header has no "${spec.textA}" column (is this a ${task} file? header: ${header.join(', ')})`);
    if (spec.textB !== null) {
      colB = col(spec.textB);
      if (colB < 0) fail(`${file}:${first + 1}: header has no "${spec.textB}" column (is this a ${task} file? header: ${header.join(', ')})`);
    }
    colLabel = col(spec.label);
    columns = header.length;
    start = first + 1;
  }
  const hasLabels = colLabel >= 0;
  const needed = Math.max(colA, colB, colLabel) + 1;

  const examples: GlueExample[] = [];
  for (let i = start; i < lines.length; i++) {
    const raw = lines[i];
    if (raw.trim() === '') continue;
    const line = i + 1;
    const cells = raw.split('\t');
    if (cells.length < needed) fail(`${file}:${line}: ${cells.length} columns, expected ${columns} (${task} needs column ${needed})`);
    let label: number | null = null;
    if (hasLabels) {
      const cell = cells[colLabel].trim();
      const where = `${file}:${line}: column ${colLabel + 1}${named ? ` ("${spec.label}")` : ''}`;
      if (spec.labelValues === null) {
        label = Number(cell);
        if (cell === '' || !Number.isFinite(label)) fail(`${where}: ${JSON.stringify(cell)} is not a number`);
      } else {
        label = spec.labelValues.indexOf(cell);
        if (label < 0) fail(`${where}: label ${JSON.stringify(cell)} is not one of ${spec.labelValues.join(', ')}`);
      }
    }
    examples.push({ line, textA: cells[colA], textB: colB >= 0 ? cells[colB] : null, label });
  }
  if (examples.length === 0) fail(`${file}: no examples`);
  return { task, file, examples, hasLabels, numLabels: spec.labelNames?.length ?? 1, labelNames: spec.labelNames };
}
