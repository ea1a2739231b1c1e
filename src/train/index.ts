export * from './optim.js';
export * from './schedule.js';
export * from './clip.js';
export * from './progress.js';
export * from './replay-rng.js';
export * from './checkpoint.js';
export * from './trainer.js';
export * from './lm.js';
