// `vera serve`: the OpenAI-compatible server (src/serve/server.ts) on one base model. The admin key
// comes from VERA_ADMIN_KEY or --admin-key-file, never from a flag's value, so it does not show in
// the process list. SIGTERM and SIGINT drain: running requests finish, a running fine-tuning job
// pauses at its checkpoint, then the process exits 0.
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { VeraError } from '../../io/errors.js';
import { VeraServer } from '../../serve/server.js';
import { DOUBLE_QUANT_HELP, WEIGHTS_HELP, weightFormat, parseTargetModules, positiveInt, nonNegativeInt } from '../options.js';
import type { WeightFormat } from '../../tensor/quant.js';

interface ServeFlags {
  model: string;
  weights?: WeightFormat;
  doubleQuant?: boolean;
  store: string;
  host: string;
  port: number;
  servedModelName?: string;
  adminKeyFile?: string;
  veraR: number;
  veraProjectionPrngKey: number;
  veraTargetModules?: string;
  maxTokens: number;
  maxBatchSize: number;
  maxConcurrent: number;
  maxQueue: number;
  requestTimeout: number;
  bodyLimitMb: number;
  uploadLimitMb: number;
  jobs: boolean;
  checkpointEvery: number;
  replicaId?: string;
  quiet?: boolean;
}

function adminKey(o: ServeFlags): string | null {
  if (o.adminKeyFile !== undefined) {
    let text: string;
    try {
      text = fs.readFileSync(o.adminKeyFile, 'utf8');
    } catch (e) {
      throw new VeraError(`--admin-key-file ${o.adminKeyFile}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    const key = text.trim();
    if (key.length < 16 || /\s/.test(key)) throw new VeraError(`--admin-key-file ${o.adminKeyFile}: the key must be one line of at least 16 characters without spaces`);
    return key;
  }
  const env = process.env['VERA_ADMIN_KEY'];
  if (env === undefined || env === '') return null;
  if (env.trim().length < 16) throw new VeraError('VERA_ADMIN_KEY: the key must be at least 16 characters');
  return env.trim();
}

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('serve the base model and its adapters over the OpenAI API (chat, completions, models, adapters, files, fine-tuning jobs)')
    .requiredOption('--model <dir>', 'base model folder (Hugging Face layout, with tokenizer.json)')
    .option('--store <path>', 'SQLite store of adapters, tenants, keys, files and jobs (created if missing)', 'vera-store.db')
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .option('--port <n>', 'port (0: any free one)', nonNegativeInt, 8000)
    .option('--served-model-name <name>', "the base model's name in requests (default: the folder's name)")
    .option('--admin-key-file <file>', 'file holding the admin API key (else the VERA_ADMIN_KEY environment variable)')
    .option('--vera-r <n>', 'rank every VeRA adapter on this server shares', positiveInt, 256)
    .option('--vera-projection-prng-key <n>', 'projection_prng_key every VeRA adapter on this server shares', nonNegativeInt, 0)
    .option('--vera-target-modules <names>', "layers the VeRA adapters adapt (default: PEFT's default for the model type)")
    .option('--max-tokens <n>', 'max_tokens a request may ask for (and the default)', positiveInt, 512)
    .option('--max-batch-size <n>', 'requests decoded together at most', positiveInt, 64)
    .option('--max-concurrent <n>', 'generations one API key may run or queue at once (429 beyond)', positiveInt, 16)
    .option('--max-queue <n>', 'requests waiting for the engine at most (429 beyond)', positiveInt, 256)
    .option('--request-timeout <s>', 'seconds a generation may run', positiveInt, 300)
    .option('--body-limit-mb <n>', 'JSON request bodies at most, MiB', positiveInt, 4)
    .option('--upload-limit-mb <n>', 'uploaded files at most, MiB each', positiveInt, 64)
    .option('--no-jobs', 'accept fine-tuning jobs but leave running them to another replica')
    .option('--replica-id <name>', 'who claims fine-tuning jobs in the store (default: the host name); replicas sharing a store need distinct ids')
    .option('--checkpoint-every <n>', 'fine-tuning jobs checkpoint every n steps', positiveInt, 10)
    .option('--weights <format>', WEIGHTS_HELP, weightFormat)
    .option('--double-quant', DOUBLE_QUANT_HELP)
    .option('--quiet', 'no log lines on stderr')
    .action(async (o: ServeFlags) => {
      const log = o.quiet ? () => undefined : (line: string) => process.stderr.write(`vera serve: ${line}\n`);
      const server = await VeraServer.create({
        modelDir: o.model,
        weights: o.weights,
        doubleQuant: o.doubleQuant,
        storePath: o.store,
        servedModelName: o.servedModelName,
        adminKey: adminKey(o),
        vera: { r: o.veraR, projectionPrngKey: o.veraProjectionPrngKey, targetModules: o.veraTargetModules === undefined ? null : parseTargetModules(o.veraTargetModules) },
        limits: {
          maxTokens: o.maxTokens, concurrentPerTenant: o.maxConcurrent, maxQueue: o.maxQueue, requestTimeoutMs: o.requestTimeout * 1000,
          bodyBytes: o.bodyLimitMb * 1024 * 1024, uploadBytes: o.uploadLimitMb * 1024 * 1024,
        },
        engine: { maxBatchSize: o.maxBatchSize, maxBatchTokens: Math.max(512, o.maxBatchSize) },
        jobs: { run: o.jobs, checkpointEvery: o.checkpointEvery, workerId: o.replicaId },
        log,
      });
      let address: string;
      try {
        address = await server.listen(o.host, o.port);
      } catch (e) {
        await server.close();
        const err = e as NodeJS.ErrnoException;
        throw new VeraError(`--host ${o.host} --port ${o.port}: cannot listen (${err.code ?? err.message})`);
      }
      // the one line a script waits for
      process.stdout.write(`listening on ${address} (model ${server.modelName}, store ${o.store})\n`);
      await new Promise<void>((resolve) => {
        const stop = (signal: string): void => {
          log(`${signal}: draining`);
          server.close().then(resolve, (e) => {
            log(`error while closing: ${(e as Error)?.message ?? String(e)}`);
            resolve();
          });
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
    });
}
