// Vega-Lite specs for the figures the project draws: line charts (several series, optional log axes,
// error bars of mean ± std), scatter plots and grouped bars. Plain data in, a declarative spec out;
// render.ts turns a spec into SVG. The specs hold no drawing code: vega-lite picks scales, ticks and
// legends, so the figures look the same as anyone else's vega-lite figures.
import type { TopLevelSpec } from 'vega-lite';
import { fail } from '../io/errors.js';

export type { TopLevelSpec };

/** One axis of a chart. */
export interface AxisOptions {
  label: string;
  /** Logarithmic scale (base 10). Points at 0 or below cannot be drawn there and are left out. */
  log?: boolean;
  /** Start a linear axis at 0 (default: fit the data; bars always start at 0). */
  zero?: boolean;
  /** A fixed [min, max] instead of one fitted to the data. */
  domain?: [number, number];
}

/** A point of a line or scatter series; `err` draws an error bar y ± err (e.g. mean ± std). */
export interface Point {
  x: number;
  y: number;
  err?: number;
}

export interface Series {
  /** The legend label; must be unique within a chart. */
  name: string;
  points: Point[];
}

export interface XYChartOptions {
  title?: string;
  x: AxisOptions;
  y: AxisOptions;
  series: Series[];
  /** Plot area in pixels (default 480 × 300). */
  width?: number;
  height?: number;
}

export interface BarSeries {
  /** The legend label (e.g. ‖λd‖); must be unique within a chart. */
  name: string;
  /** One value per category, in the order of `categories`; a non-finite value leaves its bar out. */
  values: number[];
  /** Optional error bars, one per category (value ± err). */
  errors?: number[];
}

export interface BarChartOptions {
  title?: string;
  /** The axis along which the groups stand (e.g. the adapted layers). */
  categoryAxis: { label: string };
  valueAxis: AxisOptions;
  /** The groups, in drawing order (e.g. module names). Must be unique. */
  categories: string[];
  /** The bars of each group (e.g. λd and λb), side by side. */
  series: BarSeries[];
  /** Bars grow to the right with the categories down the side (better for many long names). */
  horizontal?: boolean;
  /** Pixels per category group (default 14 per series + 6); the chart grows with the categories. */
  step?: number;
  /** The value axis' length in pixels (default 300). */
  size?: number;
}

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v6.json';
const DEFAULT_WIDTH = 480;
const DEFAULT_HEIGHT = 300;
/** Fixed config so output does not depend on vega-lite's defaults drifting between versions more than needed. */
const CONFIG = { font: 'sans-serif', legend: { labelLimit: 320 }, axis: { labelLimit: 320 } };

function uniqueNames(names: string[], what: string): void {
  const seen = new Set<string>();
  for (const n of names) {
    if (seen.has(n)) fail(`plot: ${what} "${n}" appears twice; ${what}s must be unique`);
    seen.add(n);
  }
}

function checkSize(v: number | undefined, what: string): void {
  if (v !== undefined && !(Number.isFinite(v) && v > 0)) fail(`plot: ${what} must be a positive number, got ${v}`);
}

/**
 * The scale of a continuous axis over `values`. `pad`: pixels kept free at both ends (so markers at
 * the extremes are not cut by the frame). All values equal would give an empty domain (one tick, the
 * points on the frame): the domain is then widened around the value.
 */
function scaleOf(axis: AxisOptions, values: number[], pad = 0): Record<string, unknown> {
  const padding = pad > 0 ? { padding: pad, nice: false } : {};
  let domain = axis.domain;
  if (domain !== undefined) {
    const [a, b] = domain;
    if (!(drawable(a, axis) && drawable(b, axis) && a < b)) fail(`plot: axis "${axis.label}": domain must be [min, max] with min < max${axis.log ? ', both > 0 on a log axis' : ''}`);
  } else if (values.length > 0 && values.every((v) => v === values[0]) && !(axis.zero && !axis.log && values[0] !== 0)) {
    const v = values[0]!;
    domain = axis.log ? [v / 10, v * 10] : v === 0 ? [-1, 1] : [v - Math.abs(v) / 2, v + Math.abs(v) / 2];
  }
  const fixed = domain !== undefined ? { domain } : {};
  return axis.log ? { type: 'log', ...padding, ...fixed } : { type: 'linear', zero: axis.zero ?? false, ...padding, ...fixed };
}

