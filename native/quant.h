// A compact frozen weight as the quantized-matmul kernels read it (see src/tensor/quant.ts for the
// formats), and the AVX-512 pieces chosen at run time (quant_avx512.cc, the only file built with
// AVX-512 flags).
#pragma once
#include <cmath>
#include <cstdint>

namespace vera {

enum class QFmt : int { BF16 = 0, INT8 = 1, NF4 = 2 };

struct QWeight {
  QFmt fmt = QFmt::BF16;
  int64_t rows = 0, cols = 0;
  const uint8_t* data = nullptr;
  const float* scales = nullptr;  // int8: per row; nf4: per block unless nested
  int64_t block = 0;              // nf4 block size
  const float* code = nullptr;    // nf4: 16 values
  bool nested = false;            // nf4 double quantization
  const uint8_t* qscales = nullptr;
  const float* scales2 = nullptr;
  const float* code2 = nullptr;
  float offset = 0;

  /** nf4 block b's absmax (as the TypeScript reference computes it, in float). */
  float block_scale(int64_t b) const {
    if (!nested) return scales[b];
    return code2[qscales[b]] * scales2[b / 256] + offset;
  }
};

/** Elements [lo, hi) of the flattened (rows × cols) weight, dequantized, into dst[0 …]. */
void dequant_range(const QWeight& w, int64_t lo, int64_t hi, float* dst);

/** The CPU has AVX-512F/BW/VL + BF16 (and VERA_NO_AVX512 is unset). */
bool quant_avx512_bf16_available();
/** The CPU has AVX-512F/BW/VL (and VERA_NO_AVX512 is unset). */
bool quant_avx512_available();

/** x (m × k) as bf16 pairs: per row, hi[k'] then lo[k'] (k' = k rounded up to even), x ≈ hi + lo. */
void split_bf16(const float* x, int64_t m, int64_t k, uint16_t* out);
/** out[i·ldo + n] = Σ_p x[i, p]·W[n, p] for n in [n0, n1), W bf16 (rows × k), via vdpbf16ps on (hi, lo). */
void bf16_rows_avx512(int64_t m, int64_t k, const uint16_t* xsplit, const uint16_t* W, int64_t n0, int64_t n1, float* out, int64_t ldo);
/** nf4: `count` (a multiple of 32) elements from `first` (even), all in one block of scale s. */
void nf4_dequant_avx512(const uint8_t* data, int64_t first, int64_t count, const float* code, float s, float* dst);
/** `blocks` whole blocks of `block` elements (a multiple of 32) from element `first` (a block start), block t scaled by scales[t]. */
void nf4_dequant_blocks_avx512(const uint8_t* data, int64_t first, int64_t blocks, int64_t block, const float* code, const float* scales, float* dst);
/**
 * Decoding products straight from the compact bytes (no float32 tile): out[i·ldo + n] = Σ_p
 * x[i, p]·W[n, p] for n in [n0, n1) and m ≤ 64 rows of x, W dequantized in registers as
 * dequant_range does it (same values) and multiplied in 16-lane chains along p, one per output
 * element, so a row's result does not depend on the other rows. nf4 needs k a multiple of the block
 * size (and the block a multiple of 64); int8 any k.
 */
void nf4_rows_avx512(int64_t m, int64_t k, const float* x, const QWeight& w, int64_t n0, int64_t n1, float* out, int64_t ldo);
void int8_rows_avx512(int64_t m, int64_t k, const float* x, const QWeight& w, int64_t n0, int64_t n1, float* out, int64_t ldo);
/** int8: `count` elements from `first`, one row of scale s: (q·s)·(1/127). */
void int8_dequant_avx512(const int8_t* data, int64_t first, int64_t count, float s, float* dst);

}  // namespace vera
