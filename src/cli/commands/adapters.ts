// `vera adapters import|export|list|delete --store PATH`: the adapters a `vera serve` store holds.
// Import checks a PEFT folder (config parses, tensors finite, VeRA projections equal the ones the
// key regenerates) and stores it compact (VeRA: vectors only); --model also loads it onto that base.
// Export writes PEFT's layout back, atomically. Every input is checked before anything is written.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { writeDirAtomic } from '../../io/atomic.js';
import { OVERWRITE_HELP, prepareOut } from '../out.js';
import { VeraError, fail } from '../../io/errors.js';
import { loadPretrained } from '../../models/index.js';
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, PeftModel, compactAdapterBytes } from '../../peft/index.js';
import { ServeStore, isValidId, isValidTenantName, type AdapterMeta } from '../../serve/store.js';

/** Open the store named by --store; `create` false refuses a path with no store. Errors name the flag. */
export function openStore(path: string, create: boolean): ServeStore {
  try {
    return ServeStore.open(path, { create });
  } catch (e) {
    if (e instanceof VeraError) fail(`--store ${e.message}`);
    throw e;
  }
}

function checkId(id: string): void {
  if (!isValidId(id)) fail(`--id: ${JSON.stringify(id)} is not a valid adapter id (1-128 of A-Z a-z 0-9 . _ : -)`);
}

function checkTenantName(name: string | undefined): void {
  if (name !== undefined && !isValidTenantName(name)) fail(`--tenant: ${JSON.stringify(name)} is not a valid tenant name (1-64 of A-Z a-z 0-9 . _ -)`);
}

/** The owner id --tenant names ('' without it: the admin). */
function ownerOf(store: ServeStore, tenant: string | undefined): string {
  if (tenant === undefined) return '';
  const t = store.tenantByName(tenant);
  if (!t) fail(`--tenant: no tenant named '${tenant}' in ${store.path} (vera keys create makes one)`);
  return t.id;
}

/** A file of the adapter folder, read whole; a missing one names its path. */
function readAdapterFile(dir: string, name: string): Buffer {
  const file = join(dir, name);
  if (!existsSync(file)) fail(`${file}: not found (is ${dir} an adapter folder?)`);
  if (!statSync(file).isFile()) fail(`${file}: not a file`);
  return readFileSync(file);
}

interface ImportOptions {
  store: string;
  id: string;
  tenant?: string;
  shared?: boolean;
  model?: string;
}

interface ExportOptions {
  store: string;
  id: string;
  tenant?: string;
  out: string;
  overwrite?: boolean;
}

interface ListOptions {
  store: string;
  tenant?: string;
  json?: boolean;
}

interface DeleteOptions {
  store: string;
  id: string;
  tenant?: string;
}

