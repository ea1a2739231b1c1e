// Blocked GEMM after Goto & van de Geijn / BLIS: C is cut into NC-wide column panels, k into
// KC-deep slabs; for each slab the B panel is packed into NR-wide micro-panels (stays in L3/L2),
// each MC-high block of A into MR-high micro-panels (stays in L2), and the micro-kernel streams
// both from L1 into an MR×NR register tile of C. Threads take disjoint tiles of C (or whole batch
// entries), so no two threads ever write the same element and results do not depend on the count.
#include "gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "thread_pool.h"
#include "vec.h"

namespace vera {
namespace {

// MC·KC floats of A (144 KB) stay in L2 beside the streamed B micro-panels, a KC×NR micro-panel of
// B (16 KB) in L1 with room for A's micro-panel (BLIS's choice for Zen)
#ifndef VERA_MC
#define VERA_MC 144
#define VERA_KC 256
#endif
constexpr int64_t MC = VERA_MC;   // rows of A per L2 block (multiple of MR)
constexpr int64_t KC = VERA_KC;   // most depth of one slab
constexpr int64_t NC = 3072;  // columns of B per panel (multiple of NR)

void micro_kernel_portable(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, bool accumulate) {
  float acc[MR][NR] = {};
  for (int64_t p = 0; p < kc; p++) {
    const float* a = Ap + p * MR;
    const float* b = Bp + p * NR;
    for (int i = 0; i < MR; i++)
      for (int j = 0; j < NR; j++) acc[i][j] += a[i] * b[j];
  }
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) C[i * ldc + j] = accumulate ? C[i * ldc + j] + acc[i][j] : acc[i][j];
}

MicroKernel pick_kernel() {
#if defined(VERA_X86)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !std::getenv("VERA_NO_AVX2")) return micro_kernel_avx2;
#endif
  return micro_kernel_portable;
}

const MicroKernel kernel = pick_kernel();

/** Per-thread packing buffers, 64-byte aligned. */
struct PackBuffers {
  float* a = nullptr;
  float* b = nullptr;
  PackBuffers() {
    a = static_cast<float*>(std::aligned_alloc(64, MC * KC * sizeof(float)));
    b = static_cast<float*>(std::aligned_alloc(64, KC * NC * sizeof(float)));
  }
  ~PackBuffers() {
    std::free(a);
    std::free(b);
  }
};

PackBuffers& buffers() {
  static thread_local PackBuffers bufs;
  return bufs;
}

/** A[0:mc, 0:kc] → MR-row micro-panels, p-major inside each panel, zero-padded. */
void pack_a(int64_t mc, int64_t kc, const float* A, int64_t rs, int64_t cs, float* out) {
  for (int64_t i0 = 0; i0 < mc; i0 += MR) {
    const int64_t mr = std::min<int64_t>(MR, mc - i0);
    float* dst = out + i0 * kc;
    if (cs == 1 && mr == MR) {
      // six row streams in, one contiguous stream out
      const float* r0 = A + i0 * rs;
      for (int64_t p = 0; p < kc; p++) {
        float* d = dst + p * MR;
        d[0] = r0[p];
        d[1] = r0[rs + p];
        d[2] = r0[2 * rs + p];
        d[3] = r0[3 * rs + p];
        d[4] = r0[4 * rs + p];
        d[5] = r0[5 * rs + p];
      }
      continue;
    }
    if (cs == 1) {
      for (int64_t i = 0; i < mr; i++) {
        const float* src = A + (i0 + i) * rs;
        for (int64_t p = 0; p < kc; p++) dst[p * MR + i] = src[p];
      }
    } else {
      for (int64_t p = 0; p < kc; p++) {
        const float* src = A + p * cs + i0 * rs;
        for (int64_t i = 0; i < mr; i++) dst[p * MR + i] = src[i * rs];
      }
    }
    if (mr < MR)
      for (int64_t p = 0; p < kc; p++)
        for (int64_t i = mr; i < MR; i++) dst[p * MR + i] = 0.f;
  }
}

/** B[0:kc, 0:nc] → NR-column micro-panels, p-major inside each panel, zero-padded. */
void pack_b(int64_t kc, int64_t nc, const float* B, int64_t rs, int64_t cs, float* out) {
  for (int64_t j0 = 0; j0 < nc; j0 += NR) {
    const int64_t nr = std::min<int64_t>(NR, nc - j0);
    float* dst = out + j0 * kc;
    if (cs == 1) {
      for (int64_t p = 0; p < kc; p++) {
        const float* src = B + p * rs + j0;
        float* d = dst + p * NR;
        std::memcpy(d, src, nr * sizeof(float));
        for (int64_t j = nr; j < NR; j++) d[j] = 0.f;
      }
    } else {
      for (int64_t j = 0; j < nr; j++) {
        const float* src = B + (j0 + j) * cs;
        for (int64_t p = 0; p < kc; p++) dst[p * NR + j] = src[p * rs];
      }
      if (nr < NR)
        for (int64_t p = 0; p < kc; p++)
          for (int64_t j = nr; j < NR; j++) dst[p * NR + j] = 0.f;
    }
  }
}

/** C[0:mc, 0:nc] (+)= packed A block · packed B panel, one MR×NR register tile at a time. */
void macro_kernel(int64_t mc, int64_t nc, int64_t kc, const float* a, const float* b, float* C, int64_t ldc, bool acc) {
  alignas(64) float tile[MR * NR];
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int64_t nr = std::min<int64_t>(NR, nc - jr);
    const float* bp = b + jr * kc;
    for (int64_t ir = 0; ir < mc; ir += MR) {
      const int64_t mr = std::min<int64_t>(MR, mc - ir);
      const float* ap = a + ir * kc;
      float* c = C + ir * ldc + jr;
      if (mr == MR && nr == NR) {
        kernel(kc, ap, bp, c, ldc, acc);
      } else {
        // edge tile: compute the full tile aside, keep the part inside C
        kernel(kc, ap, bp, tile, NR, false);
        for (int64_t i = 0; i < mr; i++)
          for (int64_t j = 0; j < nr; j++) c[i * ldc + j] = acc ? c[i * ldc + j] + tile[i * NR + j] : tile[i * NR + j];
      }
    }
  }
}

