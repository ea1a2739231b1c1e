// The AVX-512 micro-kernel (12×32: 24 zmm accumulators, 2 B registers, one broadcast), chosen at run
// time where the CPU has AVX-512F (VERA_NO_AVX512=1 keeps the AVX2 6×16 kernel). Every C element is
// one FMA chain over the slab's k in order, started from zero and added to C at the end when
// accumulating: exactly the AVX2 kernel's arithmetic, so both give the same bits.
// Also the register-only FMA loops the bench measures the machine's peak with.
#include "gemm.h"

#if defined(VERA_X86)
#include <immintrin.h>

namespace vera {

#define VERA_AVX512 __attribute__((target("avx512f")))

/** The tile's k loop: c[i] = Σ_p a(i, p)·Bp[p] (32 lanes as two zmm), one FMA chain per lane from zero. */
template <class At>
VERA_AVX512 __attribute__((always_inline)) inline void tile_12x32(int64_t kc, const At& at, const float* Bp, __m512 (&c)[MR512][2]) {
#pragma GCC unroll 12
  for (int i = 0; i < MR512; i++) c[i][0] = c[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kc; p++) {
    const __m512 b0 = _mm512_load_ps(Bp);
    const __m512 b1 = _mm512_load_ps(Bp + 16);
    if ((p & 3) == 0) _mm_prefetch(reinterpret_cast<const char*>(Bp + 8 * NR512), _MM_HINT_T0);
#pragma GCC unroll 12
    for (int i = 0; i < MR512; i++) {
      const __m512 a = _mm512_set1_ps(at(i, p));
      c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
    }
    Bp += NR512;
  }
}

/** Rows i < rows of the tile into C (ld apart): stored, or added to what is there. */
VERA_AVX512 __attribute__((always_inline)) inline void store_12x32(const __m512 (&c)[MR512][2], int rows, float* C, int64_t ld, bool add) {
#pragma GCC unroll 12
  for (int i = 0; i < MR512; i++) {
    if (i >= rows) break;
    float* ci = C + i * ld;
    if (add) {
      _mm512_storeu_ps(ci, _mm512_add_ps(_mm512_loadu_ps(ci), c[i][0]));
      _mm512_storeu_ps(ci + 16, _mm512_add_ps(_mm512_loadu_ps(ci + 16), c[i][1]));
    } else {
      _mm512_storeu_ps(ci, c[i][0]);
      _mm512_storeu_ps(ci + 16, c[i][1]);
    }
  }
}

VERA_AVX512 void micro_kernel_avx512(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, bool accumulate) {
  for (int i = 0; i < MR512; i++) _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc), _MM_HINT_T0);
  __m512 c[MR512][2];
  tile_12x32(kc, [Ap](int i, int64_t p) { return Ap[p * MR512 + i]; }, Bp, c);
  store_12x32(c, MR512, C, ldc, accumulate);
}

// The 12×32 tile with A's rows read in place (rows along k, lda apart; `rows` of them valid, the
// rest repeat the last and are not stored): no packing of A. C as micro_kernel_avx512.
VERA_AVX512 void micro_kernel_avx512_rows(int64_t kc, const float* A, int64_t lda, int rows, const float* Bp, float* C, int64_t ldc,
                                          bool accumulate) {
  const float* a[MR512];
  for (int i = 0; i < MR512; i++) a[i] = A + int64_t(i < rows ? i : rows - 1) * lda;
  __m512 c[MR512][2];
  tile_12x32(kc, [&a](int i, int64_t p) { return a[i][p]; }, Bp, c);
  store_12x32(c, rows, C, ldc, accumulate);
}

// The same tile with the operands' roles swapped, for C = X·Wᵀ with W (n × k, rows along k) read in
// place: 12 rows of W are broadcast straight from memory (no packing of the large operand), 32 rows
// of X come packed (Bp: kc × 32, p-major). The tile is Cᵀ (12 W rows × 32 X rows), kept in T
// (T[j·32 + i]) across slabs; each element is one FMA chain over the slab from zero, stored or added
// to T, so the bits are the packed path's (a·b = b·a in an FMA).
VERA_AVX512 void micro_kernel_avx512_wt(int64_t kc, const float* W, int64_t ldw, int rows, const float* Bp, float* T, bool add) {
  const float* w[MR512];
  for (int i = 0; i < MR512; i++) w[i] = W + int64_t(i < rows ? i : rows - 1) * ldw;  // past the edge: repeat a row
  __m512 c[MR512][2];
  tile_12x32(kc, [&w](int i, int64_t p) { return w[i][p]; }, Bp, c);
  store_12x32(c, MR512, T, NR512, add);
}

// 24 independent accumulators (more than the FMA latency × throughput needs) and no loads: the
// loop runs at the FMA units' throughput. 2 flops per lane.
VERA_AVX512 float fma_peak_avx512(int64_t iters) {
  __m512 acc[24];
  const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
#pragma GCC unroll 24
  for (int i = 0; i < 24; i++) acc[i] = _mm512_set1_ps(float(i));
  for (int64_t t = 0; t < iters; t++) {
#pragma GCC unroll 24
    for (int i = 0; i < 24; i++) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 24; i++) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) float fma_peak_avx2(int64_t iters) {
  __m256 acc[12];
  const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
#pragma GCC unroll 12
  for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps(float(i));
  for (int64_t t = 0; t < iters; t++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
  }
  __m256 s = acc[0];
  for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float v[8];
  _mm256_store_ps(v, s);
  return v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
}

}  // namespace vera
#endif
