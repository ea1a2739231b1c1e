// AVX2/FMA elementwise kernels for what libm made slow: GELU (tanh form) and its gradient, eight
// lanes at a time with a polynomial exp. Compiled with -mavx2 -mfma beside the GEMM micro-kernel;
// kernels.cc calls these only when the CPU has both (see vec.h).
#include "vec.h"

#if defined(VERA_X86)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace vera {
namespace {

#define VERA_AVX2 __attribute__((target("avx2,fma")))

/** exp for x ≤ 0 (Cephes expf's reduction and polynomial, ~1 ulp); below −87 gives 0-ish. */
VERA_AVX2 inline __m256 exp_nonpositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.f));
  const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/** tanh as kernels.cc's fast_tanh computes it: odd series below |x| = 0.3, (1 − e)/(1 + e) above. */
VERA_AVX2 inline __m256 tanh8(__m256 x) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  const __m256 ax = _mm256_andnot_ps(sign, x);
  const __m256 e = exp_nonpositive(_mm256_mul_ps(ax, _mm256_set1_ps(-2.f)));
  const __m256 one = _mm256_set1_ps(1.f);
  const __m256 big = _mm256_or_ps(_mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e)), _mm256_and_ps(sign, x));
  const __m256 x2 = _mm256_mul_ps(x, x);
  __m256 s = _mm256_set1_ps(-1382.f / 155925);
  s = _mm256_fmadd_ps(s, x2, _mm256_set1_ps(62.f / 2835));
  s = _mm256_fmadd_ps(s, x2, _mm256_set1_ps(-17.f / 315));
  s = _mm256_fmadd_ps(s, x2, _mm256_set1_ps(2.f / 15));
  s = _mm256_fmadd_ps(s, x2, _mm256_set1_ps(-1.f / 3));
  s = _mm256_fmadd_ps(s, x2, one);
  const __m256 small = _mm256_mul_ps(x, s);
  return _mm256_blendv_ps(big, small, _mm256_cmp_ps(ax, _mm256_set1_ps(0.3f), _CMP_LT_OQ));
}

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

VERA_AVX2 inline __m256 gelu_inner(__m256 v) {
  const __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
  return _mm256_mul_ps(_mm256_set1_ps(kSqrt2OverPi), _mm256_fmadd_ps(_mm256_set1_ps(kCubic), v3, v));
}

VERA_AVX2 inline __m256 gelu8(__m256 v) {
  const __m256 t = tanh8(gelu_inner(v));
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(_mm256_set1_ps(1.f), t));
}

VERA_AVX2 inline __m256 gelu_grad8(__m256 v, __m256 gy) {
  const __m256 t = tanh8(gelu_inner(v));
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.f);
  const __m256 left = _mm256_mul_ps(half, _mm256_add_ps(one, t));
  const __m256 dinner = _mm256_mul_ps(_mm256_set1_ps(kSqrt2OverPi), _mm256_fmadd_ps(_mm256_set1_ps(3.f * kCubic), _mm256_mul_ps(v, v), one));
  const __m256 right = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_fnmadd_ps(t, t, one)), dinner);
  return _mm256_mul_ps(gy, _mm256_add_ps(left, right));
}

}  // namespace

VERA_AVX2 void gelu_tanh_avx2(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, gelu8(_mm256_loadu_ps(x + i)));
  if (i < n) {
    alignas(32) float buf[8] = {};
    std::copy(x + i, x + n, buf);
    _mm256_store_ps(buf, gelu8(_mm256_load_ps(buf)));
    std::copy(buf, buf + (n - i), y + i);
  }
}

// sigmoid from t = e^−|x| (never overflows): 1/(1 + t) for x ≥ 0, t/(1 + t) below; under −87,
// where the exp is clamped, x/(1 + e^−x) is −0 (NaN at −∞), which x·0 gives
VERA_AVX2 inline __m256 silu8(__m256 x) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  const __m256 one = _mm256_set1_ps(1.f);
  const __m256 t = exp_nonpositive(_mm256_or_ps(x, sign));
  const __m256 inv = _mm256_div_ps(one, _mm256_add_ps(one, t));
  const __m256 sig = _mm256_blendv_ps(inv, _mm256_mul_ps(t, inv), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ));
  const __m256 far = _mm256_cmp_ps(x, _mm256_set1_ps(-87.f), _CMP_LT_OQ);
  return _mm256_blendv_ps(_mm256_mul_ps(x, sig), _mm256_mul_ps(x, _mm256_setzero_ps()), far);
}

