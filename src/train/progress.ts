// Training progress: a redrawing cli-progress bar on a terminal, one plain line every `logEvery`
// steps elsewhere (CI logs and pipes must not fill up with carriage returns), nothing when quiet.
//
// The training loop is synchronous, so cli-progress's timer never fires mid-run; SingleBar's
// `synchronousUpdate` redraws from update() instead. `gracefulExit` stays off: its SIGINT listener
// would replace Node's default handler and, with the event loop busy, make Ctrl-C do nothing.
import { SingleBar } from 'cli-progress';

export interface ProgressOptions {
  /** Last step (the bar's 100%). */
  total: number;
  /** Step already reached (resuming); rates and ETA count from here. */
  start?: number;
  /** What `items` counts, for the throughput ("tokens", "samples"). */
  unit?: string;
  /** No output at all. */
  quiet?: boolean;
  /** Without a terminal: print a line every this many steps (and at the last). */
  logEvery?: number;
  /** Defaults to stderr, like tqdm, so results written to stdout stay clean. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** EMA factor of the displayed loss. */
  smoothing?: number;
  /** Prefix of every line, e.g. "train". */
  label?: string;
}

export interface ProgressUpdate {
  loss: number;
  /** Items processed in this step (tokens, samples). */
  items: number;
  /** Shown after the standard fields, e.g. {lr: 1e-4, eval_accuracy: 0.93}. */
  extra?: Record<string, number | string>;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

function formatRate(x: number): string {
  if (!Number.isFinite(x)) return '--';
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)}M`;
  if (x >= 1e4) return `${(x / 1e3).toFixed(1)}k`;
  return x >= 100 ? x.toFixed(0) : x.toFixed(1);
}

/** Compact numbers for extra fields: lrs in exponent form, metrics with 4 significant digits. */
export function formatValue(v: number | string): string {
  if (typeof v === 'string') return v;
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : v.toPrecision(4);
}

export class ProgressReporter {
  private readonly total: number;
  private readonly start: number;
  private readonly unit: string;
  private readonly logEvery: number;
  private readonly smoothing: number;
  private readonly label: string;
  private readonly stream: NonNullable<ProgressOptions['stream']>;
  private readonly bar: SingleBar | null = null;
  private readonly quiet: boolean;
  private readonly t0 = performance.now();
  private items = 0;
  private ema = 0;
  private emaSteps = 0;
  private step: number;
  private stopped = false;
  private extra: Record<string, number | string> = {};

  constructor(opts: ProgressOptions) {
    this.total = opts.total;
    this.start = opts.start ?? 0;
    this.step = this.start;
    this.unit = opts.unit ?? 'items';
    this.logEvery = Math.max(1, Math.floor(opts.logEvery ?? Math.ceil(opts.total / 20)));
    this.smoothing = opts.smoothing ?? 0.9;
    this.label = opts.label ?? 'train';
    this.stream = opts.stream ?? process.stderr;
    this.quiet = opts.quiet ?? false;
    if (!this.quiet && this.stream.isTTY === true) {
      this.bar = new SingleBar({
        stream: this.stream,
        format: () => this.line(true),
        gracefulExit: false,
        hideCursor: false,
        forceRedraw: true, // render() is throttled anyway; lets log() repaint the bar at once
        fps: 5,
      });
      this.bar.start(this.total, this.start);
    }
  }

  /** Loss averaged with a bias-corrected EMA, so early values are not pulled toward 0. */
  get smoothedLoss(): number {
    return this.emaSteps === 0 ? NaN : this.ema / (1 - Math.pow(this.smoothing, this.emaSteps));
  }

  /** Items per second since this reporter started. */
  get throughput(): number {
    const s = (performance.now() - this.t0) / 1000;
    return s > 0 ? this.items / s : NaN;
  }

  update(step: number, u: ProgressUpdate): void {
    if (this.stopped) return;
    this.step = step;
    this.items += u.items;
    if (Number.isFinite(u.loss)) {
      this.ema = this.smoothing * this.ema + (1 - this.smoothing) * u.loss;
      this.emaSteps++;
    }
    if (u.extra) this.extra = { ...this.extra, ...u.extra };
    if (this.quiet) return;
    if (this.bar) this.bar.update(step);
    else if (step % this.logEvery === 0 || step === this.total) this.stream.write(this.line(false) + '\n');
  }

  /** A message on its own line (evaluation results, checkpoints) without breaking the bar. */
  log(message: string): void {
    if (this.quiet || this.stopped) return;
    if (this.bar) {
      // Clear the bar's line, print, and re-save the cursor (ESC 7): cli-progress restores the
      // position saved at start() when it stops, which would otherwise land above our messages.
      this.stream.write(`\r\x1b[2K${message}\n\x1b7`);
      this.bar.render();
    } else {
      this.stream.write(message + '\n');
    }
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.bar?.stop();
  }

  private line(withBar: boolean): string {
    const done = this.step - this.start;
    const elapsed = (performance.now() - this.t0) / 1000;
    const eta = done > 0 ? ((this.total - this.step) * elapsed) / done : NaN;
    const width = String(this.total).length;
    const parts = [`${this.label} ${String(this.step).padStart(width)}/${this.total}`];
    if (withBar) {
      const n = 20;
      const filled = this.total > 0 ? Math.round((n * Math.min(this.step, this.total)) / this.total) : n;
      parts[0] += ` ${'█'.repeat(filled)}${'░'.repeat(n - filled)}`;
    }
    parts.push(`loss ${Number.isNaN(this.smoothedLoss) ? '--' : this.smoothedLoss.toFixed(4)}`);
    parts.push(`${formatRate(this.throughput)} ${this.unit}/s`);
    parts.push(`eta ${this.step >= this.total ? '0s' : formatDuration(eta)}`);
    const extras = Object.entries(this.extra).map(([k, v]) => `${k} ${formatValue(v)}`);
    if (extras.length > 0) parts.push(extras.join(' '));
    return parts.join(' | ');
  }
}
