// Every kernel of the interface except attention and VeRA: layout, elementwise, reductions,
// matmul, row-wise ops (one fused pass per row), lookups, images and the optimizer. Same
// numerics as the TypeScript reference: sums along a row accumulate in double; work is split
// over the thread pool by rows or by contiguous element ranges so no two threads write one element.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "gemm.h"
#include "kernels.h"
#include "thread_pool.h"
#include "vec.h"

namespace vera {
namespace {

constexpr int64_t kGrain = 1 << 14;  // elements per task below which splitting costs more than it saves
constexpr float kInf = std::numeric_limits<float>::infinity();

/** Rows per task so that one task touches about kGrain elements. */
int64_t row_grain(int64_t cols) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, cols)); }

// ------------------------------------------------------------------ N-d row walks

/** Offsets of the first element of row `row` (all dims but the last) for up to two stride sets. */
struct RowWalk {
  std::vector<int64_t> shape, sa, sb;
  int64_t rows = 1, n = 1;
  RowWalk(const std::vector<int64_t>& shp, const std::vector<int64_t>& a, const std::vector<int64_t>& b) : shape(shp), sa(a), sb(b) {
    const size_t nd = shape.size();
    n = nd == 0 ? 1 : shape[nd - 1];
    for (size_t d = 0; d + 1 < nd; d++) rows *= shape[d];
  }
  void offsets(int64_t row, int64_t& oa, int64_t& ob) const {
    oa = 0;
    ob = 0;
    for (int64_t d = int64_t(shape.size()) - 2; d >= 0; d--) {
      const int64_t i = row % shape[d];
      row /= shape[d];
      oa += i * sa[d];
      ob += i * sb[d];
    }
  }
  int64_t last(const std::vector<int64_t>& s) const { return s.empty() ? 0 : s.back(); }
};

/** (shape, strides, offset) stays inside a buffer of `len` elements; returns the element count. */
double check_reach(const char* k, const char* what, const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, int64_t offset, size_t len) {
  require(strides.size() == shape.size(), k, std::string(what) + " strides and shape differ in length");
  double lo = double(offset), hi = double(offset), count = 1;
  for (size_t d = 0; d < shape.size(); d++) {
    require(shape[d] >= 0, k, "shape sizes must be >= 0");
    count *= double(shape[d]);
    const double span = double(shape[d] - 1) * double(strides[d]);
    if (span < 0) lo += span;
    else hi += span;
  }
  if (count > 0 && (lo < 0 || hi >= double(len)))
    throw ArgError(std::string(k) + ": " + what + " reaches elements " + std::to_string(int64_t(lo)) + ".." + std::to_string(int64_t(hi)) + ", the buffer holds " + std::to_string(len));
  return count;
}

/** Elementwise kernels take their length from the first buffer; the others must hold as many. */
void same_len(const char* k, const char* what, size_t have, size_t n) { need(k, what, have, double(n)); }

napi_value k_fill(napi_env, const Args& a) {
  size_t n;
  float* out = a.f32(0, &n);
  const float v = float(a.num(1));
  parallel_for(int64_t(n), kGrain, [&](int64_t b, int64_t e) { std::fill(out + b, out + e, v); });
  return nullptr;
}

napi_value k_gather(napi_env, const Args& a) {
  size_t srcLen, outLen;
  const float* src = a.f32(0, &srcLen);
  const auto shape = a.ints(1), strides = a.ints(2);
  const int64_t offset = a.i64(3);
  float* out = a.f32(4, &outLen);
  need("gather", "out", outLen, check_reach("gather", "src", shape, strides, offset, srcLen));
  if (shape.empty()) {
    out[0] = src[offset];
    return nullptr;
  }
  RowWalk w(shape, strides, strides);
  const int64_t s = w.last(strides), n = w.n;
  parallel_for(w.rows, row_grain(n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      int64_t o, unused;
      w.offsets(r, o, unused);
      const float* p = src + offset + o;
      float* d = out + r * n;
      if (s == 1) std::memcpy(d, p, n * sizeof(float));
      else for (int64_t j = 0; j < n; j++) d[j] = p[j * s];
    }
  });
  return nullptr;
}

napi_value k_scatter(napi_env, const Args& a) {
  size_t srcLen, outLen;
  const float* src = a.f32(0, &srcLen);
  const auto shape = a.ints(1), strides = a.ints(2);
  const int64_t offset = a.i64(3);
  float* out = a.f32(4, &outLen);
  const bool accumulate = a.flag(5);
  need("scatter", "src", srcLen, check_reach("scatter", "out", shape, strides, offset, outLen));
  if (shape.empty()) {
    out[offset] = accumulate ? out[offset] + src[0] : src[0];
    return nullptr;
  }
  RowWalk w(shape, strides, strides);
  const int64_t s = w.last(strides), n = w.n;
  auto rowsOf = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      int64_t o, unused;
      w.offsets(r, o, unused);
      float* d = out + offset + o;
      const float* p = src + r * n;
      if (accumulate) {
        if (s == 0) {
          double acc = 0;
          for (int64_t j = 0; j < n; j++) acc += p[j];
          d[0] = float(d[0] + acc);
        } else {
          for (int64_t j = 0; j < n; j++) d[j * s] += p[j];
        }
      } else if (s == 1) {
        std::memcpy(d, p, n * sizeof(float));
      } else {
        for (int64_t j = 0; j < n; j++) d[j * s] = p[j];
      }
    }
  };
  // only a broadcast adjoint (a stride of 0 over a dimension longer than 1) makes rows land on the
  // same elements; slices and permutes write each element once, so their rows run in parallel
  bool overlapping = false;
  for (size_t i = 0; i < shape.size(); i++) overlapping |= shape[i] > 1 && strides[i] == 0;
  if (accumulate && overlapping) rowsOf(0, w.rows);
  else parallel_for(w.rows, row_grain(n), rowsOf);
  return nullptr;
}

// ------------------------------------------------------------------ elementwise

enum Unary { NEG, EXP, LOG, TANH, SQRT, RSQRT, SIGMOID, ABS, SQUARE, RELU, SILU, GELU_TANH, GELU_ERF };
enum Binary { ADD, SUB, MUL, DIV, MAX, MIN };

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kInvSqrt2 = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;

/**
 * tanh within about 2 ulp at four times glibc's tanhf speed (which dominated GELU): the exp form
 * (1 − e)/(1 + e), e = exp(−2|x|), and below |x| = 0.3, where 1 − e would cancel, the odd Taylor
 * series to x¹¹ (next term < 2e-9 relative).
 */
inline float fast_tanh(float x) {
  const float ax = std::fabs(x);
  if (ax < 0.3f) {
    const float x2 = x * x;
    return x * (1.f + x2 * (-1.f / 3 + x2 * (2.f / 15 + x2 * (-17.f / 315 + x2 * (62.f / 2835 + x2 * (-1382.f / 155925))))));
  }
  const float e = std::exp(-2.f * ax);
  return std::copysign((1.f - e) / (1.f + e), x);
}

