// Learning-rate multipliers, the lr_lambda functions of Hugging Face transformers'
// get_{constant,linear,cosine}_schedule_with_warmup (cosine with num_cycles = 0.5). `step` is the
// number of optimizer steps already taken, so as in the HF Trainer the first update uses
// multiplier(0) — zero when there is warmup.
import { fail } from '../io/errors.js';

export type ScheduleKind = 'constant' | 'linear' | 'cosine';

export const SCHEDULE_KINDS: readonly ScheduleKind[] = ['constant', 'linear', 'cosine'];

export function lrMultiplier(kind: ScheduleKind, step: number, warmupSteps: number, totalSteps: number): number {
  if (!(Number.isInteger(step) && step >= 0)) fail(`lr schedule: step must be a non-negative integer, got ${step}`);
  if (!(Number.isInteger(warmupSteps) && warmupSteps >= 0)) fail(`lr schedule: warmup steps must be a non-negative integer, got ${warmupSteps}`);
  if (!(Number.isInteger(totalSteps) && totalSteps >= 0)) fail(`lr schedule: total steps must be a non-negative integer, got ${totalSteps}`);
  if (step < warmupSteps) return step / Math.max(1, warmupSteps);
  switch (kind) {
    case 'constant':
      return 1;
    case 'linear':
      return Math.max(0, (totalSteps - step) / Math.max(1, totalSteps - warmupSteps));
    case 'cosine': {
      const progress = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress)));
    }
    default:
      return fail(`lr schedule: unknown kind '${String(kind)}' (expected ${SCHEDULE_KINDS.join(', ')})`);
  }
}
