// AVX-512 pieces of the quantized matmuls (quant.cc picks them at run time): bf16 dot products
// with vdpbf16ps, and in-register dequantization of nf4 (a 16-entry code book in one zmm register,
// looked up with vpermps) and int8. Built with -mavx512f -mavx512bw -mavx512vl -mavx512bf16 only here.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "quant.h"

#if defined(VERA_X86)
#include <immintrin.h>
#endif

namespace vera {

#if defined(VERA_X86)

namespace {
bool cpu_has(bool bf16) {
  __builtin_cpu_init();
  if (std::getenv("VERA_NO_AVX512")) return false;
  const bool base = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return base && (!bf16 || __builtin_cpu_supports("avx512bf16"));
}

inline uint16_t to_bf16(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  if ((b & 0x7fffffffu) > 0x7f800000u) return uint16_t((b >> 16) | 0x40);
  return uint16_t((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}
inline float from_bf16(uint16_t h) {
  const uint32_t b = uint32_t(h) << 16;
  float x;
  std::memcpy(&x, &b, 4);
  return x;
}
}  // namespace

bool quant_avx512_bf16_available() {
  static const bool v = cpu_has(true);
  return v;
}
bool quant_avx512_available() {
  static const bool v = cpu_has(false);
  return v;
}

void split_bf16(const float* x, int64_t m, int64_t k, uint16_t* out) {
  const int64_t kp = (k + 1) & ~int64_t(1);
  for (int64_t i = 0; i < m; i++) {
    uint16_t* hi = out + 2 * i * kp;
    uint16_t* lo = hi + kp;
    for (int64_t p = 0; p < k; p++) {
      const float v = x[i * k + p];
      hi[p] = to_bf16(v);
      lo[p] = to_bf16(v - from_bf16(hi[p]));
    }
    if (kp > k) hi[k] = lo[k] = 0;
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
void bf16_rows_avx512(int64_t m, int64_t k, const uint16_t* xsplit, const uint16_t* W, int64_t n0, int64_t n1, float* out, int64_t ldo) {
  const int64_t kp = (k + 1) & ~int64_t(1);
  const int64_t full = k / 32 * 32;
  const __mmask32 tail = k > full ? __mmask32((uint64_t(1) << (k - full)) - 1) : 0;
  for (int64_t n = n0; n < n1; n++) {
    const uint16_t* w = W + n * k;
    for (int64_t i = 0; i < m; i++) {
      const uint16_t* hi = xsplit + 2 * i * kp;
      const uint16_t* lo = hi + kp;
      __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
      for (int64_t p = 0; p < full; p += 32) {
        const __m512bh wv = (__m512bh)_mm512_loadu_si512(w + p);
        a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(hi + p), wv);
        a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(lo + p), wv);
      }
      if (tail) {
        const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(tail, w + full);
        a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_maskz_loadu_epi16(tail, hi + full), wv);
        a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_maskz_loadu_epi16(tail, lo + full), wv);
      }
      out[i * ldo + n] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    }
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl")))
void nf4_dequant_avx512(const uint8_t* data, int64_t first, int64_t count, const float* code, float s, float* dst) {
  const __m512 lut = _mm512_loadu_ps(code);
  const __m512 sv = _mm512_set1_ps(s);
  const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  const __m512i mask = _mm512_set1_epi32(15);
  const uint8_t* src = data + first / 2;
  for (int64_t j = 0; j < count; j += 32) {
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j / 2)));
    const __m512 even = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut);  // elements 2t (high nibbles)
    const __m512 odd = _mm512_permutexvar_ps(_mm512_and_si512(v, mask), lut);  // elements 2t + 1
    _mm512_storeu_ps(dst + j, _mm512_mul_ps(_mm512_permutex2var_ps(even, lo_idx, odd), sv));
    _mm512_storeu_ps(dst + j + 16, _mm512_mul_ps(_mm512_permutex2var_ps(even, hi_idx, odd), sv));
  }
}