template <typename F>
void map_range(int64_t n, F f) {
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) f(i);
  });
}

using VecKernel = void (*)(const float* x, float* y, int64_t n);
#if defined(VERA_X86)
#define VERA_AVX2_KERNEL(f) (has_avx2_fma() ? (f) : nullptr)
#else
#define VERA_AVX2_KERNEL(f) nullptr
#endif

/** y = f(x) elementwise: by `vec` over each thread's range where given (AVX2), else by `scalar`. */
template <typename F>
void map_vectorized(int64_t n, const float* x, float* y, VecKernel vec, F scalar) {
  if (vec) parallel_for(n, kGrain, [&](int64_t b, int64_t e) { vec(x + b, y + b, e - b); });
  else map_range(n, [&](int64_t i) { y[i] = scalar(x[i]); });
}

napi_value k_unary(napi_env, const Args& a) {
  const int op = int(a.i64(0));
  size_t len;
  const float* x = a.f32(1, &len);
  size_t yLen;
  float* y = a.f32(2, &yLen);
  same_len("unary", "out", yLen, len);
  const int64_t n = int64_t(len);
  switch (op) {
    case NEG: map_range(n, [&](int64_t i) { y[i] = -x[i]; }); break;
    case EXP: map_range(n, [&](int64_t i) { y[i] = std::exp(x[i]); }); break;
    case LOG: map_range(n, [&](int64_t i) { y[i] = std::log(x[i]); }); break;
    case TANH: map_range(n, [&](int64_t i) { y[i] = fast_tanh(x[i]); }); break;
    case SQRT: map_range(n, [&](int64_t i) { y[i] = std::sqrt(x[i]); }); break;
    case RSQRT: map_range(n, [&](int64_t i) { y[i] = float(1.0 / std::sqrt(double(x[i]))); }); break;
    case SIGMOID: map_range(n, [&](int64_t i) { y[i] = 1.f / (1.f + std::exp(-x[i])); }); break;
    case ABS: map_range(n, [&](int64_t i) { y[i] = std::fabs(x[i]); }); break;
    case SQUARE: map_range(n, [&](int64_t i) { y[i] = x[i] * x[i]; }); break;
    case RELU: map_range(n, [&](int64_t i) { y[i] = x[i] > 0 ? x[i] : 0.f; }); break;
    case SILU: map_vectorized(n, x, y, VERA_AVX2_KERNEL(silu_avx2), [](float v) { return v / (1.f + std::exp(-v)); }); break;
    case GELU_TANH:
      map_vectorized(n, x, y, VERA_AVX2_KERNEL(gelu_tanh_avx2),
                     [](float v) { return 0.5f * v * (1.f + fast_tanh(kSqrt2OverPi * (v + 0.044715f * v * v * v))); });
      break;
    case GELU_ERF: map_range(n, [&](int64_t i) { y[i] = 0.5f * x[i] * (1.f + std::erf(x[i] * kInvSqrt2)); }); break;
    default: throw ArgError("unary: unknown op " + std::to_string(op));
  }
  return nullptr;
}

napi_value k_unary_backward(napi_env, const Args& a) {
  const int op = int(a.i64(0));
  size_t len;
  const float* x = a.f32(1, &len);
  size_t l2, l3, l4;
  const float* y = a.f32(2, &l2);
  const float* gy = a.f32(3, &l3);
  float* gx = a.f32(4, &l4);
  same_len("unaryBackward", "y", l2, len);
  same_len("unaryBackward", "gy", l3, len);
  same_len("unaryBackward", "gx", l4, len);
  const int64_t n = int64_t(len);
  switch (op) {
    case NEG: map_range(n, [&](int64_t i) { gx[i] = -gy[i]; }); break;
    case EXP: map_range(n, [&](int64_t i) { gx[i] = gy[i] * y[i]; }); break;
    case LOG: map_range(n, [&](int64_t i) { gx[i] = gy[i] / x[i]; }); break;
    case TANH: map_range(n, [&](int64_t i) { gx[i] = gy[i] * (1.f - y[i] * y[i]); }); break;
    case SQRT: map_range(n, [&](int64_t i) { gx[i] = gy[i] * 0.5f / y[i]; }); break;
    case RSQRT: map_range(n, [&](int64_t i) { gx[i] = gy[i] * -0.5f * y[i] * y[i] * y[i]; }); break;
    case SIGMOID: map_range(n, [&](int64_t i) { gx[i] = gy[i] * y[i] * (1.f - y[i]); }); break;
    case ABS: map_range(n, [&](int64_t i) { gx[i] = x[i] > 0 ? gy[i] : (x[i] < 0 ? -gy[i] : 0.f * gy[i]); }); break;
    case SQUARE: map_range(n, [&](int64_t i) { gx[i] = gy[i] * 2.f * x[i]; }); break;
    case RELU: map_range(n, [&](int64_t i) { gx[i] = x[i] > 0 ? gy[i] : 0.f; }); break;
    case SILU:
      map_range(n, [&](int64_t i) {
        const float s = 1.f / (1.f + std::exp(-x[i]));
        gx[i] = gy[i] * s * (1.f + x[i] * (1.f - s));
      });
      break;
    case GELU_TANH:
#if defined(VERA_X86)
      if (has_avx2_fma()) {
        parallel_for(n, kGrain, [&](int64_t b, int64_t e) { gelu_tanh_backward_avx2(x + b, gy + b, gx + b, e - b); });
        break;
      }
#endif
      map_range(n, [&](int64_t i) {
        const float v = x[i];
        const float t = fast_tanh(kSqrt2OverPi * (v + 0.044715f * v * v * v));
        gx[i] = gy[i] * (0.5f * (1.f + t) + 0.5f * v * (1.f - t * t) * kSqrt2OverPi * (1.f + 3.f * 0.044715f * v * v));
      });
      break;
    case GELU_ERF:
      map_range(n, [&](int64_t i) {
        const float v = x[i];
        gx[i] = gy[i] * (0.5f * (1.f + std::erf(v * kInvSqrt2)) + v * kInvSqrt2Pi * std::exp(-0.5f * v * v));
      });
      break;
    default: throw ArgError("unaryBackward: unknown op " + std::to_string(op));
  }
  return nullptr;
}

