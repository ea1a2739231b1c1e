export * from './text-generation.js';
