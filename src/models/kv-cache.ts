// The key/value cache of incremental decoding: each attention layer keeps the keys and values of
// every position seen so far (in place, in buffers grown by doubling), so a step feeds only the new
// tokens and attends to the whole past.
// Queries of a step sit at positions past..past+T-1; the fused attention kernel takes that offset
// (`causalOffset`, tk - tq by default), so the causal mask stays right without re-running the prefix.
import { F, Tensor, kernels } from '../tensor/index.js';

/**
 * One layer's cache: keys and values in buffers (batch, kvHeads, capacity, headDim) whose first
 * `length` positions are filled, grown by doubling; null before the first step. A step writes its
 * keys and values in place, so nothing copied per step grows with the sequence.
 */
export class LayerKV {
  key: Tensor | null = null;
  value: Tensor | null = null;
  private filled = 0;

  /** Positions held. */
  get length(): number {
    return this.filled;
  }

  /**
   * Appends this step's keys and values (batch, kvHeads, T, headDim); returns the buffers and the
   * positions they now hold (attend with `kvLength: length`).
   */
  update(key: Tensor, value: Tensor): { key: Tensor; value: Tensor; length: number } {
    const [batch, kvHeads, t, headDim] = key.shape;
    // cached tensors never carry a tape: generation runs under noGrad, and a cache kept across a
    // training step would otherwise hold every earlier graph alive
    this.reserve(batch, kvHeads, this.filled + t, headDim);
    const cap = this.key!.shape[2];
    const strides = [kvHeads * cap * headDim, cap * headDim, headDim, 1];
    kernels().scatter(key.storage, key.shape, strides, this.filled * headDim, this.key!.storage, false);
    kernels().scatter(value.storage, value.shape, strides, this.filled * headDim, this.value!.storage, false);
    this.filled += t;
    return { key: this.key!, value: this.value!, length: this.filled };
  }

  private reserve(batch: number, kvHeads: number, positions: number, headDim: number): void {
    const cap = this.key?.shape[2] ?? 0;
    if (this.key && this.key.shape[0] !== batch) throw new Error(`KV cache: it holds ${this.key.shape[0]} rows, this step has ${batch}`);
    if (positions <= cap) return;
    const grown = Math.max(positions, 2 * cap, 16);
    const k = Tensor.zeros([batch, kvHeads, grown, headDim]);
    const v = Tensor.zeros([batch, kvHeads, grown, headDim]);
    if (this.key && this.value && this.filled > 0) {
      const shape = [batch, kvHeads, this.filled, headDim];
      const from = [kvHeads * cap * headDim, cap * headDim, headDim, 1];
      const to = [kvHeads * grown * headDim, grown * headDim, headDim, 1];
      for (const [src, dst] of [[this.key, k], [this.value, v]] as const) {
        const held = Tensor.zeros(shape);
        kernels().gather(src.storage, shape, from, 0, held.storage);
        kernels().scatter(held.storage, shape, to, 0, dst.storage, false);
      }
    }
    this.key = k;
    this.value = v;
  }

  /** Keeps batch rows `rows` (in that order, repeats allowed): beam search's reordering of the past. */
  selectRows(rows: Int32Array): void {
    if (this.key === null || this.value === null) return;
    this.key = selectBatchRows(this.key, rows);
    this.value = selectBatchRows(this.value, rows);
  }
}

/** Rows of dimension 0 of `x` picked by `rows`: an embedding lookup over x viewed as (batch, rest). */
function selectBatchRows(x: Tensor, rows: Int32Array): Tensor {
  const [batch, ...rest] = x.shape;
  const flat = F.reshape(x, [batch, rest.reduce((a, b) => a * b, 1)]);
  return F.reshape(F.embedding(flat, rows), [rows.length, ...rest]);
}

/** Per-layer caches of one decoder, created as layers ask for them. */
export class KVCache {
  private readonly layers: LayerKV[] = [];

  layer(index: number): LayerKV {
    while (this.layers.length <= index) this.layers.push(new LayerKV());
    return this.layers[index];
  }

  /** Keeps batch rows `rows` of every layer (beam search: each beam continues the past of the beam it extends). */
  selectRows(rows: Int32Array): void {
    for (const layer of this.layers) layer.selectRows(rows);
  }

  /** Positions already cached (those of layer 0, which every forward fills first). */
  get length(): number {
    return this.layers[0]?.length ?? 0;
  }
}

/**
 * One sequence's keys and values in one layer for a ragged batch: preallocated position-major
 * (capacity, kvHeads, headDim) and grown by doubling, so a step appends in place and copies
 * nothing that grows with the sequence.
 */
export class SequenceLayerKV {
  key: Tensor | null = null;
  value: Tensor | null = null;
  /** Positions held. */
  length = 0;

  /** Room for `positions` positions (the first `length` kept). */
  reserve(positions: number, kvHeads: number, headDim: number): void {
    const capacity = this.key?.shape[0] ?? 0;
    if (positions <= capacity) return;
    const grown = Math.max(positions, 2 * capacity, 16);
    const k = Tensor.zeros([grown, kvHeads, headDim]);
    const v = Tensor.zeros([grown, kvHeads, headDim]);
    if (this.key && this.value && this.length > 0) {
      const used = this.length * kvHeads * headDim;
      // device copies (no host round trip, which a GPU backend cannot make synchronously)
      kernels().gather(this.key.storage, [used], [1], 0, k.storage);
      kernels().gather(this.value.storage, [used], [1], 0, v.storage);
    }
    this.key = k;
    this.value = v;
  }
}