template <typename F>
void binary_rows(const float* A, int64_t sa, const float* B, int64_t sb, float* O, const RowWalk& w, F f) {
  const int64_t n = w.n;
  parallel_for(w.rows, row_grain(n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      int64_t oa, ob;
      w.offsets(r, oa, ob);
      const float* pa = A + oa;
      const float* pb = B + ob;
      float* po = O + r * n;
      if (sa == 1 && sb == 1) for (int64_t j = 0; j < n; j++) po[j] = f(pa[j], pb[j]);
      else if (sa == 1 && sb == 0) { const float bv = pb[0]; for (int64_t j = 0; j < n; j++) po[j] = f(pa[j], bv); }
      else if (sa == 0 && sb == 1) { const float av = pa[0]; for (int64_t j = 0; j < n; j++) po[j] = f(av, pb[j]); }
      else for (int64_t j = 0; j < n; j++) po[j] = f(pa[j * sa], pb[j * sb]);
    }
  });
}

napi_value k_binary(napi_env, const Args& a) {
  const int op = int(a.i64(0));
  size_t aLen, bLen, oLen;
  const float* A = a.f32(1, &aLen);
  const auto sA = a.ints(2);
  const float* B = a.f32(3, &bLen);
  const auto sB = a.ints(4);
  float* O = a.f32(5, &oLen);
  const auto shape = a.ints(6);
  check_reach("binary", "a", shape, sA, 0, aLen);
  need("binary", "out", oLen, check_reach("binary", "b", shape, sB, 0, bLen));
  RowWalk w(shape, sA, sB);
  const int64_t sa = w.last(sA), sb = w.last(sB);
  switch (op) {
    case ADD: binary_rows(A, sa, B, sb, O, w, [](float x, float y) { return x + y; }); break;
    case SUB: binary_rows(A, sa, B, sb, O, w, [](float x, float y) { return x - y; }); break;
    case MUL: binary_rows(A, sa, B, sb, O, w, [](float x, float y) { return x * y; }); break;
    case DIV: binary_rows(A, sa, B, sb, O, w, [](float x, float y) { return x / y; }); break;
    case MAX: binary_rows(A, sa, B, sb, O, w, [](float x, float y) { return (x != x || y != y) ? std::nanf("") : (x > y ? x : y); }); break;
    case MIN: binary_rows(A, sa, B, sb, O, w, [](float x, float y) { return (x != x || y != y) ? std::nanf("") : (x < y ? x : y); }); break;
    default: throw ArgError("binary: unknown op " + std::to_string(op));
  }
  return nullptr;
}

napi_value k_affine(napi_env, const Args& a) {
  size_t n;
  const float* x = a.f32(0, &n);
  const double mul = a.num(1), add = a.num(2);
  size_t oLen;
  float* out = a.f32(3, &oLen);
  same_len("affine", "out", oLen, n);
  map_range(int64_t(n), [&](int64_t i) { out[i] = float(x[i] * mul + add); });
  return nullptr;
}

// rotary(x, cos, sin, rows, heads, dim, transpose, out): see RotaryParams (src/tensor/kernels.ts).
// Each product is rounded, then the two are added: the bits of x·cos + rotate_half(x)·sin as
// separate ops. Never contracted into FMAs (GCC would, where FMA is baseline, e.g. on ARM).
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off")))
#endif
void rotary_row(const float* x, const float* c, const float* s, int64_t h, bool transpose, float* o) {
  if (transpose) {
    for (int64_t i = 0; i < h; i++) {
      const float p0 = x[i] * c[i], p1 = x[i + h] * s[i + h];
      const float q0 = x[i + h] * c[i + h], q1 = x[i] * s[i];
      o[i] = p0 + p1;
      o[i + h] = q0 - q1;
    }
  } else {
    for (int64_t i = 0; i < h; i++) {
      const float p0 = x[i] * c[i], p1 = x[i + h] * s[i];
      const float q0 = x[i + h] * c[i + h], q1 = x[i] * s[i + h];
      o[i] = p0 - p1;
      o[i + h] = q0 + q1;
    }
  }
}

napi_value k_rotary(napi_env, const Args& a) {
  size_t xLen, cLen, sLen, oLen;
  const float* x = a.f32(0, &xLen);
  const float* cs = a.f32(1, &cLen);
  const float* sn = a.f32(2, &sLen);
  const int64_t rows = a.dim(3), heads = a.dim(4), dim = a.dim(5);
  const bool transpose = a.flag(6);
  float* out = a.f32(7, &oLen);
  if (dim % 2 != 0) throw ArgError("rotary: dim must be even");
  const double n = double(rows) * double(heads) * double(dim);
  need("rotary", "x", xLen, n);
  need("rotary", "out", oLen, n);
  need("rotary", "cos", cLen, double(rows) * double(dim));
  need("rotary", "sin", sLen, double(rows) * double(dim));
  if (out == x && n > 0) throw ArgError("rotary: out must not be x");
  parallel_for(rows * heads, std::max<int64_t>(1, kGrain / std::max<int64_t>(dim, 1)), [&](int64_t b, int64_t e) {
    for (int64_t rh = b; rh < e; rh++) {
      const int64_t r = rh / heads;
      rotary_row(x + rh * dim, cs + r * dim, sn + r * dim, dim / 2, transpose, out + rh * dim);
    }
  });
  return nullptr;
}

napi_value k_pow_scalar(napi_env, const Args& a) {
  size_t n;
  const float* x = a.f32(0, &n);
  const double p = a.num(1);
  size_t oLen;
  float* out = a.f32(2, &oLen);
  same_len("powScalar", "out", oLen, n);
  if (p == 2) map_range(int64_t(n), [&](int64_t i) { out[i] = x[i] * x[i]; });
  else map_range(int64_t(n), [&](int64_t i) { out[i] = float(std::pow(double(x[i]), p)); });
  return nullptr;
}

napi_value k_axpy(napi_env, const Args& a) {
  size_t n;
  const float* x = a.f32(0, &n);
  const float alpha = float(a.num(1));
  size_t yLen, oLen;
  const float* y = a.f32(2, &yLen);
  float* out = a.f32(3, &oLen);
  same_len("axpy", "b", yLen, n);
  same_len("axpy", "out", oLen, n);
  map_range(int64_t(n), [&](int64_t i) { out[i] = x[i] + alpha * y[i]; });
  return nullptr;
}

// ------------------------------------------------------------------ reductions

