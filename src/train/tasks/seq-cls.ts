// The sequence-classification task: BERT / RoBERTa on a GLUE task's TSV files, the head sized for
// the task (freshly initialized when the checkpoint's does not fit, as transformers' run_glue);
// evaluation: loss and the task's GLUE metric.
import { path } from '../../io/node.js';
import { GLUE_SPECS, readGlueTsv, type GlueData, type GlueTask } from '../../data/glue.js';
import { sequentialBatches } from '../../data/jsonl.js';
import { glueMetric } from '../../data/metrics.js';
import { loadTokenizer } from '../../data/tokenizer.js';
import { readJsonFile } from '../../io/atomic.js';
import { fail } from '../../io/errors.js';
import { loadCheckpointTensors } from '../../io/safetensors.js';
import {
  bertCheckpointPath, bertNewlyInitialized, loadCheckpointInto, modelFromConfig, robertaCheckpointPath, robertaNewlyInitialized,
  type BertForSequenceClassification, type RobertaForSequenceClassification,
} from '../../models/index.js';
import { labelSmoothedCrossEntropy } from '../../nn/index.js';
import { F, defaultRng, type Tensor } from '../../tensor/index.js';
import { DEFAULT_SEQ_LEN, inEvalMode, type PreparedTask, type TaskOptions } from './common.js';


type SeqClsModel = BertForSequenceClassification | RobertaForSequenceClassification;
const ENCODER_LOADING = {
  bert: { checkpointPath: bertCheckpointPath, newlyInitialized: bertNewlyInitialized },
  roberta: { checkpointPath: robertaCheckpointPath, newlyInitialized: robertaNewlyInitialized },
} as const;

/**
 * Loads a BERT/RoBERTa folder for a GLUE task as transformers' run_glue does
 * (AutoConfig.from_pretrained(num_labels=…)): config.json's label fields are set to the task's, and
 * a head the checkpoint lacks or stores for another label count is freshly initialized.
 */
export function loadForTask(dir: string, task: GlueTask, log: (line: string) => void): SeqClsModel {
  const configFile = path.join(dir, 'config.json');
  const json = readJsonFile(configFile, 'model config') as Record<string, unknown>;
  const type = json['model_type'];
  if (type !== 'bert' && type !== 'roberta') {
    const hint = type === 'gpt2' ? ' (use --task causal-lm)' : type === 'vit' || type === 'vera_cnn' || type === 'vera_mlp' ? ' (use --task img-cls)' : '';
    fail(`${configFile}: model_type ${JSON.stringify(type)} is not a sequence classifier; --task seq-cls trains bert or roberta${hint}`);
  }
  const spec = GLUE_SPECS[task];
  const names = spec.labelNames ?? ['score'];
  const patched = {
    ...json,
    num_labels: names.length,
    id2label: Object.fromEntries(names.map((n, i) => [String(i), n])),
    label2id: Object.fromEntries(names.map((n, i) => [n, i])),
    problem_type: spec.labelNames === null ? 'regression' : 'single_label_classification',
    finetuning_task: task,
  };
  const ckpt = loadCheckpointTensors(dir);
  const model = modelFromConfig(patched, configFile, { init: false, checkpoint: ckpt }) as SeqClsModel;
  const { checkpointPath, newlyInitialized } = ENCODER_LOADING[type];
  const info = loadCheckpointInto(model, ckpt, checkpointPath, newlyInitialized);
  if (info.newlyInitialized.length > 0) {
    const fresh = new Set(info.newlyInitialized.map((p) => p.path));
    model.initWeights(defaultRng(), (p) => fresh.has(p));
    log(`vera: newly initialized ${[...fresh].join(', ')} for ${task} (${names.length} label${names.length > 1 ? 's' : ''}): trained with the adapter`);
  }
  model.eval();
  return model;
}

/** One tokenized classification example: token ids, segment ids, and the label index (or score, for regression). */
export interface ClassificationExample {
  ids: number[];
  typeIds: number[];
  label: number;
}

/** A padded batch of classification examples, as BERT/RoBERTa's forward takes it. */
export interface ClassificationBatch {
  inputIds: Int32Array;
  shape: [number, number];
  attentionMask: Float32Array;
  tokenTypeIds: Int32Array;
  /** Class indices, or scores (Float32Array) for a regression head. */
  labels: Int32Array | Float32Array;
}

/**
 * The classification collator: right-padded with `padId` to the longest row, attention mask 0 on
 * padding, segment ids kept only when the model has more than one token type.
 */
export function classificationCollator(opts: { padId: number; tokenTypes?: boolean; regression?: boolean }): (rows: readonly ClassificationExample[]) => ClassificationBatch {
  return (rows) => {
    const seq = Math.max(...rows.map((r) => r.ids.length));
    const inputIds = new Int32Array(rows.length * seq).fill(opts.padId);
    const attentionMask = new Float32Array(rows.length * seq);
    const tokenTypeIds = new Int32Array(rows.length * seq);
    rows.forEach((r, b) => {
      inputIds.set(r.ids, b * seq);
      if (opts.tokenTypes) tokenTypeIds.set(r.typeIds, b * seq);
      attentionMask.fill(1, b * seq, b * seq + r.ids.length);
    });
    const labels = opts.regression ? Float32Array.from(rows, (r) => r.label) : Int32Array.from(rows, (r) => r.label);
    return { inputIds, shape: [rows.length, seq], attentionMask, tokenTypeIds, labels };
  };
}

