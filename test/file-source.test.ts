// FileSource loaders under Node: a folder read through folderSource, blobSource (bytes, Blobs, a
// File list) or urlSource (a loopback HTTP server) loads the same model, tokenizer and adapter as
// the folder path does; saveToBytes gives exactly the files savePretrained writes; the backend
// registry's registerBackend / registerBackendLoader / initBackend.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import {
  AutoModelForCausalLM, AutoTokenizer, PeftModel, SafetensorsFile, TextGenerator, activeBackend, backendLoaderNames, backendNames, blobSource, folderSource,
  getPeftModel, initBackend, kernels, loadPretrained, noGrad, registerBackend, registerBackendLoader, subSource,
  urlSource, useBackend, veraConfig, type GPT2LMHeadModel, type Module, type Tensor,
} from '../src/index.js';
import { tsKernels } from '../src/backends/index.js';
import { serveFolder } from './browser/chromium.js';

const FIX = new URL('../../test/fixtures/', import.meta.url).pathname;
const TINY = join(FIX, 'gpt2-tiny');
const IDS = Int32Array.from([5, 17, 3, 99, 42, 0, 64]);

type Lm = { forward(ids: Int32Array, shape: readonly [number, number]): Tensor };

/** The logits of IDS through a model, or through a PeftModel's model (its adapters injected). */
function logits(m: Lm | { readonly model: Lm }): Float32Array {
  const lm = 'forward' in m ? m : m.model;
  return noGrad(() => lm.forward(IDS, [1, IDS.length]).data());
}

/** Every file under `dir`, by '/'-separated relative path. */
function filesUnder(dir: string): Record<string, Uint8Array> {
  const out: Record<string, Uint8Array> = {};
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out[relative(dir, p).split('\\').join('/')] = readFileSync(p);
    }
  };
  walk(dir);
  return out;
}

function assertSameParams(a: Module, b: Module): void {
  const pa = new Map(a.namedParameters());
  const pb = new Map(b.namedParameters());
  assert.deepEqual([...pa.keys()], [...pb.keys()]);
  for (const [k, t] of pa) assert.deepEqual(t.data(), pb.get(k)!.data(), k);
}

/** Two VeRA adapters on the tiny model with nonzero weights (fresh ones would equal the base). */
function adapted(): PeftModel<GPT2LMHeadModel> {
  const model = loadPretrained(TINY).model as GPT2LMHeadModel;
  const peft = getPeftModel(model, veraConfig({ targetModules: ['c_attn', 'c_fc'], r: 8, projectionPrngKey: 3 }));
  peft.addAdapter('second', veraConfig({ targetModules: ['c_attn'], r: 8, projectionPrngKey: 3 }));
  for (const name of ['default', 'second']) {
    peft.setAdapter(name);
    for (const [k, t] of peft.trainableParameters()) t.copyFrom(Float32Array.from({ length: t.size }, (_, i) => Math.sin(i + k.length) * 0.5));
  }
  peft.setAdapter('default');
  return peft;
}

test('loadPretrained / AutoModelForCausalLM.fromPretrained: a FileSource loads what the folder path loads', async () => {
  const fromDir = loadPretrained(TINY);
  const fromFolder = await loadPretrained(folderSource(TINY));
  assertSameParams(fromDir.model, fromFolder.model);
  assert.deepEqual(fromFolder.configJson, fromDir.configJson);
  assert.equal(fromFolder.checkpoint.source, join(TINY, 'model.safetensors'));
  // a sharded checkpoint through bytes held in memory
  const sharded = join(FIX, 'gpt2-tiny-sharded');
  const fromBytes = await AutoModelForCausalLM.fromPretrained(blobSource(filesUnder(sharded), 'mem'));
  assertSameParams(loadPretrained(sharded).model, fromBytes);
  // Blobs and File-like objects from a picked folder (named "folder/file")
  const files = Object.entries(filesUnder(TINY)).map(([name, bytes]) => Object.assign(new Blob([bytes]), { name, webkitRelativePath: `gpt2-tiny/${name}` }));
  assert.deepEqual(logits(await AutoModelForCausalLM.fromPretrained(blobSource(files))), logits(fromDir.model as GPT2LMHeadModel));
});