VERA_AVX2 void silu_avx2(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, silu8(_mm256_loadu_ps(x + i)));
  if (i < n) {
    alignas(32) float buf[8] = {};
    std::copy(x + i, x + n, buf);
    _mm256_store_ps(buf, silu8(_mm256_load_ps(buf)));
    std::copy(buf, buf + (n - i), y + i);
  }
}

VERA_AVX2 void gelu_tanh_backward_avx2(const float* x, const float* gy, float* gx, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(gx + i, gelu_grad8(_mm256_loadu_ps(x + i), _mm256_loadu_ps(gy + i)));
  if (i < n) {
    alignas(32) float bx[8] = {}, bg[8] = {};
    std::copy(x + i, x + n, bx);
    std::copy(gy + i, gy + n, bg);
    _mm256_store_ps(bx, gelu_grad8(_mm256_load_ps(bx), _mm256_load_ps(bg)));
    std::copy(bx, bx + (n - i), gx + i);
  }
}

VERA_AVX2 double sum_squares_avx2(const float* x, int64_t n) {
  // four double accumulators of four lanes: the sum in double as the scalar loop, in a fixed order
  __m256d acc[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    // a line 4 KB ahead into L2 (past the end too: prefetches never fault): the hardware prefetcher
    // alone kept one sequential stream per core at half the bandwidth (2-core Xeon: 13.5 → 25 GB/s)
    _mm_prefetch(reinterpret_cast<const char*>(x + i + 1024), _MM_HINT_T1);
    const __m256 a = _mm256_loadu_ps(x + i);
    const __m256 b = _mm256_loadu_ps(x + i + 8);
    const __m256d a0 = _mm256_cvtps_pd(_mm256_castps256_ps128(a)), a1 = _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1));
    const __m256d b0 = _mm256_cvtps_pd(_mm256_castps256_ps128(b)), b1 = _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1));
    acc[0] = _mm256_fmadd_pd(a0, a0, acc[0]);
    acc[1] = _mm256_fmadd_pd(a1, a1, acc[1]);
    acc[2] = _mm256_fmadd_pd(b0, b0, acc[2]);
    acc[3] = _mm256_fmadd_pd(b1, b1, acc[3]);
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(_mm256_add_pd(acc[0], acc[1]), _mm256_add_pd(acc[2], acc[3])));
  double s = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  for (; i < n; i++) s += double(x[i]) * x[i];
  return s;
}

/** Lane sum of one vector. */
VERA_AVX2 inline float hsum8(__m256 v) {
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 h2 = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(h2, _mm_shuffle_ps(h2, h2, 1)));
}

/**
 * softmax weights in place: e^(s − max) with the polynomial exp, eight at a time (all ≤ 0, the
 * polynomial's range; the tail lanes are dropped); returns 1 / Σ, or NaN when the max is not finite
 * (a NaN score, or infinite ones, makes torch's softmax row NaN; the clamped exp would not).
 */
VERA_AVX2 inline float softmax_weights(float* scores, int64_t keys) {
  // the max eight at a time, NaNs noted on the side (max drops them)
  __m256 mx = _mm256_set1_ps(-INFINITY), nan = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= keys; j += 8) {
    const __m256 v = _mm256_loadu_ps(scores + j);
    mx = _mm256_max_ps(mx, v);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  alignas(32) float mlanes[8];
  _mm256_store_ps(mlanes, mx);
  float m = mlanes[0];
  for (int l = 1; l < 8; l++) m = std::max(m, mlanes[l]);
  bool hasNan = _mm256_movemask_ps(nan) != 0;
  for (; j < keys; j++) {
    m = std::max(m, scores[j]);
    hasNan |= scores[j] != scores[j];
  }
  if (hasNan || !std::isfinite(m)) return std::numeric_limits<float>::quiet_NaN();
  const __m256 mv = _mm256_set1_ps(m);
  __m256 sum8 = _mm256_setzero_ps();
  j = 0;
  for (; j + 8 <= keys; j += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(scores + j), mv));
    _mm256_storeu_ps(scores + j, e);
    sum8 = _mm256_add_ps(sum8, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum8);
  double sum = ((double(lanes[0]) + lanes[1]) + (double(lanes[2]) + lanes[3])) + ((double(lanes[4]) + lanes[5]) + (double(lanes[6]) + lanes[7]));
  if (j < keys) {
    alignas(32) float tail[8];
    for (int l = 0; l < 8; l++) tail[l] = j + l < keys ? scores[j + l] - m : -87.f;
    _mm256_store_ps(tail, exp_nonpositive(_mm256_load_ps(tail)));
    for (int64_t l = 0; j + l < keys; l++) {
      scores[j + l] = tail[l];
      sum += tail[l];
    }
  }
  return float(1.0 / sum);
}

