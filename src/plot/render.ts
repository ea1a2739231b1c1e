// Rendering: vega-lite compiles a spec to a vega spec, vega lays it out headless (renderer 'none',
// no canvas, no DOM) and writes SVG. vega and vega-lite are loaded on first use, so commands that
// draw nothing do not pay for them.
import type { TopLevelSpec } from 'vega-lite';
import { writeFileAtomic } from '../io/atomic.js';
import { fail } from '../io/errors.js';

/**
 * Renders a vega-lite spec to an SVG document. Deterministic: the same spec gives the same bytes
 * (text widths are estimated from the font size rather than measured, so an optional `canvas`
 * package cannot change the layout, and the SVG clip/gradient ids restart for every figure).
 * vega's warnings are not printed; an error in the spec rejects with a one-line error.
 */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const [vega, vl] = await Promise.all([import('vega'), import('vega-lite')]);
  const quiet = vega.logger(vega.Error);
  let compiled;
  try {
    compiled = vl.compile(spec, { logger: quiet }).spec;
  } catch (err) {
    fail(`plot: invalid chart spec: ${oneLine(err)}`);
  }
  // measured text (a canvas) would make the layout depend on the machine's fonts
  (vega as unknown as { textMetrics: { canvas(use: boolean): void } }).textMetrics.canvas(false);
  vega.resetSVGDefIds();
  const view = new vega.View(vega.parse(compiled), { renderer: 'none', logger: quiet });
  try {
    return await view.toSVG();
  } catch (err) {
    fail(`plot: cannot render the chart: ${oneLine(err)}`);
  } finally {
    view.finalize();
  }
}

function oneLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
}

/** Writes an SVG document to `file` atomically (a temp file beside it, then a rename). */
export function writeSvg(file: string, svg: string): void {
  writeFileAtomic(file, svg.endsWith('\n') ? svg : `${svg}\n`);
}