export function registerAdapters(program: Command): void {
  const adapters = program.command('adapters').description('adapters of a vera serve store: import, export, list, delete');

  adapters
    .command('import')
    .description('check a PEFT adapter folder and store it (VeRA compact: the vectors and projection_prng_key)')
    .argument('<dir>', 'adapter folder (adapter_config.json + adapter_model.safetensors)')
    .requiredOption('--store <path>', 'the store file (created if missing when importing for the admin)')
    .requiredOption('--id <id>', 'adapter id (1-128 of A-Z a-z 0-9 . _ : -); an existing one of the same owner is replaced')
    .option('--tenant <name>', "owner tenant (default: the admin)")
    .option('--shared', 'admin adapters only: every tenant without an adapter of this id may use it')
    .option('--model <dir>', 'base model folder: also check the adapter loads onto it')
    .action((dir: string, o: ImportOptions) => {
      checkId(o.id);
      checkTenantName(o.tenant);
      if (o.shared && o.tenant !== undefined) fail('--shared: only admin-owned adapters (no --tenant) can be shared');
      const config = readAdapterFile(dir, ADAPTER_CONFIG).toString('utf8');
      const weights = readAdapterFile(dir, ADAPTER_WEIGHTS);
      const compact = compactAdapterBytes(config, weights, dir);
      // PeftModel's own loader: every key lands on a layer of this base, with the shapes it needs
      if (o.model !== undefined) PeftModel.fromPretrained(loadPretrained(o.model).model, dir);
      const store = openStore(o.store, o.tenant === undefined);
      try {
        const meta = store.putAdapter({ owner: ownerOf(store, o.tenant), id: o.id, method: compact.method, config: compact.config, weights: compact.weights, dtype: compact.dtype, shared: o.shared === true });
        console.log(`imported ${meta.id} for ${o.tenant ?? 'admin'}${meta.shared ? ' (shared)' : ''}: ${meta.method} ${meta.dtype}, ${meta.bytes.toLocaleString('en-US')} bytes (was ${weights.byteLength.toLocaleString('en-US')})`);
      } finally {
        store.close();
      }
    });

  adapters
    .command('export')
    .description('write a stored adapter as a PEFT folder (atomically)')
    .requiredOption('--store <path>', 'the store file')
    .requiredOption('--id <id>', 'adapter id')
    .option('--tenant <name>', "the tenant's adapter (its own, else a shared admin one); default: the admin's")
    .requiredOption('--out <dir>', 'output folder')
    .option('--overwrite', OVERWRITE_HELP)
    .action((o: ExportOptions) => {
      checkId(o.id);
      checkTenantName(o.tenant);
      const write = prepareOut('--out', o.out, [['--store', o.store]], o.overwrite === true);
      const store = openStore(o.store, false);
      try {
        const owner = ownerOf(store, o.tenant);
        const meta = owner === '' ? { owner: '', id: o.id } : store.resolveAdapter(owner, o.id);
        const rec = meta && store.getAdapter(meta.owner, meta.id);
        if (!rec) fail(`--id: no adapter '${o.id}' for ${o.tenant ?? 'admin'} in ${store.path}`);
        writeDirAtomic(o.out, { [ADAPTER_CONFIG]: rec.config, [ADAPTER_WEIGHTS]: rec.weights }, write);
        console.log(`wrote ${o.out}: ${rec.method} ${rec.dtype}, ${rec.bytes.toLocaleString('en-US')} bytes`);
      } finally {
        store.close();
      }
    });

  adapters
    .command('list')
    .description("list stored adapters: all, or those a tenant can use (its own and the admin's shared ones)")
    .requiredOption('--store <path>', 'the store file')
    .option('--tenant <name>', 'only what this tenant can use')
    .option('--json', 'print a JSON array')
    .action((o: ListOptions) => {
      checkTenantName(o.tenant);
      const store = openStore(o.store, false);
      let rows: AdapterMeta[];
      let names: Map<string, string>;
      try {
        rows = store.listAdapters(o.tenant === undefined ? null : ownerOf(store, o.tenant));
        names = new Map(store.listTenants().map((t) => [t.id, t.name]));
      } finally {
        store.close();
      }
      const ownerName = (owner: string): string => (owner === '' ? 'admin' : names.get(owner) ?? owner);
      if (o.json) {
        console.log(JSON.stringify(rows.map((a) => ({ ...a, owner: ownerName(a.owner), ownerId: a.owner }))));
        return;
      }
      const table = [['OWNER', 'ID', 'METHOD', 'DTYPE', 'BYTES', 'SHARED', 'UPDATED']];
      for (const a of rows) {
        table.push([ownerName(a.owner), a.id, a.method, a.dtype, String(a.bytes), a.shared ? 'yes' : 'no', new Date(a.updatedAt * 1000).toISOString()]);
      }
      const widths = table[0].map((_, i) => Math.max(...table.map((r) => r[i].length)));
      for (const r of table) console.log(r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd());
    });

  adapters
    .command('delete')
    .description('delete a stored adapter')
    .requiredOption('--store <path>', 'the store file')
    .requiredOption('--id <id>', 'adapter id')
    .option('--tenant <name>', "the tenant's own adapter; default: the admin's")
    .action((o: DeleteOptions) => {
      checkId(o.id);
      checkTenantName(o.tenant);
      const store = openStore(o.store, false);
      try {
        if (!store.deleteAdapter(ownerOf(store, o.tenant), o.id)) fail(`--id: no adapter '${o.id}' owned by ${o.tenant ?? 'admin'} in ${store.path}`);
        console.log(`deleted ${o.id}`);
      } finally {
        store.close();
      }
    });

  for (const c of adapters.commands) c.exitOverride();
  adapters.exitOverride();
}
