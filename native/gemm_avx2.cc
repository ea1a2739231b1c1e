// The AVX2/FMA micro-kernel, the only code compiled with -mavx2 -mfma (see binding.gyp). Each k
// step broadcasts six A values and multiplies them into two 8-wide B vectors: 12 accumulators,
// 2 B registers and one broadcast register stay in the 16 ymm registers.
#include "gemm.h"

#if defined(VERA_X86)
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>

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

// ------------------------------------------------------------------ small m (see gemm.h)

namespace {

#define VERA_AVX2 __attribute__((target("avx2,fma")))

/** Lane sums of four vectors: [Σv0, Σv1, Σv2, Σv3], each ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)). */
VERA_AVX2 inline __m128 hsum4(__m256 v0, __m256 v1, __m256 v2, __m256 v3) {
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(v0, v1), _mm256_hadd_ps(v2, v3));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/** Lanes [0, t) set (none for t ≤ 0, all for t ≥ 8). */
VERA_AVX2 inline __m256i lanes_below(int64_t t) {
  const int tt = int(std::max<int64_t>(-1, std::min<int64_t>(8, t)));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(tt), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/**
 * Four sums s times the row's scales at sc (null: none), then C[0:4] = that, or C + that: the
 * product is rounded before the add (never one FMA), as a separate scaling pass would round it.
 */
VERA_AVX2 __attribute__((always_inline)) inline __m128 scaled_sum(__m128 s, const float* sc, const float* c, bool accumulate) {
  if (sc) {
    s = _mm_mul_ps(_mm_loadu_ps(sc), s);
    __asm__("" : "+x"(s));  // keeps the compiler from fusing the multiply into the add
  }
  return accumulate ? _mm_add_ps(_mm_loadu_ps(c), s) : s;
}

/**
 * Dot products of R rows of A with the B rows b[0..3] (nc ≤ 4 of them real) over p in [p0, p1):
 * 8-lane accumulators start at 0 (first) or from `lanes`, and end in `lanes`, or (last) summed
 * into C[0:R, 0:nc] (+)=, each sum first multiplied by rowScale[r][col + 0:nc] when rowScale is
 * given. Slabs start at multiples of 8 and only the last one has the k tail, so every lane sees the
 * same products in the same order however k is cut.
 */
template <int R>
VERA_AVX2 __attribute__((always_inline)) inline void nt_tile(int64_t p0, int64_t p1, const float* A, int64_t lda, const float* const b[4], float* C,
                              int64_t ldc, int nc, bool accumulate, const float* pf, int npf, int64_t pfStride, float* lanes,
                              bool first, bool last, const float* const* rowScale, int64_t col) {
  __m256 acc[R][4];
#pragma GCC unroll 4
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) acc[r][c] = first ? _mm256_setzero_ps() : _mm256_load_ps(lanes + (r * 4 + c) * 8);
  const float* a[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; r++) a[r] = A + r * lda;
  int64_t p = p0;
  for (; p + 8 <= p1; p += 8) {
    // fetch a later column group's B rows into L2 while this one computes, one line per row per 16 floats
    if ((p & 15) == 0)
      for (int q = 0; q < npf; q++) _mm_prefetch(reinterpret_cast<const char*>(pf + q * pfStride + p), _MM_HINT_T1);
    __m256 av[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) av[r] = _mm256_loadu_ps(a[r] + p);
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
      const __m256 bv = _mm256_loadu_ps(b[c] + p);
#pragma GCC unroll 4
      for (int r = 0; r < R; r++) acc[r][c] = _mm256_fmadd_ps(av[r], bv, acc[r][c]);
    }
  }
  if (p < p1) {
    // k tail: the missing lanes load as zeros, so every element sees the same lane layout
    const __m256i mask = lanes_below(p1 - p);
    __m256 av[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) av[r] = _mm256_maskload_ps(a[r] + p, mask);
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
      const __m256 bv = _mm256_maskload_ps(b[c] + p, mask);
#pragma GCC unroll 4
      for (int r = 0; r < R; r++) acc[r][c] = _mm256_fmadd_ps(av[r], bv, acc[r][c]);
    }
  }
  if (!last) {
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
      for (int c = 0; c < 4; c++) _mm256_store_ps(lanes + (r * 4 + c) * 8, acc[r][c]);
    return;
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; r++) {
    __m128 s = hsum4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
    float* c = C + r * ldc;
    const float* sc = rowScale ? rowScale[r] + col : nullptr;
    if (nc == 4) {
      _mm_storeu_ps(c, scaled_sum(s, sc, c, accumulate));
    } else {
      // the scales this tile has, padded, so the tail is rounded exactly as the full store
      alignas(16) float pad[4] = {}, t[4];
      for (int j = 0; sc && j < nc; j++) pad[j] = sc[j];
      _mm_store_ps(t, scaled_sum(s, sc ? pad : nullptr, nullptr, false));
      for (int j = 0; j < nc; j++) c[j] = accumulate ? c[j] + t[j] : t[j];
    }
  }
}

