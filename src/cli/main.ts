// The `vera` command. Each subcommand lives in commands/<name>.ts and registers itself on the
// program; every failure a user can cause ends as one line on stderr and a non-zero exit.
import { Command, CommanderError } from 'commander';
import { VeraError } from '../io/errors.js';
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

/** Run the CLI; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
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
}