/** One sequence's cache across layers, for the ragged batches of the multi-adapter engine. */
export class SequenceCache {
  private readonly layers: SequenceLayerKV[] = [];

  layer(index: number): SequenceLayerKV {
    while (this.layers.length <= index) this.layers.push(new SequenceLayerKV());
    return this.layers[index];
  }

  /** Positions already cached. */
  get length(): number {
    return this.layers[0]?.length ?? 0;
  }
}

/**
 * One layer of a ragged batch: several sequences run as one row of Σ lengths tokens (sequence s
 * owns `lengths[s]` consecutive tokens), each attending only to its own cache. The linear layers
 * see every token at once (one read of the weights for the whole batch); attention runs per
 * sequence in one kernel call, so sequences of any lengths, joining at any step, need no padding.
 */
export class RaggedLayerKV {
  constructor(
    /** Per sequence, its tokens in this call. */
    readonly lengths: Int32Array,
    readonly caches: readonly SequenceLayerKV[],
  ) {}

  /**
   * query (1, T, heads, headDim), key and value (1, T, kvHeads, headDim), position-major; appends
   * each sequence's keys and values to its cache and returns (1, T, heads, headDim).
   */
  attend(query: Tensor, key: Tensor, value: Tensor, scale: number): Tensor {
    const [kvHeads, headDim] = key.shape.slice(-2);
    const past = Int32Array.from(this.caches, (c) => c.length);
    this.caches.forEach((c, s) => c.reserve(past[s] + this.lengths[s], kvHeads, headDim));
    const out = F.raggedAttention(query, key, value, this.caches.map((c) => c.key!), this.caches.map((c) => c.value!), this.lengths, past, scale);
    this.caches.forEach((c, s) => (c.length += this.lengths[s]));
    return out;
  }
}

/** The caches of the sequences of a ragged batch, in the order of their tokens (see RaggedLayerKV). */
export class RaggedKVCache {
  /** Per sequence, its tokens in this call (handed to every layer as is). */
  readonly lengths: Int32Array;

  constructor(
    lengths: readonly number[],
    readonly caches: readonly SequenceCache[],
  ) {
    if (lengths.length !== caches.length || lengths.some((n) => !(Number.isInteger(n) && n >= 1))) {
      throw new Error('RaggedKVCache: one positive token count per sequence cache');
    }
    this.lengths = Int32Array.from(lengths);
  }

  layer(index: number): RaggedLayerKV {
    return new RaggedLayerKV(this.lengths, this.caches.map((c) => c.layer(index)));
  }

  get tokens(): number {
    return this.lengths.reduce((a, b) => a + b, 0);
  }
}

/** What the decoders' forward takes besides the token ids. */
export interface CausalLMForwardOptions {
  /**
   * 1 = attend, 0 = padding (never attended to), row-major (batch, keys). Keys are the cached
   * positions followed by this call's tokens: (batch·(past+seq)) values when a cache is passed.
   */
  attentionMask?: Float32Array;
  /** (batch·seq) positions; default past..past+seq-1 in every row (pass them for left padding). */
  positionIds?: Int32Array;
  /**
   * Keys and values of earlier calls; this call's are appended to it. A RaggedKVCache runs several
   * sequences as one (1, Σ lengths) batch; positionIds are then required.
   */
  cache?: KVCache | RaggedKVCache;
  /** Compute logits for the last n positions only (transformers' logits_to_keep); generation needs 1. */
  logitsToKeep?: number;
  /** Compute logits only at these token indices (into batch·seq), in this order: (1, n, vocab). */
  logitsAt?: Int32Array;
}

/** The layer cache a decoder layer gets from `opts.cache`. */
export function layerCache(cache: KVCache | RaggedKVCache | undefined, index: number): LayerKV | RaggedLayerKV | null {
  return cache ? cache.layer(index) : null;
}

/** Hidden states (batch, seq, dim) → the rows `logitsAt` picks ((1, n, dim)), or the last `logitsToKeep` positions. */
export function hiddenForLogits(hidden: Tensor, opts: CausalLMForwardOptions): Tensor {
  if (!opts.logitsAt) return keepLastPositions(hidden, opts.logitsToKeep);
  const [batch, seq, dim] = hidden.shape;
  for (const i of opts.logitsAt) if (!(Number.isInteger(i) && i >= 0 && i < batch * seq)) throw new Error(`logitsAt: index ${i} is outside the ${batch * seq} tokens`);
  return F.reshape(F.embedding(F.reshape(hidden, [batch * seq, dim]), opts.logitsAt), [1, opts.logitsAt.length, dim]);
}

/** Positions already cached before this call: 0 for a ragged batch (whose positions are passed). */
export function pastLength(cache: KVCache | RaggedKVCache | undefined): number {
  return cache instanceof KVCache ? cache.length : 0;
}

/** The last `keep` positions of hidden states (batch, seq, dim): all of them when keep is absent. */
export function keepLastPositions(hidden: Tensor, keep: number | undefined): Tensor {
  const seq = hidden.shape[1];
  if (keep === undefined || keep >= seq) return hidden;
  if (!(Number.isInteger(keep) && keep >= 1)) throw new Error(`logitsToKeep must be a positive integer, got ${keep}`);
  return F.slice(hidden, 1, seq - keep, seq);
}

/** Default positions of `seq` new tokens after `past` cached ones, shared by every row. */
export function defaultPositions(past: number, seq: number): Int32Array {
  return Int32Array.from({ length: seq }, (_, i) => past + i);
}
