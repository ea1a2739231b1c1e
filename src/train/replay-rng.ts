// A batch-sampling Rng whose exact state fits in a few numbers. MT19937's 624-word state is private
// to tensor/rng.ts, so instead of copying it we count the 32-bit draws: (seed, draws) determines
// the state, and restoring re-seeds and replays that many draws (a few ns each, so even millions
// cost milliseconds). The one piece of state outside the generator is the Box–Muller spare that
// normal() keeps; we remember where the call that produced it started and regenerate it the
// same way.
import { Rng } from '../tensor/rng.js';
import { fail } from '../io/errors.js';

export interface RngState {
  seed: number;
  /** 32-bit draws taken since seeding. */
  draws: number;
  /** Draw count when the normal() call that left a cached spare began; null when none is cached. */
  spareFrom: number | null;
}

export class ReplayRng extends Rng {
  private initialSeed: number;
  private draws = 0;
  private spareFrom: number | null = null;

  constructor(seed: number) {
    super(seed);
    this.initialSeed = seed;
  }

  override seed(seed: number): void {
    super.seed(seed);
    // also runs inside super(): the field initializers then reset the counters, which is fine
    this.initialSeed = seed;
    this.draws = 0;
    this.spareFrom = null;
  }

  override nextUint32(): number {
    this.draws++;
    return super.nextUint32();
  }

  override normal(): number {
    const before = this.draws;
    const x = super.normal();
    // a call that drew generated a pair and cached the second; a call that did not consumed it
    this.spareFrom = this.draws !== before ? before : null;
    return x;
  }

  state(): RngState {
    return { seed: this.initialSeed, draws: this.draws, spareFrom: this.spareFrom };
  }

  static restore(s: RngState, source = 'rng state'): ReplayRng {
    const ok = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
    if (!ok(s.seed) || !ok(s.draws) || !(s.spareFrom === null || (ok(s.spareFrom) && s.spareFrom < s.draws))) {
      fail(`${source}: invalid rng state ${JSON.stringify(s)}`);
    }
    const r = new ReplayRng(s.seed);
    if (s.spareFrom !== null) {
      r.skip(s.spareFrom);
      r.normal();
    }
    if (r.draws > s.draws) fail(`${source}: invalid rng state ${JSON.stringify(s)}`);
    r.skip(s.draws - r.draws);
    return r;
  }

  private skip(n: number): void {
    for (let i = 0; i < n; i++) this.nextUint32();
  }
}