/** Depth of each slab: k cut into equal slabs of at most KC (k = 512 → 2×256, not 384 + 128). */
int64_t slab_depth(int64_t k) {
  const int64_t slabs = (k + KC - 1) / KC;
  return (k + slabs - 1) / slabs;
}

bool zero_k(int64_t m, int64_t n, int64_t k, float* C, int64_t ldc, bool accumulate) {
  if (k > 0) return false;
  if (!accumulate)
    for (int64_t i = 0; i < m; i++) std::memset(C + i * ldc, 0, n * sizeof(float));
  return true;
}

/** One thread's whole product: the five loops around the micro-kernel. */
void gemm_serial(int64_t m, int64_t n, int64_t k,
                 const float* A, int64_t rsA, int64_t csA,
                 const float* B, int64_t rsB, int64_t csB,
                 float* C, int64_t ldc, bool accumulate) {
  if (m <= 0 || n <= 0 || zero_k(m, n, k, C, ldc, accumulate)) return;
  PackBuffers& buf = buffers();
  const int64_t kStep = slab_depth(k);
  for (int64_t jc = 0; jc < n; jc += NC) {
    const int64_t nc = std::min(NC, n - jc);
    for (int64_t pc = 0; pc < k; pc += kStep) {
      const int64_t kc = std::min(kStep, k - pc);
      pack_b(kc, nc, B + pc * rsB + jc * csB, rsB, csB, buf.b);
      for (int64_t ic = 0; ic < m; ic += MC) {
        const int64_t mc = std::min(MC, m - ic);
        pack_a(mc, kc, A + ic * rsA + pc * csA, rsA, csA, buf.a);
        macro_kernel(mc, nc, kc, buf.a, buf.b, C + ic * ldc + jc, ldc, accumulate || pc > 0);
      }
    }
  }
}

/**
 * One product on every thread: each slab of B is packed once, by all threads together, into the
 * caller's panel; then the threads take blocks of A's rows, each packing its own block. Nothing is
 * packed twice, and each C element still sees the same slabs in the same order.
 */
