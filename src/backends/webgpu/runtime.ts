/// <reference types="@webgpu/types" />
// The WebGPU runtime under the kernels: buffers (size-bucketed pools, reused on free or when a
// storage is garbage collected), one command encoder that batches many dispatches until a read or
// a dispatch budget flushes it, pipelines compiled once per shader key, and GPU errors turned into
// one-line errors. Ordering: every command (dispatch, copy, clear, upload) goes through the one
// encoder, so a buffer freed and reused at once is still safe: the queue runs them in order.

/** A GPU buffer of `length` float32 (or int32) elements: the Storage of this backend. */
export class GpuStorage {
  constructor(readonly buffer: GPUBuffer, readonly length: number, readonly bytes: number) {}
}

// every uniform block is one 256-byte slot (minUniformBufferOffsetAlignment ≤ 256 everywhere):
// ints at 0..47, floats at 48..63
export const PARAM_INTS = 48;
export const PARAM_FLOATS = 16;
const SLOT = 256;
const ARENA_BYTES = 1 << 20;
/** Dispatches per submit: enough to amortize a submit, few enough to keep the GPU fed early. */
const MAX_PENDING = 512;

export interface Binding {
  /** WGSL name of the buffer. */
  name: string;
  type: 'f32' | 'i32';
  /** read_write (else read-only). */
  write?: boolean;
}

/** A bound buffer: a storage, or a range of the upload arena. */
export type Bound = GpuStorage | Upload;
/** Host data placed in the arena during batch `epoch` (placed again if that batch was submitted before its dispatch). */
interface Upload { offset: number; size: number; epoch: number; data: Int32Array | Float32Array }

export interface Dispatch {
  key: string;
  /** WGSL of the entry point's body (and any helper functions in `helpers`). */
  body: () => string;
  helpers?: () => string;
  bindings: readonly Binding[];
  workgroupSize: number;
}

function bucketBytes(bytes: number): number {
  // 8 size classes per power of two: at most 12.5% slack, and equal-sized tensors share buckets
  const b = Math.max(16, bytes);
  const p = 2 ** Math.floor(Math.log2(b));
  if (p <= 64) return Math.ceil(b / 16) * 16;
  const step = p / 8;
  return Math.ceil(b / step) * step;
}

export class Runtime {
  readonly device: GPUDevice;
  readonly adapterInfo: string;
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private pending = 0;
  private readonly pool = new Map<number, GPUBuffer[]>();
  private pooledBytes = 0;
  private readonly maxPooledBytes: number;
  private readonly pipelines = new Map<string, { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout }>();
  private arena: GPUBuffer;
  private arenaHost = new ArrayBuffer(ARENA_BYTES);
  private arenaUsed = 0;
  private epoch = 0;
  private readonly dummy: GpuStorage;
  private error: string | null = null;
  private lost: string | null = null;
  private readonly finalizer = new FinalizationRegistry<{ buffer: GPUBuffer; bytes: number }>((held) => this.release(held.buffer, held.bytes));
  readonly maxBinding: number;

  constructor(device: GPUDevice, adapterInfo: string) {
    this.device = device;
    this.adapterInfo = adapterInfo;
    this.maxBinding = device.limits.maxStorageBufferBindingSize;
    this.maxPooledBytes = Math.max(256 << 20, Math.min(2 ** 31, device.limits.maxBufferSize));
    device.addEventListener('uncapturederror', (e) => {
      const err = (e as GPUUncapturedErrorEvent).error;
      this.error ??= err.message.split('\n')[0];
    });
    void device.lost.then((info) => {
      this.lost = `webgpu: the GPU device was lost (${info.reason}: ${info.message.split('\n')[0]})`;
    });
    this.arena = this.newArena(ARENA_BYTES);
    this.dummy = this.alloc(4, false);
  }

  private newArena(bytes: number): GPUBuffer {
    return this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
  }

  check(): void {
    if (this.lost) throw new Error(this.lost);
    if (this.error) {
      const e = this.error;
      this.error = null;
      throw new Error(`webgpu: ${e}`);
    }
  }

