// `vera keys create --store PATH --tenant NAME`: a new API key for a tenant of a `vera serve` store
// (the tenant is created if new). The key is printed once, alone on stdout; only its hash is kept.
import type { Command } from 'commander';
import { fail } from '../../io/errors.js';
import { isValidTenantName } from '../../serve/store.js';
import { openStore } from './adapters.js';

interface KeysCreateOptions {
  store: string;
  tenant: string;
}

export function registerKeys(program: Command): void {
  const keys = program.command('keys').description('API keys of a vera serve store');
  keys
    .command('create')
    .description('create an API key for a tenant (created if new) and print it; only its sha256 is stored')
    .requiredOption('--store <path>', 'the store file (SQLite; created if missing)')
    .requiredOption('--tenant <name>', 'tenant name (1-64 of A-Z a-z 0-9 . _ -)')
    .action((o: KeysCreateOptions) => {
      if (!isValidTenantName(o.tenant)) fail(`--tenant: ${JSON.stringify(o.tenant)} is not a valid tenant name (1-64 of A-Z a-z 0-9 . _ -)`);
      const store = openStore(o.store, true);
      try {
        process.stdout.write(`${store.createApiKey(o.tenant)}\n`);
      } finally {
        store.close();
      }
    });
  for (const c of keys.commands) c.exitOverride();
  keys.exitOverride();
}
