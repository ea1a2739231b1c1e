// src/plot (vega-lite specs rendered to SVG) and the --plot flags of `vera train` and `vera inspect`
// (the CLI runs as a child process, `node bin/vera.js`, which needs dist/ built).
import '../src/backends/index.js';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { VeraError } from '../src/io/errors.js';
import { barChart, barChartSpec, lineChart, lineChartSpec, renderSvg, scatter, scatterSpec, stackSpecs, writeSvg, type XYChartOptions } from '../src/plot/index.js';
import { trainingCurveSpec } from '../src/cli/plots.js';
import { runVera as vera, withTmp } from './helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const fx = (name: string): string => path.join(ROOT, 'test', 'fixtures', name);

/** Specs are plain JSON; the tests walk them freely. */
type Json = any;

const LINE: XYChartOptions = {
  title: 'Loss vs params',
  x: { label: 'trainable parameters', log: true },
  y: { label: 'loss', log: true },
  series: [
    { name: 'VeRA <r=256>', points: [{ x: 1e3, y: 2.5, err: 0.1 }, { x: 1e4, y: 2.0, err: 0.2 }, { x: 1e5, y: 1.5, err: 0.05 }] },
    { name: 'LoRA & r=8', points: [{ x: 1e4, y: 2.2, err: 0.1 }, { x: 1e5, y: 1.6 }, { x: 0, y: 1 }, { x: 1e6, y: NaN }] },
  ],
};

/** Checks the SVG is one well-formed element tree (every tag closed in order) and returns its text nodes. */
function svgTexts(svg: string): string[] {
  assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.match(svg.trimEnd(), /<\/svg>$/);
  const stack: string[] = [];
  const texts: string[] = [];
  const re = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"]*")*)\s*(\/?)>|([^<]+)/g;
  let m: RegExpExecArray | null;
  let consumed = 0;
  while ((m = re.exec(svg)) !== null) {
    assert.equal(m.index, consumed, `unparsable SVG at ${consumed}: ${svg.slice(consumed, consumed + 60)}`);
    consumed = re.lastIndex;
    if (m[5] !== undefined) {
      if (m[5].trim() !== '') texts.push(m[5]);
      continue;
    }
    if (m[1] === '/') assert.equal(stack.pop(), m[2], `</${m[2]}> closes another element`);
    else if (m[4] !== '/') stack.push(m[2]!);
  }
  assert.equal(consumed, svg.length, 'trailing garbage');
  assert.deepEqual(stack, [], 'unclosed elements');
  return texts.map((t) => t.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, '&'));
}

/** The aria-labels of the marks of a kind ("bar", "point", …) in a rendered SVG. */
function marks(svg: string, kind: string): string[] {
  return [...svg.matchAll(new RegExp(`<[a-z]+ aria-label="([^"]*)" role="graphics-symbol" aria-roledescription="${kind}"`, 'g'))].map((m) => m[1]!);
}

