export * from './tensor.js';
export * as F from './ops.js';
export * from './rng.js';
export type * from './kernels.js';
export { kernels, setKernels } from './device.js';
export { checkedKernels } from './kernel-checks.js';
export { withAllocationBudget, checkAllocation } from './alloc-budget.js';
export * from './quant.js';
export { argmaxOf } from './argmax.js';