/**
 * out[g] = Σ_j w[g][j]·V_j · inv[g] for G ≤ 3 queries over W8 × 8 columns from `c`: each value row is
 * loaded once for all G queries; every element is one FMA chain over j in order, from zero.
 */
template <int G, int W8>
VERA_AVX2 inline void weighted_cols(const float* const* w, const float* V, int64_t row, int64_t keys, const float* inv, int64_t c,
                                    float* const* out) {
  __m256 acc[G][W8];
  for (int g = 0; g < G; g++)
    for (int u = 0; u < W8; u++) acc[g][u] = _mm256_setzero_ps();
  for (int64_t j = 0; j < keys; j++) {
    const float* v = V + j * row + c;
    __m256 vv[W8];
    for (int u = 0; u < W8; u++) vv[u] = _mm256_loadu_ps(v + 8 * u);
    for (int g = 0; g < G; g++) {
      const __m256 e = _mm256_set1_ps(w[g][j]);
      for (int u = 0; u < W8; u++) acc[g][u] = _mm256_fmadd_ps(e, vv[u], acc[g][u]);
    }
  }
  for (int g = 0; g < G; g++)
    for (int u = 0; u < W8; u++) _mm256_storeu_ps(out[g] + c + 8 * u, _mm256_mul_ps(acc[g][u], _mm256_set1_ps(inv[g])));
}

template <int G>
VERA_AVX2 void attend_group(const float* q, const float* K, const float* V, int64_t row, int64_t keys, int64_t d, float scale,
                            float* scores, float* out) {
  // scores: 8-lane dot products, each key row loaded once for the G queries, two keys at a time
  const float* w[G];
  float* o[G];
  float inv[G];
  for (int g = 0; g < G; g++) {
    w[g] = scores + g * keys;
    o[g] = out + g * d;
  }
  int64_t j = 0;
  for (; j + 2 <= keys; j += 2) {
    const float* k0 = K + j * row;
    __m256 a[G][2];
    for (int g = 0; g < G; g++) a[g][0] = a[g][1] = _mm256_setzero_ps();
    for (int64_t c = 0; c < d; c += 8) {
      const __m256 ka = _mm256_loadu_ps(k0 + c), kb = _mm256_loadu_ps(k0 + row + c);
      for (int g = 0; g < G; g++) {
        const __m256 qv = _mm256_loadu_ps(q + g * d + c);
        a[g][0] = _mm256_fmadd_ps(qv, ka, a[g][0]);
        a[g][1] = _mm256_fmadd_ps(qv, kb, a[g][1]);
      }
    }
    for (int g = 0; g < G; g++) {
      scores[g * keys + j] = hsum8(a[g][0]) * scale;
      scores[g * keys + j + 1] = hsum8(a[g][1]) * scale;
    }
  }
  for (; j < keys; j++) {
    for (int g = 0; g < G; g++) {
      __m256 a = _mm256_setzero_ps();
      for (int64_t c = 0; c < d; c += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + g * d + c), _mm256_loadu_ps(K + j * row + c), a);
      scores[g * keys + j] = hsum8(a) * scale;
    }
  }
  for (int g = 0; g < G; g++) inv[g] = softmax_weights(scores + g * keys, keys);
  int64_t c = 0;
  for (; c + 32 <= d; c += 32) weighted_cols<G, 4>(w, V, row, keys, inv, c, o);
  for (; c < d; c += 8) weighted_cols<G, 1>(w, V, row, keys, inv, c, o);
  // a row whose scores had no finite max is NaN, as torch's softmax
  for (int g = 0; g < G; g++)
    if (inv[g] != inv[g]) std::fill(o[g], o[g] + d, std::numeric_limits<float>::quiet_NaN());
}

VERA_AVX2 void attend_rows_avx2(const float* q, int64_t count, const float* K, const float* V, int64_t row, int64_t keys, int64_t d,
                                float scale, float* scores, float* out) {
  for (int64_t g = 0; g < count;) {
    const int64_t n = std::min<int64_t>(3, count - g);
    const float* qg = q + g * d;
    float* og = out + g * d;
    if (n == 3) attend_group<3>(qg, K, V, row, keys, d, scale, scores, og);
    else if (n == 2) attend_group<2>(qg, K, V, row, keys, d, scale, scores, og);
    else attend_group<1>(qg, K, V, row, keys, d, scale, scores, og);
    g += n;
  }
}

}  // namespace vera
#endif
