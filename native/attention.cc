// Fused scaled dot-product attention over (batch, heads, t, headDim), same semantics as the
// TypeScript reference: causal with an offset (query i sees keys j ≤ i + causalOffset), a (batch, tk)
// key mask, grouped-query heads (head h reads kv head h / (heads / kvHeads)), and rows that see no
// key output 0 with lse = -inf. K/V may be a preallocated cache read in place: kvStride positions
// allocated per kv head, the first tk used. Work goes by blocks of query rows: one block's scores
// (QB × keys) live in a per-thread scratch, never the whole T×T matrix, and are turned into
// probabilities in place. Backward recomputes them from the saved log-sum-exp (as FlashAttention does).
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gemm.h"
#include "kernels.h"
#include "thread_pool.h"

namespace vera {
namespace {

constexpr int64_t QB = 32;  // query rows per block
constexpr float kInf = std::numeric_limits<float>::infinity();

struct Attn {
  int64_t batch, heads, kvHeads, tq, tk, d;
  float scale;
  bool causal;
  int64_t offset;
  const float* keyMask;
  int64_t kvStride;  // positions allocated per kv head in K/V (≥ tk): a preallocated cache read in place

  int64_t group() const { return heads / kvHeads; }
  /** Offset of kv head (b, kvh) in K/V (and gK/gV). */
  int64_t kv_offset(int64_t b, int64_t kvh) const { return (b * kvHeads + kvh) * kvStride * d; }
  /** Keys visible to query row i (before the key mask). */
  int64_t limit(int64_t i) const { return causal ? std::max<int64_t>(0, std::min(tk, i + offset + 1)) : tk; }
  bool visible(int64_t b, int64_t i, int64_t j) const { return j < limit(i) && (!keyMask || keyMask[b * tk + j] != 0.f); }
};

/** The 10 parameters from `at` on; kvStride (default tk) at `strideAt`, after the buffers. */
Attn attn_params(const Args& a, size_t at, size_t strideAt, const char* k) {
  size_t maskLen;
  Attn p{a.dim(at), a.dim(at + 1), a.dim(at + 2), a.dim(at + 3), a.dim(at + 4), a.dim(at + 5),
         float(a.num(at + 6)), a.flag(at + 7), a.i64(at + 8), a.f32(at + 9, &maskLen), 0};
  p.kvStride = a.is_null(strideAt) ? p.tk : a.dim(strideAt);
  if (p.kvStride < p.tk) throw ArgError(std::string(k) + ": kvStride " + std::to_string(p.kvStride) + " < tk " + std::to_string(p.tk));
  require(p.heads >= 1 && p.kvHeads >= 1 && p.heads % p.kvHeads == 0, k, "heads must be a positive multiple of kvHeads");
  if (p.keyMask) need(k, "keyMask", maskLen, double(p.batch) * double(p.tk));
  return p;
}

/** Elements of q/out, of k/v (their allocation) and rows of lse. */
struct AttnSizes {
  double q, kv, rows;
};
AttnSizes attn_sizes(const Attn& p) {
  const double rows = double(p.batch) * double(p.heads) * double(p.tq);
  return {rows * double(p.d), double(p.batch) * double(p.kvHeads) * double(p.kvStride) * double(p.d), rows};
}

std::vector<float>& scratch(size_t n) {
  static thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf;
}

std::vector<unsigned char>& mask_scratch(size_t n) {
  static thread_local std::vector<unsigned char> buf;
  if (buf.size() < n) buf.resize(n);
  return buf;
}

/**
 * Probabilities of query rows [i0, i0+qb) of head (b, h) over keys [0, keys): S = scale·Q·Kᵀ,
 * masked entries 0. With `lse` null the row normalizers are computed and written to lseOut; else
 * P = exp(S − lse) from the saved values.
 */
void probabilities(const Attn& p, const float* Q, const float* K, int64_t b, int64_t h, int64_t i0, int64_t qb, int64_t keys,
                   float* P, const float* lse, float* lseOut) {
  const int64_t d = p.d;
  const float* q = Q + ((b * p.heads + h) * p.tq + i0) * d;
  const float* k = K + p.kv_offset(b, h / p.group());
  sgemm(qb, keys, d, q, d, 1, k, 1, d, P, keys, false);
  const int64_t rowBase = (b * p.heads + h) * p.tq + i0;
  for (int64_t r = 0; r < qb; r++) {
    float* s = P + r * keys;
    const int64_t i = i0 + r;
    // masked keys are marked apart from the scores: a visible score may itself be -inf or NaN
    std::vector<unsigned char>& vis = mask_scratch(size_t(keys));
    float m = -kInf;
    int64_t nVisible = 0;
    for (int64_t j = 0; j < keys; j++) {
      vis[j] = p.visible(b, i, j);
      if (vis[j]) {
        s[j] *= p.scale;
        nVisible++;
        // NaN sticks (std::max would drop it): a NaN score makes the whole row NaN, as in torch
        if (s[j] > m || s[j] != s[j]) m = s[j];
      }
    }
    if (lse) {
      const float l = lse[rowBase + r];
      if (l == -kInf) std::fill(s, s + keys, 0.f);
      else for (int64_t j = 0; j < keys; j++) s[j] = vis[j] ? std::exp(s[j] - l) : 0.f;
      continue;
    }
    if (nVisible == 0) {
      // no visible key (an all-masked row): defined as zeros, not torch's NaN, so padding rows stay harmless
      std::fill(s, s + keys, 0.f);
      lseOut[rowBase + r] = -kInf;
      continue;
    }
    if (!std::isfinite(m)) {
      // a NaN score, or visible scores all -inf or some +inf: softmax is NaN in torch
      std::fill(s, s + keys, std::numeric_limits<float>::quiet_NaN());
      lseOut[rowBase + r] = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    double sum = 0;
    for (int64_t j = 0; j < keys; j++) {
      s[j] = vis[j] ? std::exp(s[j] - m) : 0.f;
      sum += s[j];
    }
    const float inv = float(1.0 / sum);
    for (int64_t j = 0; j < keys; j++) s[j] *= inv;
    lseOut[rowBase + r] = float(double(m) + std::log(sum));
  }
}

napi_value k_attention(napi_env, const Args& a) {
  size_t nq, nk, nv, no, nl;
  const float* Q = a.f32(0, &nq);
  const float* K = a.f32(1, &nk);
  const float* V = a.f32(2, &nv);
  const Attn p = attn_params(a, 3, 15, "attention");
  float* O = a.f32(13, &no);
  float* L = a.f32(14, &nl);
  const AttnSizes z = attn_sizes(p);
  need("attention", "q", nq, z.q);
  need("attention", "k", nk, z.kv);
  need("attention", "v", nv, z.kv);
  need("attention", "out", no, z.q);
  need("attention", "lse", nl, z.rows);
  const int64_t blocks = (p.tq + QB - 1) / QB;
  const int64_t tasks = p.batch * p.heads * blocks;
  // one decoding step's attention (9 heads × 1 query × 40 keys) is a few µs of work: a hand-off
  // to a worker that the OS has parked behind Node's own threads costs far more (measured 10-25×)
  const double work = double(p.batch) * p.heads * p.tq * p.tk * p.d;
  parallel_for(tasks, work < 65536.0 ? tasks : 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const int64_t bh = t / blocks, b = bh / p.heads, h = bh % p.heads;
      const int64_t i0 = (t % blocks) * QB, qb = std::min(QB, p.tq - i0);
      const int64_t keys = p.limit(i0 + qb - 1);  // the last row sees the most keys
      float* P = scratch(size_t(qb * std::max<int64_t>(keys, 1))).data();
      probabilities(p, Q, K, b, h, i0, qb, keys, P, nullptr, L);
      const float* v = V + p.kv_offset(b, h / p.group());
      sgemm(qb, p.d, keys, P, keys, 1, v, p.d, 1, O + (bh * p.tq + i0) * p.d, p.d, false);
      if (keys == 0)
        for (int64_t r = 0; r < qb; r++) L[bh * p.tq + i0 + r] = -kInf;
    }
  });
  return nullptr;
}

napi_value k_attention_backward(napi_env, const Args& a) {
  size_t nq, nk, nv, no, nl, ngo, ngq, ngk, ngv;
  const float* Q = a.f32(0, &nq);
  const float* K = a.f32(1, &nk);
  const float* V = a.f32(2, &nv);
  const float* O = a.f32(3, &no);
  const float* L = a.f32(4, &nl);
  const float* GO = a.f32(5, &ngo);
  const Attn p = attn_params(a, 6, 19, "attentionBackward");
  float* GQ = a.f32(16, &ngq);
  float* GK = a.f32(17, &ngk);
  float* GV = a.f32(18, &ngv);
  const AttnSizes z = attn_sizes(p);
  const char* k = "attentionBackward";
  need(k, "q", nq, z.q);
  need(k, "k", nk, z.kv);
  need(k, "v", nv, z.kv);
  need(k, "out", no, z.q);
  need(k, "lse", nl, z.rows);
  need(k, "gOut", ngo, z.q);
  if (GQ) need(k, "gq", ngq, z.q);
  if (GK) need(k, "gk", ngk, z.kv);
  if (GV) need(k, "gv", ngv, z.kv);
  const int64_t d = p.d;
  // one task per (batch, kv head): the query heads of a group all add into the same gK/gV rows
  parallel_for(p.batch * p.kvHeads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const int64_t b = t / p.kvHeads, kvh = t % p.kvHeads;
      const int64_t kvOff = p.kv_offset(b, kvh);
      // the whole allocation of the head, positions past tk included (they get no gradient)
      if (GK) std::fill(GK + kvOff, GK + kvOff + p.kvStride * d, 0.f);
      if (GV) std::fill(GV + kvOff, GV + kvOff + p.kvStride * d, 0.f);
      for (int64_t h = kvh * p.group(); h < (kvh + 1) * p.group(); h++) {
        const int64_t bh = b * p.heads + h;
        for (int64_t i0 = 0; i0 < p.tq; i0 += QB) {
          const int64_t qb = std::min(QB, p.tq - i0), keys = p.limit(i0 + qb - 1);
          const int64_t qOff = (bh * p.tq + i0) * d;
          if (keys == 0) {
            if (GQ) std::fill(GQ + qOff, GQ + qOff + qb * d, 0.f);
            continue;
          }
          std::vector<float>& buf = scratch(size_t(2 * qb * keys));
          float* P = buf.data();
          float* dS = P + qb * keys;
          probabilities(p, Q, K, b, h, i0, qb, keys, P, L, nullptr);
          const float* go = GO + qOff;
          // gV += Pᵀ·gO
          if (GV) sgemm(keys, d, qb, P, 1, keys, go, d, 1, GV + kvOff, d, true);
          if (!GQ && !GK) continue;
          // dS = P ⊙ (gO·Vᵀ − D)·scale, D_i = gO_i·O_i
          sgemm(qb, keys, d, go, d, 1, V + kvOff, 1, d, dS, keys, false);
          for (int64_t r = 0; r < qb; r++) {
            double D = 0;
            for (int64_t c = 0; c < d; c++) D += double(go[r * d + c]) * O[qOff + r * d + c];
            const float Df = float(D);
            for (int64_t j = 0; j < keys; j++) dS[r * keys + j] = P[r * keys + j] * (dS[r * keys + j] - Df) * p.scale;
          }
          if (GQ) sgemm(qb, d, keys, dS, keys, 1, K + kvOff, d, 1, GQ + qOff, d, false);
          if (GK) sgemm(keys, d, qb, dS, 1, keys, Q + qOff, d, 1, GK + kvOff, d, true);
        }
      }
    }
  });
  return nullptr;
}

}  // namespace

const BindingEntry kAttentionBindings[] = {
    {"attention", k_attention},
    {"attentionBackward", k_attention_backward},
    {nullptr, nullptr},
};

}  // namespace vera
