export * from './tensor.js';
export * as F from './ops.js';
export * from './rng.js';
export type * from './kernels.js';
export { kernels, setKernels } from './device.js';