napi_value k_sum_reduce(napi_env, const Args& a) {
  size_t xLen, oLen;
  const float* x = a.f32(0, &xLen);
  const int64_t outer = a.dim(1), reduce = a.dim(2), inner = a.dim(3);
  float* out = a.f32(4, &oLen);
  need("sumReduce", "x", xLen, double(outer) * double(reduce) * double(inner));
  need("sumReduce", "out", oLen, double(outer) * double(inner));
  if (inner == 1) {
    parallel_for(outer, row_grain(reduce), [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; o++) {
        double acc = 0;
        const float* p = x + o * reduce;
        for (int64_t r = 0; r < reduce; r++) acc += p[r];
        out[o] = float(acc);
      }
    });
    return nullptr;
  }
  // split (outer, inner) into column strips; each strip sums its columns down the reduce axis
  constexpr int64_t kStrip = 256;
  const int64_t strips = (inner + kStrip - 1) / kStrip;
  parallel_for(outer * strips, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, reduce * kStrip)), [&](int64_t t0, int64_t t1) {
    double acc[kStrip];
    for (int64_t t = t0; t < t1; t++) {
      const int64_t o = t / strips, i0 = (t % strips) * kStrip, w = std::min(kStrip, inner - i0);
      std::fill(acc, acc + w, 0.0);
      for (int64_t r = 0; r < reduce; r++) {
        const float* p = x + (o * reduce + r) * inner + i0;
        for (int64_t i = 0; i < w; i++) acc[i] += p[i];
      }
      for (int64_t i = 0; i < w; i++) out[o * inner + i0 + i] = float(acc[i]);
    }
  });
  return nullptr;
}

napi_value k_max_reduce(napi_env, const Args& a) {
  size_t xLen, oLen;
  const float* x = a.f32(0, &xLen);
  const int64_t outer = a.dim(1), reduce = a.dim(2), inner = a.dim(3);
  float* out = a.f32(4, &oLen);
  need("maxReduce", "x", xLen, double(outer) * double(reduce) * double(inner));
  need("maxReduce", "out", oLen, double(outer) * double(inner));
  parallel_for(outer * inner, row_grain(reduce), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const int64_t o = t / inner, i = t % inner;
      float m = -kInf;
      for (int64_t r = 0; r < reduce; r++) {
        const float v = x[(o * reduce + r) * inner + i];
        if (v > m || v != v) m = v;
      }
      out[t] = m;
    }
  });
  return nullptr;
}

napi_value k_sum_squares(napi_env env, const Args& a) {
  size_t len;
  const float* x = a.f32(0, &len);
  const int64_t n = int64_t(len);
  // fixed blocks summed in order: the result does not depend on the thread count
  const int64_t blocks = (n + kGrain - 1) / kGrain;
  std::vector<double> partial(blocks, 0.0);
  const bool avx2 = has_avx2_fma();
  // one contiguous run of blocks per thread: a sequential stream each, which the prefetching keeps
  // at the memory's bandwidth (the bench's read-once bound reads every weight this way)
  parallel_for_parts(blocks, num_threads(), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
      const int64_t i0 = b * kGrain, e = std::min(n, (b + 1) * kGrain);
#if defined(VERA_X86)
      if (avx2) {
        partial[b] = sum_squares_avx2(x + i0, e - i0);
        continue;
      }
#endif
      double acc = 0;
      for (int64_t i = i0; i < e; i++) acc += double(x[i]) * x[i];
      partial[b] = acc;
    }
  });
  double total = 0;
  for (double p : partial) total += p;
  napi_value r;
  napi_create_double(env, total, &r);
  return r;
}

// ------------------------------------------------------------------ matmul

napi_value k_matmul(napi_env, const Args& a) {
  size_t aLen, bLen, cLen;
  const float* A = a.f32(0, &aLen);
  const float* B = a.f32(1, &bLen);
  float* C = a.f32(2, &cLen);
  const int64_t batch = a.dim(3), m = a.dim(4), n = a.dim(5), k = a.dim(6);
  const bool transA = a.flag(7), transB = a.flag(8);
  const int64_t strideA = a.dim(9), strideB = a.dim(10);
  const bool accumulate = a.flag(11);
  // the last batch's matrix ends at (batch − 1)·stride + its size
  if (batch > 0 && double(m) * double(k) > 0) need("matmul", "a", aLen, double(batch - 1) * double(strideA) + double(m) * double(k));
  if (batch > 0 && double(k) * double(n) > 0) need("matmul", "b", bLen, double(batch - 1) * double(strideB) + double(k) * double(n));
  need("matmul", "out", cLen, double(batch) * double(m) * double(n));
  // A(i, p): stored (m, k) → i·k + p; transposed (k, m) → p·m + i. Likewise B(p, j).
  sgemm_batched(batch, m, n, k,
                A, transA ? 1 : k, transA ? m : 1, strideA,
                B, transB ? 1 : n, transB ? k : 1, strideB,
                C, n, m * n, accumulate);
  return nullptr;
}

// ------------------------------------------------------------------ row-wise

template <typename F>
void for_rows(int64_t rows, int64_t cols, F f) {
  parallel_for(rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) f(r);
  });
}

/** The row's maximum, NaNs skipped (−inf for none): four independent chains, so it vectorizes. */
float row_max(const float* x, int64_t n) {
  float m[4] = {-kInf, -kInf, -kInf, -kInf};
  int64_t j = 0;
  for (; j + 4 <= n; j += 4)
    for (int l = 0; l < 4; l++) m[l] = x[j + l] > m[l] ? x[j + l] : m[l];  // NaN: not greater, skipped
  for (; j < n; j++) m[0] = x[j] > m[0] ? x[j] : m[0];
  return std::max(std::max(m[0], m[1]), std::max(m[2], m[3]));
}

// argmaxRows(x, rows, cols, out): the first maximum of each row, NaNs skipped, 0 for a row with no
// number (src/tensor/argmax.ts): the row max, then the first index holding it.
napi_value k_argmax_rows(napi_env, const Args& a) {
  size_t xLen, oLen;
  const float* x = a.f32(0, &xLen);
  const int64_t rows = a.dim(1), cols = a.dim(2);
  float* out = a.f32(3, &oLen);
  need("argmaxRows", "x", xLen, double(rows) * double(cols));
  need("argmaxRows", "out", oLen, double(rows));
  if (cols > (int64_t(1) << 24)) throw ArgError("argmaxRows: cols past 2^24 (an index would not be exact as a float)");
  for_rows(rows, cols, [&](int64_t r) {
    const float* v = x + r * cols;
    const float best = row_max(v, cols);
    int64_t at = 0;
    if (best > -kInf)
      while (v[at] != best) at++;
    out[r] = float(at);
  });
  return nullptr;
}

napi_value k_softmax(napi_env, const Args& a) {
  size_t xLen, oLen;
  const float* X = a.f32(0, &xLen);
  const int64_t rows = a.dim(1), cols = a.dim(2);
  float* O = a.f32(3, &oLen);
  need("softmax", "x", xLen, double(rows) * double(cols));
  need("softmax", "out", oLen, double(rows) * double(cols));
  for_rows(rows, cols, [&](int64_t r) {
    const float* x = X + r * cols;
    float* o = O + r * cols;
    const float m = row_max(x, cols);
    double s = 0;
    for (int64_t j = 0; j < cols; j++) {
      o[j] = std::exp(x[j] - m);
      s += o[j];
    }
    const float inv = float(1.0 / s);
    for (int64_t j = 0; j < cols; j++) o[j] *= inv;
  });
  return nullptr;
}

