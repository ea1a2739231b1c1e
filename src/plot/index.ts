// Figures as SVG files, drawn by vega-lite: spec builders (inspectable plain objects) and renderers.
import { barChartSpec, lineChartSpec, scatterSpec, type BarChartOptions, type XYChartOptions } from './spec.js';
import { renderSvg } from './render.js';

export { barChartSpec, lineChartSpec, scatterSpec, stackSpecs, type AxisOptions, type BarChartOptions, type BarSeries, type Point, type Series, type TopLevelSpec, type XYChartOptions } from './spec.js';
export { renderSvg, writeSvg } from './render.js';

/** A line chart as an SVG document (see lineChartSpec). */
export function lineChart(o: XYChartOptions): Promise<string> {
  return renderSvg(lineChartSpec(o));
}

/** A scatter plot as an SVG document (see scatterSpec). */
export function scatter(o: XYChartOptions): Promise<string> {
  return renderSvg(scatterSpec(o));
}

/** Grouped bars as an SVG document (see barChartSpec). */
export function barChart(o: BarChartOptions): Promise<string> {
  return renderSvg(barChartSpec(o));
}
