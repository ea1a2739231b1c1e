// RoBERTa as in Hugging Face's modeling_roberta.py: BERT's encoder (bert.ts) with positions counted
// from padding_idx + 1 over the non-padding tokens, no pooler in the classification model, and a
// head of its own on the <s> token. Module paths are Hugging Face's (`roberta.encoder.layer.0…`).
import { F, Tensor, defaultRng, type Rng } from '../tensor/index.js';
import { Dropout, Linear, Module, type Embedding } from '../nn/index.js';
import { SkipInitRng, type TensorLayer } from './common.js';
import { BertEmbeddings, BertModel, type BertConfig, type BertForwardOptions, type EncoderInitOptions } from './bert.js';
import { encoderCheckpointPath, firstToken, initEncoderWeights, sequenceClassificationLoss } from './encoder.js';

export class RobertaEmbeddings extends BertEmbeddings {
  /** RoBERTa's position table has padding_idx too. */
  override paddingTables(): [string, Embedding][] {
    return [...super.paddingTables(), ['position_embeddings', this.position_embeddings]];
  }

  /**
   * Hugging Face's create_position_ids_from_input_ids: the i-th non-padding token of a row sits at
   * padding_idx + i (from 1); padding tokens sit at padding_idx.
   */
  override positionIds(inputIds: Int32Array, shape: readonly [number, number]): Int32Array {
    const [batch, seq] = shape;
    const pad = this.config.padTokenId!;
    const out = new Int32Array(batch * seq);
    for (let b = 0; b < batch; b++) {
      let count = 0;
      for (let t = 0; t < seq; t++) {
        const i = b * seq + t;
        out[i] = inputIds[i] === pad ? pad : pad + ++count;
      }
    }
    return out;
  }
}

/** RobertaModel: BertModel with RoBERTa's embeddings. */
export class RobertaModel extends BertModel {
  constructor(config: BertConfig, rng: Rng, opts: { addPoolingLayer?: boolean } = {}) {
    super(config, rng, { ...opts, embeddings: new RobertaEmbeddings(config, rng) });
  }
}

/** dropout → dense → tanh → dropout → out_proj on the <s> token. */
export class RobertaClassificationHead extends Module {
  dense: TensorLayer;
  dropout: Dropout;
  out_proj: TensorLayer;

  constructor(config: BertConfig, rng: Rng) {
    super();
    this.dense = this.addModule('dense', new Linear(config.hiddenSize, config.hiddenSize, { rng }));
    this.dropout = this.addModule('dropout', new Dropout(config.classifierDropout ?? config.hiddenDropoutProb));
    this.out_proj = this.addModule('out_proj', new Linear(config.hiddenSize, config.numLabels, { rng }));
  }

  forward(hidden: Tensor): Tensor {
    const x = F.tanh(this.dense.forward(this.dropout.forward(firstToken(hidden))));
    return this.out_proj.forward(this.dropout.forward(x));
  }
}

/** Hugging Face's RobertaForSequenceClassification. */
export class RobertaForSequenceClassification extends Module {
  readonly modelType = 'roberta' as const;
  readonly config: BertConfig;
  roberta: RobertaModel;
  classifier: RobertaClassificationHead;

  constructor(config: BertConfig, opts: EncoderInitOptions = {}) {
    super();
    if (config.modelType !== 'roberta') throw new Error(`RobertaForSequenceClassification: config is for ${config.modelType}`);
    this.config = config;
    const zeros = new SkipInitRng(); // each weight is drawn once, by initWeights
    this.roberta = this.addModule('roberta', new RobertaModel(config, zeros, { addPoolingLayer: false }));
    this.classifier = this.addModule('classifier', new RobertaClassificationHead(config, zeros));
    if (opts.init !== false) this.initWeights(opts.rng ?? defaultRng());
  }

  /** Logits (batch, num_labels). */
  forward(inputIds: Int32Array, shape: readonly [number, number], opts: BertForwardOptions = {}): Tensor {
    return this.classifier.forward(this.roberta.forward(inputIds, shape, opts));
  }

  /** Hugging Face's loss for these logits (see sequenceClassificationLoss). */
  loss(logits: Tensor, labels: Int32Array | Float32Array): Tensor {
    return sequenceClassificationLoss(logits, labels, this.config);
  }

  initWeights(rng: Rng, only: (path: string) => boolean = () => true): void {
    initEncoderWeights(this, this.config.initializerRange, rng, only);
    this.roberta.embeddings.zeroPaddingRows('roberta.embeddings', only);
  }
}

// ---------------------------------------------------------------- checkpoints

/** Checkpoint keys → RobertaForSequenceClassification paths; the MLM head and the pooler are unused. */
export const robertaCheckpointPath = encoderCheckpointPath('roberta', /^lm_head\.|^(roberta\.)?pooler\.|^(roberta\.)?embeddings\.position_ids$/);

/** What a base checkpoint (roberta-base) lacks: the classification head. */
export const robertaNewlyInitialized = (path: string): boolean => path.startsWith('classifier.');