/** Whether `v` can be drawn on `axis`: finite, and positive on a log axis. */
function drawable(v: number, axis: AxisOptions): boolean {
  return Number.isFinite(v) && (!axis.log || v > 0);
}

interface XYRow {
  series: string;
  x: number;
  y: number;
  lo?: number;
  hi?: number;
}

/**
 * The rows behind a line or scatter chart: points that cannot be drawn (NaN, ±Inf, ≤ 0 on a log axis)
 * are left out; an error bar whose lower end would fall at or below 0 on a log y axis starts at the point.
 */
function xyRows(o: XYChartOptions): XYRow[] {
  uniqueNames(o.series.map((s) => s.name), 'series name');
  checkSize(o.width, 'width');
  checkSize(o.height, 'height');
  const rows: XYRow[] = [];
  for (const s of o.series) {
    for (const p of s.points) {
      if (!drawable(p.x, o.x) || !drawable(p.y, o.y)) continue;
      const row: XYRow = { series: s.name, x: p.x, y: p.y };
      if (p.err !== undefined && Number.isFinite(p.err)) {
        const err = Math.abs(p.err);
        row.lo = drawable(p.y - err, o.y) ? p.y - err : p.y;
        row.hi = p.y + err;
      }
      rows.push(row);
    }
  }
  return rows;
}

interface XYScales {
  x: Record<string, unknown>;
  y: Record<string, unknown>;
}

function xyEncoding(o: XYChartOptions, shapes: boolean, scales: XYScales): Record<string, unknown> {
  const names = o.series.map((s) => s.name);
  return {
    x: { field: 'x', type: 'quantitative', title: o.x.label, scale: scales.x },
    y: { field: 'y', type: 'quantitative', title: o.y.label, scale: scales.y },
    // the legend lists the series in the order given, not sorted
    color: { field: 'series', type: 'nominal', title: null, scale: { domain: names }, sort: names },
    ...(shapes ? { shape: { field: 'series', type: 'nominal', title: null, scale: { domain: names }, sort: names } } : {}),
  };
}

function errorLayer(o: XYChartOptions, scales: XYScales): Record<string, unknown> {
  const names = o.series.map((s) => s.name);
  return {
    transform: [{ filter: 'isValid(datum.lo)' }],
    mark: { type: 'errorbar', ticks: true },
    encoding: {
      x: { field: 'x', type: 'quantitative', scale: scales.x },
      y: { field: 'lo', type: 'quantitative', scale: scales.y, title: o.y.label },
      y2: { field: 'hi' },
      color: { field: 'series', type: 'nominal', title: null, scale: { domain: names }, sort: names },
    },
  };
}

function xySpec(o: XYChartOptions, mark: Record<string, unknown>, shapes: boolean, pad: number): TopLevelSpec {
  const rows = xyRows(o);
  const ys = rows.flatMap((r) => (r.lo !== undefined ? [r.y, r.lo, r.hi!] : [r.y]));
  const scales = { x: scaleOf(o.x, rows.map((r) => r.x), pad), y: scaleOf(o.y, ys, pad) };
  const main = { mark, encoding: xyEncoding(o, shapes, scales) };
  const layers = rows.some((r) => r.lo !== undefined) ? [errorLayer(o, scales), main] : [main];
  return {
    $schema: SCHEMA,
    ...(o.title !== undefined ? { title: o.title } : {}),
    width: o.width ?? DEFAULT_WIDTH,
    height: o.height ?? DEFAULT_HEIGHT,
    data: { values: rows },
    layer: layers,
    config: CONFIG,
  } as unknown as TopLevelSpec;
}

/** A line chart: one line with point markers per series (a one-point series shows as its marker). */
export function lineChartSpec(o: XYChartOptions): TopLevelSpec {
  return xySpec(o, { type: 'line', point: true }, false, 0);
}

/** A scatter plot: one marker shape and colour per series. */
export function scatterSpec(o: XYChartOptions): TopLevelSpec {
  return xySpec(o, { type: 'point', filled: true, size: 50 }, true, 10);
}

