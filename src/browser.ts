// Browser entry (the package's `browser` export condition): everything portable, without Node.
// Importing it registers the TypeScript backend; `await initBackend()` picks a faster one where one
// is registered. Folders are read through a FileSource (`urlSource`, `blobSource`): every loader
// that takes a folder path under Node takes a FileSource here and returns a Promise. The few path
// functions left in the modules below (saveAdapter(dir), savePretrained(dir), checkpoints, the
// dataset file readers) throw one line saying so in a page; `saveToBytes`/`saveToBlobs` save.
// Left out: the E2E CSV reader and the task builders (csv-parse needs Node's Buffer at import),
// Fashion-MNIST and the other file readers, the CLI and the server.
import './backends/index.js';

export * from './tensor/index.js';
export {
  useBackend, backendNames, backendLoaderNames, activeBackend, registerBackend, registerBackendLoader, initBackend,
} from './backends/index.js';
export type { BackendOptions } from './backends/index.js';
export * from './nn/index.js';
export * from './models/index.js';
export * from './peft/index.js';
// training (the task builders of train/tasks read data files and are left out: their E2E reader's
// csv-parse needs Node's Buffer as soon as it is imported)
export * from './train/optim.js';
export * from './train/schedule.js';
export * from './train/clip.js';
export * from './train/progress.js';
export * from './train/replay-rng.js';
export * from './train/trainer.js';
export type { HistoryEntry, TrainerState } from './train/checkpoint.js';
export * from './train/lm.js';
export * from './train/async-loop.js';
export * from './train/trainer-class.js';
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
export { accuracy, f1, matthewsCorrelation, pearson, spearman, glueMetric, GLUE_TASKS, GLUE_METRICS, type GlueTask, type GlueMetricName } from './data/metrics.js';
export * from './engine/index.js';
export * from './pipelines/index.js';