napi_value k_softmax_backward(napi_env, const Args& a) {
  size_t yLen, gLen, gxLen;
  const float* Y = a.f32(0, &yLen);
  const float* G = a.f32(1, &gLen);
  const int64_t rows = a.dim(2), cols = a.dim(3);
  float* GX = a.f32(4, &gxLen);
  const double n = double(rows) * double(cols);
  need("softmaxBackward", "y", yLen, n);
  need("softmaxBackward", "gy", gLen, n);
  need("softmaxBackward", "gx", gxLen, n);
  for_rows(rows, cols, [&](int64_t r) {
    const float* y = Y + r * cols;
    const float* g = G + r * cols;
    double dot = 0;
    for (int64_t j = 0; j < cols; j++) dot += double(y[j]) * g[j];
    const float d = float(dot);
    for (int64_t j = 0; j < cols; j++) GX[r * cols + j] = y[j] * (g[j] - d);
  });
  return nullptr;
}

/** log Σ exp(x) of one row, max-shifted. */
double row_lse(const float* x, int64_t n) {
  const float m = row_max(x, n);
  double s = 0;
  for (int64_t j = 0; j < n; j++) s += std::exp(x[j] - m);
  return double(m) + std::log(s);
}

napi_value k_log_softmax(napi_env, const Args& a) {
  size_t xLen, oLen;
  const float* X = a.f32(0, &xLen);
  const int64_t rows = a.dim(1), cols = a.dim(2);
  float* O = a.f32(3, &oLen);
  need("logSoftmax", "x", xLen, double(rows) * double(cols));
  need("logSoftmax", "out", oLen, double(rows) * double(cols));
  for_rows(rows, cols, [&](int64_t r) {
    const float* x = X + r * cols;
    const double l = row_lse(x, cols);
    for (int64_t j = 0; j < cols; j++) O[r * cols + j] = float(x[j] - l);
  });
  return nullptr;
}

napi_value k_log_softmax_backward(napi_env, const Args& a) {
  size_t yLen, gLen, gxLen;
  const float* Y = a.f32(0, &yLen);
  const float* G = a.f32(1, &gLen);
  const int64_t rows = a.dim(2), cols = a.dim(3);
  float* GX = a.f32(4, &gxLen);
  const double n = double(rows) * double(cols);
  need("logSoftmaxBackward", "y", yLen, n);
  need("logSoftmaxBackward", "gy", gLen, n);
  need("logSoftmaxBackward", "gx", gxLen, n);
  for_rows(rows, cols, [&](int64_t r) {
    const float* y = Y + r * cols;
    const float* g = G + r * cols;
    double s = 0;
    for (int64_t j = 0; j < cols; j++) s += g[j];
    const float sf = float(s);
    for (int64_t j = 0; j < cols; j++) GX[r * cols + j] = g[j] - std::exp(y[j]) * sf;
  });
  return nullptr;
}

/** Each row's target is the ignore index or a column. */
void check_targets(const char* k, const int32_t* T, size_t tLen, int64_t rows, int64_t cols, int64_t ignore) {
  need(k, "targets", tLen, double(rows));
  for (int64_t r = 0; r < rows; r++)
    require(T[r] == ignore || (T[r] >= 0 && T[r] < cols), k, "targets[" + std::to_string(r) + "] = " + std::to_string(T[r]) + " out of range [0, " + std::to_string(cols) + ")");
}

napi_value k_cross_entropy(napi_env, const Args& a) {
  size_t xLen, tLen, lLen, sLen;
  const float* X = a.f32(0, &xLen);
  const int32_t* T = a.i32(1, &tLen);
  const int64_t rows = a.dim(2), cols = a.dim(3), ignore = a.i64(4);
  float* L = a.f32(5, &lLen);
  float* S = a.f32(6, &sLen);
  check_targets("crossEntropy", T, tLen, rows, cols, ignore);
  need("crossEntropy", "logits", xLen, double(rows) * double(cols));
  need("crossEntropy", "loss", lLen, double(rows));
  need("crossEntropy", "lse", sLen, double(rows));
  for_rows(rows, cols, [&](int64_t r) {
    const float* x = X + r * cols;
    const double l = row_lse(x, cols);
    S[r] = float(l);
    L[r] = T[r] == ignore ? 0.f : float(l - x[T[r]]);
  });
  return nullptr;
}

napi_value k_cross_entropy_backward(napi_env, const Args& a) {
  size_t xLen, sLen, tLen, gLen, gxLen;
  const float* X = a.f32(0, &xLen);
  const float* S = a.f32(1, &sLen);
  const int32_t* T = a.i32(2, &tLen);
  const float* G = a.f32(3, &gLen);
  const int64_t rows = a.dim(4), cols = a.dim(5), ignore = a.i64(6);
  float* GX = a.f32(7, &gxLen);
  check_targets("crossEntropyBackward", T, tLen, rows, cols, ignore);
  need("crossEntropyBackward", "logits", xLen, double(rows) * double(cols));
  need("crossEntropyBackward", "gx", gxLen, double(rows) * double(cols));
  need("crossEntropyBackward", "lse", sLen, double(rows));
  need("crossEntropyBackward", "gLoss", gLen, double(rows));
  for_rows(rows, cols, [&](int64_t r) {
    float* gx = GX + r * cols;
    if (T[r] == ignore) {
      std::fill(gx, gx + cols, 0.f);
      return;
    }
    const float* x = X + r * cols;
    const float g = G[r], l = S[r];
    for (int64_t j = 0; j < cols; j++) gx[j] = g * std::exp(x[j] - l);
    gx[T[r]] -= g;
  });
  return nullptr;
}

napi_value k_layer_norm(napi_env, const Args& a) {
  size_t xLen, wLen, bLen, oLen, muLen, rsLen;
  const float* X = a.f32(0, &xLen);
  const float* W = a.f32(1, &wLen);
  const float* Bi = a.f32(2, &bLen);
  const int64_t rows = a.dim(3), cols = a.dim(4);
  const double eps = a.num(5);
  float* O = a.f32(6, &oLen);
  float* MU = a.f32(7, &muLen);
  float* RS = a.f32(8, &rsLen);
  const double n = double(rows) * double(cols);
  need("layerNorm", "x", xLen, n);
  need("layerNorm", "out", oLen, n);
  if (W) need("layerNorm", "weight", wLen, double(cols));
  if (Bi) need("layerNorm", "bias", bLen, double(cols));
  need("layerNorm", "mean", muLen, double(rows));
  need("layerNorm", "rstd", rsLen, double(rows));
  for_rows(rows, cols, [&](int64_t r) {
    const float* x = X + r * cols;
    float* o = O + r * cols;
    double s = 0;
    for (int64_t j = 0; j < cols; j++) s += x[j];
    const float mu = float(s / cols);
    double v = 0;
    for (int64_t j = 0; j < cols; j++) {
      const double d = double(x[j]) - mu;
      v += d * d;
    }
    const float rs = float(1.0 / std::sqrt(v / cols + eps));
    MU[r] = mu;
    RS[r] = rs;
    for (int64_t j = 0; j < cols; j++) {
      float y = (x[j] - mu) * rs;
      if (W) y *= W[j];
      if (Bi) y += Bi[j];
      o[j] = y;
    }
  });
  return nullptr;
}

