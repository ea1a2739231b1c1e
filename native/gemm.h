// Single-precision GEMM: C (m×n, row stride ldc) = or += op(A)·op(B), with A(i, p) at
// A[i·rsA + p·csA] and B(p, j) at B[p·rsB + j·csB], so transposes and sub-matrix slices are read in
// place (the packing step absorbs any layout).
#pragma once
#include <cstdint>

namespace vera {

constexpr int MR = 6;   // micro-tile rows
constexpr int NR = 16;  // micro-tile columns (two 8-float AVX registers)

/** Micro-kernel: C[MR×NR] (+)= Ap (kc×MR packed) · Bp (kc×NR packed). */
using MicroKernel = void (*)(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, bool accumulate);

#if defined(VERA_X86)
void micro_kernel_avx2(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, bool accumulate);
#endif

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

/** Which micro-kernel runs ("avx2-fma" or "portable"). */
const char* gemm_kernel_name();

}  // namespace vera
