// The terminal progress bar's class (cli-progress's SingleBar). The trainer never imports
// cli-progress statically (it needs Node's readline), so it bundles for the browser, and a Node
// program's bundle carries it only when it asks: the CLI fills the slot with a static import
// (train/progress-bar.ts); elsewhere under Node cli-progress is required from node_modules when a
// terminal first needs a bar; where neither works (a page, a bundle away from node_modules)
// progress goes as plain lines.
import type { SingleBar } from 'cli-progress';
import { isNode, nodeModule } from '../io/node.js';

let barClass: typeof SingleBar | null | undefined;

export function setProgressBarClass(c: typeof SingleBar): void {
  barClass = c;
}

export function progressBarClass(): typeof SingleBar | null {
  if (barClass !== undefined) return barClass;
  barClass = null;
  const here: string | undefined = import.meta.url;
  if (isNode() && here !== undefined) {
    try {
      barClass = (nodeModule.createRequire(here)('cli-progress') as typeof import('cli-progress')).SingleBar;
    } catch {
      // not installed beside this module (a bundle moved away from node_modules): plain lines
    }
  }
  return barClass;
}