describe('plot specs', () => {
  test('lineChartSpec: series in the given order, log axes, undrawable points left out, error bars as a layer', () => {
    const spec = lineChartSpec(LINE) as Json;
    assert.equal(spec.title, 'Loss vs params');
    assert.match(spec.$schema, /vega-lite/);
    const [errors, main] = spec.layer;
    assert.equal(main.mark.type, 'line');
    assert.equal(main.encoding.x.scale.type, 'log');
    assert.equal(main.encoding.y.scale.type, 'log');
    assert.equal(main.encoding.x.title, 'trainable parameters');
    assert.deepEqual(main.encoding.color.scale.domain, ['VeRA <r=256>', 'LoRA & r=8']);
    assert.equal(errors.mark.type, 'errorbar');
    // x = 0 cannot sit on a log axis and NaN cannot be drawn: 5 of the 7 points remain
    assert.equal(spec.data.values.length, 5);
    assert.deepEqual(spec.data.values[0], { series: 'VeRA <r=256>', x: 1e3, y: 2.5, lo: 2.4, hi: 2.6 });
    assert.equal(spec.data.values[4].lo, undefined);

    const linear = lineChartSpec({ x: { label: 'step' }, y: { label: 'loss', zero: true }, series: [{ name: 'a', points: [{ x: 1, y: 2 }, { x: 2, y: 1 }] }] }) as Json;
    assert.equal(linear.layer.length, 1, 'no error layer without errors');
    assert.equal(linear.layer[0].encoding.x.scale.type, 'linear');
    assert.equal(linear.layer[0].encoding.y.scale.zero, true);
    assert.equal(linear.title, undefined);
  });

  test('a flat series gets a domain around its value; an explicit domain is kept', () => {
    const flat = lineChartSpec({ x: { label: 'step', domain: [0, 10] }, y: { label: 'acc' }, series: [{ name: 'acc', points: [{ x: 1, y: 0 }, { x: 5, y: 0 }] }] }) as Json;
    assert.deepEqual(flat.layer[0].encoding.y.scale.domain, [-1, 1]);
    assert.deepEqual(flat.layer[0].encoding.x.scale.domain, [0, 10]);
    assert.throws(() => lineChartSpec({ x: { label: 's', domain: [3, 3] }, y: { label: 'y' }, series: [] }), VeraError);
  });

  test('scatterSpec: points with a shape per series', () => {
    const spec = scatterSpec(LINE) as Json;
    const main = spec.layer.at(-1);
    assert.equal(main.mark.type, 'point');
    assert.deepEqual(main.encoding.shape.scale.domain, ['VeRA <r=256>', 'LoRA & r=8']);
  });

  test('barChartSpec: grouped bars per category, horizontal swaps the axes, bad input is refused', () => {
    const o = { title: 'norms', categoryAxis: { label: 'layer' }, valueAxis: { label: 'norm' }, categories: ['l0', 'l1', 'l2'], series: [{ name: 'd', values: [1, 2, 3] }, { name: 'b', values: [4, NaN, 6], errors: [0.5, 0.5, 0.5] }] };
    const spec = barChartSpec(o) as Json;
    const bars = spec.layer[0];
    assert.equal(bars.mark.type, 'bar');
    assert.equal(bars.encoding.x.field, 'category');
    assert.deepEqual(bars.encoding.x.sort, ['l0', 'l1', 'l2']);
    assert.equal(bars.encoding.xOffset.field, 'series');
    assert.deepEqual(bars.encoding.color.scale.domain, ['d', 'b']);
    assert.equal(bars.encoding.y.scale.zero, true);
    assert.equal(spec.data.values.length, 5, 'the NaN bar is left out');
    assert.equal(spec.layer[1].mark.type, 'rule', 'error bars');
    const h = barChartSpec({ ...o, horizontal: true }) as Json;
    assert.equal(h.layer[0].encoding.y.field, 'category');
    assert.equal(h.layer[0].encoding.yOffset.field, 'series');
    assert.equal(h.height.step > 0, true);

    assert.throws(() => barChartSpec({ ...o, series: [{ name: 'd', values: [1, 2] }] }), (e: unknown) => e instanceof VeraError && /2 values for 3 categories/.test(e.message));
    assert.throws(() => barChartSpec({ ...o, categories: ['a', 'a', 'b'] }), (e: unknown) => e instanceof VeraError && /"a" appears twice/.test(e.message));
    assert.throws(() => lineChartSpec({ ...LINE, series: [LINE.series[0]!, LINE.series[0]!] }), VeraError);
  });

  test('stackSpecs: panels one above the other, each with its own legend', () => {
    const a = lineChartSpec({ x: { label: 'step' }, y: { label: 'loss' }, series: [{ name: 'train', points: [{ x: 1, y: 1 }] }] });
    const s = stackSpecs([a, a], 'run') as Json;
    assert.equal(s.vconcat.length, 2);
    assert.equal(s.title, 'run');
    assert.equal(s.vconcat[0].$schema, undefined);
    assert.equal(s.resolve.scale.color, 'independent');
    assert.equal((stackSpecs([a], 'one') as Json).title, 'one');
  });

  test('trainingCurveSpec: train loss per logged step, eval loss and metrics where evaluated', () => {
    const history = [
      { step: 1, loss: 3, lr: 1 },
      { step: 2, loss: 2.5, lr: 1, eval_loss: 2.8, eval_accuracy: 0.3, eval_perplexity: 16 },
      { step: 4, loss: 2, lr: 1 },
    ];
    const spec = trainingCurveSpec(history, { eval_loss: 2.1, eval_accuracy: 0.5, eval_bleu: 0.2 }, 4, 'run') as Json;
    const [loss, metrics] = spec.vconcat;
    const byName = (panel: Json, name: string): Json[] => panel.data.values.filter((r: Json) => r.series === name).map((r: Json) => [r.x, r.y]);
    assert.deepEqual(byName(loss, 'train loss'), [[1, 3], [2, 2.5], [4, 2]]);
    assert.deepEqual(byName(loss, 'eval loss'), [[2, 2.8], [4, 2.1]]);
    assert.deepEqual(metrics.layer[0].encoding.color.scale.domain, ['accuracy', 'bleu'], 'perplexity is not plotted');
    assert.deepEqual(byName(metrics, 'accuracy'), [[2, 0.3], [4, 0.5]]);
    assert.deepEqual(loss.layer[0].encoding.x.scale.domain, [0, 4]);
    // no eval at all: one panel
    const plain = trainingCurveSpec([{ step: 1, loss: 1, lr: 1 }], null, 1, 'run') as Json;
    assert.equal(plain.vconcat, undefined);
    assert.deepEqual(plain.layer[0].encoding.color.scale.domain, ['train loss']);
  });
});