/**
 * C[0:R, 0:nc] = (load ? C : 0) + A[0:R, 0:kc]·P with P a packed kc×16 strip of B: one multiply-add
 * chain per element, carried through C from one k slab to the next (a float store and reload is
 * exact, so the slab boundaries do not change the result).
 */
template <int R>
VERA_AVX2 inline void nn_tile(int64_t kc, const float* A, int64_t rsA, int64_t csA, const float* P, float* C, int64_t ldc,
                              int nc, bool load, const float* pf, int64_t pfRows, int64_t pfStride) {
  __m256 acc[R][2];
  const __m256i m0 = lanes_below(nc), m1 = lanes_below(nc - 8);
#pragma GCC unroll 6
  for (int r = 0; r < R; r++) {
    const float* c = C + r * ldc;
    if (!load) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    else if (nc == 16) acc[r][0] = _mm256_loadu_ps(c), acc[r][1] = _mm256_loadu_ps(c + 8);
    else acc[r][0] = _mm256_maskload_ps(c, m0), acc[r][1] = _mm256_maskload_ps(c + 8, m1);
  }
  for (int64_t p = 0; p < kc; p++) {
    // one line of the next slab's rows per step, so loading it overlaps this arithmetic
    if (p < pfRows) _mm_prefetch(reinterpret_cast<const char*>(pf + p * pfStride), _MM_HINT_T0);
    const __m256 b0 = _mm256_load_ps(P + p * 16);
    const __m256 b1 = _mm256_load_ps(P + p * 16 + 8);
    const float* a = A + p * csA;
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
      const __m256 av = _mm256_broadcast_ss(a + r * rsA);
      acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; r++) {
    float* c = C + r * ldc;
    if (nc == 16) {
      _mm256_storeu_ps(c, acc[r][0]);
      _mm256_storeu_ps(c + 8, acc[r][1]);
    } else {
      _mm256_maskstore_ps(c, m0, acc[r][0]);
      _mm256_maskstore_ps(c + 8, m1, acc[r][1]);
    }
  }
}

#ifndef VERA_NN_W
#define VERA_NN_W 128
#define VERA_NN_KC 128
#endif
constexpr int64_t kNnW = VERA_NN_W;    // columns of B per block (a multiple of 16)
constexpr int64_t kNnKc = VERA_NN_KC;  // rows of B per slab
#ifndef VERA_NN_AHEAD
#define VERA_NN_AHEAD 16
#endif
constexpr int64_t kNnAhead = VERA_NN_AHEAD;  // rows of B prefetched ahead

/** This thread's kNnKc × kNnW panel, 64-byte aligned. */
float* nn_panel() {
  static thread_local AlignedFloats panel(size_t(kNnKc * kNnW));
  return panel.data();
}

}  // namespace

#ifndef VERA_NT_KC
#define VERA_NT_KC 384
#endif
constexpr int64_t kNtKc = VERA_NT_KC;

/**
 * Blocks of 8 floats along k per slab of the "nt" kernels: all of k for a single row tile or
 * k ≤ 768, else equal slabs of at most kNtKc floats, so that a column group's B rows stay in L1
 * while the rows of A stream past them (k = 1536, m = 16: 1.15× faster; cutting k = 576 was
 * slower). Slabs start on whole blocks, so the bits do not depend on the cut.
 */
int64_t nt_slab_blocks(int64_t k, bool oneTile) {
  const int64_t kb = (k + 7) / 8, slabs = oneTile || k <= 768 ? 1 : (k + kNtKc - 1) / kNtKc;
  return (kb + slabs - 1) / slabs;
}

