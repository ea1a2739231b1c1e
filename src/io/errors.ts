/**
 * User-facing errors. The CLI prints `VeraError` messages verbatim (no stack
 * trace), so each message must be a single line that names the file, field or
 * flag at fault and says what is wrong with it.
 */
export class VeraError extends Error {
  constructor(message: string) {
    // Collapse stray newlines (e.g. from an OS or JSON.parse message) so the
    // one-line contract holds no matter what gets interpolated.
    super(message.replace(/\s*[\r\n]+\s*/g, ' '));
    this.name = 'VeraError';
  }
}

/** Throws a VeraError; typed `never` so it can end control flow in expressions. */
export function fail(message: string): never {
  throw new VeraError(message);
}
