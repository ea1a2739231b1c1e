// The fused VeRA branch y = λb ⊙ (B[:out, :] · (λd ⊙ (A[:, :in] · x))) for a batch of rows.
// A (r × maxIn) is read through its row stride, B's first `out` rows are contiguous, so the shared
// projections are never sliced or copied. The scaling vectors are folded into r-wide operands:
// the only (rows × r) intermediate kept for backward is ax = x·A[:, :in]ᵀ, and backward never forms
// a (rows × out) matrix: gλb[o] = Σ_j B[o, j]·(gyᵀ·(ax ⊙ λd))[o, j].
#include <vector>

#include "gemm.h"
#include "kernels.h"

namespace vera {
namespace {

struct VeraDims {
  int64_t rows, in, out, r, lda;
};

VeraDims vera_dims(const Args& a, size_t at) { return {a.i64(at), a.i64(at + 1), a.i64(at + 2), a.i64(at + 3), a.i64(at + 4)}; }

/** (rows × cols) row-major x with column j scaled by v[j] (byColumn) or row i by v[i]. */
std::vector<float> scaled(const float* x, const float* v, int64_t rows, int64_t cols, bool byColumn) {
  std::vector<float> out(size_t(rows * cols));
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) out[i * cols + j] = x[i * cols + j] * v[byColumn ? j : i];
  return out;
}

// veraForward(x, A, B, λd, λb, rows, in, out, r, lda, y, ax)
napi_value k_vera_forward(napi_env, const Args& a) {
  const float* x = a.f32(0);
  const float* A = a.f32(1);
  const float* B = a.f32(2);
  const float* ld = a.f32(3);
  const float* lb = a.f32(4);
  const VeraDims v = vera_dims(a, 5);
  float* y = a.f32(10);
  float* ax = a.f32(11);
  sgemm(v.rows, v.r, v.in, x, v.in, 1, A, 1, v.lda, ax, v.r, false);  // ax = x·A[:, :in]ᵀ
  const std::vector<float> u = scaled(ax, ld, v.rows, v.r, true);   // λd ⊙ ax
  const std::vector<float> bs = scaled(B, lb, v.out, v.r, false);   // λb ⊙ B[:out]
  sgemm(v.rows, v.out, v.r, u.data(), v.r, 1, bs.data(), 1, v.r, y, v.out, false);
  return nullptr;
}

// veraBackward(A, B, λd, λb, ax, gy, rows, in, out, r, lda, gx, accumulateGx, gλd, gλb)
napi_value k_vera_backward(napi_env, const Args& a) {
  const float* A = a.f32(0);
  const float* B = a.f32(1);
  const float* ld = a.f32(2);
  const float* lb = a.f32(3);
  const float* ax = a.f32(4);
  const float* gy = a.f32(5);
  const VeraDims v = vera_dims(a, 6);
  float* gx = a.f32(11);
  const bool accumulateGx = a.flag(12);
  float* gld = a.f32(13);
  float* glb = a.f32(14);
  if (glb) {
    const std::vector<float> u = scaled(ax, ld, v.rows, v.r, true);
    std::vector<float> m(size_t(v.out * v.r));
    sgemm(v.out, v.r, v.rows, gy, 1, v.out, u.data(), v.r, 1, m.data(), v.r, false);  // gyᵀ·u
    for (int64_t o = 0; o < v.out; o++) {
      double s = 0;
      for (int64_t j = 0; j < v.r; j++) s += double(B[o * v.r + j]) * m[o * v.r + j];
      glb[o] += float(s);
    }
  }
  if (!gld && !gx) return nullptr;
  const std::vector<float> bs = scaled(B, lb, v.out, v.r, false);
  std::vector<float> gu(size_t(v.rows * v.r));
  sgemm(v.rows, v.r, v.out, gy, v.out, 1, bs.data(), v.r, 1, gu.data(), v.r, false);  // gy·(λb ⊙ B)
  if (gld)
    for (int64_t j = 0; j < v.r; j++) {
      double s = 0;
      for (int64_t i = 0; i < v.rows; i++) s += double(gu[i * v.r + j]) * ax[i * v.r + j];
      gld[j] += float(s);
    }
  if (gx) {
    const std::vector<float> gt = scaled(gu.data(), ld, v.rows, v.r, true);
    sgemm(v.rows, v.in, v.r, gt.data(), v.r, 1, A, v.lda, 1, gx, v.in, accumulateGx);  // (λd ⊙ gu)·A[:, :in]
  }
  return nullptr;
}

}  // namespace

const BindingEntry kVeraBindings[] = {
    {"veraForward", k_vera_forward},
    {"veraBackward", k_vera_backward},
    {nullptr, nullptr},
};

}  // namespace vera