describe('plot rendering', () => {
  test('a line chart renders to well-formed SVG holding the title, axis labels and series names', async () => {
    const svg = await lineChart(LINE);
    const texts = svgTexts(svg);
    for (const label of ['Loss vs params', 'trainable parameters', 'loss', 'VeRA <r=256>', 'LoRA & r=8']) assert.ok(texts.includes(label), `missing text "${label}"`);
    assert.equal(marks(svg, 'point').length, 5);
    assert.equal(marks(svg, 'errorbar').length, 4);
  });

  test('the same input gives byte-identical SVG, whatever was rendered before', async () => {
    const first = await lineChart(LINE);
    const bars = { categoryAxis: { label: 'layer' }, valueAxis: { label: 'norm', log: true }, categories: ['a', 'b'], series: [{ name: 'x', values: [1, 10], errors: [0.1, 1] }] };
    const b1 = await barChart(bars);
    await scatter(LINE);
    await renderSvg(stackSpecs([lineChartSpec(LINE), barChartSpec(bars)], 'both'));
    assert.equal(await lineChart(LINE), first);
    assert.equal(await barChart(bars), b1);
  });

  test('grouped bars render one bar per (category, series); scatter and stacked charts render', async () => {
    const svg = await barChart({ categoryAxis: { label: 'layer' }, valueAxis: { label: 'norm' }, categories: ['h.0.c_attn', 'h.1.c_attn'], series: [{ name: '‖λd‖', values: [1, 2] }, { name: '‖λb‖', values: [3, 4] }], horizontal: true });
    svgTexts(svg);
    assert.equal(marks(svg, 'bar').length, 4);
    svgTexts(await scatter(LINE));
    const stacked = await renderSvg(stackSpecs([lineChartSpec(LINE), lineChartSpec({ ...LINE, title: 'second' })], 'top'));
    assert.ok(svgTexts(stacked).includes('second'));
  });

  test('writeSvg writes the file whole and leaves no temp file', () => {
    withTmp((dir) => {
      const file = path.join(dir, 'a.svg');
      writeSvg(file, '<svg xmlns="http://www.w3.org/2000/svg"></svg>');
      writeSvg(file, '<svg xmlns="http://www.w3.org/2000/svg"><g></g></svg>');
      assert.equal(fs.readFileSync(file, 'utf8'), '<svg xmlns="http://www.w3.org/2000/svg"><g></g></svg>\n');
      assert.deepEqual(fs.readdirSync(dir), ['a.svg']);
    });
  });
});

