// Library entry (Node): importing it registers the default backend. The browser entry is browser.ts.
import './io/node-preload.js';
import './backends/index.js';

export * from './tensor/index.js';
export {
  useBackend, backendNames, backendLoaderNames, activeBackend, registerBackend, registerBackendLoader, initBackend,
} from './backends/index.js';
export * from './nn/index.js';
export * from './models/index.js';
export * from './peft/index.js';
export * from './train/index.js';
export { VeraError } from './io/errors.js';
export { SafetensorsFile, writeSafetensors, serializeSafetensors, loadCheckpointTensors, loadCheckpointFromSource } from './io/safetensors.js';
// folders wherever they are: a URL, a page's files, a local folder (loaders given one return a Promise)
export {
  urlSource, blobSource, subSource, folderSource, readBytes, filesToBlobs, isFileSource,
  type FileSource, type BlobLike, type FileLike, type ResponseLike, type BytesLike,
} from './io/source.js';
export { loadFashionMnist, FASHION_MNIST_CLASSES } from './data/fashion-mnist.js';
export { loadChatTemplate, loadChatTemplateFrom, compileChatTemplate, chatTemplateFromConfig, plainChatTemplate, type ChatMessage, type ChatTemplate } from './data/chat-template.js';

export { loadTokenizer, createTokenizer, readTokenizerConfigFrom, type Tokenizer, type BatchEncoding, type Encoding, type TruncationStrategy } from './data/tokenizer.js';
// AutoTokenizer.fromPretrained(dir): the folder's tokenizer with its chat template; async, throws (rejects) when tokenizer.json is missing
export { AutoTokenizer, type PretrainedTokenizer } from './data/auto-tokenizer.js';
// causal-LM data: JSONL of {"text"} / {"input_ids"} lines, padding with −100 labels, epoch sampling, packing
export {
  readCausalLmJsonl, parseJsonlRecords, collateCausalLm, packSequences, EpochSampler, sequentialBatches, IGNORE_INDEX,
  type ReadJsonlOptions, type CausalLmData, type CausalLmBatch, type PackedBlocks, type JsonlRecord,
} from './data/jsonl.js';
export { readTextFile } from './data/text-file.js';
export { readGlueTsv, parseGlueTsv, GLUE_SPECS, type GlueData, type GlueExample } from './data/glue.js';
export { readE2eCsv, parseE2eCsv, groupReferences, encodeE2e, e2ePrompt, type E2eRow, type E2eGroup } from './data/e2e.js';
export { accuracy, f1, matthewsCorrelation, pearson, spearman, glueMetric, GLUE_TASKS, GLUE_METRICS, type GlueTask, type GlueMetricName } from './data/metrics.js';
export * from './engine/index.js';
// text in, text out: TextGenerator and pipeline('text-generation', model, tokenizer)
export * from './pipelines/index.js';