/** gW[j] += Σ_r gy[r, j]·f(r, j) over all rows, split by column strips (no write conflicts). */
template <typename F>
void column_sums(int64_t rows, int64_t cols, float* gw, F f) {
  constexpr int64_t kStrip = 64;
  parallel_for((cols + kStrip - 1) / kStrip, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, rows * kStrip)), [&](int64_t s0, int64_t s1) {
    double acc[kStrip];
    for (int64_t s = s0; s < s1; s++) {
      const int64_t j0 = s * kStrip, w = std::min(kStrip, cols - j0);
      std::fill(acc, acc + w, 0.0);
      for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < w; j++) acc[j] += f(r, j0 + j);
      for (int64_t j = 0; j < w; j++) gw[j0 + j] += float(acc[j]);
    }
  });
}

/** A row-normalization backward's shared buffers: x and gy (and gx when asked) hold rows × cols, weight and gWeight cols. */
void norm_backward_needs(const char* k, int64_t rows, int64_t cols, size_t xLen, size_t gLen, const float* GX, size_t gxLen, const float* W,
                         size_t wLen, const float* GW, size_t gwLen) {
  const double n = double(rows) * double(cols);
  need(k, "x", xLen, n);
  need(k, "gy", gLen, n);
  if (GX) need(k, "gx", gxLen, n);
  if (W) need(k, "weight", wLen, double(cols));
  if (GW) need(k, "gWeight", gwLen, double(cols));
}

napi_value k_layer_norm_backward(napi_env, const Args& a) {
  size_t xLen, wLen, muLen, rsLen, gLen, gxLen, gwLen, gbLen;
  const float* X = a.f32(0, &xLen);
  const float* W = a.f32(1, &wLen);
  const float* MU = a.f32(2, &muLen);
  const float* RS = a.f32(3, &rsLen);
  const float* G = a.f32(4, &gLen);
  const int64_t rows = a.dim(5), cols = a.dim(6);
  float* GX = a.f32(7, &gxLen);
  float* GW = a.f32(8, &gwLen);
  float* GB = a.f32(9, &gbLen);
  norm_backward_needs("layerNormBackward", rows, cols, xLen, gLen, GX, gxLen, W, wLen, GW, gwLen);
  if (GB) need("layerNormBackward", "gBias", gbLen, double(cols));
  need("layerNormBackward", "mean", muLen, double(rows));
  need("layerNormBackward", "rstd", rsLen, double(rows));
  if (GW) column_sums(rows, cols, GW, [&](int64_t r, int64_t j) { return double(G[r * cols + j]) * ((X[r * cols + j] - MU[r]) * RS[r]); });
  if (GB) column_sums(rows, cols, GB, [&](int64_t r, int64_t j) { return double(G[r * cols + j]); });
  if (!GX) return nullptr;
  for_rows(rows, cols, [&](int64_t r) {
    const float* x = X + r * cols;
    const float* g = G + r * cols;
    const float mu = MU[r], rs = RS[r];
    double sumG = 0, sumGX = 0;
    for (int64_t j = 0; j < cols; j++) {
      const float xh = (x[j] - mu) * rs;
      const float gw = W ? g[j] * W[j] : g[j];
      sumG += gw;
      sumGX += double(gw) * xh;
    }
    const float mG = float(sumG / cols), mGX = float(sumGX / cols);
    for (int64_t j = 0; j < cols; j++) {
      const float xh = (x[j] - mu) * rs;
      const float gw = W ? g[j] * W[j] : g[j];
      GX[r * cols + j] = rs * (gw - mG - xh * mGX);
    }
  });
  return nullptr;
}

napi_value k_rms_norm(napi_env, const Args& a) {
  size_t xLen, wLen, oLen, rsLen;
  const float* X = a.f32(0, &xLen);
  const float* W = a.f32(1, &wLen);
  const int64_t rows = a.dim(2), cols = a.dim(3);
  const double eps = a.num(4);
  float* O = a.f32(5, &oLen);
  float* RS = a.f32(6, &rsLen);
  const double n = double(rows) * double(cols);
  need("rmsNorm", "x", xLen, n);
  need("rmsNorm", "out", oLen, n);
  if (W) need("rmsNorm", "weight", wLen, double(cols));
  need("rmsNorm", "rstd", rsLen, double(rows));
  for_rows(rows, cols, [&](int64_t r) {
    const float* x = X + r * cols;
    double ss = 0;
    for (int64_t j = 0; j < cols; j++) ss += double(x[j]) * x[j];
    const float rs = float(1.0 / std::sqrt(ss / cols + eps));
    RS[r] = rs;
    for (int64_t j = 0; j < cols; j++) O[r * cols + j] = W ? x[j] * rs * W[j] : x[j] * rs;
  });
  return nullptr;
}

napi_value k_rms_norm_backward(napi_env, const Args& a) {
  size_t xLen, wLen, rsLen, gLen, gxLen, gwLen;
  const float* X = a.f32(0, &xLen);
  const float* W = a.f32(1, &wLen);
  const float* RS = a.f32(2, &rsLen);
  const float* G = a.f32(3, &gLen);
  const int64_t rows = a.dim(4), cols = a.dim(5);
  float* GX = a.f32(6, &gxLen);
  float* GW = a.f32(7, &gwLen);
  norm_backward_needs("rmsNormBackward", rows, cols, xLen, gLen, GX, gxLen, W, wLen, GW, gwLen);
  need("rmsNormBackward", "rstd", rsLen, double(rows));
  if (GW) column_sums(rows, cols, GW, [&](int64_t r, int64_t j) { return double(G[r * cols + j]) * X[r * cols + j] * RS[r]; });
  if (!GX) return nullptr;
  for_rows(rows, cols, [&](int64_t r) {
    const float* x = X + r * cols;
    const float* g = G + r * cols;
    const float rs = RS[r];
    double dot = 0;
    for (int64_t j = 0; j < cols; j++) dot += double(W ? g[j] * W[j] : g[j]) * x[j];
    const float c = float(dot * rs * rs * rs / cols);
    for (int64_t j = 0; j < cols; j++) GX[r * cols + j] = (W ? g[j] * W[j] : g[j]) * rs - x[j] * c;
  });
  return nullptr;
}

// ------------------------------------------------------------------ lookups

