// Browser entry (the package's `browser` export condition): everything portable, without Node.
// Importing it registers the TypeScript backend; `await initBackend()` picks a faster one where one
// is registered. Folders are read through a FileSource (`urlSource`, `blobSource`): every loader
// that takes a folder path under Node takes a FileSource here and returns a Promise. The few path
// functions left in the modules below (saveAdapter(dir), savePretrained(dir), checkpoints, the
// dataset file readers) throw one line saying so in a page; `saveToBytes`/`saveToBlobs` save.
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
export { SafetensorsFile, serializeSafetensors, loadCheckpointFromSource } from './io/safetensors.js';
export {
  urlSource, blobSource, subSource, readBytes, filesToBlobs, isFileSource,
  type FileSource, type BlobLike, type FileLike, type ResponseLike, type BytesLike,
} from './io/source.js';
export { compileChatTemplate, chatTemplateFromConfig, plainChatTemplate, loadChatTemplateFrom, type ChatMessage, type ChatTemplate } from './data/chat-template.js';
export { loadTokenizer, createTokenizer, readTokenizerConfigFrom, type Tokenizer, type BatchEncoding, type Encoding, type TruncationStrategy } from './data/tokenizer.js';
export { AutoTokenizer, type PretrainedTokenizer } from './data/auto-tokenizer.js';
export {
  parseJsonlRecords, collateCausalLm, packSequences, EpochSampler, sequentialBatches, IGNORE_INDEX,
  type ReadJsonlOptions, type CausalLmData, type CausalLmBatch, type PackedBlocks, type JsonlRecord,
} from './data/jsonl.js';
export { parseGlueTsv, GLUE_SPECS, type GlueData, type GlueExample } from './data/glue.js';
export { parseE2eCsv, groupReferences, encodeE2e, e2ePrompt, type E2eRow, type E2eGroup } from './data/e2e.js';
export { accuracy, f1, matthewsCorrelation, pearson, spearman, glueMetric, GLUE_TASKS, GLUE_METRICS, type GlueTask, type GlueMetricName } from './data/metrics.js';
export * from './engine/index.js';
export * from './pipelines/index.js';
