// The rules for every command that writes a folder (--out, --checkpoint-dir): it must not be, lie
// inside, or contain one of the command's inputs (compared as real paths, so symlinks and `a/../a`
// cannot slip past); an existing non-empty folder is refused unless --overwrite is given, and then
// it is replaced whole and atomically (io/atomic.ts writeDirAtomic 'replace'), never file by file.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { recoverDir, type WriteDirOptions } from '../io/atomic.js';
import { fail } from '../io/errors.js';

/** The flag that lets a command replace an existing non-empty output folder. */
export const OVERWRITE_HELP = 'replace an existing non-empty output folder (atomically, as a whole)';

/**
 * Real path of `p`, also when it does not exist yet: the deepest existing ancestor is resolved and
 * the rest appended.
 */
export function realPathLoose(p: string): string {
  let head = path.resolve(p);
  const tail: string[] = [];
  for (;;) {
    try {
      return path.join(fs.realpathSync(head), ...tail);
    } catch {
      const parent = path.dirname(head);
      if (parent === head) return path.join(head, ...tail);
      tail.unshift(path.basename(head));
      head = parent;
    }
  }
}

/** `inner` is `outer` or lies below it (both real, absolute paths). */
function within(inner: string, outer: string): boolean {
  const rel = path.relative(outer, inner);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** An input of the command: its flag (`--model`) and path; undefined paths are skipped. */
export type OutInput = readonly [flag: string, file: string | undefined];

/**
 * Checks an output folder before any work is done and says how to write it. Also cleans up what a
 * killed earlier run left beside it (its temp folders, or an old folder set aside mid-swap).
 */
export function prepareOut(flag: string, out: string, inputs: readonly OutInput[], overwrite: boolean): WriteDirOptions {
  const label = `${flag} ${out}`;
  const real = checkNoOverlap(flag, out, inputs);
  recoverDir(real);
  if (fs.existsSync(real)) {
    if (!fs.statSync(real).isDirectory()) fail(`${label}: exists and is not a folder`);
    if (fs.readdirSync(real).length > 0 && !overwrite) fail(`${label}: exists and is not empty (give --overwrite to replace it)`);
  }
  return { mode: overwrite ? 'replace' : 'create', label };
}

/**
 * Refuses an output folder that is, lies inside or contains an input (or the current folder);
 * returns its real path.
 */
export function checkNoOverlap(flag: string, out: string, inputs: readonly OutInput[]): string {
  const label = `${flag} ${out}`;
  const real = realPathLoose(out);
  for (const [inFlag, file] of inputs) {
    if (file === undefined) continue;
    const input = realPathLoose(file);
    if (input === real) fail(`${label}: is the same path as ${inFlag} ${file}; write to another folder`);
    if (within(real, input)) fail(`${label}: lies inside ${inFlag} ${file}; write to another folder`);
    if (within(input, real)) fail(`${label}: contains ${inFlag} ${file}, which writing there would replace; write to another folder`);
  }
  if (within(realPathLoose(process.cwd()), real)) fail(`${label}: is the current folder or one above it; write to a new folder`);
  return real;
}

/**
 * Where a figure flag (`--plot FILE.svg`) writes: a file of its own, written atomically once the
 * command's other outputs are written, or — when it lies inside the command's output folder — one
 * more file of that folder (`name`, relative to it), written in the same atomic step.
 */
export type PlotTarget = { kind: 'file'; file: string } | { kind: 'in-out'; name: string };

/**
 * Checks a figure file before any work is done. It must end in `.svg`; it may not be, or lie inside,
 * an input (compared as real paths, as for folders). Inside `out` (the command's output folder, whose
 * own rules prepareOut has checked) it becomes one of the folder's files. Elsewhere its folder must
 * exist, and an existing file is replaced only with --overwrite.
 */
export function preparePlotFile(flag: string, file: string, inputs: readonly OutInput[], overwrite: boolean, out?: { flag: string; dir: string }): PlotTarget {
  const label = `${flag} ${file}`;
  if (!/\.svg$/i.test(file)) fail(`${label}: the figure is written as SVG; give a file name ending in .svg`);
  const real = checkNoOverlap(flag, file, inputs);
  if (out !== undefined) {
    const outReal = realPathLoose(out.dir);
    if (within(real, outReal)) {
      const rel = path.relative(outReal, real);
      if (rel === '') fail(`${label}: is the same path as ${out.flag} ${out.dir}`);
      return { kind: 'in-out', name: rel.split(path.sep).join('/') };
    }
  }
  const dir = path.dirname(path.resolve(file));
  if (!fs.existsSync(dir)) fail(`${label}: folder ${path.dirname(file)} does not exist`);
  if (!fs.statSync(dir).isDirectory()) fail(`${label}: ${path.dirname(file)} is not a folder`);
  if (fs.existsSync(real)) {
    if (fs.statSync(real).isDirectory()) fail(`${label}: is a folder`);
    if (!overwrite) fail(`${label}: exists (give --overwrite to replace it)`);
  }
  return { kind: 'file', file };
}
