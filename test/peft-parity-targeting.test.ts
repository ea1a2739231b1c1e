// PEFT's target-module matching and config tests, ported: tests/test_tuners_utils.py
// (REGEX_TEST_CASES, TestTargetedModuleNames, TestExcludedModuleNames, all-linear, TestFindMinimalTargetModules),
// tests/test_other.py (TestAdapterTargeting, TestTargetingAuxiliaryTrainingWrapper), the VeRA/LoRA rows of
// tests/test_config.py, and the projection_prng_key semantics of torch.Generator.manual_seed
// (see notes/spec-targeting-config.md). PEFT main, read, not copied: the data tables are PEFT's, the
// hub models of the upstream tests are replaced by small module trees with the same layer paths.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Rng, Tensor, manualSeed, noGrad } from '../src/tensor/index.js';
import { Conv1D, Conv2d, Linear, Module, ModuleList } from '../src/nn/index.js';
import { parseJsonExact, stringifyJson } from '../src/io/json.js';
import {
  AdapterLayer,
  BASE_DEFAULTS,
  PeftModel,
  TargetModulesError,
  VeraLinear,
  findMinimalTargetModules,
  getPeftModel,
  isTargetModule,
  loraConfig,
  loraConfigToJson,
  parseLoraConfig,
  parsePeftConfig,
  parseVeraConfig,
  sharedProjections,
  veraConfig,
  veraConfigToJson,
  type BasePeftConfig,
  type LoraConfig,
  type VeraConfig,
} from '../src/peft/index.js';
import { DeepMLP, MLP, MLP4, randomInput } from './peft-models.js';
import { throwsVera, withTmp } from './helpers.js';

// ---------------------------------------------------------------- helpers

/** The shared config fields, as the tests set them. */
type Fields = Partial<Omit<BasePeftConfig, 'peftType' | 'ignoredFields'>>;
type Maker = (f: Fields) => BasePeftConfig;

/** Both methods, through their validating constructors (PEFT's LoraConfig / VeraConfig). */
const METHODS: [string, Maker][] = [
  ['VeraConfig', (f) => veraConfig({ r: 4, ...f })],
  ['LoraConfig', (f) => loraConfig({ r: 2, ...f })],
];
const lora: Maker = (f) => loraConfig({ r: 2, ...f });
const vera: Maker = (f) => veraConfig({ r: 4, ...f });

/** A config object as-is, without the constructors' checks: for matching rows a constructor would refuse. */
const rawConfig = (f: Fields): BasePeftConfig => ({ peftType: 'LORA', ...BASE_DEFAULTS, ...f });

/** A plain container module (torch's nn.Module() with attributes set on it). */
class Node extends Module {
  modelType?: string;
  add(name: string, m: Module): this {
    this.addModule(name, m);
    return this;
  }
}

type Spec = Module | Spec[] | { [name: string]: Spec };

