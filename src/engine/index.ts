export * from './engine.js';
export { AdapterStore, type AdapterSource, type AdapterStoreStats, type AdapterLease, type VeraSpec } from './adapter-store.js';
export { RoutedLinear, type StepRoute } from './routed-linear.js';
