// Library entry (Node): everything the browser entry (browser.ts) exports, plus what reads and
// writes local files. Importing it registers the default backend.
import './io/node-preload.js';

export * from './browser.js';
// the Node-only parts: checkpoints and the task builders, folder sources, file writers and the
// dataset file readers
export * from './train/checkpoint.js';
export * from './train/tasks/index.js';
export { writeSafetensors, loadCheckpointTensors } from './io/safetensors.js';
export { folderSource } from './io/source.js';
export { loadFashionMnist, FASHION_MNIST_CLASSES } from './data/fashion-mnist.js';
export { loadChatTemplate } from './data/chat-template.js';
export { readCausalLmJsonl } from './data/jsonl.js';
export { readTextFile } from './data/text-file.js';
export { readGlueTsv } from './data/glue.js';
export { readE2eCsv, parseE2eCsv, groupReferences, encodeE2e, e2ePrompt, type E2eRow, type E2eGroup } from './data/e2e.js';