// the same operations as nf4_dequant_avx512, over many blocks with the constants loaded once: one
// call per 64-element block (with its division and scale look-up) held nf4 decoding to about one
// element per cycle
__attribute__((target("avx512f,avx512bw,avx512vl")))
void nf4_dequant_blocks_avx512(const uint8_t* data, int64_t first, int64_t blocks, int64_t block, const float* code, const float* scales, float* dst) {
  const __m512 lut = _mm512_loadu_ps(code);
  const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  const __m512i mask = _mm512_set1_epi32(15);
  const uint8_t* src = data + first / 2;
  for (int64_t b = 0; b < blocks; b++, src += block / 2, dst += block) {
    const __m512 sv = _mm512_set1_ps(scales[b]);
    for (int64_t j = 0; j < block; j += 32) {
      const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j / 2)));
      const __m512 even = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut);
      const __m512 odd = _mm512_permutexvar_ps(_mm512_and_si512(v, mask), lut);
      _mm512_storeu_ps(dst + j, _mm512_mul_ps(_mm512_permutex2var_ps(even, lo_idx, odd), sv));
      _mm512_storeu_ps(dst + j + 16, _mm512_mul_ps(_mm512_permutex2var_ps(even, hi_idx, odd), sv));
    }
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl")))
void int8_dequant_avx512(const int8_t* data, int64_t first, int64_t count, float s, float* dst) {
  const __m512 sv = _mm512_set1_ps(s);
  const __m512 inv = _mm512_set1_ps(7.874015718698502e-3f);
  int64_t j = 0;
  for (; j + 16 <= count; j += 16) {
    const __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(data + first + j))));
    _mm512_storeu_ps(dst + j, _mm512_mul_ps(_mm512_mul_ps(q, sv), inv));
  }
  for (; j < count; j++) dst[j] = (float(data[first + j]) * s) * 7.874015718698502e-3f;
}


// ---- decoding products from the compact bytes

namespace {
constexpr int kRowGroup = 8;  // rows of x per pass over a W row: 8 accumulators + 4 weight vectors

/** acc[r] += x[r, p:p+16]·wv for the group's rows (a 16-lane FMA chain per output element). */
template <int G>
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) inline void fma_rows(__m512* acc, const float* x, int64_t ldx, int64_t p, __m512 wv) {
#pragma GCC unroll 8
  for (int r = 0; r < G; r++) acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(x + r * ldx + p), wv, acc[r]);
}

template <int G>
__attribute__((target("avx512f,avx512bw,avx512vl")))
void nf4_row_group(int64_t k, const float* x, const QWeight& w, int64_t n, float* out, int64_t ldo) {
  const __m512 lut = _mm512_loadu_ps(w.code);
  const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  const __m512i mask = _mm512_set1_epi32(15);
  __m512 acc[G];
#pragma GCC unroll 8
  for (int r = 0; r < G; r++) acc[r] = _mm512_setzero_ps();
  const int64_t first = n * k;  // a block start: k is a multiple of the block
  const uint8_t* src = w.data + first / 2;
  for (int64_t p = 0; p < k; p += 32) {
    // rows eight ahead into L2 (k/2 bytes a row), a line per 128 elements
    if ((p & 127) == 0) _mm_prefetch(reinterpret_cast<const char*>(src + (p >> 1) + 4 * k), _MM_HINT_T1);
    const float s = w.block_scale((first + p) / w.block);
    const __m512 sv = _mm512_set1_ps(s);
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + p / 2)));
    const __m512 even = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut);
    const __m512 odd = _mm512_permutexvar_ps(_mm512_and_si512(v, mask), lut);
    fma_rows<G>(acc, x, k, p, _mm512_mul_ps(_mm512_permutex2var_ps(even, lo_idx, odd), sv));
    fma_rows<G>(acc, x, k, p + 16, _mm512_mul_ps(_mm512_permutex2var_ps(even, hi_idx, odd), sv));
  }
#pragma GCC unroll 8
  for (int r = 0; r < G; r++) out[r * ldo + n] = _mm512_reduce_add_ps(acc[r]);
}

