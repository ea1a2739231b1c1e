// JSON with integers beyond 2⁵³ kept exact. Python writes any int it holds (PEFT's
// projection_prng_key may be up to 2⁶⁴ − 1), and JSON.parse would round such a literal to the
// nearest double; here those literals come back as bigint, every other value as JSON.parse gives it.

const BIGINT_TAG = '\u0000bigint:';

/** JSON.parse, but an integer literal that is not a safe integer becomes a bigint. */
export function parseJsonExact(text: string): unknown {
  // cheap test first: no run of 16+ digits, nothing to keep exact
  if (!/\d{16}/.test(text)) return JSON.parse(text) as unknown;
  let out = '';
  let last = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') {
      inString = true;
      continue;
    }
    if (c !== '-' && (c < '0' || c > '9')) continue;
    let j = i + 1;
    while (j < text.length && /[0-9eE.+-]/.test(text[j])) j++;
    const literal = text.slice(i, j);
    if (/^-?\d+$/.test(literal) && !Number.isSafeInteger(Number(literal))) {
      out += text.slice(last, i) + JSON.stringify(BIGINT_TAG + literal);
      last = j;
    }
    i = j - 1;
  }
  const parsed = JSON.parse(out + text.slice(last)) as unknown;
  return restoreBigints(parsed);
}

function restoreBigints(v: unknown): unknown {
  if (typeof v === 'string') return v.startsWith(BIGINT_TAG) ? BigInt(v.slice(BIGINT_TAG.length)) : v;
  if (Array.isArray(v)) return v.map(restoreBigints);
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) o[k] = restoreBigints(o[k]);
  }
  return v;
}

/** JSON.stringify that writes a bigint as its exact integer literal. */
export function stringifyJson(value: unknown, indent?: number): string {
  const tagged = JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? BIGINT_TAG + v.toString() : v), indent);
  return tagged.replace(/"\\u0000bigint:(-?\d+)"/g, '$1');
}