test('SafetensorsFile.from and blobSource take an ArrayBuffer, a typed array, a Blob or a fetch Response', async () => {
  const bytes = readFileSync(join(TINY, 'model.safetensors'));
  const want = SafetensorsFile.open(join(TINY, 'model.safetensors'));
  const copy = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  for (const x of [copy, new Uint8Array(bytes), new Blob([bytes]), new Response(bytes)]) {
    const st = await SafetensorsFile.from(x, 'x');
    assert.deepEqual(st.keys(), want.keys());
    assert.deepEqual(st.getFloat32(want.keys()[0]), want.getFloat32(want.keys()[0]));
  }
  await assert.rejects(SafetensorsFile.from(new Response('gone', { status: 404 }), 'm'), /m: HTTP 404/);
  await assert.rejects(SafetensorsFile.from('model.safetensors' as never, 'm'), /m: expected an ArrayBuffer, a typed array, a Blob\/File or a fetch Response/);
  const viaResponses = blobSource({ 'config.json': new Response(readFileSync(join(TINY, 'config.json'))), 'model.safetensors': new Response(bytes) });
  assertSameParams((await loadPretrained(viaResponses)).model, loadPretrained(TINY).model);
});

test('a bitsandbytes nf4 folder loads through a FileSource as through its path (quantized weights, same logits)', async () => {
  const dir = join(FIX, 'bnb', 'gpt2-nf4-dq');
  const fromDir = loadPretrained(dir);
  const fromBytes = await loadPretrained(blobSource(filesUnder(dir), 'nf4'));
  assert.equal(fromBytes.checkpoint.source, 'nf4/model.safetensors');
  assert.deepEqual(logits(fromBytes.model as GPT2LMHeadModel), logits(fromDir.model as GPT2LMHeadModel));
  assert.deepEqual(fromBytes.configJson, fromDir.configJson);
});

test('FileSource loaders refuse what the path loaders refuse, in one line naming the file', async () => {
  await assert.rejects(loadPretrained(blobSource({}, 'empty')), /^VeraError: empty\/config\.json: not found \(is empty a model folder\?\)$/);
  const noWeights = blobSource({ 'config.json': readFileSync(join(TINY, 'config.json')) }, 'cfg');
  await assert.rejects(loadPretrained(noWeights), /cfg: no model\.safetensors or model\.safetensors\.index\.json found/);
  const bert = blobSource({ 'config.json': new TextEncoder().encode('{"model_type": "bert"}') }, 'b');
  await assert.rejects(AutoModelForCausalLM.fromPretrained(bert), /b\/config\.json.*bert/);
  await assert.rejects(PeftModel.fromPretrained(loadPretrained(TINY).model, blobSource({}, 'none')), /none\/adapter_config\.json: not found/);
  const badIndex = blobSource({
    'config.json': readFileSync(join(TINY, 'config.json')),
    'model.safetensors.index.json': new TextEncoder().encode('{"weight_map": {"x": "../../etc/passwd"}}'),
  }, 'evil');
  await assert.rejects(loadPretrained(badIndex), /evil\/model\.safetensors\.index\.json: weight_map entry "x" has invalid shard file name/);
  await assert.rejects(blobSource({}).read('../x'), /invalid file name/);
});

