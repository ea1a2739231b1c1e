// The fused VeRA branch y = λb ⊙ (B[:out, :] · (λd ⊙ (A[:, :in] · x))) for a batch of rows.
// A (r × maxIn) is read through its row stride, B's first `out` rows are contiguous, so the shared
// projections are never sliced or copied. The scaling vectors are folded into r-wide operands:
// the only (rows × r) intermediate kept for backward is ax = x·A[:, :in]ᵀ, and backward never forms
// a (rows × out) matrix: gλb[o] = Σ_j B[o, j]·(gyᵀ·(ax ⊙ λd))[o, j]. The routed inference form
// (veraRoutedForward) gives each row its own λd/λb slot over the same A and B.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "gemm.h"
#include "kernels.h"
#include "thread_pool.h"

namespace vera {
namespace {

struct VeraDims {
  int64_t rows, in, out, r, lda;
};

VeraDims vera_dims(const Args& a, size_t at, const char* k) {
  const VeraDims v{a.dim(at), a.dim(at + 1), a.dim(at + 2), a.dim(at + 3), a.dim(at + 4)};
  require(v.in <= v.lda, k, "inFeatures exceeds lda");
  return v;
}

/** Elements of A (r, lda) that A[:, :in] touches. */
double a_extent(const VeraDims& v) { return v.r > 0 && v.in > 0 ? double(v.r - 1) * double(v.lda) + double(v.in) : 0; }

/** (rows × cols) row-major x with column j scaled by v[j] (byColumn) or row i by v[i]. */
AlignedFloats scaled(const float* x, const float* v, int64_t rows, int64_t cols, bool byColumn) {
  AlignedFloats out(size_t(rows * cols));
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) out[i * cols + j] = x[i * cols + j] * v[byColumn ? j : i];
  return out;
}

// veraForward(x, A, B, λd, λb, rows, in, out, r, lda, y, ax)
napi_value k_vera_forward(napi_env, const Args& a) {
  size_t nx, nA, nB, nld, nlb, ny, nax;
  const float* x = a.f32(0, &nx);
  const float* A = a.f32(1, &nA);
  const float* B = a.f32(2, &nB);
  const float* ld = a.f32(3, &nld);
  const float* lb = a.f32(4, &nlb);
  const VeraDims v = vera_dims(a, 5, "veraForward");
  float* y = a.f32(10, &ny);
  float* ax = a.f32(11, &nax);
  const char* k = "veraForward";
  need(k, "x", nx, double(v.rows) * double(v.in));
  need(k, "a", nA, a_extent(v));
  need(k, "b", nB, double(v.out) * double(v.r));
  need(k, "lambdaD", nld, double(v.r));
  need(k, "lambdaB", nlb, double(v.out));
  need(k, "out", ny, double(v.rows) * double(v.out));
  need(k, "ax", nax, double(v.rows) * double(v.r));
  sgemm(v.rows, v.r, v.in, x, v.in, 1, A, 1, v.lda, ax, v.r, false);  // ax = x·A[:, :in]ᵀ
  const AlignedFloats u = scaled(ax, ld, v.rows, v.r, true);   // λd ⊙ ax
  const AlignedFloats bs = scaled(B, lb, v.out, v.r, false);   // λb ⊙ B[:out]
  sgemm(v.rows, v.out, v.r, u.data(), v.r, 1, bs.data(), 1, v.r, y, v.out, false);
  return nullptr;
}

// veraBackward(A, B, λd, λb, ax, gy, rows, in, out, r, lda, gx, accumulateGx, gλd, gλb)
napi_value k_vera_backward(napi_env, const Args& a) {
  size_t nA, nB, nld, nlb, nax, ngy, ngx, ngld, nglb;
  const float* A = a.f32(0, &nA);
  const float* B = a.f32(1, &nB);
  const float* ld = a.f32(2, &nld);
  const float* lb = a.f32(3, &nlb);
  const float* ax = a.f32(4, &nax);
  const float* gy = a.f32(5, &ngy);
  const VeraDims v = vera_dims(a, 6, "veraBackward");
  float* gx = a.f32(11, &ngx);
  const bool accumulateGx = a.flag(12);
  float* gld = a.f32(13, &ngld);
  float* glb = a.f32(14, &nglb);
  const char* k = "veraBackward";
  need(k, "a", nA, a_extent(v));
  need(k, "b", nB, double(v.out) * double(v.r));
  need(k, "lambdaD", nld, double(v.r));
  need(k, "lambdaB", nlb, double(v.out));
  need(k, "ax", nax, double(v.rows) * double(v.r));
  need(k, "gy", ngy, double(v.rows) * double(v.out));
  if (gx) need(k, "gx", ngx, double(v.rows) * double(v.in));
  if (gld) need(k, "gLambdaD", ngld, double(v.r));
  if (glb) need(k, "gLambdaB", nglb, double(v.out));
  if (glb) {
    const AlignedFloats u = scaled(ax, ld, v.rows, v.r, true);
    AlignedFloats m(size_t(v.out * v.r));
    sgemm(v.out, v.r, v.rows, gy, 1, v.out, u.data(), v.r, 1, m.data(), v.r, false);  // gyᵀ·u
    for (int64_t o = 0; o < v.out; o++) {
      double s = 0;
      for (int64_t j = 0; j < v.r; j++) s += double(B[o * v.r + j]) * m[o * v.r + j];
      glb[o] += float(s);
    }
  }
  if (!gld && !gx) return nullptr;
  const AlignedFloats bs = scaled(B, lb, v.out, v.r, false);
  AlignedFloats gu(size_t(v.rows * v.r));
  sgemm(v.rows, v.r, v.out, gy, v.out, 1, bs.data(), v.r, 1, gu.data(), v.r, false);  // gy·(λb ⊙ B)
  if (gld)
    for (int64_t j = 0; j < v.r; j++) {
      double s = 0;
      for (int64_t i = 0; i < v.rows; i++) s += double(gu[i * v.r + j]) * ax[i * v.r + j];
      gld[j] += float(s);
    }
  if (gx) {
    const AlignedFloats gt = scaled(gu.data(), ld, v.rows, v.r, true);
    sgemm(v.rows, v.in, v.r, gt.data(), v.r, 1, A, v.lda, 1, gx, v.in, accumulateGx);  // (λd ⊙ gu)·A[:, :in]
  }
  return nullptr;
}

/** Rows per task so one task touches about 16K floats. */
int64_t rows_per_task(int64_t cols) { return std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(1, cols)); }