/** A module tree: objects become containers, arrays ModuleLists, modules stay. */
function tree(spec: Spec): Node {
  const n = new Node();
  for (const [k, v] of Object.entries(spec)) n.add(k, build(v));
  return n;
}
function build(spec: Spec): Module {
  if (spec instanceof Module) return spec;
  if (Array.isArray(spec)) return new ModuleList(spec.map(build));
  return tree(spec);
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** Paths of the layers carrying adapter `name`, in module order (PEFT's targeted_module_names for one adapter). */
function adapted(peft: PeftModel, name = 'default'): string[] {
  return [...peft.model.namedModules()].filter(([, m]) => m instanceof AdapterLayer && m.adapterNames().includes(name)).map(([p]) => p);
}

function noAdapterLayers(m: Module): boolean {
  return ![...m.namedModules()].some(([, x]) => x instanceof AdapterLayer);
}

/** `fn` fails with a one-line TargetModulesError (PEFT: ValueError / NoMatchingPeftModuleError; VeRA's _find_dim error). */
function throwsTargets(fn: () => unknown, pattern?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof TargetModulesError, `expected a TargetModulesError, got ${String(e)}`);
    assert.ok(!e.message.includes('\n'), 'one line');
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

const PATTERN_WITHOUT_LAYERS = /When `?layers_pattern`? is specified, `?layers_to_transform`? must also be specified/i;

type Forward = { forward(x: Tensor): Tensor };
const out = (peft: PeftModel, x: Tensor): Float32Array => noGrad(() => (peft.model as unknown as Forward).forward(x)).toFloat32Array();

// ---------------------------------------------------------------- models (the upstream tests' layer paths)

/** T_TU's ToyMoEModel: model.layers[0..3].{self_attn.q_proj, mlp.experts[0..1].up_proj}, Linear(4, 4, bias=False). */
function toyMoE(): Node {
  const rng = new Rng(1);
  const l = (): Linear => new Linear(4, 4, { bias: false, rng });
  return tree({ model: { layers: range(4).map(() => ({ self_attn: { q_proj: l() }, mlp: { experts: [{ up_proj: l() }, { up_proj: l() }] } })) } });
}

/** model.layers[0..n-1].{q_proj, k_proj}: Linear(4, 4), except `firstQ` for layer 0's q_proj. */
function decoder(n: number, firstQ?: [number, number]): Node {
  const rng = new Rng(2);
  return tree({
    model: {
      layers: range(n).map((i) => ({
        q_proj: i === 0 && firstQ ? new Linear(firstQ[0], firstQ[1], { rng }) : new Linear(4, 4, { rng }),
        k_proj: new Linear(4, 4, { rng }),
      })),
    },
  });
}

/** T_OTHER's NestedModel: layer1 (10 → 20), layer2 (20 → 5), layer3 = PlainModel(5, 10) with its own layer1. */
function nestedModel(): Node {
  const rng = new Rng(3);
  return tree({ layer1: new Linear(10, 20, { rng }), layer2: new Linear(20, 5, { rng }), layer3: { layer1: new Linear(5, 10, { rng }) } });
}

/** T_OTHER's TestAdapterTargeting model: l1 = Linear(10, 20), l2 = Conv2d(1, 1, 2). */
function selfTargetModel(): Node {
  const rng = new Rng(4);
  return tree({ l1: new Linear(10, 20, { rng }), l2: new Conv2d(1, 1, 2, 1, 0, rng) });
}

const LLAMA_PROJS = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'];

/** A Llama-shaped causal LM: model.layers[i].self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj, and lm_head. */
function llamaish(n: number): Node {
  const rng = new Rng(5);
  const L = (i: number, o: number): Linear => new Linear(i, o, { bias: false, rng });
  return tree({
    model: {
      layers: range(n).map(() => ({
        self_attn: { q_proj: L(8, 8), k_proj: L(8, 8), v_proj: L(8, 8), o_proj: L(8, 8) },
        mlp: { gate_proj: L(8, 12), up_proj: L(8, 12), down_proj: L(12, 8) },
      })),
    },
    lm_head: L(8, 16),
  });
}

/** A GPT-2-shaped causal LM with transformers' Conv1D layers and an lm_head. */
function gpt2ish(n: number): Node {
  const rng = new Rng(6);
  return tree({
    transformer: {
      h: range(n).map(() => ({
        attn: { c_attn: new Conv1D(24, 8, rng), c_proj: new Conv1D(8, 8, rng) },
        mlp: { c_fc: new Conv1D(32, 8, rng), c_proj: new Conv1D(8, 32, rng) },
      })),
    },
    lm_head: new Linear(8, 16, { bias: false, rng }),
  });
}

/** A Bloom-shaped model (model_type "bloom"): transformer.h[i].self_attention.{query_key_value, dense}. */
function bloomish(n = 5): Node {
  const rng = new Rng(7);
  const m = tree({
    transformer: { h: range(n).map(() => ({ self_attention: { query_key_value: new Linear(8, 24, { rng }), dense: new Linear(8, 8, { rng }) } })) },
    lm_head: new Linear(8, 16, { bias: false, rng }),
  });
  m.modelType = 'bloom';
  return m;
}

// ================================================================ 1. target matching

/** T_TU REGEX_TEST_CASES: key, target_modules, layers_to_transform, layers_pattern, expected. */
const REGEX_TEST_CASES: [string, string[] | string, number[] | null, string[] | string | null, boolean][] = [
  // some basic examples
  ['', [], null, null, false],
  ['', ['foo'], null, null, false],
  ['foo', [], null, null, false],
  ['foo', ['foo'], null, null, true],
  ['foo', ['bar'], null, null, false],
  ['foo', ['foo', 'bar'], null, null, true],
  // with regex
  ['foo', 'foo', null, null, true],
  ['foo', '.*oo', null, null, true],
  ['foo', 'fo.*', null, null, true],
  ['foo', '.*bar.*', null, null, false],
  ['foobar', '.*oba.*', null, null, true],
  // with layers_to_transform
  ['foo.bar.1.baz', ['baz'], [1], ['bar'], true],
  ['foo.bar.1.baz', ['baz'], [0], ['bar'], false],
  ['foo.bar.1.baz', ['baz'], [2], ['bar'], false],
  ['foo.bar.10.baz', ['baz'], [0], ['bar'], false],
  ['foo.bar.10.baz', ['baz'], [1], ['bar'], false],
  ['foo.bar.1.baz', ['baz'], [0, 1, 2], ['bar'], true],
  ['foo.bar.1.baz', ['baz', 'spam'], [1], ['bar'], true],
  ['foo.bar.1.baz', ['baz', 'spam'], [0, 1, 2], ['bar'], true],
  // empty layers_pattern
  ['foo.whatever.1.baz', ['baz'], [1], [], true],
  ['foo.whatever.1.baz', ['baz'], [0], [], false],
  ['foo.whatever.1.baz', ['baz'], [1], '', true],
  ['foo.whatever.1.baz', ['baz'], [0], '', false],
  ['foo.whatever.1.baz', ['baz'], [1], null, true],
  ['foo.whatever.1.baz', ['baz'], [0], null, false],
  // some realistic examples: transformers model
  ['transformer.h.1.attn.attention.q_proj.foo', ['q_proj'], null, [], false],
  ['transformer.h.1.attn.attention.q_proj', [], null, [], false],
  ['transformer.h.1.attn.attention.q_proj', ['q_proj'], null, [], true],
  ['transformer.h.1.attn.attention.q_proj', ['q_proj', 'v_proj'], null, [], true],
  ['transformer.h.1.attn.attention.resid_dropout', ['q_proj', 'v_proj'], null, [], false],
  ['transformer.h.1.attn.attention.q_proj', ['q_proj'], [1], ['h'], true],
  ['transformer.h.1.attn.attention.q_proj', ['q_proj'], [0], ['h'], false],
  ['transformer.h.1.attn.attention.q_proj', ['q_proj'], [2], ['h'], false],
  ['transformer.h.1.attn.attention.q_proj', ['q_proj'], [0, 1, 2], ['h'], true],
  ['transformer.h.1.attn.attention.q_proj', ['q_proj', 'v_proj'], [0, 1, 2], ['h'], true],
  ['foo.bar.q_proj', ['q_proj'], null, [], true],
  ['foo.bar.1.baz', ['baz'], [1], ['foo'], false],
  // corner cases: layers_pattern is itself a target; layers_pattern not preceded by a '.'
  ['foo.bar.1.baz', ['baz'], [1], ['baz'], false],
  ['bar.1.baz', ['baz'], [1], ['bar'], false],
  ['foo.bar.001.baz', ['baz'], [1], ['bar'], true],
  ['foo.bar.1.spam.2.baz', ['baz'], [1], ['bar'], true],
  ['foo.bar.2.spam.1.baz', ['baz'], [1], ['bar'], false],
  // nn.Sequential: the key needs a '.blocks' to be valid
  ['blocks.1.weight', ['weight'], [1], ['blocks'], false],
  ['blocks.1.bias', ['weight'], [1], ['blocks'], false],
  ['mlp.blocks.1.weight', ['weight'], [1], ['blocks'], true],
  ['mlp.blocks.1.bias', ['weight'], [1], ['blocks'], false],
];

test('test_regex_matching_valid: REGEX_TEST_CASES through isTargetModule, with LoraConfig and VeraConfig', () => {
  assert.equal(REGEX_TEST_CASES.length, 46);
  for (const [key, targetModules, layersToTransform, layersPattern, want] of REGEX_TEST_CASES) {
    const fields: Fields = { targetModules, layersToTransform, layersPattern };
    const what = JSON.stringify([key, targetModules, layersToTransform, layersPattern]);
    if (Array.isArray(targetModules) && targetModules.length === 0) {
      // the constructors refuse [] here (see the next test); the matching rule itself is checked on the bare config
      assert.equal(isTargetModule(rawConfig(fields), key), want, what);
      continue;
    }
    for (const [cls, make] of METHODS) assert.equal(isTargetModule(make(fields), key), want, `${cls} ${what}`);
  }
});

test('an empty target_modules list is a valid config that matches nothing (REGEX_TEST_CASES rows 1, 3, 27 build it)', () => {
  // PEFT: LoraConfig(target_modules=[]) and VeraConfig(target_modules=[]) construct (the list becomes set());
  // only get_peft_model then refuses (LoRA: "No `target_modules` passed ...", VeRA: _find_dim's error)
  for (const [cls, make] of METHODS) {
    let config: BasePeftConfig | undefined;
    assert.doesNotThrow(() => (config = make({ targetModules: [] })), `${cls}(target_modules=[]) constructs`);
    assert.equal(isTargetModule(config!, 'foo'), false);
    throwsTargets(() => getPeftModel(new MLP(), config!));
  }
});

interface Edge {
  key: string;
  t: string[] | string;
  ltt?: number[] | number | null;
  lp?: string[] | string | null;
  /** exclude_modules: LoRA only (VeraConfig has no such field). */
  excl?: string[] | string;
  mts?: string[];
  want: boolean;
  why: string;
}

/** Spec §1.6 (each row run through PEFT's check_target_module_exists), plus rows checked the same way. */
const EDGE_CASES: Edge[] = [
  { key: 'model.layers.0.q_proj', t: ['model.layers.0.q_proj'], ltt: [1], want: true, why: 'an exact full path bypasses the layer filter' },
  { key: 'model.layers.0.q_proj', t: ['layers.0.q_proj'], ltt: [1], want: false, why: 'a dotted suffix is filtered (index 0)' },
  { key: 'model.layers.0.q_proj', t: 'model.layers.0.q_proj', ltt: [1], want: true, why: 'regex: filter ignored' },
  { key: 'model.layers.0.q_proj', t: '.*q_proj', ltt: [1], want: true, why: 'regex: filter ignored' },
  { key: 'layers.1.q_proj', t: ['q_proj'], ltt: [1], want: false, why: 'root-level list' },
  { key: 'layers.1.q_proj', t: ['q_proj'], ltt: [1], lp: 'layers', want: false, why: 'root-level list, with the pattern' },
  { key: '0.q_proj', t: ['q_proj'], ltt: [0], want: false, why: 'no segment before the number' },
  { key: 'x.0.q_proj', t: ['q_proj'], ltt: [0], want: false, why: 'the number follows the first segment' },
  { key: 'model.0.layers.1.x', t: ['x'], ltt: [1], want: true, why: 'index 1, not 0 (0 follows the first segment)' },
  { key: 'model.0.layers.1.x', t: ['x'], ltt: [0], want: false, why: 'index 1, not 0' },
  { key: 'model.layers.1.mlp.experts.0.up_proj', t: ['up_proj'], ltt: [1], want: true, why: 'PEFT #3318: the first number, not the expert index' },
  { key: 'model.layers.1.mlp.experts.0.up_proj', t: ['up_proj'], ltt: [0], want: false, why: 'PEFT #3318' },
  { key: 'model.layers.1.mlp.experts.0.up_proj', t: ['up_proj'], ltt: 1, want: true, why: 'PEFT #3318, int layers_to_transform' },
  { key: 'model.layers.1.mlp.experts.0.up_proj', t: ['up_proj'], ltt: [1], lp: 'layers', want: true, why: 'pattern layers' },
  { key: 'model.layers.1.mlp.experts.0.up_proj', t: ['up_proj'], ltt: [0], lp: 'experts', want: true, why: 'the pattern picks the expert index' },
  { key: 'model.layers.1.mlp.experts.0.up_proj', t: ['experts.0.up_proj'], ltt: [1], want: true, why: 'a dotted target is still filtered by the layer index' },
  { key: 'model.layers.2.mlp.experts.1.up_proj', t: ['up_proj'], ltt: [1], lp: ['h', 'layers'], want: false, why: 'pattern list: layers gives 2' },
  { key: 'a.h.0.b.layers.1.q', t: ['q'], ltt: [1], lp: ['h', 'layers'], want: false, why: 'the first pattern that matches wins (h → 0)' },
  { key: 'a.h.0.b.layers.1.q', t: ['q'], ltt: [0], lp: ['h', 'layers'], want: true, why: 'the first pattern that matches wins (h → 0)' },
  { key: 'a.h.0.b.layers.1.q', t: ['q'], ltt: [1], lp: ['layers', 'h'], want: true, why: 'pattern order matters' },
  { key: 'base.model.layers.0.q', t: ['q'], ltt: 0, lp: 'model.layers', want: true, why: 'a dotted pattern' },
  { key: 'model.layers.0.q', t: ['q'], ltt: 0, lp: 'model.layers', want: false, why: 'no dot before the pattern' },
  { key: 'base.modelXlayers.0.q', t: ['q'], ltt: 0, lp: 'model.layers', want: true, why: 'the pattern goes into the regex unescaped' },
  { key: 'a.layers.3.q', t: ['q'], ltt: 3, want: true, why: 'int layers_to_transform' },
  { key: 'a.layers.3.q', t: ['q'], ltt: [], want: true, why: 'an empty list is no filter' },
  { key: 'a.layers.3', t: ['3'], ltt: [3], want: false, why: 'no dot after the number' },
  { key: 'a.foobar.1.q', t: ['q'], ltt: [1], lp: 'bar', want: false, why: 'the pattern must follow a dot' },
  { key: 'a.layers.01.q', t: ['q'], ltt: [1], want: true, why: 'leading zeros' },
  { key: 'lin0', t: ['lin0'], excl: 'lin0', want: false, why: 'excluded (str: fullmatch)' },
  { key: 'a.lin0', t: ['lin0'], excl: ['lin0'], want: false, why: 'excluded (list: suffix)' },
  { key: 'a.lin0', t: ['lin0'], excl: 'lin0', want: true, why: 'a str exclude is a fullmatch: not excluded' },
  { key: 'a.xlin0', t: ['lin0'], excl: ['lin0'], want: false, why: 'a suffix match is whole segments' },
  { key: 'lin0', t: ['lin0'], excl: [], want: true, why: 'an empty exclude list excludes nothing' },
  { key: 'layer3.layer1', t: ['layer1'], mts: ['layer3'], want: false, why: 'inside a modules_to_save module' },
  { key: 'a.layer3', t: ['layer3'], mts: ['layer3'], want: false, why: 'a modules_to_save module' },
  { key: 'xlayer3.y', t: ['y'], mts: ['layer3'], want: true, why: 'modules_to_save matches whole segments' },
  { key: 'layers.0Xpost_attention_layernorm', t: ['0Xpost_attention_layernorm'], mts: ['0.post_attention_layernorm'], want: false, why: 'modules_to_save goes into the regex unescaped' },
  { key: 'model.layers.0.q_proj', t: ['q_proj'], mts: ['layers.0'], want: false, why: 'a dotted modules_to_save excludes its subtree' },
  { key: 'model.layers.10.q_proj', t: ['q_proj'], mts: ['layers.1'], want: true, why: 'modules_to_save ends at a segment boundary' },
  { key: 'foo', t: 'FOO', want: false, why: 'case-sensitive' },
  { key: 'foo', t: 'all-linear', want: false, why: 'an unexpanded all-linear is just a regex' },
  { key: '', t: '.*', want: true, why: '.* matches the root key (getPeftModel skips it)' },
  { key: 'lin1', t: 'lin0|lin1', want: true, why: 'an alternation is one fullmatch group' },
  { key: 'lin0x', t: 'lin0|lin1', want: false, why: 'fullmatch, not ^lin0 | lin1$' },
  { key: 'xlin1', t: 'lin0|lin1', want: false, why: 'fullmatch, not ^lin0 | lin1$' },
  { key: 'model.layers.1.mlp.experts.0.up_proj', t: 'model\\.layers\\.1\\..*', ltt: [0], want: true, why: 'regex: filter ignored' },
];

test('check_target_module_exists edge cases: layer index (#3318), exact paths, exclude_modules, modules_to_save, regex', () => {
  for (const e of EDGE_CASES) {
    const fields: Fields = { targetModules: e.t, layersToTransform: e.ltt ?? null, layersPattern: e.lp ?? null, modulesToSave: e.mts ?? null };
    const what = `${e.key} ${JSON.stringify(e.t)}: ${e.why}`;
    const makers = e.excl !== undefined ? [['LoraConfig', lora] as [string, Maker]] : METHODS;
    for (const [cls, make] of makers) {
      // LoraConfig refuses a str target with layers_to_transform (checked in section 4): those rows use VeraConfig
      if (cls === 'LoraConfig' && typeof e.t === 'string' && e.ltt != null) continue;
      const config = make(e.excl !== undefined ? { ...fields, excludeModules: e.excl } : fields);
      assert.equal(isTargetModule(config, e.key), e.want, `${cls} ${what}`);
    }
  }
});

test('TestTargetedModuleNames on the MLP: a regex or a list, for VeRA and LoRA', () => {
  const cases: [string[] | string, string[]][] = [
    ['lin0', ['lin0']],
    ['lin.*', ['lin0', 'lin1']],
    [['lin0'], ['lin0']],
    [['lin0', 'lin1'], ['lin0', 'lin1']],
  ];
  for (const [cls, make] of METHODS) {
    for (const [targetModules, want] of cases) {
      assert.deepEqual(adapted(getPeftModel(new MLP(), make({ targetModules }))), want, `${cls} ${JSON.stringify(targetModules)}`);
    }
  }
});

test('test_realistic_example: without target_modules the model_type default applies (bloom: query_key_value in every block)', () => {
  for (const [cls, make] of METHODS) {
    const config = make({ taskType: 'CAUSAL_LM' });
    const peft = getPeftModel(bloomish(), config);
    assert.deepEqual(adapted(peft), range(5).map((i) => `transformer.h.${i}.self_attention.query_key_value`), cls);
    assert.deepEqual(peft.peftConfig.get('default')!.targetModules, ['query_key_value'], `${cls}: the resolved default is kept in the config`);
  }
  // MAYBE_INCLUDE_ALL_LINEAR_LAYERS_TEST_INTERNALS' None row: a model without a model_type has no default
  throwsVera(() => getPeftModel(new MLP(), veraConfig({ r: 4 })), /target_modules/);
});

test('TestExcludedModuleNames (LoRA): exclude_modules as a regex or a list; all excluded, none matched, a mix', () => {
  assert.deepEqual(adapted(getPeftModel(new MLP(), lora({ targetModules: 'lin.*', excludeModules: 'lin0' }))), ['lin1']);
  assert.deepEqual(adapted(getPeftModel(new MLP(), lora({ targetModules: ['lin0', 'lin1'], excludeModules: 'lin0' }))), ['lin1']);
  assert.deepEqual(adapted(getPeftModel(new MLP(), lora({ targetModules: ['lin0', 'lin1'], excludeModules: ['lin0'] }))), ['lin1']);
  // test_all_modules_excluded (the MLP here has lin0, drop, lin1: relu and log-softmax are functions)
  const all = ['lin0', 'lin1', 'drop'];
  const base = new MLP();
  throwsTargets(() => getPeftModel(base, lora({ targetModules: all, excludeModules: all })));
  assert.ok(noAdapterLayers(base), 'nothing was wrapped');
  // test_some_modules_excluded_some_unmatched
  throwsTargets(() => getPeftModel(new MLP(), lora({ targetModules: ['lin0', 'non_existent_module'], excludeModules: ['lin0'] })));
  // excluded realistic example: every block's query_key_value but block 2's
  const peft = getPeftModel(bloomish(), lora({ targetModules: ['query_key_value'], excludeModules: 'transformer.h.2.self_attention.query_key_value' }));
  assert.deepEqual(adapted(peft), [0, 1, 3, 4].map((i) => `transformer.h.${i}.self_attention.query_key_value`));
});

test('test_no_modules_matched (first and second adapter), second adapter only modules_to_save, names unique across adapters', () => {
  for (const [cls, make] of METHODS) {
    const base = new MLP();
    throwsTargets(() => getPeftModel(base, make({ targetModules: ['non_existent_module'] })), /non_existent_module/);
    assert.ok(noAdapterLayers(base), `${cls}: nothing wrapped`);
    // a second adapter is checked on its own matches (PEFT #3533), and a refused one leaves no config behind
    const peft = getPeftModel(new MLP(), make({ targetModules: ['lin0'] }));
    throwsTargets(() => peft.addAdapter('other', make({ targetModules: ['non_existent_module'] })));
    assert.deepEqual([...peft.peftConfig.keys()], ['default'], cls);
    // test_second_adapter_only_modules_to_save_raises: lin1 is excluded, the rest unmatched, lin0's insides skipped
    throwsTargets(() => peft.addAdapter('other', make({ targetModules: ['non_existent_module'], modulesToSave: ['lin1'] })));
    assert.deepEqual([...peft.peftConfig.keys()], ['default'], cls);
    assert.deepEqual(peft.modulesToSavePaths(), [], `${cls}: no modules_to_save copy was made`);
    // test_targeted_module_names_unique_across_adapters: lin1 keeps one wrapper carrying both adapters (on MLP4,
    // whose lin1 is 20 → 20, so that VeRA's pair, sized by the first adapter, also fits lin0)
    const two = getPeftModel(new MLP4(), make({ targetModules: ['lin1'] }));
    two.addAdapter('other', make({ targetModules: ['lin0', 'lin1'] }));
    assert.deepEqual(adapted(two, 'default'), ['lin1'], cls);
    assert.deepEqual(adapted(two, 'other'), ['lin0', 'lin1'], cls);
    assert.deepEqual((two.model.getSubmodule('lin1') as AdapterLayer).adapterNames(), ['default', 'other'], cls);
  }
});

test('test_layers_to_transform_filters_by_layer_not_expert_index (PEFT #3318) on ToyMoE, layers_pattern None / "layers" / ["h", "layers"]', () => {
  const want = ['model.layers.1.self_attn.q_proj', 'model.layers.1.mlp.experts.0.up_proj', 'model.layers.1.mlp.experts.1.up_proj'];
  for (const layersPattern of [null, 'layers', ['h', 'layers']]) {
    for (const [cls, make] of METHODS) {
      const peft = getPeftModel(toyMoE(), make({ targetModules: ['q_proj', 'up_proj'], layersPattern, layersToTransform: [1] }));
      assert.deepEqual(new Set(adapted(peft)), new Set(want), `${cls} layers_pattern ${JSON.stringify(layersPattern)}`);
    }
  }
  // layers_pattern chooses which number counts: "experts" reads the expert index, and q_proj (under no "experts") drops out
  for (const [cls, make] of METHODS) {
    const peft = getPeftModel(toyMoE(), make({ targetModules: ['q_proj', 'up_proj'], layersPattern: 'experts', layersToTransform: [0] }));
    assert.deepEqual(adapted(peft), range(4).map((i) => `model.layers.${i}.mlp.experts.0.up_proj`), cls);
  }
});

test('root-level layer lists never match a layer filter (DeepMLP: layers.<i>.lin0); under a prefix they do', () => {
  for (const [cls, make] of METHODS) {
    for (const layersPattern of [null, 'layers']) {
      const base = new DeepMLP({ numHiddenLayers: 3 });
      throwsTargets(() => getPeftModel(base, make({ targetModules: ['lin0'], layersToTransform: [1], layersPattern })));
      assert.ok(noAdapterLayers(base), `${cls} ${String(layersPattern)}`);
    }
    const wrapped = tree({ model: new DeepMLP({ numHiddenLayers: 3 }) });
    assert.deepEqual(adapted(getPeftModel(wrapped, make({ targetModules: ['lin0'], layersToTransform: [1], layersPattern: 'layers' }))), ['model.layers.1.lin0'], cls);
  }
});

test('exact full-path targets and regex targets ignore layers_to_transform; dotted suffixes do not', () => {
  for (const [cls, make] of METHODS) {
    const a = getPeftModel(decoder(4), make({ targetModules: ['model.layers.0.q_proj', 'k_proj'], layersToTransform: [1] }));
    assert.deepEqual(adapted(a), ['model.layers.0.q_proj', 'model.layers.1.k_proj'], cls);
    throwsTargets(() => getPeftModel(decoder(4), make({ targetModules: ['layers.0.q_proj'], layersToTransform: [1] })));
    assert.deepEqual(adapted(getPeftModel(decoder(4), make({ targetModules: ['layers.0.q_proj'], layersToTransform: [0] }))), ['model.layers.0.q_proj'], cls);
    assert.deepEqual(adapted(getPeftModel(decoder(4), make({ targetModules: ['q_proj'], layersToTransform: 2 }))), ['model.layers.2.q_proj'], cls);
    assert.deepEqual(adapted(getPeftModel(decoder(4), make({ targetModules: ['q_proj'], layersToTransform: [] }))), range(4).map((i) => `model.layers.${i}.q_proj`), `${cls}: [] is no filter`);
  }
  // VeraConfig accepts a regex with layers_to_transform (LoraConfig refuses it, section 4), which then has no effect
  assert.deepEqual(adapted(getPeftModel(decoder(4), vera({ targetModules: '.*q_proj', layersToTransform: [1] }))), range(4).map((i) => `model.layers.${i}.q_proj`));
  assert.deepEqual(adapted(getPeftModel(decoder(4), vera({ targetModules: 'model\\.layers\\.0\\.q_proj', layersToTransform: [1], layersPattern: 'layers' }))), ['model.layers.0.q_proj']);
  assert.deepEqual(adapted(getPeftModel(new MLP4(), vera({ targetModules: 'lin[12]', layersToTransform: [5] }))), ['lin1', 'lin2']);
});

test('TestTargetingAuxiliaryTrainingWrapper: modules_to_save modules and what they hold are never adapted', () => {
  for (const [cls, make] of METHODS) {
    // test_nested_ignores_modules_to_save
    const peft = getPeftModel(nestedModel(), make({ targetModules: ['layer1'], modulesToSave: ['layer3'] }));
    assert.deepEqual(adapted(peft), ['layer1'], cls);
    assert.ok(!(peft.model.getSubmodule('layer3.layer1') instanceof AdapterLayer), cls);
    assert.deepEqual(peft.modulesToSavePaths(), ['layer3'], cls);
    // test_targeting_module_to_save_raises: layer1 and layer3.layer1 both fall under modules_to_save "layer1"
    const base = nestedModel();
    throwsTargets(() => getPeftModel(base, make({ targetModules: ['layer1'], modulesToSave: ['layer1'] })));
    assert.ok(noAdapterLayers(base), cls);
  }
});

test('test_modules_to_save_targets_module_dict_raises: a container (ModuleList) cannot be a modules_to_save module', () => {
  // PEFT: TypeError "modules_to_save cannot be applied to modules of type <class '...ModuleList'>"
  for (const [cls, make] of METHODS) {
    const rng = new Rng(12);
    const model = tree({ other_layer: new Linear(10, 10, { rng }), module: new ModuleList([new Linear(10, 10, { rng })]) });
    throwsVera(() => getPeftModel(model, make({ targetModules: ['other_layer'], modulesToSave: ['module'] })), /modules_to_save/);
    assert.ok(noAdapterLayers(model), cls);
  }
});

// ================================================================ 2. self-targeting

test('TestAdapterTargeting.test_self_targeting_is_ignored: a second adapter\'s regex never reaches inside the first\'s layer', () => {
  const A1 = 'ADAPTER_1_512858';
  const A2 = 'ADAPTER_2_845781';
  const removeAdapterPortion = (name: string, key: string): string =>
    key.endsWith(`.${name}`) ? key.slice(0, -(name.length + 1)) : key.split(`.${name}.`)[0];
  const rows: [string, Maker, string][] = [
    ['LoraConfig', lora, 'l1.*'],
    ['VeraConfig', vera, 'l1.*'],
    ['VeraConfig', vera, '(l1|vera_A).*'], // also targets the shared layer
  ];
  for (const [cls, make, targetModules] of rows) {
    const peft = getPeftModel(selfTargetModel(), make({ targetModules }), A1);
    const keys1 = [...peft.model.stateDict().keys()];
    peft.addAdapter(A2, make({ targetModules }));
    const keys2 = [...peft.model.stateDict().keys()];
    assert.ok(keys2.some((k) => k.includes(A2)), `${cls} ${targetModules}: the second adapter was added`);
    assert.deepEqual(
      new Set(keys2.map((k) => removeAdapterPortion(A2, removeAdapterPortion(A1, k)))),
      new Set(keys1.map((k) => removeAdapterPortion(A1, k))),
      `${cls} ${targetModules}`,
    );
    const l1 = peft.model.getSubmodule('l1') as AdapterLayer;
    assert.ok(!(l1.base_layer instanceof AdapterLayer), `${cls}: l1.base_layer is not wrapped`);
    assert.deepEqual(l1.adapterNames(), [A1, A2], cls);
    assert.deepEqual(adapted(peft, A2), ['l1'], cls);
  }
});

test('a second adapter naming only a first adapter\'s internals (base_layer) matches nothing', () => {
  for (const [cls, make] of METHODS) {
    const peft = getPeftModel(new MLP(), make({ targetModules: ['lin0'] }));
    throwsTargets(() => peft.addAdapter('other', make({ targetModules: ['base_layer'] })));
    throwsTargets(() => peft.addAdapter('other', make({ targetModules: 'lin0\\.base_layer' })));
    assert.ok(!((peft.model.getSubmodule('lin0') as AdapterLayer).base_layer instanceof AdapterLayer), cls);
    assert.deepEqual([...peft.peftConfig.keys()], ['default'], cls);
  }
});

test('test_maybe_include_all_linear_layers: all-linear = every linear layer but lm_head (Llama, GPT-2 Conv1D); case-insensitive', () => {
  const cases: [string, () => Node, string[], number][] = [
    ['llama', () => llamaish(2), ['k_proj', 'v_proj', 'q_proj', 'o_proj', 'down_proj', 'up_proj', 'gate_proj'], 14],
    ['gpt2', () => gpt2ish(2), ['c_attn', 'c_proj', 'c_fc'], 8],
  ];
  for (const [cls, make] of METHODS) {
    for (const [name, model, names, count] of cases) {
      for (const shorthand of ['all-linear', 'ALL-Linear']) {
        const peft = getPeftModel(model(), make({ targetModules: shorthand }));
        const want = adapted(getPeftModel(model(), make({ targetModules: names })));
        assert.equal(want.length, count);
        assert.deepEqual(adapted(peft), want, `${cls} ${name} ${shorthand}`);
        assert.ok(!(peft.model.getSubmodule('lm_head') instanceof AdapterLayer), `${cls} ${name}: lm_head is left out`);
        // the shorthand resolves to the layer paths (matched then as exact paths)
        assert.deepEqual(new Set(peft.peftConfig.get('default')!.targetModules as string[]), new Set(want), `${cls} ${name}`);
      }
    }
  }
  // a plain module has no output embeddings: every Linear is adapted, the final one too
  for (const [cls, make] of METHODS) assert.deepEqual(adapted(getPeftModel(new MLP(), make({ targetModules: 'all-linear' }))), ['lin0', 'lin1'], cls);
  // MAYBE_INCLUDE_ALL_LINEAR_LAYERS_TEST_INTERNALS: a list and a regex are left as they are
  for (const [cls, make] of METHODS) {
    assert.deepEqual(getPeftModel(llamaish(1), make({ targetModules: ['k_proj'] })).peftConfig.get('default')!.targetModules, ['k_proj'], cls);
    assert.equal(getPeftModel(llamaish(1), make({ targetModules: '.*(q_proj|v_proj)$' })).peftConfig.get('default')!.targetModules, '.*(q_proj|v_proj)$', cls);
  }
});

test('test_maybe_include_all_linear_does_not_target_classifier_head: SEQ_CLS keeps score out of all-linear, in modules_to_save', () => {
  for (const [cls, make] of METHODS) {
    const rng = new Rng(8);
    const model = tree({ body: { dense: new Linear(8, 8, { rng }), out: new Linear(8, 8, { rng }) }, score: new Linear(8, 3, { rng }) });
    const peft = getPeftModel(model, make({ targetModules: 'all-linear', taskType: 'SEQ_CLS' }));
    assert.deepEqual(adapted(peft), ['body.dense', 'body.out'], `${cls}: all linear layers but one`);
    assert.ok(peft.peftConfig.get('default')!.modulesToSave!.includes('score'), cls);
    assert.deepEqual(peft.modulesToSavePaths(), ['score'], cls);
  }
});

test('test_add_second_adapter_with_all_linear_works: both configs select the same layers; no adapter inside an adapter', () => {
  for (const [cls, make] of METHODS) {
    const config0 = make({ targetModules: 'all-linear' });
    const config1 = make({ targetModules: 'all-linear' });
    const peft = getPeftModel(llamaish(2), config0);
    peft.addAdapter('other', config1);
    assert.deepEqual(config1.targetModules, config0.targetModules, `${cls}: the configs are completed in place, to the same set`);
    for (const i of [0, 1]) {
      for (const p of LLAMA_PROJS) {
        const layer = peft.model.getSubmodule(`model.layers.${i}.${p}`);
        assert.ok(layer instanceof AdapterLayer, `${cls} ${p}`);
        assert.ok(layer.base_layer instanceof Linear && !(layer.base_layer instanceof AdapterLayer), `${cls} ${p}.base_layer`);
        assert.deepEqual(layer.adapterNames(), ['default', 'other'], `${cls} ${p}`);
      }
    }
    assert.ok(!(peft.model.getSubmodule('lm_head') instanceof AdapterLayer), cls);
  }
});

test('test_all_linear_nested_targets_correct_layers: all-linear on an already adapted model selects the same layers, unnested', () => {
  for (const [cls, make] of METHODS) {
    const first = getPeftModel(llamaish(2), make({ targetModules: 'all-linear' }));
    const want = adapted(first);
    assert.equal(want.length, 14);
    // get_peft_model again on the same (adapted) model, as the upstream test does
    const again = getPeftModel(first.model, make({ targetModules: 'all-linear' }));
    assert.deepEqual(adapted(again), want, cls);
    for (const path of want) {
      const layer = again.model.getSubmodule(path) as AdapterLayer;
      assert.ok(!(layer.base_layer instanceof AdapterLayer), `${cls} ${path}`);
    }
    assert.ok(!(again.model.getSubmodule('lm_head') instanceof AdapterLayer), cls);
  }
});

// ================================================================ 3. _find_minimal_target_modules

/** T_TU test_find_minimal_target_modules: target_modules, other_module_names, expected. The "{i}" strings are literal upstream too. */
const MINIMAL_CASES: [string[], string[], string[]][] = [
  [['bar'], [], ['bar']],
  [['foo'], ['bar'], ['foo']],
  [['1.foo', '2.foo'], ['3.foo', '4.foo'], ['1.foo', '2.foo']],
  [['bar.baz'], ['foo.bar'], ['baz']],
  [['1.foo', '2.foo', 'bar.baz'], ['3.foo', 'bar.bla'], ['1.foo', '2.foo', 'baz']],
  [['a.b.c', 'd.e.f', 'g.h.i'], ['j.k.l', 'm.n.o'], ['c', 'f', 'i']],
  [['a.b.c', 'd.e.f', 'g.h.i'], ['a.b.x', 'd.x.f', 'x.h.i'], ['c', 'e.f', 'g.h.i']],
  [['foo.bar.baz', 'qux.bar.baz'], ['baz.bar.foo'], ['baz']],
  [
    range(12).map(() => 'model.decoder.layers.{i}.self_attn.k_proj'),
    [...range(12).map(() => 'model.decoder.layers.{i}.self_attn'), ...range(12).map(() => 'model.decoder.layers.{i}.self_attn.v_proj'), ...range(12).map(() => 'model.decoder.layers.{i}.self_attn.q_proj')],
    ['k_proj'],
  ],
  [
    range(12).filter((i) => i !== 5).map(() => 'model.decoder.layers.{i}.self_attn.k_proj'),
    [
      'model.decoder.layers.5.self_attn.k_proj',
      ...range(12).map(() => 'model.decoder.layers.{i}.self_attn'),
      ...range(12).map(() => 'model.decoder.layers.{i}.self_attn.v_proj'),
      ...range(12).map(() => 'model.decoder.layers.{i}.self_attn.q_proj'),
    ],
    ['{i}.self_attn.k_proj'],
  ],
];

test('test_find_minimal_target_modules: the parametrised table (other names as a list and as a set)', () => {
  for (const [targets, others, want] of MINIMAL_CASES) {
    for (const o of [others, new Set(others)]) {
      assert.deepEqual(new Set(findMinimalTargetModules(targets, o)), new Set(want), JSON.stringify([targets.slice(0, 3), [...o].slice(0, 3)]));
    }
    assert.deepEqual(new Set(findMinimalTargetModules([...new Set(targets)], others)), new Set(want), 'targets as a set');
  }
});

test('test_find_minimal_target_modules: empty, empty string and not-disjoint inputs are refused', () => {
  throwsVera(() => findMinimalTargetModules([], ['foo']), /target_modules should be a list or set of strings/);
  throwsVera(() => findMinimalTargetModules(['', 'foo', 'bar.baz'], ['bar']), /target_modules should not contain an empty string/);
  const notDisjoint: [string[], string[]][] = [
    [['foo'], ['foo']],
    [['foo.bar'], ['foo.bar']],
    [['foo.bar', 'spam', 'eggs'], ['foo.bar']],
    [['foo.bar', 'spam'], ['foo.bar', 'eggs']],
    [['foo.bar'], ['foo.bar', 'spam', 'eggs']],
  ];
  for (const [t, o] of notDisjoint) throwsVera(() => findMinimalTargetModules(t, o), /target_modules and other_module_names contain common elements/);
});

test('test_suffix_is_substring_of_other_suffix: suffixes are whole segments (time_emb_proj is not covered by proj)', () => {
  const targets = [
    'down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj',
    'mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj',
    'up_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj',
    'mid_block.attentions.0.proj_out',
    'up_blocks.0.attentions.0.proj_out',
    'down_blocks.1.attentions.0.proj_out',
    'up_blocks.0.resnets.0.time_emb_proj',
    'down_blocks.0.resnets.0.time_emb_proj',
    'mid_block.resnets.0.time_emb_proj',
  ];
  const others = [
    'conv_in', 'time_proj', 'time_embedding', 'time_embedding.linear_1', 'add_time_proj', 'add_embedding', 'add_embedding.linear_1',
    'add_embedding.linear_2', 'down_blocks', 'down_blocks.0', 'down_blocks.0.resnets', 'down_blocks.0.resnets.0', 'up_blocks', 'up_blocks.0',
    'up_blocks.0.attentions', 'up_blocks.0.attentions.0', 'up_blocks.0.attentions.0.norm', 'up_blocks.0.attentions.0.transformer_blocks',
    'up_blocks.0.attentions.0.transformer_blocks.0', 'up_blocks.0.attentions.0.transformer_blocks.0.norm1',
    'up_blocks.0.attentions.0.transformer_blocks.0.attn1',
  ];
  assert.deepEqual(new Set(findMinimalTargetModules(targets, others)), new Set(['time_emb_proj', 'proj', 'proj_out']));
});

/** An OPT-shaped decoder: model.decoder.layers[i].self_attn.{q,k,v,out}_proj, fc1, fc2, and lm_head. */
function optish(n = 12): Node {
  const rng = new Rng(9);
  const L = (): Linear => new Linear(4, 4, { rng });
  return tree({
    model: { decoder: { layers: range(n).map(() => ({ self_attn: { q_proj: L(), k_proj: L(), v_proj: L(), out_proj: L() }, fc1: L(), fc2: L() })) } },
    lm_head: L(),
  });
}

test('test_get_peft_model_applies_find_target_modules: 24 full paths condense to q_proj, v_proj; the model is the same', () => {
  // non-identity adapters (init_lora_weights=False / init_weights=False), so the tensors tell the layers apart
  const makers: [string, Maker][] = [
    ['VeraConfig', (f) => veraConfig({ r: 4, initWeights: false, ...f })],
    ['LoraConfig', (f) => loraConfig({ r: 2, initLoraWeights: false, ...f })],
  ];
  for (const [cls, make] of makers) {
    manualSeed(0);
    const small = getPeftModel(optish(), make({ targetModules: ['q_proj', 'v_proj'] }));
    const big = adapted(small);
    assert.equal(big.length, 24);
    manualSeed(0);
    const peft = getPeftModel(optish(), make({ targetModules: big }));
    assert.deepEqual(new Set(peft.peftConfig.get('default')!.targetModules as string[]), new Set(['q_proj', 'v_proj']), cls);
    assert.deepEqual(adapted(peft), big, cls);
    const sd = (p: PeftModel): [string, number[]][] => p.model.namedParameters().map(([k, t]) => [k, [...t.toFloat32Array()]]);
    assert.deepEqual(sd(peft), sd(small), `${cls}: same tensors`);
  }
});

test('test_get_peft_modules_module_name_is_suffix_of_another_module: transformer_blocks.<i>.query does not condense to query', () => {
  const n = 21;
  const model = (): Node => {
    const rng = new Rng(10);
    return tree({
      transformer_blocks: range(n).map(() => ({ query: new Linear(10, 10, { rng }) })),
      single_transformer_blocks: range(n).map(() => ({ query: new Linear(10, 10, { rng }) })),
    });
  };
  const targetModules = range(n).map((i) => `transformer_blocks.${i}.query`);
  for (const [cls, make] of METHODS) {
    const peft = getPeftModel(model(), make({ targetModules: [...targetModules] }));
    assert.deepEqual(adapted(peft), targetModules, cls);
    assert.ok(noAdapterLayers(peft.model.getSubmodule('single_transformer_blocks')), cls);
    assert.notDeepEqual(peft.peftConfig.get('default')!.targetModules, ['query'], cls);
  }
});

test('condensed targets are what is saved, and layers_to_transform then applies to them (not below 20 targets)', () => {
  withTmp((dir) => {
    for (const [cls, make] of METHODS) {
      // 21 full paths: condensed to q_proj, then filtered to layer 1
      const paths21 = range(21).map((i) => `model.layers.${i}.q_proj`);
      const peft = getPeftModel(decoder(21), make({ targetModules: paths21, layersToTransform: [1] }));
      assert.deepEqual(peft.peftConfig.get('default')!.targetModules, ['q_proj'], cls);
      assert.deepEqual(adapted(peft), ['model.layers.1.q_proj'], cls);
      const path = join(dir, cls);
      peft.saveAdapter(path);
      const saved = JSON.parse(readFileSync(join(path, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
      assert.deepEqual(saved.target_modules, ['q_proj'], cls);
      assert.deepEqual(saved.layers_to_transform, [1], cls);
      assert.deepEqual(adapted(PeftModel.fromPretrained(decoder(21), path)), ['model.layers.1.q_proj'], `${cls} reloaded`);
      // 19 full paths: not condensed, so they stay exact paths, which the layer filter does not touch
      const paths19 = range(19).map((i) => `model.layers.${i}.q_proj`);
      const all = getPeftModel(decoder(19), make({ targetModules: paths19, layersToTransform: [1] }));
      assert.deepEqual(adapted(all), paths19, cls);
      assert.deepEqual(all.peftConfig.get('default')!.targetModules, paths19, cls);
    }
  });
});

test('VeRA: all-linear with layers_to_transform is filtered only when its 20+ paths condense (PEFT\'s inconsistency)', () => {
  const eleven = getPeftModel(decoder(11), vera({ targetModules: 'all-linear', layersToTransform: [1] }));
  assert.deepEqual(adapted(eleven), ['model.layers.1.q_proj', 'model.layers.1.k_proj']);
  assert.deepEqual(new Set(eleven.peftConfig.get('default')!.targetModules as string[]), new Set(['q_proj', 'k_proj']));
  const three = getPeftModel(decoder(3), vera({ targetModules: 'all-linear', layersToTransform: [1] }));
  assert.deepEqual(adapted(three), range(3).flatMap((i) => [`model.layers.${i}.q_proj`, `model.layers.${i}.k_proj`]));
});

test('VeRA sizes its pair from the targets as given (_find_dim), before they condense and are filtered', () => {
  // layer 0's q_proj is 6 → 8; the 21 exact paths all count for the size, though only layer 1 (4 → 4) is adapted
  const peft = getPeftModel(decoder(21, [6, 8]), vera({ targetModules: range(21).map((i) => `model.layers.${i}.q_proj`), layersToTransform: [1] }));
  assert.deepEqual(adapted(peft), ['model.layers.1.q_proj']);
  const { A, B } = sharedProjections(peft.model)!;
  assert.deepEqual(A.shape, [4, 6]);
  assert.deepEqual(B.shape, [8, 4]);
});

// ================================================================ 4. config validation and round trips

test('layers_pattern without layers_to_transform is refused (VeraConfig, LoraConfig, and their JSON)', () => {
  for (const [cls, make] of METHODS) {
    throwsVera(() => make({ targetModules: ['query', 'value'], layersPattern: 'model.layers' }), PATTERN_WITHOUT_LAYERS);
    throwsVera(() => make({ targetModules: ['query', 'value'], layersPattern: ['h', 'layers'] }), PATTERN_WITHOUT_LAYERS);
    // test_lora_config_layers_to_transform_validation: both given is fine and kept; neither is fine
    const both = make({ targetModules: ['query', 'value'], layersToTransform: [0, 1, 2], layersPattern: 'model.layers' });
    assert.deepEqual(both.layersToTransform, [0, 1, 2], cls);
    assert.equal(both.layersPattern, 'model.layers', cls);
    const neither = make({ targetModules: ['query', 'value'] });
    assert.equal(neither.layersToTransform, null, cls);
    assert.equal(neither.layersPattern, null, cls);
    // test_config_layers_to_transform_index_zero: 0 is an index, not "unset"
    const zero = make({ layersToTransform: 0, layersPattern: 'model.layers' });
    assert.equal(zero.layersToTransform, 0, cls);
    assert.equal(zero.layersPattern, 'model.layers', cls);
    // the check is on truthiness: an empty pattern needs no layers
    assert.doesNotThrow(() => make({ targetModules: ['q'], layersPattern: '' }), cls);
    assert.doesNotThrow(() => make({ targetModules: ['q'], layersPattern: [] }), cls);
    assert.doesNotThrow(() => make({ targetModules: ['q'], layersPattern: 'layers', layersToTransform: [] }), cls);
  }
  const json = { peft_type: 'VERA', target_modules: ['q'], layers_pattern: 'layers' };
  throwsVera(() => parsePeftConfig(json, 'adapter_config.json'), PATTERN_WITHOUT_LAYERS);
  throwsVera(() => parsePeftConfig({ ...json, peft_type: 'LORA' }, 'adapter_config.json'), PATTERN_WITHOUT_LAYERS);
});

test('test_regex_with_layer_indexing_lora: LoraConfig refuses a str target with layers_to_transform or layers_pattern', () => {
  throwsVera(() => loraConfig({ targetModules: '.*foo', layersToTransform: [0] }), /`?layers_to_transform`? cannot be used when `?target_modules`? is a str/);
  throwsVera(() => loraConfig({ targetModules: '.*foo', layersPattern: ['bar'] }), /`?layers_pattern`? cannot be used when `?target_modules`? is a str/);
  assert.doesNotThrow(() => loraConfig({ targetModules: ['foo'], layersPattern: ['bar'], layersToTransform: [0] }));
  // the checks are "is not None": an empty list or string counts; all-linear is a str too
  throwsVera(() => loraConfig({ targetModules: '.*foo', layersToTransform: [] }), /layers_to_transform/);
  throwsVera(() => loraConfig({ targetModules: '.*foo', layersPattern: '' }), /layers_pattern/);
  throwsVera(() => loraConfig({ targetModules: 'all-linear', layersToTransform: [1] }), /layers_to_transform/);
  throwsVera(() => parseLoraConfig({ peft_type: 'LORA', target_modules: '.*foo', layers_to_transform: [0] }, 'adapter_config.json'), /layers_to_transform/);
});

test('VeraConfig has no regex checks: a str target with layers_to_transform is accepted (and the filter ignored)', () => {
  assert.doesNotThrow(() => veraConfig({ targetModules: '.*foo', layersToTransform: [0] }));
  assert.doesNotThrow(() => veraConfig({ targetModules: '.*foo', layersToTransform: [0], layersPattern: ['bar'] }));
  assert.doesNotThrow(() => veraConfig({ targetModules: 'all-linear', layersToTransform: [1] }));
  assert.doesNotThrow(() => parseVeraConfig({ peft_type: 'VERA', target_modules: '.*foo', layers_to_transform: [0] }, 'adapter_config.json'));
  // but a pattern alone is still refused, as for every config
  throwsVera(() => veraConfig({ targetModules: '.*foo', layersPattern: ['bar'] }), PATTERN_WITHOUT_LAYERS);
});

const TASK_TYPES = ['SEQ_CLS', 'SEQ_2_SEQ_LM', 'CAUSAL_LM', 'TOKEN_CLS', 'QUESTION_ANS', 'FEATURE_EXTRACTION'];

test('test_valid_task_type / test_invalid_task_type: VeraConfig takes TaskType members and None, refuses anything else', () => {
  for (const taskType of [...TASK_TYPES, null]) assert.equal(veraConfig({ taskType }).taskType, taskType);
  throwsVera(() => veraConfig({ taskType: 'invalid-task-type' }), /Invalid task type: 'invalid-task-type'/);
  throwsVera(() => parsePeftConfig({ peft_type: 'VERA', task_type: 'invalid-task-type' }, 'adapter_config.json'), /task.type/);
});

/** PEFT's default VeraConfig as save_pretrained writes it (sorted keys), less peft_version (next test). */
const DEFAULT_VERA_JSON: Record<string, unknown> = {
  auto_mapping: null,
  base_model_name_or_path: null,
  bias: 'none',
  d_initial: 0.1,
  fan_in_fan_out: false,
  inference_mode: false,
  init_weights: true,
  layers_pattern: null,
  layers_to_transform: null,
  modules_to_save: null,
  peft_type: 'VERA',
  projection_prng_key: 0,
  r: 256,
  revision: null,
  save_projection: true,
  target_modules: null,
  task_type: null,
  vera_dropout: 0,
};

test('a default VeraConfig writes PEFT\'s default adapter_config.json fields and values', () => {
  const json = veraConfigToJson(veraConfig());
  const { peft_version: _ignored, ...rest } = json;
  void _ignored;
  assert.deepEqual(rest, DEFAULT_VERA_JSON);
});

test('test_peft_version_is_stored: a loaded peft_version is kept and written back', () => {
  // deliberate: vera is not PEFT and does not claim a PEFT version for what it writes (PEFT fills
  // in its own when it loads a config without one)
  assert.equal(veraConfigToJson(veraConfig()).peft_version, undefined);
  assert.equal(veraConfigToJson(veraConfig({ peftVersion: '0.10' })).peft_version, '0.10');
  const loaded = parseVeraConfig({ ...DEFAULT_VERA_JSON, peft_version: '0.17.0' }, 'adapter_config.json');
  assert.equal(veraConfigToJson(loaded).peft_version, '0.17.0');
});

/** Write a config as PEFT's file (exact big integers) and read it back. */
const throughText = (json: Record<string, unknown>): unknown => parseJsonExact(stringifyJson(json, 2));

test('test_save_pretrained / test_from_json_file: VeraConfig and LoraConfig round trip through adapter_config.json', () => {
  const veras: VeraConfig[] = [
    veraConfig(),
    veraConfig({
      targetModules: ['a', 'list'], layersToTransform: [0, 2], layersPattern: 'layers', modulesToSave: ['classifier'],
      projectionPrngKey: 2n ** 64n - 1n, saveProjection: false, veraDropout: 0.1, dInitial: 0.5, initWeights: false,
      bias: 'vera_only', taskType: 'CAUSAL_LM', r: 16, fanInFanOut: true, baseModelNameOrPath: 'some/model', revision: 'main', inferenceMode: true,
    }),
    veraConfig({ targetModules: '.*(q|v)_proj', layersToTransform: 0, layersPattern: ['h', 'layers'], projectionPrngKey: -(2 ** 63) }),
  ];
  for (const c of veras) {
    const json = veraConfigToJson(c);
    const again = parseVeraConfig(throughText(json), 'adapter_config.json');
    assert.deepEqual(veraConfigToJson(again), json);
    assert.deepEqual(again.ignoredFields ?? [], []);
    assert.equal(BigInt(again.projectionPrngKey), BigInt(c.projectionPrngKey));
  }
  const loras: LoraConfig[] = [
    loraConfig(),
    loraConfig({ targetModules: ['a', 'list'], excludeModules: ['b'], layersToTransform: [1], layersPattern: ['h'], modulesToSave: ['score'], loraAlpha: 32, r: 8 }),
    loraConfig({ targetModules: '.*foo', excludeModules: 'x\\.y' }),
  ];
  for (const c of loras) {
    const json = loraConfigToJson(c);
    assert.deepEqual(loraConfigToJson(parseLoraConfig(throughText(json), 'adapter_config.json')), json);
  }
});

test('saveAdapter + PeftModel.fromPretrained give back the config (regex with layers, modules_to_save, key, save_projection false)', () => {
  withTmp((dir) => {
    const configs: VeraConfig[] = [
      veraConfig({ targetModules: ['lin1', 'lin2'], r: 4, modulesToSave: ['lin3'], projectionPrngKey: -5, saveProjection: false, dInitial: 0.3 }),
      veraConfig({ targetModules: 'lin[12]', r: 4, layersToTransform: [7], projectionPrngKey: 2n ** 53n + 1n, bias: 'vera_only' }),
    ];
    configs.forEach((config, i) => {
      const peft = getPeftModel(new MLP4(), config);
      const path = join(dir, String(i));
      peft.saveAdapter(path);
      const file = parseJsonExact(readFileSync(join(path, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
      assert.deepEqual(file, { ...veraConfigToJson(peft.peftConfig.get('default') as VeraConfig), inference_mode: true });
      const loaded = PeftModel.fromPretrained(new MLP4(), path);
      assert.deepEqual(veraConfigToJson(loaded.peftConfig.get('default') as VeraConfig), file);
      assert.deepEqual(adapted(loaded), adapted(peft));
    });
  });
});

test('test_from_pretrained_forward_compatible: unknown keys (a newer PEFT\'s) are ignored and listed', () => {
  withTmp((dir) => {
    for (const [make, toJson] of [
      [() => veraConfig(), (c: BasePeftConfig) => veraConfigToJson(c as VeraConfig)],
      [() => loraConfig(), (c: BasePeftConfig) => loraConfigToJson(c as LoraConfig)],
    ] as [() => BasePeftConfig, (c: BasePeftConfig) => Record<string, unknown>][]) {
      const json = toJson(make());
      const loaded = parsePeftConfig({ ...json, foobar: 'baz', spam: 123 }, 'adapter_config.json');
      assert.equal(loaded.peftType, json.peft_type);
      assert.deepEqual([...(loaded.ignoredFields ?? [])].sort(), ['foobar', 'spam']);
      assert.deepEqual(toJson(loaded), json, 'the rest is as saved, without the unknown keys');
      // test_from_json_file: a runtime_config key is dropped too
      const rt = parsePeftConfig({ ...json, runtime_config: { ephemeral_gpu_offload: true } }, 'adapter_config.json');
      assert.deepEqual(toJson(rt), json);
      assert.ok((rt.ignoredFields ?? []).includes('runtime_config'));
    }
    // through a folder: PeftModel.fromPretrained loads the adapter and keeps the list
    const path = join(dir, 'fwd');
    getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin1'], r: 4 })).saveAdapter(path);
    const file = join(path, 'adapter_config.json');
    const json = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    writeFileSync(file, JSON.stringify({ ...json, foobar: 'baz', spam: 123 }));
    const loaded = PeftModel.fromPretrained(new MLP4(), path);
    assert.deepEqual([...(loaded.peftConfig.get('default')!.ignoredFields ?? [])].sort(), ['foobar', 'spam']);
    assert.deepEqual(adapted(loaded), ['lin1']);
  });
});

test('test_from_pretrained_sanity_check: a JSON without peft_type is not a config', () => {
  throwsVera(() => parsePeftConfig({ foo: 'bar', baz: 123 }, 'adapter_config.json'), /peft_type/);
});

test('VeraConfig has no exclude_modules: in an adapter_config.json it is ignored (listed), as PEFT drops unknown VeraConfig keys', () => {
  const config = parsePeftConfig({ peft_type: 'VERA', r: 4, target_modules: ['lin0', 'lin1'], exclude_modules: ['lin1'] }, 'adapter_config.json');
  assert.ok((config.ignoredFields ?? []).includes('exclude_modules'), 'listed as ignored');
  assert.deepEqual(adapted(getPeftModel(new MLP(), config)), ['lin0', 'lin1'], 'and not applied');
});

// ================================================================ 5. projection_prng_key

test('torch MT19937 seeding: reference outputs; only the low 32 bits of the (uint64) key matter', () => {
  const first = (seed: number | bigint, n: number): number[] => {
    const rng = new Rng(seed);
    return range(n).map(() => rng.nextUint32());
  };
  assert.deepEqual(first(5489, 1), [3499211612]);
  assert.deepEqual(first(0, 3), [2357136044, 2546248239, 3071714933]);
  assert.deepEqual(first(42, 3), [1608637542, 3421126067, 4083286876]);
  for (const same of [2 ** 32, 2n ** 32n, -(2 ** 63), 2n ** 63n, 2n ** 64n - 2n ** 32n]) assert.deepEqual(first(same, 3), first(0, 3), String(same));
  for (const same of [42 + 2 ** 40, 42n + 2n ** 40n, -(2 ** 32) + 42, 2n ** 64n - 2n ** 32n + 42n]) assert.deepEqual(first(same, 3), first(42, 3), String(same));
  assert.deepEqual(first(-1, 3), first(2 ** 32 - 1, 3), '-1 is 2^64 - 1: low bits 0xFFFFFFFF');
});

/** torch 1.13.1's vera_A / vera_B for r = 8, max_in = 10, max_out = 20 (spec §4.4): A[0,:4], A[7,9], B[0,:4], B[19,7]. */
const REFERENCE: Record<string, number[]> = {
  '0': [-0.005799266044050455, 0.41552743315696716, -0.6375280618667603, -0.5700559616088867, -0.48459184169769287, -0.8070959448814392, 0.7694570422172546, 0.6584908366203308, -0.8638845086097717, 0.25471770763397217],
  '123': [-0.3158620297908783, 0.025658179074525833, -0.38471007347106934, 0.2921109199523926, 0.5462794303894043, 0.4017590582370758, 0.03162498027086258, 0.17027707397937775, -0.08199534565210342, 0.4658525884151459],
};

function referenceValues(peft: PeftModel): number[] {
  const { A, B } = sharedProjections(peft.model)!;
  assert.deepEqual(A.shape, [8, 10]);
  assert.deepEqual(B.shape, [20, 8]);
  const a = A.toFloat32Array();
  const b = B.toFloat32Array();
  return [a[0], a[1], a[2], a[3], a[7 * 10 + 9], b[0], b[1], b[2], b[3], b[19 * 8 + 7]];
}

test('get_peft_model makes torch\'s vera_A / vera_B for keys 0 and 123, and for every key with the same low 32 bits', () => {
  const keys: [string, (number | bigint)[]][] = [
    ['0', [0, 2 ** 32, -(2 ** 63), 2n ** 63n, 2n ** 64n - 2n ** 32n]],
    ['123', [123, 123 + 2 ** 40, -(2 ** 32) + 123, 2n ** 64n - 2n ** 32n + 123n]],
  ];
  for (const [ref, group] of keys) {
    for (const projectionPrngKey of group) {
      // the MLP's lin0 is 10 → 20: A is (8, 10), B is (20, 8)
      const peft = getPeftModel(new MLP(), veraConfig({ targetModules: ['lin0'], r: 8, projectionPrngKey }));
      assert.deepEqual(referenceValues(peft), REFERENCE[ref], `key ${String(projectionPrngKey)}`);
    }
  }
});

test('a saved adapter whose key is changed to another with the same low 32 bits loads to the same model', () => {
  withTmp((dir) => {
    manualSeed(3);
    const peft = getPeftModel(new MLP(), veraConfig({ targetModules: ['lin0'], r: 8, projectionPrngKey: 123, saveProjection: false, initWeights: false }));
    peft.saveAdapter(dir);
    const file = join(dir, 'adapter_config.json');
    const text = readFileSync(file, 'utf8');
    assert.match(text, /"projection_prng_key": 123,/);
    writeFileSync(file, text.replace('"projection_prng_key": 123,', '"projection_prng_key": 18446744069414584443,')); // 2^64 - 2^32 + 123
    const loaded = PeftModel.fromPretrained(new MLP(), dir);
    peft.model.eval(); // no dropout
    loaded.model.eval();
    assert.equal(BigInt((loaded.peftConfig.get('default') as VeraConfig).projectionPrngKey), 2n ** 64n - 2n ** 32n + 123n);
    assert.deepEqual(referenceValues(loaded), REFERENCE['123']);
    const x = randomInput(3, 10, 11);
    assert.deepEqual(out(loaded, x), out(peft, x));
  });
});

test('_check_new_adapter_config compares the keys as integers: equal low bits are not enough, equal values in any form are', () => {
  const mlp = (key: number | bigint, more: Partial<VeraConfig> = {}): VeraConfig => veraConfig({ targetModules: ['lin1', 'lin2'], r: 4, projectionPrngKey: key, ...more });
  const a = getPeftModel(new MLP4(), mlp(0));
  throwsVera(() => a.addAdapter('x', mlp(2 ** 32)), /Vera PRNG initialisation key must be the same for all adapters\. Got config\.projection_prng_key=4294967296 but previous config had 0\./);
  throwsVera(() => a.addAdapter('x', mlp(2n ** 64n)), /projection_prng_key/);
  const b = getPeftModel(new MLP4(), mlp(-1));
  throwsVera(() => b.addAdapter('x', mlp(2n ** 64n - 1n)), /Got config\.projection_prng_key=18446744073709551615 but previous config had -1\./);
  assert.deepEqual([...a.peftConfig.keys()], ['default']);
  assert.deepEqual([...b.peftConfig.keys()], ['default']);
  // the same integer as a number and as a bigint is the same key
  const c = getPeftModel(new MLP4(), mlp(5));
  c.addAdapter('x', mlp(5n));
  const d = getPeftModel(new MLP4(), mlp(2n ** 53n + 1n));
  d.addAdapter('x', mlp(BigInt('9007199254740993')));
  for (const p of [c, d]) {
    const l1 = p.model.getSubmodule('lin1') as VeraLinear;
    assert.equal(l1.projections('x').A, l1.projections('default').A, 'the pair is shared');
  }
});

test('projection_prng_key must be an integer: a bool, a string or a fraction in adapter_config.json is refused', () => {
  // torch: "manual_seed expected a long, but got bool / str / float" (PEFT passes the key to it unchecked)
  for (const bad of [true, '5', 1.5]) {
    throwsVera(() => parseVeraConfig({ peft_type: 'VERA', target_modules: ['lin0'], projection_prng_key: bad }, 'adapter_config.json'), /projection_prng_key/);
  }
});

test('_check_new_adapter_config order: bias, then the key, then save_projection, then shapes and rank', () => {
  const base = (more: Partial<VeraConfig> = {}): VeraConfig => veraConfig({ targetModules: ['lin0'], r: 8, ...more });
  const p = getPeftModel(new MLP(), base({ bias: 'all' }));
  throwsVera(() => p.addAdapter('x', base({ bias: 'vera_only', projectionPrngKey: 1, saveProjection: false })), /supports only 1 adapter with bias/);
  throwsVera(() => p.addAdapter('x', base({ projectionPrngKey: 1, saveProjection: false })), /Vera PRNG initialisation key must be the same/);
  throwsVera(() => p.addAdapter('x', base({ projectionPrngKey: 1, r: 16 })), /Vera PRNG initialisation key must be the same/);
  throwsVera(() => p.addAdapter('x', base({ saveProjection: false, r: 16 })), /VeRA projection weights must be saved for all adapters or none/);
  throwsVera(() => p.addAdapter('x', veraConfig({ targetModules: ['lin1'], r: 16 })), /vera_A has a size of 10 but 20 or greater is required/);
  assert.deepEqual([...p.peftConfig.keys()], ['default']);
});