/** Every id names a row of the (len / dim, dim) table. */
void check_ids(const char* k, const char* table, const int32_t* ids, size_t count, int64_t dim, size_t len) {
  if (dim == 0) return;
  const int64_t rows = int64_t(len) / dim;
  for (size_t i = 0; i < count; i++)
    require(ids[i] >= 0 && ids[i] < rows, k, "ids[" + std::to_string(i) + "] = " + std::to_string(ids[i]) + " outside the " + table + " of " + std::to_string(rows) + " rows");
}

napi_value k_embedding(napi_env, const Args& a) {
  size_t wLen, oLen;
  const float* W = a.f32(0, &wLen);
  size_t count;
  const int32_t* ids = a.i32(1, &count);
  const int64_t dim = a.dim(2);
  float* O = a.f32(3, &oLen);
  check_ids("embedding", "weight", ids, count, dim, wLen);
  need("embedding", "out", oLen, double(count) * double(dim));
  for_rows(int64_t(count), dim, [&](int64_t i) { std::memcpy(O + i * dim, W + int64_t(ids[i]) * dim, dim * sizeof(float)); });
  return nullptr;
}

napi_value k_embedding_backward(napi_env, const Args& a) {
  size_t gLen, gwLen;
  const float* G = a.f32(0, &gLen);
  size_t count;
  const int32_t* ids = a.i32(1, &count);
  const int64_t dim = a.dim(2);
  float* GW = a.f32(3, &gwLen);
  check_ids("embeddingBackward", "gWeight", ids, count, dim, gwLen);
  need("embeddingBackward", "gy", gLen, double(count) * double(dim));
  // ids repeat, so split the embedding dimension rather than the ids
  parallel_for(dim, std::max<int64_t>(16, kGrain / std::max<int64_t>(1, int64_t(count))), [&](int64_t j0, int64_t j1) {
    for (size_t i = 0; i < count; i++) {
      float* dst = GW + int64_t(ids[i]) * dim;
      const float* src = G + int64_t(i) * dim;
      for (int64_t j = j0; j < j1; j++) dst[j] += src[j];
    }
  });
  return nullptr;
}

// ------------------------------------------------------------------ images (NCHW)

struct Conv {
  int64_t n, cin, h, w, cout, kh, kw, stride, pad, oh, ow;
};

Conv conv_params(const Args& a, size_t at, const char* k) {
  Conv p{a.dim(at), a.dim(at + 1), a.dim(at + 2), a.dim(at + 3), a.dim(at + 4), a.dim(at + 5),
         a.dim(at + 6), a.dim(at + 7), a.dim(at + 8), a.dim(at + 9), a.dim(at + 10)};
  require(p.kh >= 1 && p.kw >= 1 && p.stride >= 1, k, "kernel size and stride must be >= 1");
  // the output size follows from the rest; patches() bounds its reads by h and w
  require(p.oh == (p.h + 2 * p.pad - p.kh) / p.stride + 1 && p.h + 2 * p.pad >= p.kh && p.ow == (p.w + 2 * p.pad - p.kw) / p.stride + 1 && p.w + 2 * p.pad >= p.kw, k,
          "output size does not follow from input, kernel, stride and pad");
  return p;
}

struct ConvSizes {
  double x, w, y;
};
ConvSizes conv_sizes(const Conv& p) {
  return {double(p.n) * p.cin * p.h * p.w, double(p.cout) * p.cin * p.kh * p.kw, double(p.n) * p.cout * p.oh * p.ow};
}

/** im2col (toCols) and its adjoint col2im (!toCols) over one image, one index map for both. */
void patches(float* img, float* cols, const Conv& p, bool toCols) {
  const int64_t plane = p.oh * p.ow;
  const int64_t krows = p.cin * p.kh * p.kw;
  // rows of the column matrix are independent in im2col; col2im adds into shared pixels (serial)
  auto rowsOf = [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; row++) {
      const int64_t c = row / (p.kh * p.kw), ki = (row / p.kw) % p.kh, kj = row % p.kw;
      for (int64_t oi = 0; oi < p.oh; oi++) {
        const int64_t ii = oi * p.stride - p.pad + ki;
        float* dst = cols + row * plane + oi * p.ow;
        if (ii < 0 || ii >= p.h) {
          if (toCols) std::fill(dst, dst + p.ow, 0.f);
          continue;
        }
        float* src = img + (c * p.h + ii) * p.w;
        for (int64_t oj = 0; oj < p.ow; oj++) {
          const int64_t jj = oj * p.stride - p.pad + kj;
          const bool inside = jj >= 0 && jj < p.w;
          if (toCols) dst[oj] = inside ? src[jj] : 0.f;
          else if (inside) src[jj] += dst[oj];
        }
      }
    }
  };
  if (toCols) parallel_for(krows, 1, rowsOf);
  else rowsOf(0, krows);
}

napi_value k_conv2d(napi_env, const Args& a) {
  size_t xLen, wLen, bLen, oLen;
  float* X = a.f32(0, &xLen);
  const float* W = a.f32(1, &wLen);
  const float* Bi = a.f32(2, &bLen);
  const Conv p = conv_params(a, 3, "conv2d");
  float* O = a.f32(14, &oLen);
  const ConvSizes z = conv_sizes(p);
  need("conv2d", "x", xLen, z.x);
  need("conv2d", "w", wLen, z.w);
  if (Bi) need("conv2d", "bias", bLen, double(p.cout));
  need("conv2d", "out", oLen, z.y);
  const int64_t plane = p.oh * p.ow, kdim = p.cin * p.kh * p.kw;
  AlignedFloats cols(size_t(kdim * plane));
  for (int64_t n = 0; n < p.n; n++) {
    patches(X + n * p.cin * p.h * p.w, cols.data(), p, true);
    float* o = O + n * p.cout * plane;
    sgemm(p.cout, plane, kdim, W, kdim, 1, cols.data(), plane, 1, o, plane, false);
    if (Bi)
      for (int64_t c = 0; c < p.cout; c++)
        for (int64_t i = 0; i < plane; i++) o[c * plane + i] += Bi[c];
  }
  return nullptr;
}