namespace {

/**
 * One row of A against eight consecutive B rows (decoding's matrix-vector product): the same
 * per-element arithmetic as nt_tile<1> (an 8-lane accumulator per element, the same lane sums),
 * so results are bit-identical to the four-column path, but eight rows of B stream at once: more
 * misses in flight than four (one row against a 113 MB lm_head: about 1.2× on one core of a Zen 4,
 * measured with a standalone loop; the hardware prefetcher restarts at every group's rows).
 */
VERA_AVX2 inline void nt_row8(int64_t k, const float* a, const float* B, int64_t ldb, float* c, bool accumulate, const float* scale) {
  __m256 acc[8];
#pragma GCC unroll 8
  for (int q = 0; q < 8; q++) acc[q] = _mm256_setzero_ps();
  int64_t p = 0;
  // the group two ahead (18 KB at k = 576) is prefetched into L2, a line per row per 16 floats:
  // eight short streams restart the hardware prefetcher at every group, and this keeps misses in
  // flight across the restarts (one core, k = 576: 17 → 22 GB/s; k = 1536: +5%; into L1 it did
  // nothing, the lines evicted each other). Arithmetic unchanged: the same FMA chain per element.
  const float* ahead = B + 16 * ldb;
  for (; p + 16 <= k; p += 16) {
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++) _mm_prefetch(reinterpret_cast<const char*>(ahead + q * ldb + p), _MM_HINT_T1);
    __m256 av = _mm256_loadu_ps(a + p);
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++) acc[q] = _mm256_fmadd_ps(av, _mm256_loadu_ps(B + q * ldb + p), acc[q]);
    av = _mm256_loadu_ps(a + p + 8);
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++) acc[q] = _mm256_fmadd_ps(av, _mm256_loadu_ps(B + q * ldb + p + 8), acc[q]);
  }
  for (; p + 8 <= k; p += 8) {
    const __m256 av = _mm256_loadu_ps(a + p);
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++) acc[q] = _mm256_fmadd_ps(av, _mm256_loadu_ps(B + q * ldb + p), acc[q]);
  }
  if (p < k) {
    const __m256i mask = lanes_below(k - p);
    const __m256 av = _mm256_maskload_ps(a + p, mask);
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++) acc[q] = _mm256_fmadd_ps(av, _mm256_maskload_ps(B + q * ldb + p, mask), acc[q]);
  }
  const __m128 lo = scaled_sum(hsum4(acc[0], acc[1], acc[2], acc[3]), scale, c, accumulate);
  const __m128 hi = scaled_sum(hsum4(acc[4], acc[5], acc[6], acc[7]), scale ? scale + 4 : nullptr, c + 4, accumulate);
  _mm_storeu_ps(c, lo);
  _mm_storeu_ps(c + 4, hi);
}

}  // namespace

