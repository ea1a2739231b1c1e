export * from './gpt2.js';
export * from './cnn.js';
export * from './mlp.js';
export * from './auto.js';
export { Activation, ACTIVATION_NAMES, type ActivationName } from './activations.js';
export { SkipInitRng, type TensorLayer } from './common.js';
export { type JsonObject } from './config.js';
