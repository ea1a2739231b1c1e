// The shape every experiment has: `npm run experiments -- NAME` runs one, `all` runs each in turn.
// An experiment computes its numbers, then returns a Markdown table, its plots (SVG, drawn with
// src/plot) and the raw numbers; the runner writes them under docs/experiments/ (or --out).

export interface ExperimentContext {
  /** Where the outputs go (docs/experiments by default). */
  outDir: string;
  /** A few steps and one seed: the version `npm test` runs to keep the code alive. Numbers are meaningless. */
  tiny: boolean;
  /** The seeds to run (tiny: the first only). */
  seeds: number[];
  /** The embedded text model's folder (data/fortune-llama by default). */
  textModel: string;
  /** The repository's data folder (data/, holding fortunes/ and fashion-mnist/). */
  dataDir: string;
  /** Progress lines (stderr). */
  log(line: string): void;
}

export interface ExperimentResult {
  /** The Markdown written to NAME.md: a title, what was run (the command, seeds, budgets) and the table(s). */
  markdown: string;
  /** Plots: file name (ending .svg) → SVG text. */
  plots: Record<string, string>;
  /** The raw numbers, written to NAME.json. */
  data: unknown;
}

export interface Experiment {
  /** The command-line name (kebab-case, e.g. 'fig6-expressivity'). */
  name: string;
  /** One line: what it reproduces. */
  title: string;
  run(ctx: ExperimentContext): Promise<ExperimentResult>;
}