  /** A buffer of `length` 4-byte elements; zeroed when `zero`. */
  alloc(length: number, zero = true): GpuStorage {
    if (this.lost) throw new Error(this.lost);
    const bytes = length * 4;
    if (bytes > this.maxBinding) {
      throw new Error(`webgpu: a buffer of ${length} floats (${bytes} bytes) is over this device's maxStorageBufferBindingSize (${this.maxBinding})`);
    }
    const size = bucketBytes(bytes);
    const free = this.pool.get(size);
    let buffer = free?.pop();
    if (buffer) {
      this.pooledBytes -= size;
      if (zero && bytes > 0) this.copyEncoder().clearBuffer(buffer, 0, size);
    } else {
      buffer = this.device.createBuffer({ size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    }
    const s = new GpuStorage(buffer, length, size);
    this.finalizer.register(s, { buffer, bytes: size }, s);
    return s;
  }

  free(s: GpuStorage): void {
    if (s === this.dummy) return;
    if (!this.finalizer.unregister(s)) return; // freed already
    this.release(s.buffer, s.bytes);
  }

  private release(buffer: GPUBuffer, bytes: number): void {
    if (this.pooledBytes + bytes > this.maxPooledBytes) {
      // destroy() waits for submitted work that uses it; unsubmitted work would be invalid
      this.flush();
      buffer.destroy();
      return;
    }
    let list = this.pool.get(bytes);
    if (!list) this.pool.set(bytes, (list = []));
    list.push(buffer);
    this.pooledBytes += bytes;
  }

  get dummyStorage(): GpuStorage {
    return this.dummy;
  }

  private ensureEncoder(): GPUCommandEncoder {
    this.encoder ??= this.device.createCommandEncoder();
    return this.encoder;
  }

  /** The encoder with no compute pass open (copies and clears go between passes). */
  private copyEncoder(): GPUCommandEncoder {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    return this.ensureEncoder();
  }

  /** Reserve `bytes` of the upload arena (256-aligned); flushes first when it is full. */
  private reserve(bytes: number): number {
    const size = Math.ceil(Math.max(bytes, 4) / SLOT) * SLOT;
    if (this.arenaUsed + size > this.arenaHost.byteLength) {
      this.flush();
      if (size > this.arenaHost.byteLength) {
        this.arena.destroy();
        const grown = Math.ceil(size / ARENA_BYTES) * ARENA_BYTES;
        this.arena = this.newArena(grown);
        this.arenaHost = new ArrayBuffer(grown);
      }
    }
    const off = this.arenaUsed;
    this.arenaUsed += size;
    return off;
  }

  /** Host data for this batch (ids, masks, …): a read-only storage range of the arena. */
  upload(data: Int32Array | Float32Array): Upload {
    const off = this.reserve(data.byteLength);
    new Uint8Array(this.arenaHost, off, data.byteLength).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    return { offset: off, size: Math.max(4, data.byteLength), epoch: this.epoch, data };
  }

  /** Copy host floats into `dst` at element `offset`, in command order. */
  write(dst: GpuStorage, data: Float32Array, offset: number): void {
    if (data.length === 0) return;
    if (data.byteLength > ARENA_BYTES / 2) {
      // large (weights): straight to the queue, after everything encoded so far
      this.flush();
      this.device.queue.writeBuffer(dst.buffer, offset * 4, data.buffer, data.byteOffset, data.byteLength);
      return;
    }
    const bytes = Math.ceil(data.byteLength / 4) * 4;
    const off = this.reserve(bytes);
    new Uint8Array(this.arenaHost, off, data.byteLength).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    this.copyEncoder().copyBufferToBuffer(this.arena, off, dst.buffer, offset * 4, bytes);
  }

  copy(src: GpuStorage, srcOffset: number, dst: GpuStorage, dstOffset: number, length: number): void {
    if (length <= 0) return;
    this.copyEncoder().copyBufferToBuffer(src.buffer, srcOffset * 4, dst.buffer, dstOffset * 4, length * 4);
    this.count();
  }

  clear(dst: GpuStorage, offset = 0, length = dst.length): void {
    if (length <= 0) return;
    // clearBuffer needs 4-byte multiples, which element ranges always are
    this.copyEncoder().clearBuffer(dst.buffer, offset * 4, length * 4);
    this.count();
  }

  private pipeline(d: Dispatch): { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout } {
    const hit = this.pipelines.get(d.key);
    if (hit) return hit;
    const decls = d.bindings.map((b, i) =>
      `@group(0) @binding(${i + 1}) var<storage, ${b.write ? 'read_write' : 'read'}> ${b.name}: array<${b.type}>;`).join('\n');
    const code = `${PRELUDE}
${decls}
${d.helpers ? d.helpers() : ''}
@compute @workgroup_size(${d.workgroupSize})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
  let group = wg.y * nwg.x + wg.x;
  let lid = lid3.x;
${d.body()}
}`;
    const module = this.device.createShaderModule({ code, label: d.key });
    const layout = this.device.createBindGroupLayout({
      entries: [
        { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } },
        ...d.bindings.map((b, i) => ({
          binding: i + 1, visibility: GPUShaderStage.COMPUTE,
          buffer: { type: (b.write ? 'storage' : 'read-only-storage') as GPUBufferBindingType },
        })),
      ],
    });
    const pipeline = this.device.createComputePipeline({
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: 'main' }, label: d.key,
    });
    const entry = { pipeline, layout };
    this.pipelines.set(d.key, entry);
    return entry;
  }

