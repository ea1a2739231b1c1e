// Which layers a config targets when it names none (PEFT's per-model_type defaults), and PEFT's
// 'all-linear' shorthand. Both work on a list of layer paths, so the same rules serve a built model
// and a model described by its config.json alone (`vera inspect --config`).
import { VeraError } from '../io/errors.js';

/** PEFT's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, keyed by config.json's model_type. */
export const LORA_TARGET_MODULES: Readonly<Record<string, readonly string[]>> = {
  t5: ['q', 'v'],
  mt5: ['q', 'v'],
  bart: ['q_proj', 'v_proj'],
  gpt2: ['c_attn'],
  bloom: ['query_key_value'],
  opt: ['q_proj', 'v_proj'],
  gptj: ['q_proj', 'v_proj'],
  gpt_neox: ['query_key_value'],
  gpt_neo: ['q_proj', 'v_proj'],
  bert: ['query', 'value'],
  roberta: ['query', 'value'],
  'xlm-roberta': ['query', 'value'],
  electra: ['query', 'value'],
  'deberta-v2': ['query_proj', 'value_proj'],
  deberta: ['in_proj'],
  llama: ['q_proj', 'v_proj'],
  gpt_bigcode: ['c_attn'],
  falcon: ['query_key_value'],
  mistral: ['q_proj', 'v_proj'],
  mixtral: ['q_proj', 'v_proj'],
  phi: ['q_proj', 'v_proj', 'fc1', 'fc2'],
  gemma: ['q_proj', 'v_proj'],
  gemma2: ['q_proj', 'v_proj'],
  qwen2: ['q_proj', 'v_proj'],
  qwen3: ['q_proj', 'v_proj'],
};

/**
 * PEFT's TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING (LoRA's, with phi on q/v only), plus
 * entries PEFT lacks: vit (the paper's ViT runs adapt query and value) and this library's image
 * models, whose hidden layers are the natural targets.
 */
export const VERA_TARGET_MODULES: Readonly<Record<string, readonly string[]>> = {
  ...LORA_TARGET_MODULES,
  phi: ['q_proj', 'v_proj'],
  vit: ['query', 'value'],
};

const DEFAULTS: Readonly<Record<string, Readonly<Record<string, readonly string[]>>>> = {
  VERA: VERA_TARGET_MODULES,
  LORA: { ...LORA_TARGET_MODULES, vit: ['query', 'value'] },
};

/** The default target_modules of `peftType` for `modelType`; a one-line error where there is none. */
export function defaultTargetModules(peftType: string, modelType: string | null): string[] {
  const table = DEFAULTS[peftType];
  const names = table && modelType !== null ? table[modelType] : undefined;
  if (names === undefined) {
    const which = modelType === null ? 'this model (it has no model_type)' : `model_type "${modelType}"`;
    throw new VeraError(`target_modules: ${peftType} has no default target modules for ${which}; give them with --target-modules (or targetModules)`);
  }
  return [...names];
}

/** PEFT's shorthand for "every linear layer but the output layer". */
export const ALL_LINEAR = 'all-linear';

/** 'all-linear' as PEFT's string, or as a one-name list (what a comma-list flag gives). */
export function isAllLinear(t: string[] | string | null): boolean {
  const one = Array.isArray(t) && t.length === 1 ? t[0] : t;
  return typeof one === 'string' && one.toLowerCase() === ALL_LINEAR;
}

/** Heads PEFT leaves out of all-linear for task_type SEQ_CLS (SEQ_CLS_HEAD_NAMES), and adds to modules_to_save. */
export const SEQ_CLS_HEAD_NAMES = ['score', 'classifier'] as const;

/**
 * PEFT's _maybe_include_all_linear_layers: every linear (Linear or Conv1D) layer path except the
 * output layer: the model's output embeddings (lm_head of a causal LM) or, for task_type SEQ_CLS,
 * a root-level `score`/`classifier`. `outputLayer` is the path of the output embeddings, or null.
 */
export function allLinearTargets(linearPaths: readonly string[], outputLayer: string | null, taskType: string | null): string[] {
  const exclude = new Set<string>();
  if (outputLayer !== null) exclude.add(outputLayer);
  else if (taskType === 'SEQ_CLS') {
    const head = SEQ_CLS_HEAD_NAMES.find((n) => linearPaths.some((p) => p === n || p.startsWith(`${n}.`)));
    if (head !== undefined) exclude.add(head);
  }
  return linearPaths.filter((p) => !exclude.has(p));
}

/** PEFT applies findMinimalTargetModules to target lists at least this long (MIN_TARGET_MODULES_FOR_OPTIMIZATION). */
export const MIN_TARGET_MODULES_FOR_OPTIMIZATION = 20;

/**
 * PEFT's _find_minimal_target_modules: the fewest dotted suffixes that still match every target and
 * no other module name, chosen in PEFT's order (items sorted by their suffix lists, shortest suffix
 * first), so a long list (all-linear's paths) condenses to what PEFT saves. Returns the targets as
 * they are when no suffix separates them.
 */
export function findMinimalTargetModules(targetModules: readonly string[], otherModuleNames: Iterable<string>): string[] {
  const targets = [...new Set(targetModules)];
  if (targets.length === 0) throw new VeraError('target_modules should be a list or set of strings.');
  if (targets.includes('')) throw new VeraError('target_modules should not contain an empty string.');
  const others = new Set(otherModuleNames);
  if (targets.some((t) => others.has(t))) throw new VeraError('target_modules and other_module_names contain common elements');
  const suffixes = (s: string): string[] => {
    const parts = s.split('.');
    return parts.map((_, i) => parts.slice(i).join('.')).reverse();
  };
  const otherSuffixes = new Set([...others].flatMap(suffixes));
  const compareLists = (a: string[], b: string[]): number => {
    for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
    return a.length - b.length;
  };
  const items = targets.map((t) => [t, suffixes(t)] as const).sort((x, y) => compareLists([...x[1]], [...y[1]]));
  const required: string[] = [];
  for (const [item, sfx] of items) {
    for (const s of sfx) {
      if (required.includes(s) || otherSuffixes.has(s)) continue;
      if (!required.some((r) => item.endsWith(`.${r}`))) required.push(s);
      break;
    }
  }
  return required.length === 0 ? targets : required.sort();
}
