// The E2E NLG Challenge data (trainset.csv, devset.csv, testset_w_refs.csv): a CSV with a header
// row naming the columns `mr` (the meaning representation, "name[The Vaults], eatType[pub], …")
// and `ref` (one human reference), fields quoted as needed; the same MR appears once per
// reference. For causal-LM training each row becomes prompt + completion, the prompt being the MR
// and a separator and the completion the reference and the end-of-text token; the loss is taken on
// the completion only (labels IGNORE_INDEX on the prompt). For evaluation the references of each
// MR are grouped, in first-appearance order, as the challenge's scripts compare a generation with
// all of them. A file with only an `mr` column (testset.csv) reads with no references.
import { parse } from 'csv-parse/sync';
import { fail } from '../io/errors.js';
import { readTextFile } from './text-file.js';
import { IGNORE_INDEX, encodeCut } from './jsonl.js';
import type { Tokenizer } from './tokenizer.js';

export interface E2eRow {
  /** 1-based line of the record's start in the file. */
  line: number;
  mr: string;
  ref: string | null;
}

export interface E2eGroup {
  mr: string;
  refs: string[];
}

/** Reads an E2E CSV file; columns are found by header name (case-insensitive: mr/MR, ref). */
export function readE2eCsv(file: string): E2eRow[] {
  return parseE2eCsv(readTextFile(file), file);
}

export function parseE2eCsv(content: string, file: string): E2eRow[] {
  let records: { record: string[]; info: { lines: number } }[];
  try {
    records = parse(content, { bom: true, skip_empty_lines: true, relax_column_count: false, info: true }) as unknown as { record: string[]; info: { lines: number } }[];
  } catch (e) {
    const err = e as Error & { lines?: number };
    fail(`${file}:${err.lines ?? '?'}: not valid CSV: ${err.message}`);
  }
  if (records.length === 0) fail(`${file}: empty file`);
  const header = records[0].record.map((h) => h.trim().toLowerCase());
  const colMr = header.indexOf('mr');
  const colRef = header.indexOf('ref');
  if (colMr < 0) fail(`${file}:1: header has no "mr" column (header: ${records[0].record.join(', ')})`);
  const rows: E2eRow[] = [];
  for (const { record, info } of records.slice(1)) {
    // info.lines is where the record ends; quoted fields may span lines
    const line = info.lines - record.reduce((n, cell) => n + cell.split('\n').length - 1, 0);
    const mr = record[colMr].trim();
    if (mr === '') fail(`${file}:${line}: column ${colMr + 1} ("mr") is empty`);
    const ref = colRef >= 0 ? record[colRef].trim() : null;
    if (ref === '') fail(`${file}:${line}: column ${colRef + 1} ("ref") is empty`);
    rows.push({ line, mr, ref });
  }
  if (rows.length === 0) fail(`${file}: no rows after the header`);
  return rows;
}

/** The references of each MR, MRs in first-appearance order. */
export function groupReferences(rows: readonly E2eRow[]): E2eGroup[] {
  const byMr = new Map<string, E2eGroup>();
  for (const r of rows) {
    let g = byMr.get(r.mr);
    if (!g) byMr.set(r.mr, (g = { mr: r.mr, refs: [] }));
    if (r.ref !== null) g.refs.push(r.ref);
  }
  return [...byMr.values()];
}

/** Text between the MR and the reference (the model learns to continue after it). */
export const E2E_SEPARATOR = ' ||';

/** The prompt a model is given for an MR. */
export function e2ePrompt(mr: string, separator = E2E_SEPARATOR): string {
  return `${mr}${separator}`;
}

/** One training sequence: ids, and labels with IGNORE_INDEX on the prompt. */
export interface PromptCompletion {
  ids: Int32Array;
  labels: Int32Array;
}

export interface E2eEncodeOptions {
  seqLen: number;
  separator?: string;
  /** Appended after the reference (GPT-2's <|endoftext|>); default the tokenizer's eos, if any. */
  eosId?: number | null;
}

export interface E2eEncoded {
  sequences: PromptCompletion[];
  /** Rows whose prompt alone fills seqLen (no reference token would remain): skipped. */
  skipped: number;
  /** Rows whose reference was cut to fit seqLen. */
  truncated: number;
  /** Tokens that enter the loss. */
  targetTokens: number;
}

/**
 * Tokenizes rows (which must have references) as prompt + " " + reference + eos. Prompt and
 * completion are tokenized separately, so the boundary is a token boundary and the labels mask the
 * prompt exactly.
 */
export function encodeE2e(rows: readonly E2eRow[], tokenizer: Pick<Tokenizer, 'encode' | 'specialTokens'>, opts: E2eEncodeOptions, file: string): E2eEncoded {
  const eos = opts.eosId !== undefined ? opts.eosId : (tokenizer.specialTokens.eos?.id ?? null);
  const out: E2eEncoded = { sequences: [], skipped: 0, truncated: 0, targetTokens: 0 };
  for (const row of rows) {
    if (row.ref === null) fail(`${file}: has no "ref" column; training needs references`);
    // only seqLen tokens are kept: huge cells are cut before they are encoded
    const prompt = encodeCut((t) => tokenizer.encode(t), e2ePrompt(row.mr, opts.separator), opts.seqLen);
    const completion = encodeCut((t) => tokenizer.encode(t, { addSpecialTokens: false }), ` ${row.ref}`, opts.seqLen);
    if (eos !== null) completion.push(eos);
    // the loss needs a prompt token before each target: at least one completion token must fit
    if (prompt.length >= opts.seqLen) {
      out.skipped++;
      continue;
    }
    let ids = [...prompt, ...completion];
    if (ids.length > opts.seqLen) {
      ids = ids.slice(0, opts.seqLen);
      out.truncated++;
    }
    const labels = Int32Array.from(ids, (id, i) => (i < prompt.length ? IGNORE_INDEX : id));
    out.targetTokens += ids.length - prompt.length;
    out.sequences.push({ ids: Int32Array.from(ids), labels });
  }
  return out;
}
