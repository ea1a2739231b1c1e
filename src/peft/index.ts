export * from './config.js';
export * from './tuner.js';
export * from './peft_model.js';
export * from './vera/config.js';
export { VeraLinear, type VeraProjections } from './vera/layer.js';
export { vera, generateProjections } from './vera/model.js';
export * from './lora/config.js';
export { LoraLinear } from './lora/layer.js';
export { lora } from './lora/model.js';
