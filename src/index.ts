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