void gemm_shared_b(int64_t m, int64_t n, int64_t k,
                   const float* A, int64_t rsA, int64_t csA,
                   const float* B, int64_t rsB, int64_t csB,
                   float* C, int64_t ldc, bool accumulate, int threads) {
  if (zero_k(m, n, k, C, ldc, accumulate)) return;
  float* panel = buffers().b;
  // a multiple of `threads` blocks of about equal height, so no thread is left with the odd one
  const int64_t blocks = ((m + MC - 1) / MC + threads - 1) / threads * threads;
  const int64_t mStep = ((m + blocks - 1) / blocks + MR - 1) / MR * MR;
  const int64_t kStep = slab_depth(k);
  for (int64_t jc = 0; jc < n; jc += NC) {
    const int64_t nc = std::min(NC, n - jc);
    for (int64_t pc = 0; pc < k; pc += kStep) {
      const int64_t kc = std::min(kStep, k - pc);
      parallel_for((nc + NR - 1) / NR, 1, [&](int64_t p0, int64_t p1) {
        const int64_t j0 = p0 * NR, j1 = std::min(nc, p1 * NR);
        pack_b(kc, j1 - j0, B + pc * rsB + (jc + j0) * csB, rsB, csB, panel + j0 * kc);
      });
      parallel_for((m + mStep - 1) / mStep, 1, [&](int64_t b0, int64_t b1) {
        float* a = buffers().a;
        for (int64_t blk = b0; blk < b1; blk++) {
          const int64_t ic = blk * mStep, mc = std::min(mStep, m - ic);
          pack_a(mc, kc, A + ic * rsA + pc * csA, rsA, csA, a);
          macro_kernel(mc, nc, kc, a, panel, C + ic * ldc + jc, ldc, accumulate || pc > 0);
        }
      });
    }
  }
}

}  // namespace

bool has_avx2_fma() { return kernel != micro_kernel_portable; }

const char* gemm_kernel_name() { return kernel == micro_kernel_portable ? "portable" : "avx2-fma"; }

void sgemm_batched(int64_t batch, int64_t m, int64_t n, int64_t k,
                   const float* A, int64_t rsA, int64_t csA, int64_t strideA,
                   const float* B, int64_t rsB, int64_t csB, int64_t strideB,
                   float* C, int64_t ldc, int64_t strideC, bool accumulate) {
  if (batch <= 0 || m <= 0 || n <= 0) return;
  const int threads = num_threads();
  const double flops = 2.0 * double(batch) * m * n * std::max<int64_t>(k, 1);
  // Shared packing of B pays for its two hand-offs only on large products; below about 300³ each
  // thread packing its own tile's operands was measured faster (n = 128: 1.5×, n = 256: 1.2×).
  if (threads > 1 && batch < threads && m >= 4 * MR * threads && flops > 2.0 * 300 * 300 * 300) {
    for (int64_t b = 0; b < batch; b++)
      gemm_shared_b(m, n, k, A + b * strideA, rsA, csA, B + b * strideB, rsB, csB, C + b * strideC, ldc, accumulate, threads);
    return;
  }
  // Split each product's C into mParts × nParts tiles so there are about `threads` tasks.
  int64_t parts = 1;
  if (threads > 1 && flops > 2.0 * 48 * 48 * 48 && batch < threads) parts = (threads + batch - 1) / batch;
  int64_t nParts = 1, mParts = 1;
  if (parts > 1) {
    if (n >= m && n >= parts * NR) nParts = parts;
    else if (m >= parts * MR) mParts = parts;
    else if (n >= parts * NR) nParts = parts;
  }
  const int64_t nStep = ((n + nParts - 1) / nParts + NR - 1) / NR * NR;
  const int64_t mStep = ((m + mParts - 1) / mParts + MR - 1) / MR * MR;
  const int64_t tasks = batch * mParts * nParts;
  const int64_t grain = flops < 2.0 * 32 * 32 * 32 * threads ? tasks : 1;  // tiny: stay on this thread
  parallel_for(tasks, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const int64_t b = t / (mParts * nParts);
      const int64_t mi = (t / nParts) % mParts;
      const int64_t ni = t % nParts;
      const int64_t i0 = mi * mStep, j0 = ni * nStep;
      if (i0 >= m || j0 >= n) continue;
      const int64_t mm = std::min(mStep, m - i0), nn = std::min(nStep, n - j0);
      gemm_serial(mm, nn, k, A + b * strideA + i0 * rsA, rsA, csA, B + b * strideB + j0 * csB, rsB, csB,
                  C + b * strideC + i0 * ldc + j0, ldc, accumulate);
    }
  });
}

void sgemm(int64_t m, int64_t n, int64_t k,
           const float* A, int64_t rsA, int64_t csA,
           const float* B, int64_t rsB, int64_t csB,
           float* C, int64_t ldc, bool accumulate) {
  sgemm_batched(1, m, n, k, A, rsA, csA, 0, B, rsB, csB, 0, C, ldc, 0, accumulate);
}

}  // namespace vera
