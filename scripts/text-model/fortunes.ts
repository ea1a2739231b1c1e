// The Unix fortunes (Debian's fortune-mod collection) as the embedded text model's corpus: parsing,
// the categories held out of pretraining (the "users"), and deterministic splits. Used by
// prepare-data.ts; nothing here is needed at run time (the demo and experiments read the JSONL
// files it writes under data/fortunes/).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** Categories held out of pretraining: each is one user's text for a per-user adapter. */
export const USER_CATEGORIES = ['startrek', 'zippy', 'riddles', 'tao'] as const;
/** Files that are not prose (pictures, a licence, a stub). */
export const EXCLUDED_FILES = ['COPYRIGHT', 'ascii-art', 'translate-me'];

export interface Fortune {
  category: string;
  text: string;
}

/**
 * One fortune file: entries separated by lines holding only "%". Tabs become one space (they
 * indent attributions and riddle answers; a byte-level vocabulary does not need them), trailing
 * spaces go, blank lines around an entry go, empty entries are dropped.
 */
export function parseFortuneFile(raw: string, category: string): Fortune[] {
  const out: Fortune[] = [];
  for (const entry of raw.replace(/\r\n?/g, '\n').split(/^%\n/m)) {
    const lines = entry.split('\n').map((l) => l.replace(/\t+/g, ' ').trimEnd());
    const text = lines.join('\n').replace(/^\n+|\n+$/g, '').replace(/^%$/m, '');
    if (text.trim().length > 0) out.push({ category, text });
  }
  return out;
}

export function readFortunes(dir: string): Map<string, Fortune[]> {
  const byCategory = new Map<string, Fortune[]>();
  for (const name of readdirSync(dir).sort()) {
    if (EXCLUDED_FILES.includes(name) || name.startsWith('.') || name.includes('.')) continue;
    byCategory.set(name, parseFortuneFile(readFileSync(join(dir, name), 'utf8'), name));
  }
  return byCategory;
}

/** 32-bit FNV-1a of a string's UTF-16 code units: a split that does not depend on file order. */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** Sorted by hash (then text), so a split is a deterministic function of the texts alone. */
export function hashOrder<T extends { text: string }>(items: readonly T[]): T[] {
  return [...items].sort((a, b) => fnv1a(a.text) - fnv1a(b.text) || (a.text < b.text ? -1 : a.text > b.text ? 1 : 0));
}