export async function prepareSeqCls(o: TaskOptions): Promise<PreparedTask> {
  if (o.glueTask === undefined) fail('--task seq-cls needs --glue-task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte or wnli)');
  const task = o.glueTask;
  const model = loadForTask(o.model, task, o.log);
  const tokenizer = await loadTokenizer(o.model);
  if (tokenizer === null) fail(`--task seq-cls needs a tokenizer.json in ${o.model}`);
  const c = model.config;
  // RoBERTa's positions start after padding_idx, so it has two positions fewer
  const maxPositions = c.modelType === 'roberta' ? c.maxPositionEmbeddings - (c.padTokenId ?? 1) - 1 : c.maxPositionEmbeddings;
  if (o.seqLen !== undefined && o.seqLen > maxPositions) fail(`--seq-len ${o.seqLen} exceeds the model's ${maxPositions} positions`);
  const seqLen = o.seqLen ?? Math.min(DEFAULT_SEQ_LEN, maxPositions, tokenizer.modelMaxLength ?? Infinity);
  const padId = tokenizer.specialTokens.pad?.id ?? c.padTokenId ?? 0;
  const useTypes = c.typeVocabSize > 1;

  const read = (file: string): { data: GlueData; examples: ClassificationExample[]; truncated: number } => {
    const data = readGlueTsv(file, task);
    if (!data.hasLabels) fail(`${file}: has no "${GLUE_SPECS[task].label}" column (a test split?); training and evaluation need labels`);
    let truncated = 0;
    const examples = data.examples.map((ex) => {
      const full = tokenizer.encodeWithTypes(ex.textA, ex.textB);
      const enc = full.ids.length > seqLen ? (truncated++, tokenizer.encodeWithTypes(ex.textA, ex.textB, { maxLength: seqLen })) : full;
      const bad = enc.ids.find((id) => id >= c.vocabSize);
      if (bad !== undefined) fail(`${file}:${ex.line}: ${tokenizer.file} gave token id ${bad}, outside the model's vocabulary [0, ${c.vocabSize})`);
      return { ids: enc.ids, typeIds: enc.typeIds, label: ex.label! };
    });
    return { data, examples, truncated };
  };
  const train = read(o.data);
  const evalSet = o.evalData !== undefined ? read(o.evalData) : null;
  const regression = GLUE_SPECS[task].labelNames === null;
  if (regression && o.labelSmoothing) fail(`--label-smoothing is for classification; --glue-task ${task} is a regression`);

  const collate = classificationCollator({ padId, tokenTypes: useTypes, regression });
  const forward = (batch: ClassificationBatch): Tensor => model.forward(batch.inputIds, batch.shape, { attentionMask: batch.attentionMask, tokenTypeIds: batch.tokenTypeIds });

  const evaluate = (set: { examples: ClassificationExample[] }) => (): Record<string, number> =>
    inEvalMode(model, () => {
      const predictions: number[] = [];
      let lossSum = 0;
      for (const rows of sequentialBatches(set.examples, o.batchSize)) {
        const batch = collate(rows);
        const logits = forward(batch);
        lossSum += model.loss(logits, batch.labels).item() * rows.length;
        if (regression) predictions.push(...logits.toFloat32Array());
        else predictions.push(...F.argmax(logits));
      }
      const metrics = glueMetric(task, predictions, set.examples.map((e) => e.label));
      return { loss: lossSum / set.examples.length, ...metrics };
    });

  const dataLog = (s: ReturnType<typeof read>): Record<string, unknown> => ({ file: s.data.file, format: 'glue', glueTask: task, examples: s.examples.length, truncated: s.truncated });
  return {
    model,
    peftTaskType: 'SEQ_CLS',
    headModules: ['classifier'],
    size: train.examples.length,
    unit: 'samples',
    loss(indices) {
      const rows = indices.map((i) => train.examples[i]);
      const batch = collate(rows);
      const logits = forward(batch);
      // single-label classification's loss is cross-entropy, which label smoothing generalizes
      const loss = o.labelSmoothing ? labelSmoothedCrossEntropy(logits, Int32Array.from(rows, (r) => r.label), o.labelSmoothing) : model.loss(logits, batch.labels);
      return { loss, items: rows.length };
    },
    evaluate: evalSet ? evaluate(evalSet) : null,
    seqLen,
    pretrained: null,
    packed: false,
    counts: { examples: train.examples.length, skipped: 0, truncated: train.truncated, evalExamples: evalSet?.examples.length ?? null },
    dataLog: dataLog(train),
    evalDataLog: evalSet ? dataLog(evalSet) : null,
  };
}

