// Matmuls with a frozen compact weight W (rows = out, cols = in; bf16, int8 or nf4, laid out as in
// src/tensor/quant.ts). W is never expanded whole: each task dequantizes a tile of it into a small
// per-thread float32 buffer (bit-identical to the TypeScript reference's dequantization) and runs
// the float32 kernels on that tile, so the compact bytes are read once per call.
//
// Forward, out (m × rows) = x (m × cols) · Wᵀ: tasks are tiles of W's rows; with m ≤ 64 (decoding)
// each tile goes through the small-m dot kernel (AVX2/FMA or portable), or, for bf16 on a CPU with
// AVX-512 BF16, straight from the bf16 bytes through vdpbf16ps (quant_avx512.cc); larger m run the
// blocked GEMM on the tile. Input gradient, gx (m × cols) = gy (m × rows) · W: tasks are fixed
// strips of W's columns, each walking every row tile in order. Every output element's sequence of
// operations is fixed by the tiling alone, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gemm.h"
#include "kernels.h"
#include "quant.h"
#include "thread_pool.h"

namespace vera {

void dequant_range(const QWeight& w, int64_t lo, int64_t hi, float* dst) {
  static const bool avx = quant_avx512_available();
  switch (w.fmt) {
    case QFmt::BF16: {
      const uint16_t* src = reinterpret_cast<const uint16_t*>(w.data);
      for (int64_t i = lo; i < hi; i++) {
        uint16_t h;
        std::memcpy(&h, src + i, 2);
        const uint32_t bits = uint32_t(h) << 16;
        std::memcpy(dst + (i - lo), &bits, 4);
      }
      break;
    }
    case QFmt::INT8: {
      const int8_t* src = reinterpret_cast<const int8_t*>(w.data);
      const float inv127 = 7.874015718698502e-3f;
      int64_t i = lo;
      while (i < hi) {
        const int64_t r = i / w.cols;
        const int64_t end = std::min(hi, (r + 1) * w.cols);
        const float s = w.scales[r];
        if (avx && end - i >= 16) {
          const int64_t c = (end - i) / 16 * 16;
          int8_dequant_avx512(src, i, c, s, dst + (i - lo));
          i += c;
        }
        for (; i < end; i++) dst[i - lo] = (float(src[i]) * s) * inv127;
      }
      break;
    }
    case QFmt::NF4: {
      int64_t i = lo;
      while (i < hi) {
        const int64_t b = i / w.block;
        if (avx && w.block % 32 == 0 && i == b * w.block && hi - i >= w.block) {
          // whole blocks in one call, their scales gathered first
          static thread_local std::vector<float> scales;
          const int64_t nb = (hi - i) / w.block;
          scales.resize(size_t(nb));
          for (int64_t t = 0; t < nb; t++) scales[size_t(t)] = w.block_scale(b + t);
          nf4_dequant_blocks_avx512(w.data, i, nb, w.block, w.code, scales.data(), dst + (i - lo));
          i += nb * w.block;
          continue;
        }
        const int64_t end = std::min(hi, (b + 1) * w.block);
        const float s = w.block_scale(b);
        if (avx && (i & 1) == 0 && end - i >= 32) {
          const int64_t c = (end - i) / 32 * 32;
          nf4_dequant_avx512(w.data, i, c, w.code, s, dst + (i - lo));
          i += c;
        }
        for (; i < end; i++) {
          const uint8_t byte = w.data[i >> 1];
          dst[i - lo] = w.code[(i & 1) ? (byte & 15) : (byte >> 4)] * s;
        }
      }
      break;
    }
  }
}

namespace {

constexpr int64_t kRowTile = 16;   // W rows per forward task when m ≤ 64
constexpr int64_t kBigTile = 64;   // W rows per forward task otherwise, and per input-gradient step
constexpr int64_t kColStrip = 256; // W columns per input-gradient task
constexpr int64_t kSmall = 64;

QWeight read_weight(const Args& a, size_t at, const char* K) {
  QWeight w;
  const int64_t fmt = a.i64(at);
  require(fmt >= 0 && fmt <= 2, K, "format must be 0 (bf16), 1 (int8) or 2 (nf4)");
  w.fmt = QFmt(fmt);
  w.rows = a.dim(at + 1);
  w.cols = a.dim(at + 2);
  size_t nData = 0, nScales = 0, nCode = 0, nQ = 0, nS2 = 0, nC2 = 0;
  w.data = a.u8(at + 3, &nData);
  w.scales = a.f32(at + 4, &nScales);
  w.block = a.dim(at + 5);
  w.code = a.f32(at + 6, &nCode);
  w.qscales = a.u8(at + 7, &nQ);
  w.scales2 = a.f32(at + 8, &nS2);
  w.code2 = a.f32(at + 9, &nC2);
  w.offset = float(a.num(at + 10));
  w.nested = !a.is_null(at + 7);
  const double n = double(w.rows) * double(w.cols);
  if (w.fmt == QFmt::BF16) need(K, "data", nData, 2 * n);
  else if (w.fmt == QFmt::INT8) {
    need(K, "data", nData, n);
    need(K, "scales", nScales, double(w.rows));
  } else {
    require(w.block >= 16 && w.block <= 4096 && (w.block & (w.block - 1)) == 0, K, "blockSize must be a power of two in [16, 4096]");
    need(K, "data", nData, std::ceil(n / 2));
    need(K, "code", nCode, 16);
    const double blocks = std::ceil(n / double(w.block));
    if (w.nested) {
      need(K, "qscales", nQ, blocks);
      need(K, "scales2", nS2, std::ceil(blocks / 256));
      need(K, "code2", nC2, 256);
    } else {
      need(K, "scales", nScales, blocks);
    }
  }
  return w;
}

/** out (m × rows) = x (m × cols) · Wᵀ. */
void quant_forward(const QWeight& w, const float* x, int64_t m, float* out) {
  const int64_t N = w.rows, K = w.cols;
  if (m == 0 || N == 0) return;
  if (K == 0) {
    std::fill(out, out + m * N, 0.0f);
    return;
  }
  const bool small = m <= kSmall;
  const int64_t tile = small ? kRowTile : kBigTile;
  const int64_t tiles = (N + tile - 1) / tile;
  // bf16 decoding with AVX-512 BF16: x split once into bf16 (hi, lo) pairs, W read as stored
  std::vector<uint16_t> xsplit;
  const bool dpbf16 = small && w.fmt == QFmt::BF16 && quant_avx512_bf16_available();
  if (dpbf16) {
    xsplit.resize(size_t(2 * m * ((K + 1) & ~int64_t(1))));
    split_bf16(x, m, K, xsplit.data());
  }
  // int8 and nf4 decoding with AVX-512: dequantized in registers, no float32 tile (a tile written
  // and read back held nf4 to ~40% of the bandwidth bound at batch 1)
  const bool fused = small && quant_avx512_available() &&
                     (w.fmt == QFmt::INT8 || (w.fmt == QFmt::NF4 && w.block % 64 == 0 && K % w.block == 0));
  parallel_for(tiles, 1, [&](int64_t t0, int64_t t1) {
    static thread_local AlignedFloats buf;
    if (!dpbf16 && !fused) buf.resize(size_t(tile * K));
    for (int64_t t = t0; t < t1; t++) {
      const int64_t n0 = t * tile, n1 = std::min(N, n0 + tile);
      if (dpbf16) {
        bf16_rows_avx512(m, K, xsplit.data(), reinterpret_cast<const uint16_t*>(w.data), n0, n1, out, N);
        continue;
      }
      if (fused) {
        if (w.fmt == QFmt::NF4) nf4_rows_avx512(m, K, x, w, n0, n1, out, N);
        else int8_rows_avx512(m, K, x, w, n0, n1, out, N);
        continue;
      }
      dequant_range(w, n0 * K, n1 * K, buf.data());
      if (small) small_nt_rows(m, K, x, K, buf.data(), K, 0, n1 - n0, out + n0, N, false);
      else sgemm(m, n1 - n0, K, x, K, 1, buf.data(), 1, K, out + n0, N, false);
    }
  });
}

/** gx (m × cols) = gy (m × rows) · W. */
void quant_input_grad(const QWeight& w, const float* gy, int64_t m, float* gx) {
  const int64_t N = w.rows, K = w.cols;
  if (m == 0 || K == 0) return;
  if (N == 0) {
    std::fill(gx, gx + m * K, 0.0f);
    return;
  }
  const int64_t strips = (K + kColStrip - 1) / kColStrip;
  parallel_for(strips, 1, [&](int64_t s0, int64_t s1) {
    static thread_local AlignedFloats buf;
    buf.resize(size_t(kBigTile * kColStrip));
    for (int64_t s = s0; s < s1; s++) {
      const int64_t k0 = s * kColStrip, k1 = std::min(K, k0 + kColStrip), kw = k1 - k0;
      for (int64_t n0 = 0; n0 < N; n0 += kBigTile) {
        const int64_t n1 = std::min(N, n0 + kBigTile);
        for (int64_t n = n0; n < n1; n++) dequant_range(w, n * K + k0, n * K + k1, buf.data() + (n - n0) * kw);
        sgemm(m, kw, n1 - n0, gy + n0, N, 1, buf.data(), kw, 1, gx + k0, K, n0 > 0);
      }
    }
  });
}

// quantMatmul(x, rows, fmt, wRows, wCols, data, scales, blockSize, code, qscales, scales2, code2, offset, out, inputGrad)
napi_value k_quant_matmul(napi_env, const Args& a) {
  const char* K = "quantMatmul";
  const int64_t m = a.dim(1);
  const QWeight w = read_weight(a, 2, K);
  const bool inputGrad = a.flag(14);
  size_t nx = 0, no = 0;
  const float* x = a.f32(0, &nx);
  float* out = a.f32(13, &no);
  const double inner = inputGrad ? double(w.rows) : double(w.cols);
  const double outer = inputGrad ? double(w.cols) : double(w.rows);
  need(K, "x", nx, double(m) * inner);
  need(K, "out", no, double(m) * outer);
  if (inputGrad) quant_input_grad(w, x, m, out);
  else quant_forward(w, x, m, out);
  return nullptr;
}

napi_value k_quant_kernel(napi_env env, const Args&) {
  napi_value r;
  napi_create_string_utf8(env, quant_avx512_bf16_available() ? "avx512-bf16" : quant_avx512_available() ? "avx512" : "portable", NAPI_AUTO_LENGTH, &r);
  return r;
}

}  // namespace

const BindingEntry kQuantBindings[] = {
    {"quantMatmul", k_quant_matmul},
    {"quantKernel", k_quant_kernel},
    {nullptr, nullptr},
};

}  // namespace vera