namespace {
constexpr int64_t kNtRows = 64;  // rows of A per pass (the lane buffer)

/**
 * The "nt" driver: tiles of up to kMaxRows rows of A against four B rows. Inlined into each entry
 * below, so it is compiled for that entry's registers: 16 ymm (AVX2: tiles of 3 rows, 12
 * accumulators) or 32 (AVX-512VL: tiles of 4, 16 accumulators; one core, m = 16, k = 576: about
 * 1.4× in a standalone loop). Every element's arithmetic is the same in both, so are the bits.
 */
template <int kMaxRows>
__attribute__((always_inline)) inline void small_nt_impl(int64_t m, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb,
                                                         int64_t j0, int64_t j1, float* C, int64_t ldc, bool accumulate,
                                                         const float* const* rowScale) {
  alignas(32) float lanes[kNtRows * 4 * 8];  // m ≤ kNtRows: the entries split larger m
  const int64_t kc = 8 * nt_slab_blocks(k, m <= kMaxRows);
  const int64_t tiles = (m + kMaxRows - 1) / kMaxRows;
  if (m == 1)
    for (; j0 + 8 <= j1; j0 += 8) nt_row8(k, A, B + j0 * ldb, ldb, C + j0, accumulate, rowScale ? rowScale[0] + j0 : nullptr);
  for (int64_t j = j0; j < j1; j += 4) {
    const int nc = int(std::min<int64_t>(4, j1 - j));
    // missing columns re-read the first one; their sums are dropped
    const float* b[4];
    for (int c = 0; c < 4; c++) b[c] = B + (j + (c < nc ? c : 0)) * ldb;
    // the four B rows stay in L1 while every row of A passes them; the row tiles share out the
    // prefetching of the rows of the group after next, into L2, so memory traffic overlaps the
    // arithmetic (one core, m = 16, k = 576: 50 → 87 GFLOP/s against the next group into L1,
    // which arrived too late and evicted the rows in use; B resident in cache: 80-105)
    const int64_t nextCols = m == 1 ? 0 : std::min<int64_t>(4, j1 - j - 8);
    const int64_t perTile = nextCols <= 0 ? 0 : (nextCols + tiles - 1) / tiles;
    for (int64_t p0 = 0; p0 < k; p0 += kc) {
      const int64_t p1 = std::min(k, p0 + kc);
      const bool first = p0 == 0, last = p1 == k;
      for (int64_t t = 0, i = 0; t < tiles; t++) {
        // rows split as evenly as the tiles allow (AVX2: 16 = 3+3+3+3+2+2, not …+3+1)
        const int64_t rows = (m - i + (tiles - t) - 1) / (tiles - t);
        const float* a = A + i * lda;
        float* c = C + i * ldc + j;
        const int64_t q0 = std::min(nextCols, t * perTile);
        const int npf = int(std::max<int64_t>(0, std::min(nextCols, q0 + perTile) - q0));
        const float* pf = npf ? B + (j + 8 + q0) * ldb : nullptr;
        float* ln = lanes + i * 32;
        const float* const* scale = rowScale ? rowScale + i : nullptr;
        switch (rows) {
          case 4:
            if constexpr (kMaxRows >= 4) {
              nt_tile<4>(p0, p1, a, lda, b, c, ldc, nc, accumulate, pf, npf, ldb, ln, first, last, scale, j);
              break;
            }
            [[fallthrough]];
          case 3: nt_tile<3>(p0, p1, a, lda, b, c, ldc, nc, accumulate, pf, npf, ldb, ln, first, last, scale, j); break;
          case 2: nt_tile<2>(p0, p1, a, lda, b, c, ldc, nc, accumulate, pf, npf, ldb, ln, first, last, scale, j); break;
          default: nt_tile<1>(p0, p1, a, lda, b, c, ldc, nc, accumulate, pf, npf, ldb, ln, first, last, scale, j); break;
        }
        i += rows;
      }
    }
  }
}
}  // namespace

VERA_AVX2 void small_nt_avx2(int64_t m, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb,
                             int64_t j0, int64_t j1, float* C, int64_t ldc, bool accumulate, const float* const* rowScale) {
  for (int64_t i = 0; i < m; i += kNtRows)
    small_nt_impl<3>(std::min(kNtRows, m - i), k, A + i * lda, lda, B, ldb, j0, j1, C + i * ldc, ldc, accumulate,
                     rowScale ? rowScale + i : nullptr);
}

__attribute__((target("avx2,fma,avx512f,avx512vl"))) void small_nt_avx512vl(int64_t m, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb,
                                                                            int64_t j0, int64_t j1, float* C, int64_t ldc, bool accumulate,
                                                                            const float* const* rowScale) {
  for (int64_t i = 0; i < m; i += kNtRows)
    small_nt_impl<4>(std::min(kNtRows, m - i), k, A + i * lda, lda, B, ldb, j0, j1, C + i * ldc, ldc, accumulate,
                     rowScale ? rowScale + i : nullptr);
}

#define VERA_AVX512NT __attribute__((target("avx2,fma,avx512f,avx512vl")))

namespace {
constexpr int kPairCols = 6;   // B rows per column group of the pair kernel
constexpr int kTilePairs = 4;  // row pairs per tile (8 rows): 24 accumulators, 4 A and 1 B register

/** Sums of neighbouring lanes: x's eight, then y's eight. */
VERA_AVX512NT __attribute__((always_inline)) inline __m512 pair_sums(__m512 x, __m512 y, __m512i even, __m512i odd) {
  return _mm512_add_ps(_mm512_permutex2var_ps(x, even, y), _mm512_permutex2var_ps(x, odd, y));
}

/**
 * One k block (8 floats) of a pair tile: P pair vectors of A against the six B rows at b, ldb
 * apart (Tail: only the lanes in `mask` of B are read, the rest are zeros, as A's padding is).
 */
template <int P, bool Tail = false>
VERA_AVX512NT __attribute__((always_inline)) inline void pair_block(const float* a, int64_t pairStride, const float* b, int64_t ldb,
                                                                   __m512 (&acc)[P][kPairCols], __m256i mask = __m256i()) {
  __m512 av[P];
#pragma GCC unroll 4
  for (int q = 0; q < P; q++) av[q] = _mm512_load_ps(a + q * pairStride);
#pragma GCC unroll 6
  for (int c = 0; c < kPairCols; c++) {
    const __m256 h = Tail ? _mm256_maskload_ps(b + c * ldb, mask) : _mm256_loadu_ps(b + c * ldb);
    const __m512 bv = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(h)));
#pragma GCC unroll 4
    for (int q = 0; q < P; q++) acc[q][c] = _mm512_fmadd_ps(av[q], bv, acc[q][c]);
  }
}

