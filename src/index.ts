// Library entry: importing it registers the default backend.
import './backends/index.js';

export * from './tensor/index.js';
export { useBackend, backendNames } from './backends/index.js';
export * from './nn/index.js';
export * from './models/index.js';
export * from './peft/index.js';
export * from './train/index.js';
export { VeraError } from './io/errors.js';
export { SafetensorsFile, writeSafetensors, serializeSafetensors, loadCheckpointTensors } from './io/safetensors.js';
export { loadFashionMnist, FASHION_MNIST_CLASSES } from './data/fashion-mnist.js';
export { loadChatTemplate, compileChatTemplate, type ChatMessage, type ChatTemplate } from './data/chat-template.js';

export { loadTokenizer, createTokenizer, type Tokenizer, type BatchEncoding, type Encoding, type TruncationStrategy } from './data/tokenizer.js';
export { readGlueTsv, parseGlueTsv, GLUE_SPECS, type GlueData, type GlueExample } from './data/glue.js';
export { readE2eCsv, parseE2eCsv, groupReferences, encodeE2e, e2ePrompt, type E2eRow, type E2eGroup } from './data/e2e.js';
export { accuracy, f1, matthewsCorrelation, pearson, spearman, glueMetric, GLUE_TASKS, GLUE_METRICS, type GlueTask, type GlueMetricName } from './data/metrics.js';
export * from './engine/index.js';
