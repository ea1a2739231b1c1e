// The AVX2/FMA micro-kernel, the only code compiled with -mavx2 -mfma (see binding.gyp). Each k
// step broadcasts six A values and multiplies them into two 8-wide B vectors: 12 accumulators,
// 2 B registers and one broadcast register stay in the 16 ymm registers.
#include "gemm.h"

#if defined(VERA_X86)
#include <immintrin.h>

namespace vera {

// the target attribute keeps this compiling where the build's -mavx2 -mfma flags do not reach
__attribute__((target("avx2,fma"))) void micro_kernel_avx2(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, bool accumulate) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
#define VERA_STEP(off_a, off_b)                                            \
  {                                                                        \
    const __m256 b0 = _mm256_load_ps(Bp + (off_b));                        \
    const __m256 b1 = _mm256_load_ps(Bp + (off_b) + 8);                    \
    __m256 a = _mm256_broadcast_ss(Ap + (off_a) + 0);                      \
    c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01); \
    a = _mm256_broadcast_ss(Ap + (off_a) + 1);                             \
    c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11); \
    a = _mm256_broadcast_ss(Ap + (off_a) + 2);                             \
    c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21); \
    a = _mm256_broadcast_ss(Ap + (off_a) + 3);                             \
    c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31); \
    a = _mm256_broadcast_ss(Ap + (off_a) + 4);                             \
    c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41); \
    a = _mm256_broadcast_ss(Ap + (off_a) + 5);                             \
    c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51); \
  }
  // C's rows are usually a page apart: start fetching the tile now, it is touched only at the end
  for (int i = 0; i < MR; i++) {
    _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc + NR - 1), _MM_HINT_T0);
  }
  int64_t p = 0;
  for (; p + 4 <= kc; p += 4) {
    _mm_prefetch(reinterpret_cast<const char*>(Ap + 8 * MR), _MM_HINT_T0);
    VERA_STEP(0, 0)
    VERA_STEP(MR, NR)
    VERA_STEP(2 * MR, 2 * NR)
    VERA_STEP(3 * MR, 3 * NR)
    Ap += 4 * MR;
    Bp += 4 * NR;
  }
  for (; p < kc; p++) {
    VERA_STEP(0, 0)
    Ap += MR;
    Bp += NR;
  }
#undef VERA_STEP
  __m256* rows[MR][2] = {{&c00, &c01}, {&c10, &c11}, {&c20, &c21}, {&c30, &c31}, {&c40, &c41}, {&c50, &c51}};
  for (int i = 0; i < MR; i++) {
    float* c = C + i * ldc;
    if (accumulate) {
      _mm256_storeu_ps(c, _mm256_add_ps(_mm256_loadu_ps(c), *rows[i][0]));
      _mm256_storeu_ps(c + 8, _mm256_add_ps(_mm256_loadu_ps(c + 8), *rows[i][1]));
    } else {
      _mm256_storeu_ps(c, *rows[i][0]);
      _mm256_storeu_ps(c + 8, *rows[i][1]);
    }
  }
}

}  // namespace vera
#endif