/**
 * The pair kernel's tile: P pairs of A rows (packed, see small_nt_pairs_avx512) against six B rows
 * (b, ldb apart; nc ≤ 6 of them stored) over the k blocks [blk0, blk1) of 8 floats. Each zmm
 * accumulator holds two rows' 8-lane sums for one column, so every element sees the products
 * nt_tile<R> gives it, lane for lane in the same order, and its lanes are summed by the same hsum4:
 * the same bits as the 8-lane kernels, at twice the width per instruction. Slabs and the λb store
 * as nt_tile. NPF rows from pf (pfStride apart) are fetched into L2, a line each per two blocks.
 */
template <int P, int NPF>
VERA_AVX512NT __attribute__((noinline)) void nt_pair_tile(int64_t blk0, int64_t blk1, int64_t k, const float* Ap, int64_t kb, const float* b,
                                                         int64_t ldb, int rows, float* C, int64_t ldc, int nc, bool accumulate,
                                                         const float* pf, int64_t pfStride, float* lanes, bool first, bool last,
                                                         const float* const* rowScale, int64_t col) {
  __m512 acc[P][kPairCols];
#pragma GCC unroll 4
  for (int q = 0; q < P; q++)
#pragma GCC unroll 6
    for (int c = 0; c < kPairCols; c++) acc[q][c] = first ? _mm512_setzero_ps() : _mm512_load_ps(lanes + (q * kPairCols + c) * 16);
  // the last block is partial when k is not a multiple of 8: its B lanes past k load as zeros
  const int64_t full = blk1 * 8 > k ? blk1 - 1 : blk1;
  const int64_t pairStride = kb * 16;
  const float* a = Ap + blk0 * 16;
  const float* bp = b + blk0 * 8;
  const float* pp = pf + blk0 * 8;
  int64_t blk = blk0;
  // one block per step (two, unrolled, left the compiler short of registers); the prefetch of a
  // line is issued for both of its blocks, which costs less than telling them apart
  for (; blk < full; blk++) {
#pragma GCC unroll 6
    for (int q = 0; q < NPF; q++) _mm_prefetch(reinterpret_cast<const char*>(pp + q * pfStride), _MM_HINT_T1);
    pair_block<P>(a, pairStride, bp, ldb, acc);
    a += 16, bp += 8, pp += 8;
  }
  if (blk < blk1) pair_block<P, true>(a, pairStride, bp, ldb, acc, lanes_below(k - blk * 8));
  if (!last) {
#pragma GCC unroll 4
    for (int q = 0; q < P; q++)
#pragma GCC unroll 6
      for (int c = 0; c < kPairCols; c++) _mm512_store_ps(lanes + (q * kPairCols + c) * 16, acc[q][c]);
    return;
  }
  // lane sums by a tree of even/odd permutes: pairs of lanes, then of pairs, then of fours, so
  // each element is ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)) as hsum4 sums it, with half the shuffles
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  // the lanes of the last step are [c0r0, c0r1, c1r0, c1r1, …, c5r0, c5r1, -, -, -, -]: row 0's
  // columns to lanes 0-5, row 1's to lanes 8-13
  const __m512i rowMajor = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 12, 1, 3, 5, 7, 9, 11, 13, 13);
  const __mmask8 cols = __mmask8((1u << nc) - 1);
