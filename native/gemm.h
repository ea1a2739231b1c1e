// Single-precision GEMM: C (m×n, row stride ldc) = or += op(A)·op(B), with A(i, p) at
// A[i·rsA + p·csA] and B(p, j) at B[p·rsB + j·csB], so transposes and sub-matrix slices are read in
// place (the packing step absorbs any layout).
#pragma once
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace vera {

/**
 * Allocator for the addon's own scratch operands (VeRA's, the small-m path's copy of a transposed
 * A and its nn panel, the Cᵀ path's packed X, im2col columns, dequantized weight tiles): 64-byte
 * aligned, as the backend's storages are, so the kernels' vector loads and stores do not straddle
 * cache lines (malloc aligns to 16).
 */
template <class T>
struct CacheAligned {
  using value_type = T;
  CacheAligned() = default;
  template <class U>
  CacheAligned(const CacheAligned<U>&) {}
  // C++17's aligned operator new (it throws bad_alloc itself, so this header also builds where
  // exceptions are off)
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <class U>
  bool operator==(const CacheAligned<U>&) const { return true; }
  template <class U>
  bool operator!=(const CacheAligned<U>&) const { return false; }
};
using AlignedFloats = std::vector<float, CacheAligned<float>>;

constexpr int MR = 6;   // micro-tile rows
constexpr int NR = 16;  // micro-tile columns (two 8-float AVX registers)
constexpr int MR512 = 12;  // AVX-512 micro-tile rows
constexpr int NR512 = 32;  // AVX-512 micro-tile columns (two 16-float zmm registers)

#if defined(__wasm_simd128__)
#ifndef VERA_WASM_MR
#define VERA_WASM_MR 4
#endif
constexpr int MRW = VERA_WASM_MR;  // WebAssembly SIMD128 micro-tile rows
constexpr int NRW = 8;             // and columns (two 4-float vectors)
#endif

/** Micro-kernel: C[MR×NR] (+)= Ap (kc×MR packed) · Bp (kc×NR packed). */
using MicroKernel = void (*)(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, bool accumulate);

/** Micro-kernel reading A's rows in place: C[rows×NR] (+)= A (rows × kc, lda apart) · Bp (kc×NR packed). */
using RowsKernel = void (*)(int64_t kc, const float* A, int64_t lda, int rows, const float* Bp, float* C, int64_t ldc, bool accumulate);

#if defined(VERA_X86)
void micro_kernel_avx2(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, bool accumulate);
/** C[MR512×NR512] (+)= Ap (kc×MR512) · Bp (kc×NR512): the same FMA chain per element as the AVX2 kernel. */
void micro_kernel_avx512(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, bool accumulate);
/** C[rows×NR512] (+)= A rows read in place (kc along each, lda apart) · Bp (kc×NR512). */
void micro_kernel_avx512_rows(int64_t kc, const float* A, int64_t lda, int rows, const float* Bp, float* C, int64_t ldc, bool accumulate);
/** T[MR512×NR512] (+)= W rows (kc along each, `rows` of them valid, ldw apart) · Bp (kc×NR512): Cᵀ's tile. */
void micro_kernel_avx512_wt(int64_t kc, const float* W, int64_t ldw, int rows, const float* Bp, float* T, bool add);
/** A register-only FMA loop (no memory operands): `iters` × 24 zmm FMAs; returns a value so it is not elided. */
float fma_peak_avx512(int64_t iters);
float fma_peak_avx2(int64_t iters);
#endif

#if defined(__wasm_simd128__)
/** C[MRW×NRW] (+)= Ap (kc×MRW) · Bp (kc×NRW) in SIMD128 (gemm_wasm.cc). */
void micro_kernel_wasm(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, bool accumulate);
#endif

// Small-m kernels (few rows of A, e.g. token-by-token decoding): B is streamed once, unpacked, and
// each call computes C[0:m, j0:j1] completely (every element by one fixed sequence of operations,
// whatever the tiling, so results do not depend on how columns are split between threads).
//
// "nt": B(p, j) at B[j·ldb + p] (contiguous along k, nn.Linear's (out, in) weight), A(i, p) at
// A[i·lda + p]. Each element is an 8-lane dot product over k (k tail zero-filled), lanes summed as
// ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)). With rowScale (m pointers, row i's n scales), each sum is
// multiplied by rowScale[i][j] (rounded) before it is stored or added.
using SmallNtKernel = void (*)(int64_t m, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb,
                               int64_t j0, int64_t j1, float* C, int64_t ldc, bool accumulate, const float* const* rowScale);
// "nn": B(p, j) at B[p·ldb + j] (contiguous along n), A(i, p) at A[i·rsA + p·csA]. Each element is
// one multiply-add chain over p in order, started from C's value when accumulating.
using SmallNnKernel = void (*)(int64_t m, int64_t k, const float* A, int64_t rsA, int64_t csA, const float* B, int64_t ldb,
                               int64_t j0, int64_t j1, float* C, int64_t ldc, bool accumulate);

#if defined(VERA_X86)
void small_nt_avx2(int64_t m, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb,
                   int64_t j0, int64_t j1, float* C, int64_t ldc, bool accumulate, const float* const* rowScale);
void small_nn_avx2(int64_t m, int64_t k, const float* A, int64_t rsA, int64_t csA, const float* B, int64_t ldb,
                   int64_t j0, int64_t j1, float* C, int64_t ldc, bool accumulate);
/** small_nt_avx2 with 4-row tiles in AVX-512VL's 32 registers: the same bits. */
void small_nt_avx512vl(int64_t m, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb,
                       int64_t j0, int64_t j1, float* C, int64_t ldc, bool accumulate, const float* const* rowScale);
/**
 * The "nt" kernel with A's rows packed in pairs: pair q's k block b (8 floats) is
 * [A[2q, 8b:8b+8], A[2q+1, 8b:8b+8]] at Ap[(q·⌈k/8⌉ + b)·16], zero past k and past the last row.
 * Each zmm accumulator holds two rows' 8 lanes: the same bits as small_nt_avx2, at full width.
 */
void small_nt_pairs_avx512(int64_t m, int64_t k, const float* Ap, const float* B, int64_t ldb, int64_t j0, int64_t j1, float* C,
                           int64_t ldc, bool accumulate, const float* const* rowScale);
#endif

/** The small-m "nt" kernel chosen at run time (AVX2/FMA or portable), on the calling thread. */
void small_nt_rows(int64_t m, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb,
                   int64_t j0, int64_t j1, float* C, int64_t ldc, bool accumulate);

/**
 * C[i, j] (+)= rowScale[i][j] · Σ_p A[i·lda + p]·B[j·ldb + p] for a few rows (m ≤ 64, or 256
 * with SIMD: the small-m path), over the pool: a routed VeRA branch's λb-scaled accumulate without an (m × n) intermediate.
 * False, with nothing done, when the product is not one the small-m path takes.
 */
bool sgemm_nt_row_scaled(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb,
                         const float* const* rowScale, float* C, int64_t ldc, bool accumulate);

/** Multithreaded over the pool (serial when called from a worker). */
void sgemm(int64_t m, int64_t n, int64_t k,
           const float* A, int64_t rsA, int64_t csA,
           const float* B, int64_t rsB, int64_t csB,
           float* C, int64_t ldc, bool accumulate);

/** `batch` independent products, operands `strideA`/`strideB`/`strideC` elements apart. */
void sgemm_batched(int64_t batch, int64_t m, int64_t n, int64_t k,
                   const float* A, int64_t rsA, int64_t csA, int64_t strideA,
                   const float* B, int64_t rsB, int64_t csB, int64_t strideB,
                   float* C, int64_t ldc, int64_t strideC, bool accumulate);

/** GFLOP/s of a register-only FMA loop run for about `seconds` on every pool thread (0 without SIMD FMA). */
double machine_peak_gflops(double seconds);

/** Which micro-kernel runs ("avx512", "avx2-fma" or "portable"). */
const char* gemm_kernel_name();

}  // namespace vera