// veraRoutedForward(x, A, B, λd slab, λb slab, slots, rows, in, out, r, lda, numSlots, y, accumulate, sharedAx, sharedReady)
// Routed inference branch: row i takes slot s = slots[i] (λd row s, λb row s) or nothing when s < 0.
// ax = x·A[:, :in]ᵀ is one GEMM over every row; the routed rows are packed in order (λd applied) into
// the front of the same buffer, one GEMM with B[:out]ᵀ gives their (m × out) result, and each is scaled
// by its λb and stored or added into its own row of y (when every row routes and m is small, λb is
// applied inside the GEMM's store instead). Scratch: rows × r plus m × out floats, unless every
// row routes and either the small-m store takes the product or y is overwritten. A non-empty
// sharedAx holds x·A[:, :in]ᵀ for layers with the same input: computed into it unless sharedReady,
// then only read.
napi_value k_vera_routed_forward(napi_env, const Args& a) {
  size_t nx, nA, nB, nld, nlb, ns, ny;
  const float* x = a.f32(0, &nx);
  const float* A = a.f32(1, &nA);
  const float* B = a.f32(2, &nB);
  const float* ld = a.f32(3, &nld);
  const float* lb = a.f32(4, &nlb);
  const int32_t* slots = a.i32(5, &ns);
  const VeraDims v = vera_dims(a, 6, "veraRoutedForward");
  const int64_t numSlots = a.dim(11);
  float* y = a.f32(12, &ny);
  const bool accumulate = a.flag(13);
  size_t nShared;
  float* shared = a.f32(14, &nShared);
  const bool sharedReady = a.flag(15);
  // the addon must never read outside its buffers, whatever the caller passed
  if (v.rows < 0 || v.in < 0 || v.out < 0 || v.r < 0 || v.lda < v.in || numSlots < 0) throw std::runtime_error("veraRoutedForward: bad dimensions");
  const auto fits = [](size_t have, double need) { return double(have) >= need; };
  if (int64_t(ns) != v.rows || !fits(nx, double(v.rows) * v.in) || !fits(ny, double(v.rows) * v.out) || !fits(nB, double(v.out) * v.r) ||
      !fits(nld, double(numSlots) * v.r) || !fits(nlb, double(numSlots) * v.out) || !fits(nA, a_extent(v)))
    throw std::runtime_error("veraRoutedForward: a buffer is smaller than the dimensions need");
  for (int64_t i = 0; i < v.rows; i++)
    if (slots[i] >= numSlots)
      throw std::runtime_error("veraRoutedForward: row " + std::to_string(i) + " uses slot " + std::to_string(slots[i]) + ", but the slabs hold " +
                               std::to_string(numSlots));
  if (nShared > 0 && !fits(nShared, double(v.rows) * v.r)) throw std::runtime_error("veraRoutedForward: the shared x·Aᵀ buffer is smaller than rows × r");
  if (!accumulate) std::fill(y, y + v.rows * v.out, 0.0f);
  if (v.rows == 0) return nullptr;
  // the shared x·A[:, :in]ᵀ is filled whenever it is asked for, whatever this layer then does with
  // it: the layers after this one read it as ready (and it is not zero-filled)
  if (nShared > 0 && !sharedReady) sgemm(v.rows, v.r, v.in, x, v.in, 1, A, 1, v.lda, shared, v.r, false);
  if (v.out == 0) return nullptr;

  std::vector<int64_t> routed;  // the rows that take an adapter, in order
  routed.reserve(size_t(v.rows));
  for (int64_t i = 0; i < v.rows; i++)
    if (slots[i] >= 0) routed.push_back(i);
  const int64_t m = int64_t(routed.size());
  if (m == 0) return nullptr;

  // scratch kept by the calling thread (grown, never shrunk): a decode step calls this for every
  // adapted layer, and fresh zero-filled vectors cost more than the λ scalings
  static thread_local AlignedFloats axBuf, tBuf;
  if (axBuf.size() < size_t(v.rows * v.r)) axBuf.resize(size_t(v.rows * v.r));
  float* const ax = axBuf.data();
  // x·A[:, :in]ᵀ for every row: the shared buffer (filled above) or our own
  if (nShared == 0) sgemm(v.rows, v.r, v.in, x, v.in, 1, A, 1, v.lda, ax, v.r, false);
  const float* base = nShared > 0 ? shared : ax;
  float* u = ax;  // the rows scaled by λd (in place when not shared)
  if (m == v.rows) {  // every row routes: scale in place, row by row on the pool
    parallel_for(m, rows_per_task(v.r), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; i++) {
        const float* d = ld + int64_t(slots[i]) * v.r;
        const float* src = base + i * v.r;
        float* row = u + i * v.r;
        for (int64_t j = 0; j < v.r; j++) row[j] = src[j] * d[j];
      }
    });
  } else {  // pack the routed rows to the front (row k comes from row routed[k] ≥ k, so in order is safe)
    for (int64_t k = 0; k < m; k++) {
      const float* src = base + routed[size_t(k)] * v.r;
      const float* d = ld + int64_t(slots[routed[size_t(k)]]) * v.r;
      float* dst = u + k * v.r;
      for (int64_t j = 0; j < v.r; j++) dst[j] = src[j] * d[j];
    }
  }

  if (m == v.rows) {
    // every row routes: λb is applied as the product is stored, y (+)= λb[slot] ⊙ (u·B[:out]ᵀ),
    // with no (m × out) intermediate and no second pass over y (the small-m path's rows; the
    // same roundings as the passes below)
    static thread_local std::vector<const float*> scales;
    scales.resize(size_t(m));
    for (int64_t i = 0; i < m; i++) scales[size_t(i)] = lb + int64_t(slots[i]) * v.out;
    if (sgemm_nt_row_scaled(m, v.out, v.r, u, v.r, B, v.r, scales.data(), y, v.out, accumulate)) return nullptr;
  }
  if (m == v.rows && !accumulate) {  // t is y itself: scale each row by its λb in place
    sgemm(m, v.out, v.r, u, v.r, 1, B, 1, v.r, y, v.out, false);
    parallel_for(m, rows_per_task(v.out), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; i++) {
        const float* b = lb + int64_t(slots[i]) * v.out;
        float* row = y + i * v.out;
        for (int64_t o = 0; o < v.out; o++) row[o] *= b[o];
      }
    });
    return nullptr;
  }
  if (tBuf.size() < size_t(m * v.out)) tBuf.resize(size_t(m * v.out));
  float* const t = tBuf.data();
  sgemm(m, v.out, v.r, u, v.r, 1, B, 1, v.r, t, v.out, false);  // t = u·B[:out]ᵀ
  parallel_for(m, rows_per_task(v.out), [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; k++) {
      const int64_t i = routed[size_t(k)];
      const float* b = lb + int64_t(slots[i]) * v.out;
      const float* src = t + k * v.out;
      float* row = y + i * v.out;
      for (int64_t o = 0; o < v.out; o++) row[o] += b[o] * src[o];  // y was zeroed when overwriting
    }
  });
  return nullptr;
}

}  // namespace

const BindingEntry kVeraBindings[] = {
    {"veraForward", k_vera_forward},
    {"veraBackward", k_vera_backward},
    {"veraRoutedForward", k_vera_routed_forward},
    {nullptr, nullptr},
};

}  // namespace vera