#pragma GCC unroll 4
  for (int q = 0; q < P; q++) {
    if (2 * q >= rows) break;
    const __m512 s01 = pair_sums(acc[q][0], acc[q][1], even, odd), s23 = pair_sums(acc[q][2], acc[q][3], even, odd);
    const __m512 s45 = pair_sums(acc[q][4], acc[q][5], even, odd);
    const __m512 s = pair_sums(pair_sums(s01, s23, even, odd), pair_sums(s45, s45, even, odd), even, odd);
    const __m512 u = _mm512_permutexvar_ps(rowMajor, s);
    for (int h = 0; h < 2 && 2 * q + h < rows; h++) {
      const int r = 2 * q + h;
      __m256 v = h == 0 ? _mm512_castps512_ps256(u) : _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(u), 1));
      if (rowScale) {
        v = _mm256_mul_ps(_mm256_maskz_loadu_ps(cols, rowScale[r] + col), v);
        __asm__("" : "+x"(v));  // rounded before the add, never one FMA (as scaled_sum)
      }
      float* c = C + r * ldc;
      if (accumulate) v = _mm256_add_ps(_mm256_maskz_loadu_ps(cols, c), v);
      _mm256_mask_storeu_ps(c, cols, v);
    }
  }
}

using PairTile = void (*)(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, int, float*, int64_t, int, bool, const float*,
                          int64_t, float*, bool, bool, const float* const*, int64_t);
template <int P>
constexpr PairTile kPairTiles[7] = {nt_pair_tile<P, 0>, nt_pair_tile<P, 1>, nt_pair_tile<P, 2>, nt_pair_tile<P, 3>,
                                    nt_pair_tile<P, 6>, nt_pair_tile<P, 6>, nt_pair_tile<P, 6>};
}  // namespace

VERA_AVX512NT void small_nt_pairs_avx512(int64_t m, int64_t k, const float* Ap, const float* B, int64_t ldb, int64_t j0, int64_t j1, float* C,
                                         int64_t ldc, bool accumulate, const float* const* rowScale) {
  const int64_t kb = (k + 7) / 8, pairs = (m + 1) / 2;
  constexpr int64_t kChunk = kNtRows / 2;  // pairs per pass over a column group (the lane buffer)
  alignas(64) float lanes[kChunk * kPairCols * 16];  // each pair's lanes, kept between k slabs
  // a last group of fewer than six columns reads its rows from here, the rest zero
  static thread_local AlignedFloats tailRows;
  for (int64_t j = j0; j < j1; j += kPairCols) {
    const int nc = int(std::min<int64_t>(kPairCols, j1 - j));
    const float* b = B + j * ldb;
    int64_t bStride = ldb;
    if (nc < kPairCols) {
      tailRows.assign(size_t(kPairCols * k), 0.0f);
      for (int c = 0; c < nc; c++) std::copy(b + c * ldb, b + c * ldb + k, tailRows.data() + c * k);
      b = tailRows.data(), bStride = k;
    }
    // the group after next is fetched into L2 while this one computes, its rows shared out between
    // the first chunk's tiles (as for the 8-lane kernel: the hardware prefetcher alone leaves the
    // six short row streams waiting; one core, m = 64, k = 576: 93 → 115-130 GFLOP/s)
    const int64_t nextCols = std::max<int64_t>(0, std::min<int64_t>(kPairCols, j1 - j - 2 * kPairCols));
    // rows in chunks of 64: the group's six B rows stay in L1 while every chunk passes them
    for (int64_t i0 = 0; i0 < pairs; i0 += kChunk) {
      const int64_t np = std::min(kChunk, pairs - i0);
      const int64_t tiles = (np + kTilePairs - 1) / kTilePairs;
      const int64_t perTile = i0 == 0 ? (nextCols + tiles - 1) / tiles : 0;
      const int64_t sb = nt_slab_blocks(k, np <= kTilePairs);
      for (int64_t s0 = 0; s0 < kb; s0 += sb) {
        const int64_t s1 = std::min(kb, s0 + sb);
        const bool first = s0 == 0, last = s1 == kb;
        for (int64_t t = 0, q = 0; t < tiles; t++) {
          const int64_t tp = (np - q + (tiles - t) - 1) / (tiles - t);  // pairs split as evenly as the tiles allow
          const int64_t row = 2 * (i0 + q);
          const int rows = int(std::min<int64_t>(2 * tp, m - row));
          const int64_t q0 = std::min(nextCols, t * perTile);
          const int npf = int(std::max<int64_t>(0, std::min(i0 == 0 ? nextCols : 0, q0 + perTile) - q0));
          const float* pf = B + (j + 2 * kPairCols + q0) * ldb;
          const float* ap = Ap + (i0 + q) * kb * 16;
          float* c = C + row * ldc + j;
          float* ln = lanes + q * kPairCols * 16;
          const float* const* scale = rowScale ? rowScale + row : nullptr;
          const PairTile tile = tp >= 4 ? kPairTiles<4>[npf] : tp == 3 ? kPairTiles<3>[npf] : tp == 2 ? kPairTiles<2>[npf] : kPairTiles<1>[npf];
          tile(s0, s1, k, ap, kb, b, bStride, rows, c, ldc, nc, accumulate, pf, ldb, ln, first, last, scale, j);
          q += tp;
        }
      }
    }
  }
}

