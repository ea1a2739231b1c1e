// The Node entry's static imports of the built-ins that portable modules fetch lazily (io/node.ts):
// they make those modules work on Node 20 releases that lack process.getBuiltinModule. The browser
// entry never imports this file.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import * as crypto from 'node:crypto';
import * as zlib from 'node:zlib';
import * as url from 'node:url';
import * as nodeModule from 'node:module';
import * as buffer from 'node:buffer';
import * as workerThreads from 'node:worker_threads';
import { registerNodeBuiltins } from './node.js';

registerNodeBuiltins({
  'node:fs': fs, 'node:path': path, 'node:os': os, 'node:crypto': crypto,
  'node:zlib': zlib, 'node:url': url, 'node:module': nodeModule, 'node:buffer': buffer,
  'node:worker_threads': workerThreads,
});
