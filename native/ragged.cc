// Ragged attention for the multi-adapter engine (inference only): T tokens of several sequences,
// each sequence with its own KV cache laid out position-major (capacity, kvHeads, headDim). One
// call per layer appends every sequence's new keys and values to its cache and lets each token
// attend causally over its own sequence's cache; the same semantics as the TypeScript reference
// (src/backends/ts/index.ts, raggedAttention). Work is split by (token, head); each output row is
// computed by one thread in a fixed order, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels.h"
#include "thread_pool.h"
#include "vec.h"

namespace vera {
namespace {


std::vector<float>& scratch(size_t n) {
  static thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf;
}

// raggedAttention(q, kNew, vNew, kCaches[], vCaches[], heads, kvHeads, headDim, scale, tokens, past, out)
napi_value k_ragged_attention(napi_env, const Args& a) {
  size_t qLen, knLen, vnLen, oLen, nSeq, nPast;
  const float* Q = a.f32(0, &qLen);
  const float* KN = a.f32(1, &knLen);
  const float* VN = a.f32(2, &vnLen);
  std::vector<size_t> kcLen, vcLen;
  const std::vector<float*> KC = a.f32list(3, &kcLen);
  const std::vector<float*> VC = a.f32list(4, &vcLen);
  const int64_t heads = a.dim(5), kvHeads = a.dim(6), d = a.dim(7);
  const float scale = float(a.num(8));
  const int32_t* tokens = a.i32(9, &nSeq);
  const int32_t* past = a.i32(10, &nPast);
  float* O = a.f32(11, &oLen);
  if (heads <= 0 || kvHeads <= 0 || d <= 0 || heads % kvHeads != 0) throw ArgError("raggedAttention: heads must be a positive multiple of kvHeads");
  if (nPast != nSeq || KC.size() != nSeq || VC.size() != nSeq) throw ArgError("raggedAttention: one token count, past length and cache pair per sequence");
  require(double(heads) * double(d) < 9e15, "raggedAttention", "heads × headDim is too large");
  const int64_t row = kvHeads * d;
  int64_t total = 0;
  for (size_t s = 0; s < nSeq; s++) {
    if (tokens[s] < 1 || past[s] < 0) throw ArgError("raggedAttention: token counts must be ≥ 1 and past lengths ≥ 0");
    const double want = (double(past[s]) + double(tokens[s])) * double(row);
    need("raggedAttention", "a key cache", kcLen[s], want);
    need("raggedAttention", "a value cache", vcLen[s], want);
    total += tokens[s];
  }
  if (double(qLen) != double(total) * double(heads) * double(d) || oLen != qLen || double(knLen) != double(total) * double(row) || vnLen != knLen) throw ArgError("raggedAttention: q, k, v or out does not hold the sequences' tokens");
  // append, and note each token's sequence and absolute position
  std::vector<int32_t> seqOf(total), posOf(total);
  int64_t start = 0;
  for (size_t s = 0; s < nSeq; s++) {
    std::memcpy(KC[s] + int64_t(past[s]) * row, KN + start * row, size_t(tokens[s] * row) * sizeof(float));
    std::memcpy(VC[s] + int64_t(past[s]) * row, VN + start * row, size_t(tokens[s] * row) * sizeof(float));
    for (int32_t i = 0; i < tokens[s]; i++) {
      seqOf[start + i] = int32_t(s);
      posOf[start + i] = past[s] + i;
    }
    start += tokens[s];
  }
  const int64_t group = heads / kvHeads;
#if defined(VERA_X86)
  const bool avx2 = has_avx2_fma() && d % 8 == 0;
#else
  const bool avx2 = false;
#endif
#if defined(VERA_X86)
  if (avx2) {
    // one task per (token, KV head): the heads sharing that KV head read its cache rows once
    parallel_for(total * kvHeads, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t task = t0; task < t1; task++) {
        const int64_t t = task / kvHeads, kh = task % kvHeads;
        const int32_t s = seqOf[t];
        const int64_t keys = int64_t(posOf[t]) + 1;
        std::vector<float>& buf = scratch(size_t(3 * keys));
        const int64_t h0 = kh * group;
        attend_rows_avx2(Q + (t * heads + h0) * d, group, KC[s] + kh * d, VC[s] + kh * d, row, keys, d, scale, buf.data(),
                         O + (t * heads + h0) * d);
      }
    });
    return nullptr;
  }
#endif
  parallel_for(total * heads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t task = t0; task < t1; task++) {
      const int64_t t = task / heads, h = task % heads;
      const int32_t s = seqOf[t];
      const int64_t keys = int64_t(posOf[t]) + 1;
      const float* q = Q + (t * heads + h) * d;
      const float* K = KC[s] + (h / group) * d;
      const float* V = VC[s] + (h / group) * d;
      std::vector<float>& buf = scratch(size_t(keys + d));
      float* sc = buf.data();
      float* acc = sc + keys;
      float m = -INFINITY;
      for (int64_t j = 0; j < keys; j++) {
        sc[j] = dot(q, K + j * row, d) * scale;
        if (sc[j] > m || sc[j] != sc[j]) m = sc[j];  // NaN sticks
      }
      float* o = O + (t * heads + h) * d;
      if (!std::isfinite(m)) {
        // a NaN score (or infinite ones): torch's softmax row is NaN, so is the output
        std::fill(o, o + d, std::numeric_limits<float>::quiet_NaN());
        continue;
      }
      double sum = 0;
      std::fill(acc, acc + d, 0.f);
      for (int64_t j = 0; j < keys; j++) {
        const float e = std::exp(sc[j] - m);
        sum += e;
        const float* v = V + j * row;
        for (int64_t c = 0; c < d; c++) acc[c] += e * v[c];
      }
      const float inv = float(1.0 / sum);
      for (int64_t c = 0; c < d; c++) o[c] = acc[c] * inv;
    }
  });
  return nullptr;
}

}  // namespace

const BindingEntry kRaggedBindings[] = {
    {"raggedAttention", k_ragged_attention},
    {nullptr, nullptr},
};

}  // namespace vera