#undef VERA_AVX512NT

VERA_AVX2 void small_nn_avx2(int64_t m, int64_t k, const float* A, int64_t rsA, int64_t csA, const float* B, int64_t ldb,
                             int64_t j0, int64_t j1, float* C, int64_t ldc, bool accumulate) {
  // Block by block of columns and slab by slab of k: B's rows are read along their length (one
  // sequential run per row, which the hardware prefetches; a walk down 16-column strips is a page
  // per row and was 1.5-3× slower) into 16-column strips, zero-padded, that stay in L1/L2 while
  // every row of A passes them.
  float* panel = nn_panel();
  for (int64_t jb = j0; jb < j1; jb += kNnW) {
    const int64_t w = std::min(kNnW, j1 - jb), strips = (w + 15) / 16;
    for (int64_t p0 = 0; p0 < k; p0 += kNnKc) {
      const int64_t kc = std::min(kNnKc, k - p0);
      for (int64_t p = 0; p < kc; p++) {
        const float* src = B + (p0 + p) * ldb + jb;
        // (later slabs were fetched while the previous one was computed)
        const bool fetch = p0 == 0 && jb == j0 && p + kNnAhead < kc;
        for (int64_t q = 0; q < strips; q++) {
          // a later row's run, so that many lines are in flight at once
          if (fetch) _mm_prefetch(reinterpret_cast<const char*>(src + kNnAhead * ldb + q * 16), _MM_HINT_T0);
          float* d = panel + (q * kc + p) * 16;
          const int64_t cols = std::min<int64_t>(16, w - q * 16);
          if (cols == 16) {
            _mm256_store_ps(d, _mm256_loadu_ps(src + q * 16));
            _mm256_store_ps(d + 8, _mm256_loadu_ps(src + q * 16 + 8));
          } else {
            _mm256_store_ps(d, _mm256_maskload_ps(src + q * 16, lanes_below(cols)));
            _mm256_store_ps(d + 8, _mm256_maskload_ps(src + q * 16 + 8, lanes_below(cols - 8)));
          }
        }
      }
      const bool load = accumulate || p0 > 0;
      // what comes next: this block's next slab, else the next block's first one (else nothing)
      const float* next = nullptr;
      int64_t nextRows = 0, nextW = 0;
      if (p0 + kc < k) next = B + (p0 + kc) * ldb + jb, nextRows = std::min(kNnKc, k - p0 - kc), nextW = w;
      else if (jb + w < j1) next = B + jb + w, nextRows = std::min(kNnKc, k), nextW = std::min(kNnW, j1 - jb - w);
      for (int64_t q = 0; q < strips; q++) {
        const int nc = int(std::min<int64_t>(16, w - q * 16));
        const float* P = panel + q * kc * 16;
        const int64_t pfRows = q * 16 < nextW ? nextRows : 0;
        for (int64_t i = 0; i < m; i += 6) {
          const float* a = A + i * rsA + p0 * csA;
          float* c = C + i * ldc + jb + q * 16;
          const float* pf = next ? next + q * 16 : nullptr;
          const int64_t pr = i == 0 ? pfRows : 0;
          switch (std::min<int64_t>(6, m - i)) {
            case 6: nn_tile<6>(kc, a, rsA, csA, P, c, ldc, nc, load, pf, pr, ldb); break;
            case 5: nn_tile<5>(kc, a, rsA, csA, P, c, ldc, nc, load, pf, pr, ldb); break;
            case 4: nn_tile<4>(kc, a, rsA, csA, P, c, ldc, nc, load, pf, pr, ldb); break;
            case 3: nn_tile<3>(kc, a, rsA, csA, P, c, ldc, nc, load, pf, pr, ldb); break;
            case 2: nn_tile<2>(kc, a, rsA, csA, P, c, ldc, nc, load, pf, pr, ldb); break;
            default: nn_tile<1>(kc, a, rsA, csA, P, c, ldc, nc, load, pf, pr, ldb); break;
          }
        }
      }
    }
  }
}

#undef VERA_AVX2

}  // namespace vera
#endif