napi_value k_conv2d_backward(napi_env, const Args& a) {
  size_t xLen, wLen, gLen, gwLen, gbLen;
  float* X = a.f32(0, &xLen);
  const float* W = a.f32(1, &wLen);
  const float* G = a.f32(2, &gLen);
  const Conv p = conv_params(a, 3, "conv2dBackward");
  size_t gxLen;
  float* GX = a.f32(14, &gxLen);
  float* GW = a.f32(15, &gwLen);
  float* GB = a.f32(16, &gbLen);
  const ConvSizes z = conv_sizes(p);
  need("conv2dBackward", "x", xLen, z.x);
  need("conv2dBackward", "w", wLen, z.w);
  need("conv2dBackward", "gy", gLen, z.y);
  if (GX) need("conv2dBackward", "gx", gxLen, z.x);
  if (GW) need("conv2dBackward", "gw", gwLen, z.w);
  if (GB) need("conv2dBackward", "gb", gbLen, double(p.cout));
  const int64_t plane = p.oh * p.ow, kdim = p.cin * p.kh * p.kw;
  AlignedFloats cols(size_t(kdim * plane));
  if (GX) std::fill(GX, GX + gxLen, 0.f);
  for (int64_t n = 0; n < p.n; n++) {
    const float* g = G + n * p.cout * plane;
    if (GB)
      for (int64_t c = 0; c < p.cout; c++) {
        double s = 0;
        for (int64_t i = 0; i < plane; i++) s += g[c * plane + i];
        GB[c] += float(s);
      }
    if (GW) {
      patches(X + n * p.cin * p.h * p.w, cols.data(), p, true);
      // gW (cout × kdim) += g (cout × plane) · colsᵀ
      sgemm(p.cout, kdim, plane, g, plane, 1, cols.data(), 1, plane, GW, kdim, true);
    }
    if (GX) {
      // cols (kdim × plane) = Wᵀ · g
      sgemm(kdim, plane, p.cout, W, 1, kdim, g, plane, 1, cols.data(), plane, false);
      patches(GX + n * p.cin * p.h * p.w, cols.data(), p, false);
    }
  }
  return nullptr;
}

napi_value k_max_pool2d(napi_env, const Args& a) {
  size_t xLen, oLen, amLen;
  const float* X = a.f32(0, &xLen);
  const int64_t n = a.dim(1), c = a.dim(2), h = a.dim(3), w = a.dim(4), k = a.dim(5), stride = a.dim(6), oh = a.dim(7), ow = a.dim(8);
  float* O = a.f32(9, &oLen);
  int32_t* argmax = a.i32(10, &amLen);
  require(k >= 1 && stride >= 1, "maxPool2d", "kernel size and stride must be >= 1");
  // every window lies inside the image
  require((oh == 0 || double(oh - 1) * stride + k <= double(h)) && (ow == 0 || double(ow - 1) * stride + k <= double(w)), "maxPool2d",
          "output size does not fit the input with this kernel and stride");
  need("maxPool2d", "x", xLen, double(n) * c * h * w);
  need("maxPool2d", "out", oLen, double(n) * c * oh * ow);
  need("maxPool2d", "argmax", amLen, double(n) * c * oh * ow);
  for_rows(n * c, h * w, [&](int64_t nc) {
    const int64_t base = nc * h * w;
    for (int64_t oi = 0; oi < oh; oi++)
      for (int64_t oj = 0; oj < ow; oj++) {
        float best = -kInf;
        int64_t at = base + oi * stride * w + oj * stride;
        for (int64_t ki = 0; ki < k; ki++) {
          const int64_t r = base + (oi * stride + ki) * w + oj * stride;
          for (int64_t kj = 0; kj < k; kj++)
            if (X[r + kj] > best) {
              best = X[r + kj];
              at = r + kj;
            }
        }
        const int64_t o = (nc * oh + oi) * ow + oj;
        O[o] = best;
        argmax[o] = int32_t(at);
      }
  });
  return nullptr;
}

napi_value k_max_pool2d_backward(napi_env, const Args& a) {
  size_t gLen;
  const float* G = a.f32(0, &gLen);
  size_t count, gxLen;
  const int32_t* argmax = a.i32(1, &count);
  float* GX = a.f32(2, &gxLen);
  need("maxPool2dBackward", "gy", gLen, double(count));
  for (size_t i = 0; i < count; i++)
    require(argmax[i] >= 0 && size_t(argmax[i]) < gxLen, "maxPool2dBackward", "argmax[" + std::to_string(i) + "] = " + std::to_string(argmax[i]) + " outside gx");
  std::fill(GX, GX + gxLen, 0.f);
  for (size_t i = 0; i < count; i++) GX[argmax[i]] += G[i];
  return nullptr;
}

// ------------------------------------------------------------------ optimizer

napi_value k_adamw(napi_env, const Args& a) {
  size_t len;
  float* P = a.f32(0, &len);
  size_t gLen, mLen, vLen;
  const float* G = a.f32(1, &gLen);
  float* M = a.f32(2, &mLen);
  float* V = a.f32(3, &vLen);
  same_len("adamw", "grad", gLen, len);
  same_len("adamw", "m", mLen, len);
  same_len("adamw", "v", vLen, len);
  const double lr = a.num(4), beta1 = a.num(5), beta2 = a.num(6), eps = a.num(7), wd = a.num(8), step = a.num(9);
  const double bc1 = 1 - std::pow(beta1, step);
  const double bc2Sqrt = std::sqrt(1 - std::pow(beta2, step));
  const float stepSize = float(lr / bc1), decay = float(1 - lr * wd), b1 = float(beta1), b2 = float(beta2);
  const float invBc2 = float(1 / bc2Sqrt), e = float(eps);
  map_range(int64_t(len), [&](int64_t i) {
    const float g = G[i];
    const float m = b1 * M[i] + (1 - b1) * g;
    const float v = b2 * V[i] + (1 - b2) * g * g;
    M[i] = m;
    V[i] = v;
    P[i] = P[i] * decay - stepSize * m / (std::sqrt(v) * invBc2 + e);
  });
  return nullptr;
}

}  // namespace

const BindingEntry kElementwiseBindings[] = {
    {"fill", k_fill},
    {"gather", k_gather},
    {"scatter", k_scatter},
    {"unary", k_unary},
    {"unaryBackward", k_unary_backward},
    {"binary", k_binary},
    {"affine", k_affine},
    {"powScalar", k_pow_scalar},
    {"axpy", k_axpy},
    {"sumReduce", k_sum_reduce},
    {"maxReduce", k_max_reduce},
    {"sumSquares", k_sum_squares},
    {"argmaxRows", k_argmax_rows},
    {"matmul", k_matmul},
    {"softmax", k_softmax},
    {"softmaxBackward", k_softmax_backward},
    {"logSoftmax", k_log_softmax},
    {"logSoftmaxBackward", k_log_softmax_backward},
    {"crossEntropy", k_cross_entropy},
    {"crossEntropyBackward", k_cross_entropy_backward},
    {"layerNorm", k_layer_norm},
    {"layerNormBackward", k_layer_norm_backward},
    {"rmsNorm", k_rms_norm},
    {"rotary", k_rotary},
    {"rmsNormBackward", k_rms_norm_backward},
    {"embedding", k_embedding},
    {"embeddingBackward", k_embedding_backward},
    {"conv2d", k_conv2d},
    {"conv2dBackward", k_conv2d_backward},
    {"maxPool2d", k_max_pool2d},
    {"maxPool2dBackward", k_max_pool2d_backward},
    {"adamw", k_adamw},
    {nullptr, nullptr},
};

}  // namespace vera
