// Reading a data file as UTF-8 text, with the one-line errors the readers share.
import { fs } from '../io/node.js';
import { fail } from '../io/errors.js';

/** `file`'s text without a leading BOM; `<file>: not found` / `<file>: cannot read (…)` otherwise. */
export function readTextFile(file: string): string {
  let content: string;
  try {
    content = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    fail(code === 'ENOENT' ? `${file}: not found` : `${file}: cannot read (${code ?? (e as Error).message})`);
  }
  return content.charCodeAt(0) === 0xfeff ? content.slice(1) : content;
}