/** The command failed with one line on stderr. */
function assertOneLineError(r: { code: number; stderr: string }, pattern: RegExp): void {
  assert.notEqual(r.code, 0);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line: ${r.stderr}`);
  assert.match(lines[0]!, pattern);
}

describe('vera inspect --plot', () => {
  test('VeRA: one ‖λd‖, ‖λb‖ bar pair per adapted layer; LoRA: ‖A‖, ‖B‖', async () => {
    await withTmp(async (dir) => {
      const file = path.join(dir, 'norms.svg');
      const r = await vera(['inspect', '--adapter', fx('gpt2-tiny-vera'), '--json', '--plot', file]);
      assert.equal(r.code, 0, r.stderr);
      const rep = JSON.parse(r.stdout) as { layers: { module: string }[] };
      assert.equal(rep.layers.length, 8);
      const svg = fs.readFileSync(file, 'utf8');
      const texts = svgTexts(svg);
      for (const l of rep.layers) assert.ok(texts.includes(l.module), `axis label ${l.module}`);
      assert.ok(texts.includes('‖λd‖') && texts.includes('‖λb‖'));
      const bars = marks(svg, 'bar');
      assert.equal(bars.length, 2 * rep.layers.length);
      for (const l of rep.layers) {
        const mine = bars.filter((b) => b.includes(`${l.module};`));
        assert.equal(mine.length, 2, l.module);
        assert.ok(mine.some((b) => b.includes('‖λd‖')) && mine.some((b) => b.includes('‖λb‖')));
      }
      // the same adapter draws the same bytes; an existing file needs --overwrite
      const again = await vera(['inspect', '--adapter', fx('gpt2-tiny-vera'), '--plot', file]);
      assertOneLineError(again, /--plot .*norms\.svg: exists \(give --overwrite/);
      const over = await vera(['inspect', '--adapter', fx('gpt2-tiny-vera'), '--plot', file, '--overwrite']);
      assert.equal(over.code, 0, over.stderr);
      assert.equal(fs.readFileSync(file, 'utf8'), svg);

      const lora = path.join(dir, 'lora.svg');
      const l = await vera(['inspect', '--adapter', fx('gpt2-tiny-lora'), '--plot', lora]);
      assert.equal(l.code, 0, l.stderr);
      const lsvg = fs.readFileSync(lora, 'utf8');
      assert.ok(svgTexts(lsvg).includes('‖A‖'));
      assert.equal(marks(lsvg, 'bar').length % 2, 0);
    });
  });

  test('a bad --plot path is one line, a non-zero exit and no file', async () => {
    await withTmp(async (dir) => {
      const missing = path.join(dir, 'no-such-folder', 'x.svg');
      assertOneLineError(await vera(['inspect', '--adapter', fx('gpt2-tiny-vera'), '--plot', missing]), /--plot .*x\.svg: folder .*no-such-folder does not exist/);
      assertOneLineError(await vera(['inspect', '--adapter', fx('gpt2-tiny-vera'), '--plot', path.join(dir, 'x.png')]), /ending in \.svg/);
      assertOneLineError(await vera(['inspect', '--adapter', fx('gpt2-tiny-vera'), '--plot', path.join(fx('gpt2-tiny-vera'), 'x.svg')]), /lies inside --adapter/);
      assertOneLineError(await vera(['inspect', '--model', fx('gpt2-tiny'), '--plot', path.join(dir, 'x.svg')]), /--plot FILE\.svg goes with --adapter/);
      assert.deepEqual(fs.readdirSync(dir), []);
      assert.ok(!fs.existsSync(path.join(fx('gpt2-tiny-vera'), 'x.svg')));
    });
  });
});

describe('vera train --plot', () => {
  const rows = Array.from({ length: 12 }, (_, i) => JSON.stringify({ input_ids: Array.from({ length: 8 + (i % 3) }, (_, k) => ((i + k) % 7) * 5 + 1) }));
  const TRAIN = ['train', '--model', fx('gpt2-tiny'), '--method', 'vera', '--r', '4', '--steps', '4', '--batch-size', '4', '--quiet'];

  test('inside --out the figure is written with the adapter; elsewhere beside it', async () => {
    await withTmp(async (dir) => {
      const data = path.join(dir, 'data.jsonl');
      fs.writeFileSync(data, rows.join('\n') + '\n');
      const out = path.join(dir, 'out');
      const r = await vera([...TRAIN, '--data', data, '--eval-data', data, '--eval-every', '2', '--out', out, '--plot', path.join(out, 'curves', 'loss.svg')]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(fs.readdirSync(out).sort(), ['adapter_config.json', 'adapter_model.safetensors', 'curves', 'training_log.json']);
      const svg = fs.readFileSync(path.join(out, 'curves', 'loss.svg'), 'utf8');
      const texts = svgTexts(svg);
      for (const label of ['train loss', 'eval loss', 'accuracy', 'step']) assert.ok(texts.includes(label), `missing "${label}"`);
      const log = JSON.parse(fs.readFileSync(path.join(out, 'training_log.json'), 'utf8')) as { history: { step: number }[] };
      // one marker per logged step for the train loss, one per evaluation for the eval loss
      assert.equal(marks(svg, 'point').filter((m) => m.includes('series: train loss')).length, log.history.length);
      assert.equal(marks(svg, 'point').filter((m) => m.includes('series: eval loss')).length, 2);

      const beside = path.join(dir, 'loss.svg');
      const r2 = await vera([...TRAIN, '--data', data, '--out', path.join(dir, 'out2'), '--plot', beside]);
      assert.equal(r2.code, 0, r2.stderr);
      assert.ok(svgTexts(fs.readFileSync(beside, 'utf8')).includes('train loss'));
      assert.deepEqual(fs.readdirSync(path.join(dir, 'out2')).sort(), ['adapter_config.json', 'adapter_model.safetensors', 'training_log.json']);
    });
  });

  test('a bad --plot path fails before training: one line, non-zero exit, no file and no --out', async () => {
    await withTmp(async (dir) => {
      const data = path.join(dir, 'data.jsonl');
      fs.writeFileSync(data, rows.join('\n') + '\n');
      const out = path.join(dir, 'out');
      const cases: [string, RegExp][] = [
        [path.join(dir, 'missing', 'loss.svg'), /--plot .*loss\.svg: folder .*missing does not exist/],
        [path.join(dir, 'data.svg.d', 'x.svg'), /does not exist/],
        [path.join(dir, 'loss.txt'), /ending in \.svg/],
        [path.join(fx('gpt2-tiny'), 'loss.svg'), /lies inside --model/],
        [out, /ending in \.svg/],
      ];
      for (const [plot, pattern] of cases) assertOneLineError(await vera([...TRAIN, '--data', data, '--out', out, '--plot', plot]), pattern);
      // the training data itself, named as the figure
      const svgData = path.join(dir, 'data.svg');
      fs.writeFileSync(svgData, rows.join('\n') + '\n');
      assertOneLineError(await vera([...TRAIN, '--data', svgData, '--out', out, '--plot', svgData, '--overwrite']), /is the same path as --data/);
      assert.equal(fs.readFileSync(svgData, 'utf8'), rows.join('\n') + '\n');
      // an existing file needs --overwrite
      const existing = path.join(dir, 'old.svg');
      fs.writeFileSync(existing, 'old');
      assertOneLineError(await vera([...TRAIN, '--data', data, '--out', out, '--plot', existing]), /old\.svg: exists \(give --overwrite/);
      assert.equal(fs.readFileSync(existing, 'utf8'), 'old');
      assert.deepEqual(fs.readdirSync(dir).sort(), ['data.jsonl', 'data.svg', 'old.svg']);
      assert.ok(!fs.existsSync(path.join(fx('gpt2-tiny'), 'loss.svg')));
    });
  });
});