/** Grouped bars: per category one bar per series, side by side, each series its own colour. */
export function barChartSpec(o: BarChartOptions): TopLevelSpec {
  uniqueNames(o.categories, 'category');
  uniqueNames(o.series.map((s) => s.name), 'series name');
  checkSize(o.step, 'step');
  checkSize(o.size, 'size');
  for (const s of o.series) {
    if (s.values.length !== o.categories.length) fail(`plot: series "${s.name}" has ${s.values.length} values for ${o.categories.length} categories`);
    if (s.errors !== undefined && s.errors.length !== o.categories.length) fail(`plot: series "${s.name}" has ${s.errors.length} errors for ${o.categories.length} categories`);
  }
  const rows: Record<string, string | number>[] = [];
  o.categories.forEach((category, i) => {
    for (const s of o.series) {
      const v = s.values[i]!;
      if (!drawable(v, o.valueAxis)) continue;
      const row: Record<string, string | number> = { category, series: s.name, value: v };
      const e = s.errors?.[i];
      if (e !== undefined && Number.isFinite(e)) {
        row.lo = drawable(v - Math.abs(e), o.valueAxis) ? v - Math.abs(e) : v;
        row.hi = v + Math.abs(e);
      }
      rows.push(row);
    }
  });
  const names = o.series.map((s) => s.name);
  const [cat, val, off] = o.horizontal ? ['y', 'x', 'yOffset'] : ['x', 'y', 'xOffset'];
  const step = o.step ?? 14 * Math.max(1, names.length) + 6;
  const catEnc = { field: 'category', type: 'nominal', title: o.categoryAxis.label, sort: o.categories, scale: { domain: o.categories } };
  const valScale = scaleOf({ ...o.valueAxis, zero: !o.valueAxis.log }, rows.flatMap((r) => [r.value, r.lo, r.hi].filter((v): v is number => typeof v === 'number')));
  const offEnc = { field: 'series', type: 'nominal', sort: names, scale: { domain: names } };
  const layers: Record<string, unknown>[] = [
    {
      mark: { type: 'bar' },
      encoding: {
        [cat!]: catEnc,
        [val!]: { field: 'value', type: 'quantitative', title: o.valueAxis.label, scale: valScale },
        [off!]: offEnc,
        color: { field: 'series', type: 'nominal', title: null, scale: { domain: names }, sort: names },
      },
    },
  ];
  if (rows.some((r) => r.lo !== undefined)) {
    layers.push({
      // a rule, not vega-lite's errorbar: only plain marks take the offset within the group
      transform: [{ filter: 'isValid(datum.lo)' }],
      mark: { type: 'rule', color: 'black' },
      encoding: {
        [cat!]: catEnc,
        [val!]: { field: 'lo', type: 'quantitative', title: o.valueAxis.label, scale: valScale },
        [`${val}2`]: { field: 'hi' },
        [off!]: offEnc,
      },
    });
  }
  return {
    $schema: SCHEMA,
    ...(o.title !== undefined ? { title: o.title } : {}),
    [o.horizontal ? 'height' : 'width']: { step, for: 'position' },
    [o.horizontal ? 'width' : 'height']: o.size ?? DEFAULT_HEIGHT,
    data: { values: rows },
    layer: layers,
    config: CONFIG,
  } as unknown as TopLevelSpec;
}

/** Several charts one above the other (each keeps its own scales and legend), under one optional title. */
export function stackSpecs(specs: TopLevelSpec[], title?: string): TopLevelSpec {
  if (specs.length === 0) fail('plot: nothing to stack');
  if (specs.length === 1) return title === undefined ? specs[0]! : ({ ...specs[0]!, title } as TopLevelSpec);
  const strip = (s: TopLevelSpec): Record<string, unknown> => {
    const { $schema: _schema, config: _config, ...rest } = s as unknown as Record<string, unknown>;
    return rest;
  };
  return {
    $schema: SCHEMA,
    ...(title !== undefined ? { title } : {}),
    vconcat: specs.map(strip),
    resolve: { scale: { color: 'independent', shape: 'independent' }, legend: { color: 'independent', shape: 'independent' } },
    config: CONFIG,
  } as unknown as TopLevelSpec;
}
