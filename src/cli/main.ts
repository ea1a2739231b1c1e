// The `vera` command. Each subcommand lives in commands/<name>.ts and registers itself on the
// program; every failure a user can cause ends as one line on stderr and a non-zero exit.
import { Command, CommanderError } from 'commander';
import { VeraError } from '../io/errors.js';
import '../io/node-preload.js';
import '../backends/index.js';
import { registerAdapters } from './commands/adapters.js';
import { registerConvertAdapter } from './commands/convert-adapter.js';
import { registerDemo } from './commands/demo.js';
import { registerGenerate } from './commands/generate.js';
import { registerInspect } from './commands/inspect.js';
import { registerKeys } from './commands/keys.js';
import { registerMerge } from './commands/merge.js';
import { registerPerplexity } from './commands/perplexity.js';
import { registerServe } from './commands/serve.js';
import { registerTrain } from './commands/train.js';

export function buildProgram(): Command {
  const program = new Command('vera')
    .description('VeRA and LoRA finetuning for TypeScript: train, merge, evaluate and inspect adapters')
    .version('0.1.0')
    .exitOverride()
    .showSuggestionAfterError(true)
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  registerTrain(program);
  registerMerge(program);
  registerPerplexity(program);
  registerGenerate(program);
  registerInspect(program);
  registerConvertAdapter(program);
  registerServe(program);
  registerDemo(program);
  registerKeys(program);
  registerAdapters(program);
  for (const c of program.commands) c.exitOverride();
  return program;
}

/**
 * A reader that goes away (`vera generate … | head -c1`) makes the next write fail with EPIPE:
 * nothing more can be shown, so stop quietly instead of dying on an unhandled 'error' event.
 */
function quietOnClosedPipe(stream: NodeJS.WriteStream): void {
  if (stream.listenerCount('error') > 0) return;
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') process.exit(0);
    throw err;
  });
}

/**
 * Commands left with Node's default Ctrl-C (immediate exit by the signal): `serve` drains on
 * SIGINT itself; `perplexity` and `demo` compute synchronously for minutes, where a handler would
 * only run at the end and so make Ctrl-C do nothing. Their outputs are atomic either way.
 */
const OWN_SIGINT = new Set(['serve', 'perplexity', 'demo']);

/**
 * Ctrl-C: one line and exit status 130. Outputs are written atomically and this runs between
 * event-loop turns, never inside a synchronous write, so nothing partial is left behind; the
 * trainer yields to the event loop between steps (trainAsync) so this runs within a step.
 */
function onSigint(): void {
  process.stderr.write(`${process.stderr.isTTY ? '\n' : ''}vera: interrupted\n`);
  process.exit(130);
}

/** Run the CLI; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  quietOnClosedPipe(process.stdout);
  quietOnClosedPipe(process.stderr);
  const program = buildProgram();
  program.hook('preAction', (_program, command) => {
    if (!OWN_SIGINT.has(command.name()) && !process.listeners('SIGINT').includes(onSigint)) process.on('SIGINT', onSigint);
  });
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander already printed its one-line message (or help/version, which exit 0)
      return e.exitCode;
    }
    if (e instanceof VeraError) {
      process.stderr.write(`vera: ${e.message}\n`);
      return 1;
    }
    const err = e as NodeJS.ErrnoException;
    if (err && typeof err.code === 'string' && typeof err.path === 'string') {
      process.stderr.write(`vera: ${err.path}: ${err.code}\n`);
      return 1;
    }
    process.stderr.write(`vera: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
    return 2;
  }
  // the SIGINT listener stays: a Ctrl-C during the last synchronous phase must not be swallowed
}