test('saveToBytes gives exactly the files savePretrained writes; the bytes load back as the folder does', async () => {
  const peft = adapted();
  const dir = mkdtempSync(join(tmpdir(), 'vera-src-'));
  try {
    peft.savePretrained(dir);
    const written = filesUnder(dir);
    const bytes = peft.saveToBytes();
    assert.deepEqual(Object.keys(bytes).sort(), Object.keys(written).sort());
    assert.deepEqual(Object.keys(bytes).sort(), ['README.md', 'adapter_config.json', 'adapter_model.safetensors', 'second/adapter_config.json', 'second/adapter_model.safetensors']);
    for (const [name, data] of Object.entries(written)) assert.deepEqual(Buffer.from(bytes[name]), Buffer.from(data), name);
    const blobs = peft.saveToBlobs({ dtype: 'bf16' });
    const bf16 = peft.saveToBytes({ dtype: 'bf16' });
    for (const [name, blob] of Object.entries(blobs)) assert.deepEqual(new Uint8Array(await blob.arrayBuffer()), bf16[name], name);

    const want = logits(peft);
    const fromDir = PeftModel.fromPretrained(loadPretrained(TINY).model as GPT2LMHeadModel, dir);
    const fromBytes = await PeftModel.fromPretrained(loadPretrained(TINY).model as GPT2LMHeadModel, blobSource(bytes));
    assert.deepEqual(logits(fromBytes), logits(fromDir));
    assert.deepEqual(logits(fromBytes), want);
    // the second adapter, from its subfolder, on the same model
    await fromBytes.loadAdapter(subSource(blobSource(bytes), 'second'), { adapterName: 'second' });
    fromBytes.setAdapter('second');
    peft.setAdapter('second');
    assert.deepEqual(logits(fromBytes), logits(peft));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('urlSource: a model, tokenizer and adapter over HTTP load as from their folders; a 404 is a missing file', async () => {
  const { server, url } = await serveFolder(FIX);
  try {
    const base = urlSource(`${url}gpt2-tiny`);
    const model = await AutoModelForCausalLM.fromPretrained(base);
    assertSameParams(model, loadPretrained(TINY).model);
    assert.equal(await base.read('nothing.json'), null);
    const adapter = await PeftModel.fromPretrained(model, urlSource(`${url}gpt2-tiny-vera/`));
    assert.deepEqual(logits(adapter), logits(PeftModel.fromPretrained(loadPretrained(TINY).model as GPT2LMHeadModel, join(FIX, 'gpt2-tiny-vera'))));
    const remote = await AutoTokenizer.fromPretrained(urlSource(`${url}tokenizers/gpt2`));
    const local = await AutoTokenizer.fromPretrained(join(FIX, 'tokenizers', 'gpt2'));
    const text = 'Hello, world! Ünïcödé and   spaces.';
    assert.deepEqual(remote.encode(text), local.encode(text));
    await assert.rejects(AutoTokenizer.fromPretrained(base), /gpt2-tiny\/tokenizer\.json: not found/);
    await assert.rejects(urlSource(`${url}gpt2-tiny`).read('../x'), /invalid file name/);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

test('TextGenerator.fromPretrained takes FileSources for the model and the adapter', async () => {
  const dir = join(FIX, 'tokenizers', 'gpt2');
  const files: Record<string, Uint8Array> = { ...filesUnder(TINY), 'tokenizer.json': readFileSync(join(dir, 'tokenizer.json')) };
  // the fixture's tokenizer has a larger vocabulary than the tiny model: generate from ids the model knows
  const gen = await TextGenerator.fromPretrained(blobSource(files), { adapter: folderSource(join(FIX, 'gpt2-tiny-vera')) });
  const same = await TextGenerator.fromPretrained(blobSource(files), { adapter: join(FIX, 'gpt2-tiny-vera') });
  assert.ok(gen.model instanceof PeftModel && same.model instanceof PeftModel);
  assert.deepEqual(logits(gen.model as PeftModel<GPT2LMHeadModel>), logits(same.model as PeftModel<GPT2LMHeadModel>));
  assert.notDeepEqual(logits(gen.model as PeftModel<GPT2LMHeadModel>), logits(loadPretrained(TINY).model as GPT2LMHeadModel));
});

test('backend registry: registerBackend, registerBackendLoader, initBackend', async () => {
  const before = activeBackend();
  assert.ok(before !== null && backendNames().includes(before));
  try {
    registerBackend('ts-again', tsKernels);
    assert.ok(backendNames().includes('ts-again'));
    assert.throws(() => registerBackend('ts-again', tsKernels), /already registered/);
    assert.throws(() => registerBackend('Bad Name', tsKernels), /backend name must be/);
    let loads = 0;
    registerBackendLoader('lazy', async () => {
      loads++;
      return tsKernels;
    });
    // the built-in loaders (webgpu; wasm where it was not loaded at import) are there too
    assert.deepEqual(backendLoaderNames().filter((n) => n !== 'wasm' && n !== 'webgpu'), ['lazy']);
    assert.ok(backendLoaderNames().includes('webgpu'));
    assert.throws(() => useBackend('lazy'), /has a loader: await initBackend\('lazy'\) first/);
    assert.equal(await initBackend('lazy'), 'lazy');
    assert.equal(await initBackend('lazy'), 'lazy');
    assert.equal(loads, 1);
    assert.equal(activeBackend(), 'lazy');
    // registered kernels run behind the argument checks: a short buffer is refused before the kernel runs
    assert.throws(() => kernels().fill(null as never, 0), /fill: out must be a storage/);
    registerBackendLoader('broken', async () => {
      throw new Error('no device here');
    });
    await assert.rejects(initBackend('broken'), /no device here/);
    await assert.rejects(initBackend('missing'), /unknown backend 'missing'/);
    // without a name: the first of native, webgpu, wasm, ts that is ready (VERA_BACKEND when set)
    const picked = await initBackend(undefined);
    assert.equal(picked, backendNames().includes('native') ? 'native' : 'ts');
  } finally {
    useBackend(before!);
  }
});
