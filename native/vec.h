// Vectorized elementwise kernels (vec_avx2.cc, built with -mavx2 -mfma); callers check
// has_avx2_fma() first and otherwise run their scalar loops.
#pragma once
#include <cstdint>

namespace vera {

/** Σ a[c]·b[c] with eight independent partial sums (the compiler vectorizes them, on any target). */
static inline float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t c = 0;
  for (; c + 8 <= n; c += 8)
    for (int l = 0; l < 8; l++) acc[l] += a[c + l] * b[c + l];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; c < n; c++) s += a[c] * b[c];
  return s;
}

/** True when the CPU has AVX2 and FMA and VERA_NO_AVX2 is unset (as for the GEMM kernel). */
bool has_avx2_fma();

#if defined(VERA_X86)
void gelu_tanh_avx2(const float* x, float* y, int64_t n);
/** x·sigmoid(x) with the polynomial exp (within 2e-7 relative of x / (1 + e^−x)). */
void silu_avx2(const float* x, float* y, int64_t n);
void gelu_tanh_backward_avx2(const float* x, const float* gy, float* gx, int64_t n);
/** Σ x² in double, sixteen floats at a time (a fixed order: the result does not depend on threads). */
double sum_squares_avx2(const float* x, int64_t n);
/**
 * `count` queries (q, out: consecutive rows of d) attending over the same `keys` cached keys and
 * values (rows `row` floats apart): softmax of q·k·scale with a polynomial exp, then the weighted
 * sum of values. Each key and value row is read once for up to three queries (grouped-query
 * attention's heads sharing a KV head); each query's result is as if computed alone. d a multiple
 * of 8; scores holds 3 × keys floats of scratch.
 */
void attend_rows_avx2(const float* q, int64_t count, const float* K, const float* V, int64_t row, int64_t keys, int64_t d,
                      float scale, float* scores, float* out);
#endif

}  // namespace vera
