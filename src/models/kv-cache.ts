// The key/value cache of incremental decoding: each attention layer keeps the keys and values of
// every position seen so far, so a step feeds only the new tokens and attends to the whole past.
// Queries of a step sit at positions past..past+T-1; the fused attention kernel takes that offset
// (`causalOffset`, tk - tq by default), so the causal mask stays right without re-running the prefix.
import { F, type Tensor } from '../tensor/index.js';

/** One layer's cache: keys and values (batch, kvHeads, past, headDim), or null before the first step. */
export class LayerKV {
  key: Tensor | null = null;
  value: Tensor | null = null;

  /** Positions held. */
  get length(): number {
    return this.key?.shape[2] ?? 0;
  }

  /** Appends this step's keys and values (batch, kvHeads, T, headDim); returns the whole past with them. */
  update(key: Tensor, value: Tensor): [Tensor, Tensor] {
    // cached tensors never carry a tape: generation runs under noGrad, and a cache kept across a
    // training step would otherwise hold every earlier graph alive
    this.key = this.key === null ? key.detach() : F.concat([this.key, key.detach()], 2);
    this.value = this.value === null ? value.detach() : F.concat([this.value, value.detach()], 2);
    return [this.key, this.value];
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

/** What the decoders' forward takes besides the token ids. */
export interface CausalLMForwardOptions {
  /**
   * 1 = attend, 0 = padding (never attended to), row-major (batch, keys). Keys are the cached
   * positions followed by this call's tokens: (batch·(past+seq)) values when a cache is passed.
   */
  attentionMask?: Float32Array;
  /** (batch·seq) positions; default past..past+seq-1 in every row (pass them for left padding). */
  positionIds?: Int32Array;
  /** Keys and values of earlier calls; this call's are appended to it. */
  cache?: KVCache;
  /** Compute logits for the last n positions only (transformers' logits_to_keep); generation needs 1. */
  logitsToKeep?: number;
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