  /**
   * Encode one dispatch of `groups` workgroups (laid out 2-D past 65535; shaders see the flat
   * index `group`) or of explicit [x, y, z] counts.
   */
  dispatch(d: Dispatch, buffers: readonly (Bound | null)[], ints: readonly number[], floats: readonly number[], groups: number | readonly [number, number, number]): void {
    if (this.lost) throw new Error(this.lost);
    const [gx, gy, gz] = typeof groups === 'number' ? grid(groups) : groups;
    if (gx === 0 || gy === 0 || gz === 0) return;
    if (ints.length > PARAM_INTS || floats.length > PARAM_FLOATS) throw new Error(`webgpu: ${d.key} has too many parameters`);
    const { pipeline, layout } = this.pipeline(d);
    // a storage bound read-only and read_write in one dispatch is a validation error: read a copy
    const bound = buffers.map((b) => b ?? this.dummy);
    for (let i = 0; i < bound.length; i++) {
      const b = bound[i];
      if (d.bindings[i].write || !(b instanceof GpuStorage)) continue;
      if (bound.some((o, j) => j !== i && d.bindings[j].write && o === b)) {
        const tmp = this.alloc(b.length, false);
        this.copy(b, 0, tmp, 0, b.length);
        bound[i] = tmp;
        this.free(tmp); // reuse is ordered after this dispatch
      }
    }
    let off = 0;
    for (;;) {
      const epoch = this.epoch;
      off = this.reserve(SLOT);
      for (let i = 0; i < bound.length; i++) {
        const b = bound[i];
        if (!(b instanceof GpuStorage) && b.epoch !== this.epoch) bound[i] = this.upload(b.data);
      }
      if (epoch === this.epoch) break;
    }
    const iv = new Int32Array(this.arenaHost, off, PARAM_INTS);
    for (let i = 0; i < ints.length; i++) iv[i] = ints[i];
    const fv = new Float32Array(this.arenaHost, off + PARAM_INTS * 4, PARAM_FLOATS);
    for (let i = 0; i < floats.length; i++) fv[i] = floats[i];
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: this.arena, offset: off, size: SLOT } }];
    bound.forEach((b, i) => {
      entries.push({
        binding: i + 1,
        resource: b instanceof GpuStorage ? { buffer: b.buffer, offset: 0, size: b.bytes } : { buffer: this.arena, offset: b.offset, size: b.size },
      });
    });
    const bindGroup = this.device.createBindGroup({ layout, entries });
    if (!this.pass) this.pass = this.ensureEncoder().beginComputePass();
    this.pass.setPipeline(pipeline);
    this.pass.setBindGroup(0, bindGroup);
    this.pass.dispatchWorkgroups(gx, gy, gz);
    this.count();
  }

  private count(): void {
    if (++this.pending >= MAX_PENDING) this.flush();
  }

  /** Submit everything encoded so far (arena contents first). */
  flush(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    if (this.arenaUsed > 0) {
      this.device.queue.writeBuffer(this.arena, 0, this.arenaHost, 0, this.arenaUsed);
      this.arenaUsed = 0;
    }
    this.epoch++;
    if (this.encoder) {
      this.device.queue.submit([this.encoder.finish()]);
      this.encoder = null;
    }
    this.pending = 0;
  }

  /** Host copy of `s` (first `length` elements) once the GPU has run everything before it. */
  async read(s: GpuStorage, length = s.length): Promise<ArrayBuffer> {
    this.check();
    const bytes = Math.ceil(Math.max(4, length * 4) / 4) * 4;
    const staging = this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    if (length > 0) this.copyEncoder().copyBufferToBuffer(s.buffer, 0, staging, 0, bytes);
    this.flush();
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (e) {
      this.check();
      throw new Error(`webgpu: reading a buffer back failed (${(e as Error).message.split('\n')[0]})`);
    }
    const out = staging.getMappedRange().slice(0, length * 4);
    staging.unmap();
    staging.destroy();
    this.check();
    return out;
  }
}

function grid(groups: number): [number, number, number] {
  if (groups <= 65535) return [groups, 1, 1];
  const y = Math.ceil(groups / 65535);
  if (y > 65535) throw new Error(`webgpu: ${groups} workgroups are more than one dispatch can hold`);
  return [Math.ceil(groups / y), y, 1];
}

const PRELUDE = /* wgsl */ `
@group(0) @binding(0) var<uniform> P: array<vec4<i32>, 16>;
fn pi(i: u32) -> i32 { return P[i / 4u][i % 4u]; }
fn pu(i: u32) -> u32 { return u32(P[i / 4u][i % 4u]); }
fn pf(i: u32) -> f32 { let j = i + ${PARAM_INTS}u; return bitcast<f32>(P[j / 4u][j % 4u]); }
fn isnan_(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
fn isfinite_(v: f32) -> bool { return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u; }
// through a var: constant expressions may not hold inf or NaN
fn ninf() -> f32 { var b = 0xff800000u; return bitcast<f32>(b); }
fn pinf() -> f32 { var b = 0x7f800000u; return bitcast<f32>(b); }
fn nan_() -> f32 { var b = 0x7fc00000u; return bitcast<f32>(b); }
// max that lets a NaN through, as the reference's (v > m || isNaN(v))
fn nmax(m: f32, v: f32) -> f32 { if (isnan_(m)) { return m; } if (v > m || isnan_(v)) { return v; } return m; }
`;
