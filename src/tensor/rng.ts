// Seeded random numbers. MT19937 is the generator PyTorch's CPU `torch.Generator` uses; `uniform`
// converts each 32-bit draw to a float the way PyTorch's uniform_ does for float32 (24 random bits
// scaled by 2^-24, mapped to [from, to) in double, then rounded to float32), so VeRA projections
// regenerated from a seed match PEFT's.

const N = 624;
const M = 397;

export class Rng {
  /** True for an Rng whose fills leave their output as it is (models' SkipInitRng): layers then allocate zeros without drawing. */
  readonly skipsInit: boolean = false;
  private readonly mt = new Uint32Array(N);
  private index = N;
  private spareNormal: number | null = null;

  constructor(seed: number | bigint) {
    this.seed(seed);
  }

  /**
   * Seed as torch.Generator.manual_seed does: any integer in [-2⁶³, 2⁶⁴) is taken modulo 2⁶⁴ (a
   * negative one as its two's complement) and MT19937 is seeded with its low 32 bits.
   */
  seed(seed: number | bigint): void {
    if (!isTorchSeed(seed)) throw new Error(`seed must be an integer in [-2^63, 2^64), got ${seed}`);
    const mt = this.mt;
    mt[0] = typeof seed === 'bigint' ? Number(BigInt.asUintN(32, seed)) : seed >>> 0;
    for (let i = 1; i < N; i++) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = (Math.imul(prev, 1812433253) + i) >>> 0; // 32-bit wrap-around, as in the reference
    }
    this.index = N;
    this.spareNormal = null;
  }

  private twist(): void {
    const mt = this.mt;
    for (let i = 0; i < N; i++) {
      const y = (mt[i] & 0x80000000) | (mt[(i + 1) % N] & 0x7fffffff);
      let v = mt[(i + M) % N] ^ (y >>> 1);
      if (y & 1) v ^= 0x9908b0df;
      mt[i] = v >>> 0;
    }
    this.index = 0;
  }

  nextUint32(): number {
    if (this.index >= N) this.twist();
    let y = this.mt[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** Uniform double in [0, 1) from 53 random bits. */
  random(): number {
    const a = this.nextUint32() >>> 5;
    const b = this.nextUint32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** One float32 value uniform in [from, to), as torch.Tensor.uniform_ draws it. */
  uniform(from: number, to: number): number {
    const x = (this.nextUint32() & 0xffffff) / 16777216;
    return Math.fround(x * (to - from) + from);
  }

  fillUniform(out: Float32Array, from: number, to: number): Float32Array {
    for (let i = 0; i < out.length; i++) out[i] = this.uniform(from, to);
    return out;
  }

  /** Standard normal (Box–Muller). */
  normal(): number {
    if (this.spareNormal !== null) {
      const s = this.spareNormal;
      this.spareNormal = null;
      return s;
    }
    let u = 0;
    while (u === 0) u = this.random();
    const v = this.random();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spareNormal = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  fillNormal(out: Float32Array, mean = 0, std = 1): Float32Array {
    for (let i = 0; i < out.length; i++) out[i] = mean + std * this.normal();
    return out;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.random() * n);
  }

  /** In-place Fisher–Yates shuffle. */
  shuffle<T>(xs: T[] | Int32Array): void {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = xs[i];
      xs[i] = xs[j];
      xs[j] = t;
    }
  }
}

/** Whether torch.Generator.manual_seed accepts `seed`: an integer in [-2⁶³, 2⁶⁴). */
export function isTorchSeed(seed: number | bigint): boolean {
  if (typeof seed === 'bigint') return seed >= -(2n ** 63n) && seed < 2n ** 64n;
  return Number.isInteger(seed) && seed >= -(2 ** 63) && seed < 2 ** 64;
}

let globalRng = new Rng(0);

/** Reseed the default generator (dropout, default inits). */
export function manualSeed(seed: number | bigint): void {
  globalRng = new Rng(seed);
}

export function defaultRng(): Rng {
  return globalRng;
}