template <int G>
__attribute__((target("avx512f,avx512bw,avx512vl")))
void int8_row_group(int64_t k, const float* x, const QWeight& w, int64_t n, float* out, int64_t ldo) {
  const int8_t* src = reinterpret_cast<const int8_t*>(w.data) + n * k;
  const __m512 sv = _mm512_set1_ps(w.scales[n]);
  const __m512 inv = _mm512_set1_ps(7.874015718698502e-3f);
  __m512 acc[G];
#pragma GCC unroll 8
  for (int r = 0; r < G; r++) acc[r] = _mm512_setzero_ps();
  int64_t p = 0;
  for (; p + 16 <= k; p += 16) {
    // rows four ahead into L2, a line per 64 elements
    if ((p & 63) == 0) _mm_prefetch(reinterpret_cast<const char*>(src + p + 4 * k), _MM_HINT_T1);
    const __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + p))));
    fma_rows<G>(acc, x, k, p, _mm512_mul_ps(_mm512_mul_ps(q, sv), inv));
  }
  if (p < k) {
    // the tail as zero-padded lanes: the same 16-lane layout whatever k is
    const __mmask16 t = __mmask16((1u << (k - p)) - 1);
    const __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(t, src + p)));
    const __m512 wv = _mm512_mul_ps(_mm512_mul_ps(q, sv), inv);
#pragma GCC unroll 8
    for (int r = 0; r < G; r++) acc[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(t, x + r * k + p), wv, acc[r]);
  }
#pragma GCC unroll 8
  for (int r = 0; r < G; r++) out[r * ldo + n] = _mm512_reduce_add_ps(acc[r]);
}

template <void (*F1)(int64_t, const float*, const QWeight&, int64_t, float*, int64_t), void (*F8)(int64_t, const float*, const QWeight&, int64_t, float*, int64_t)>
void rows_by_group(int64_t m, int64_t k, const float* x, const QWeight& w, int64_t n0, int64_t n1, float* out, int64_t ldo) {
  for (int64_t n = n0; n < n1; n++) {
    int64_t i = 0;
    for (; i + kRowGroup <= m; i += kRowGroup) F8(k, x + i * k, w, n, out + i * ldo, ldo);
    for (; i < m; i++) F1(k, x + i * k, w, n, out + i * ldo, ldo);
  }
}
}  // namespace

void nf4_rows_avx512(int64_t m, int64_t k, const float* x, const QWeight& w, int64_t n0, int64_t n1, float* out, int64_t ldo) {
  rows_by_group<nf4_row_group<1>, nf4_row_group<kRowGroup>>(m, k, x, w, n0, n1, out, ldo);
}

void int8_rows_avx512(int64_t m, int64_t k, const float* x, const QWeight& w, int64_t n0, int64_t n1, float* out, int64_t ldo) {
  rows_by_group<int8_row_group<1>, int8_row_group<kRowGroup>>(m, k, x, w, n0, n1, out, ldo);
}

#else

bool quant_avx512_bf16_available() { return false; }
bool quant_avx512_available() { return false; }
void split_bf16(const float*, int64_t, int64_t, uint16_t*) {}
void bf16_rows_avx512(int64_t, int64_t, const uint16_t*, const uint16_t*, int64_t, int64_t, float*, int64_t) {}
void nf4_dequant_avx512(const uint8_t*, int64_t, int64_t, const float*, float, float*) {}
void nf4_dequant_blocks_avx512(const uint8_t*, int64_t, int64_t, int64_t, const float*, const float*, float*) {}
void int8_dequant_avx512(const int8_t*, int64_t, int64_t, float, float*) {}
void nf4_rows_avx512(int64_t, int64_t, const float*, const QWeight&, int64_t, int64_t, float*, int64_t) {}
void int8_rows_avx512(int64_t, int64_t, const float*, const QWeight&, int64_t, int64_t, float*, int64_t) {}

#endif

}  // namespace vera
