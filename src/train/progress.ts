// Training progress: a redrawing cli-progress bar on a terminal, one plain line every `logEvery`
// steps elsewhere (CI logs and pipes must not fill up with carriage returns), one JSON object per
// line for machines (`json`), nothing when quiet. Eval metrics are printed once, when they are new
// (a plain line repeating stale metrics reads as if they had just been measured). The ETA uses an
// exponential moving average of the step time, so one slow step (an evaluation) does not make it jump.
//
// The training loop is synchronous, so cli-progress's timer never fires mid-run; SingleBar's
// `synchronousUpdate` redraws from update() instead. `gracefulExit` stays off: its SIGINT listener
// would replace Node's default handler and, with the event loop busy, make Ctrl-C do nothing.
import type { SingleBar } from 'cli-progress';
import { progressBarClass } from './bar-slot.js';

/** Where progress goes by default: stderr under Node, else complete lines to console.log (a page). */
function defaultStream(): ProgressStream {
  const stderr = (globalThis as { process?: { stderr?: ProgressStream } }).process?.stderr;
  if (stderr) return stderr;
  let pending = '';
  const lines = {
    write(chunk: string): boolean {
      const parts = (pending + chunk).split('\n');
      pending = parts.pop() ?? '';
      for (const line of parts) console.log(line);
      return true;
    },
  };
  return lines;
}

/**
 * Where progress lines go: what the reporter uses of a Node stream (process.stderr, a Writable), so a
 * page can pass its own; the terminal bar draws only on a stream with `isTTY` (cli-progress's).
 */
export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

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
  stream?: ProgressStream;
  /** EMA factor of the displayed loss. */
  smoothing?: number;
  /** Prefix of every line, e.g. "train". */
  label?: string;
  /** One JSON object per line instead of text (`vera train --json`); messages become {"type":"message"} objects. */
  json?: boolean;
  /** EMA factor of the step time behind the ETA. Default 0.9. */
  etaSmoothing?: number;
}

export interface ProgressUpdate {
  loss: number;
  /** Items processed in this step (tokens, samples). */
  items: number;
  /** Shown after the standard fields, e.g. {lr: 1e-4}. */
  extra?: Record<string, number | string>;
  /** Eval metrics measured at this step: printed once (a line of their own as text; in this step's object as JSON). */
  metrics?: Record<string, number> | null;
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
  private readonly stream: ProgressStream;
  private readonly bar: SingleBar | null = null;
  private readonly quiet: boolean;
  private readonly t0 = performance.now();
  private items = 0;
  private ema = 0;
  private emaSteps = 0;
  private step: number;
  private stopped = false;
  private extra: Record<string, number | string> = {};
  /** The latest eval metrics, for the TTY bar (which redraws in place, so repeating them is fine). */
  private metrics: Record<string, number> = {};
  private readonly json: boolean;
  private readonly etaSmoothing: number;
  private lastTick = performance.now();
  private stepTimeEma = 0;
  private stepTimeSteps = 0;
  private lastLoss = NaN;

  constructor(opts: ProgressOptions) {
    this.total = opts.total;
    this.start = opts.start ?? 0;
    this.step = this.start;
    this.unit = opts.unit ?? 'items';
    this.logEvery = Math.max(1, Math.floor(opts.logEvery ?? Math.ceil(opts.total / 20)));
    this.smoothing = opts.smoothing ?? 0.9;
    this.label = opts.label ?? 'train';
    this.stream = opts.stream ?? defaultStream();
    this.quiet = opts.quiet ?? false;
    this.json = opts.json ?? false;
    this.etaSmoothing = opts.etaSmoothing ?? 0.9;
    const Bar = !this.quiet && !this.json && this.stream.isTTY === true ? progressBarClass() : null;
    if (Bar !== null) {
      this.bar = new Bar({
        // isTTY: a terminal stream, which is Node's (cli-progress only ever draws on one)
        stream: this.stream as NodeJS.WritableStream,
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

  /** Seconds per step, a bias-corrected EMA (NaN before the first step). */
  get stepSeconds(): number {
    return this.stepTimeSteps === 0 ? NaN : this.stepTimeEma / (1 - Math.pow(this.etaSmoothing, this.stepTimeSteps));
  }

  /** Seconds left at the smoothed step time. */
  get eta(): number {
    return this.step >= this.total ? 0 : (this.total - this.step) * this.stepSeconds;
  }

  update(step: number, u: ProgressUpdate): void {
    if (this.stopped) return;
    const now = performance.now();
    const steps = step - this.step;
    if (steps > 0) {
      const dt = (now - this.lastTick) / 1000 / steps;
      this.stepTimeEma = this.etaSmoothing * this.stepTimeEma + (1 - this.etaSmoothing) * dt;
      this.stepTimeSteps++;
    }
    this.lastTick = now;
    this.step = step;
    this.items += u.items;
    this.lastLoss = u.loss;
    if (Number.isFinite(u.loss)) {
      this.ema = this.smoothing * this.ema + (1 - this.smoothing) * u.loss;
      this.emaSteps++;
    }
    if (u.extra) this.extra = { ...this.extra, ...u.extra };
    const metrics = u.metrics && Object.keys(u.metrics).length > 0 ? u.metrics : null;
    if (metrics) this.metrics = { ...this.metrics, ...metrics };
    if (this.quiet) return;
    const due = step % this.logEvery === 0 || step === this.total;
    if (this.json) {
      if (due || metrics) this.stream.write(JSON.stringify(this.record(metrics), finiteOrNull) + '\n');
    } else if (this.bar) {
      this.bar.update(step);
      if (metrics) this.log(metricsLine(step, metrics));
    } else {
      if (due) this.stream.write(this.line(false) + '\n');
      if (metrics) this.stream.write(metricsLine(step, metrics) + '\n');
    }
  }

  /** The --json object of this step: the standard fields, the extras, and the metrics if new. */
  private record(metrics: Record<string, number> | null): Record<string, unknown> {
    return {
      type: 'progress',
      step: this.step,
      total: this.total,
      loss: this.lastLoss,
      smoothedLoss: this.smoothedLoss,
      [`${this.unit}PerSecond`]: this.throughput,
      elapsedSeconds: (performance.now() - this.t0) / 1000,
      etaSeconds: this.eta,
      ...this.extra,
      ...(metrics ?? {}),
    };
  }

  /** A message on its own line (evaluation results, checkpoints) without breaking the bar. */
  log(message: string): void {
    if (this.quiet || this.stopped) return;
    if (this.json) {
      this.stream.write(JSON.stringify({ type: 'message', step: this.step, message }) + '\n');
    } else if (this.bar) {
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
    const eta = this.eta;
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
    // the bar redraws in place and may show the latest metrics; a plain line never repeats them
    const shown = withBar ? { ...this.extra, ...this.metrics } : this.extra;
    const extras = Object.entries(shown).map(([k, v]) => `${k} ${formatValue(v)}`);
    if (extras.length > 0) parts.push(extras.join(' '));
    return parts.join(' | ');
  }
}

/** "step 40: eval_loss 1.234 eval_accuracy 0.5": the one text line that carries an evaluation's metrics. */
export function metricsLine(step: number, metrics: Record<string, number>): string {
  return `step ${step}: ${Object.entries(metrics).map(([k, v]) => `${k} ${formatValue(v)}`).join(' ')}`;
}

/** NaN and ±Infinity are not JSON: written as null. */
function finiteOrNull(_key: string, value: unknown): unknown {
  return typeof value === 'number' && !Number.isFinite(value) ? null : value;
}
