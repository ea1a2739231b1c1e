// Node only: gives the trainer's progress reporter cli-progress's bar for terminals (see bar-slot.ts).
// Imported by the CLI (so its bundles carry the bar), never by the library entries.
import { SingleBar } from 'cli-progress';
import { setProgressBarClass } from './bar-slot.js';

setProgressBarClass(SingleBar);
