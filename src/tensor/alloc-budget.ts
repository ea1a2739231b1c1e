// A ceiling on the elements allocated while `fn` runs: building a model from config.json allocates
// every parameter before any is compared with the checkpoint, so a config that says n_layer: 1e9 or
// vocab_size: 1e12 would otherwise take all memory (or die in a RangeError) before the first check.
// Tensor.zeros / Tensor.fromArray charge the budget, and initializers check it before filling a
// host array, so an oversized model is refused at its first tensor past the limit.

interface Budget {
  readonly limit: number;
  used: number;
  /** Throws the caller's one-line error; `need` is what the allocation would have brought the total to. */
  readonly exceed: (need: number, limit: number) => never;
}

let active: Budget | null = null;

/** Run `fn` with at most `limit` float32 elements allocated through tensors; `exceed` throws the refusal. */
export function withAllocationBudget<T>(limit: number, exceed: (need: number, limit: number) => never, fn: () => T): T {
  const prev = active;
  active = { limit, used: 0, exceed };
  try {
    return fn();
  } finally {
    active = prev;
  }
}

/** Refuse `n` more elements if they would pass the active budget (does not charge them). */
export function checkAllocation(n: number): void {
  if (active !== null && active.used + n > active.limit) active.exceed(active.used + n, active.limit);
}

/** Charge `n` elements to the active budget, refusing them past its limit. */
export function chargeAllocation(n: number): void {
  if (active === null) return;
  checkAllocation(n);
  active.used += n;
}
