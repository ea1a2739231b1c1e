// Blocked GEMM after Goto & van de Geijn / BLIS: C is cut into NC-wide column panels, k into
// KC-deep slabs; for each slab the B panel is packed into NR-wide micro-panels (stays in L3/L2),
// each MC-high block of A into MR-high micro-panels (stays in L2), and the micro-kernel streams
// both from L1 into an MR×NR register tile of C. Threads take disjoint tiles of C (or whole batch
// entries), so no two threads ever write the same element and results do not depend on the count.
// Products with few rows of A (decoding: m ≤ 64) skip packing and stream B once, in place
// (gemm_small_m below, kernels in gemm_avx2.cc). With AVX-512, A's rows are read in place where
// the cache allows (rows_in_place), and more rows against a larger nn.Linear weight run as Cᵀ =
// W·Xᵀ (gemm_weight_rows): both without packing the operand they read in place, both same bits.
#include "gemm.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "thread_pool.h"
#include "vec.h"

namespace vera {
namespace {

// KC is shared by every micro-kernel: each C element is one FMA chain over a slab, so the AVX-512
// and AVX2 paths (and any thread count) cut k alike and give the same bits. 256: 512 measured the
// same on Zen 4 (GEMM n = 256–1024 within run-to-run noise, both kernels), and keeping 256 keeps
// every product's rounding, and so the committed experiment results, as they were computed.
#ifndef VERA_KC
#define VERA_KC 256
#endif
constexpr int64_t KC = VERA_KC;   // most depth of one slab
constexpr int64_t NC = 3072;  // columns of B per panel (a multiple of every NR); 6 MB of packed B in L3
// AVX2 6×16: MC·KC floats of A (144 KB) stay in L2 beside the B micro-panel (16 KB) the
// micro-kernel sweeps the A block with
#ifndef VERA_MC
#define VERA_MC 144
#endif
// AVX-512 12×32 (Zen 4: L1d 32 KB, L2 1 MB a core): the A block is 240×KC floats (240 KB) in L2
// beside the 32 KB B micro-panel; the 12 KB A micro-panel is read from L1
#ifndef VERA_NC512
#define VERA_NC512 3072
#endif
#ifndef VERA_MC512
#define VERA_MC512 240
#endif

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

bool pick_avx2() {
#if defined(VERA_X86)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !std::getenv("VERA_NO_AVX2");
#else
  return false;
#endif
}

const bool use_avx2 = pick_avx2();

bool pick_avx512() {
#if defined(VERA_X86)
  return use_avx2 && __builtin_cpu_supports("avx512f") && !std::getenv("VERA_NO_AVX512");
#else
  return false;
#endif
}

const bool use_avx512 = pick_avx512();

constexpr int64_t kMaxMC = VERA_MC > VERA_MC512 ? VERA_MC : VERA_MC512;
// slabs of k a large product runs back to back on each C tile (gemm_shared_b): 2048³ on 2 threads
// 2-4% faster than one (C is read and written half as often), 3 or 4 no better than 2
constexpr int64_t kSlabsAtOnce = 2;
#ifndef VERA_INPLACE_A
#define VERA_INPLACE_A 1
#endif
constexpr bool kInPlaceA = VERA_INPLACE_A;

/** Whether `rows` rows `ld` floats apart, read at one depth, fall into at most 6 of L1's 64 sets each (rows_in_place). */
bool rows_share_l1(int64_t rows, int64_t ld) {
  int perSet[64] = {};
  for (int64_t i = 0; i < rows; i++)
    if (++perSet[(uint64_t(i) * uint64_t(ld) * sizeof(float) / 64) % 64] > 6) return false;
  return true;
}

/**
 * Per-thread packing buffers, 64-byte aligned (sized for every blocking). Not AlignedFloats: that
 * zero-fills, which would make all 6 MB of B's panel resident in every thread; small products
 * touch only its first pages.
 */
struct PackBuffers {
  float* a = nullptr;
  float* b = nullptr;
  PackBuffers() {
    a = static_cast<float*>(std::aligned_alloc(64, kSlabsAtOnce * kMaxMC * KC * sizeof(float)));
    b = static_cast<float*>(std::aligned_alloc(64, kSlabsAtOnce * KC * NC * sizeof(float)));
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

/** The packed GEMM for one micro-tile shape MR_×NR_ (the loops around its micro-kernel). */
template <int MR_, int NR_, int64_t MC_, int64_t NC_ = NC>
struct Blocked {
static constexpr int64_t NC = NC_;  // columns of B per panel
static constexpr int MR = MR_;
static constexpr int NR = NR_;
static constexpr int64_t MC = MC_;  // rows of A per L2 block (multiple of MR)
static_assert(MC % MR == 0 && NC % NR == 0, "blocking");
static MicroKernel kernel;
/** The micro-kernel reading A's rows in place, where there is one (else null). */
static RowsKernel rows_kernel;

/** A[0:mc, 0:kc] → MR-row micro-panels, p-major inside each panel, zero-padded. */
static void pack_a(int64_t mc, int64_t kc, const float* A, int64_t rs, int64_t cs, float* out) {
  for (int64_t i0 = 0; i0 < mc; i0 += MR) {
    const int64_t mr = std::min<int64_t>(MR, mc - i0);
    float* dst = out + i0 * kc;
    if (MR == 6 && cs == 1 && mr == MR) {
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
    if (cs == 1 && mr == MR) {
      // MR row streams in, one contiguous stream out (the compiler unrolls the MR loop)
      const float* r0 = A + i0 * rs;
      for (int64_t p = 0; p < kc; p++) {
        float* d = dst + p * MR;
        for (int i = 0; i < MR; i++) d[i] = r0[i * rs + p];
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
static void pack_b(int64_t kc, int64_t nc, const float* B, int64_t rs, int64_t cs, float* out) {
  for (int64_t j0 = 0; j0 < nc; j0 += NR) {
    const int64_t nr = std::min<int64_t>(NR, nc - j0);
    float* dst = out + j0 * kc;
    if (cs == 1) {
      for (int64_t p = 0; p < kc; p++) {
        const float* src = B + p * rs + j0;
        float* d = dst + p * NR;
        if (nr == NR) {
          // a fixed-size copy the compiler turns into vector moves (memcpy of a run-time size
          // became `rep movsq`, whose start-up cost dominated packing)
          for (int j = 0; j < NR; j++) d[j] = src[j];
          continue;
        }
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
static void macro_kernel(int64_t mc, int64_t nc, int64_t kc, const float* a, const float* b, float* C, int64_t ldc, bool acc) {
  alignas(64) float tile[MR * NR];
  auto one = [&](int64_t ir, int64_t jr) {
    const int64_t nr = std::min<int64_t>(NR, nc - jr);
    const int64_t mr = std::min<int64_t>(MR, mc - ir);
    const float* bp = b + jr * kc;
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
  };
  // the B micro-panel is swept down the whole A block (in L2) before the next one is read
  for (int64_t jr = 0; jr < nc; jr += NR)
    for (int64_t ir = 0; ir < mc; ir += MR) one(ir, jr);
}

/**
 * macro_kernel over `slabs` consecutive slabs of k at once: each C tile gets slab 0's product, then
 * slab 1's, … while it is in L1, instead of one pass over C per slab. Each slab is still one FMA
 * chain per element added to C in slab order, so the bits are those of separate passes.
 */
static void macro_kernel_slabs(int64_t mc, int64_t nc, int slabs, const int64_t* kcs, const float* const* as, const float* const* bs,
                               float* C, int64_t ldc, bool acc) {
  alignas(64) float tile[MR * NR];
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int64_t nr = std::min<int64_t>(NR, nc - jr);
    for (int64_t ir = 0; ir < mc; ir += MR) {
      const int64_t mr = std::min<int64_t>(MR, mc - ir);
      float* c = C + ir * ldc + jr;
      for (int sl = 0; sl < slabs; sl++) {
        const bool add = acc || sl > 0;
        const float* bp = bs[sl] + jr * kcs[sl];
        const float* ap = as[sl] + ir * kcs[sl];
        if (mr == MR && nr == NR) {
          kernel(kcs[sl], ap, bp, c, ldc, add);
        } else {
          kernel(kcs[sl], ap, bp, tile, NR, false);
          for (int64_t i = 0; i < mr; i++)
            for (int64_t j = 0; j < nr; j++) c[i * ldc + j] = add ? c[i * ldc + j] + tile[i * NR + j] : tile[i * NR + j];
        }
      }
    }
  }
}

/**
 * Whether the micro-kernel reads A's rows in place instead of packing them: A contiguous along k,
 * and its MR rows at the same depth falling in enough L1 sets (Zen 4: 64 sets of 8 ways) that they
 * stay there beside the B micro-panel. Rows 2 KB apart share 2 sets, 6 rows each: 512³ 4% faster than
 * packing; 4 or 8 KB apart (k = 1024, 2048) all twelve land in one set and thrash: packing wins.
 */
static bool rows_in_place(int64_t csA, int64_t lda) {
  return rows_kernel && kInPlaceA && csA == 1 && rows_share_l1(MR, lda);
}

/** macro_kernel_slabs reading A's rows in place (rows along k, lda apart) with rows_kernel. */
static void macro_kernel_slabs_rows(int64_t mc, int64_t nc, int slabs, const int64_t* kcs, const int64_t* starts, const float* A, int64_t lda,
                                    const float* const* bs, float* C, int64_t ldc, bool acc) {
  alignas(64) float tile[MR * NR];
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int64_t nr = std::min<int64_t>(NR, nc - jr);
    for (int64_t ir = 0; ir < mc; ir += MR) {
      const int mr = int(std::min<int64_t>(MR, mc - ir));
      float* c = C + ir * ldc + jr;
      for (int sl = 0; sl < slabs; sl++) {
        const bool add = acc || sl > 0;
        const float* bp = bs[sl] + jr * kcs[sl];
        const float* ap = A + ir * lda + starts[sl];
        if (nr == NR) {
          rows_kernel(kcs[sl], ap, lda, mr, bp, c, ldc, add);
        } else {
          rows_kernel(kcs[sl], ap, lda, mr, bp, tile, NR, false);
          for (int64_t i = 0; i < mr; i++)
            for (int64_t j = 0; j < nr; j++) c[i * ldc + j] = add ? c[i * ldc + j] + tile[i * NR + j] : tile[i * NR + j];
        }
      }
    }
  }
}

/** Depth of each slab: k cut into equal slabs of at most KC (k = 512 → 2×256, not 384 + 128). */
static int64_t slab_depth(int64_t k) {
  const int64_t slabs = (k + KC - 1) / KC;
  return (k + slabs - 1) / slabs;
}

static bool zero_k(int64_t m, int64_t n, int64_t k, float* C, int64_t ldc, bool accumulate) {
  if (k > 0) return false;
  if (!accumulate)
    for (int64_t i = 0; i < m; i++) std::memset(C + i * ldc, 0, n * sizeof(float));
  return true;
}

/** One thread's whole product: the five loops around the micro-kernel. */
static void gemm_serial(int64_t m, int64_t n, int64_t k,
                 const float* A, int64_t rsA, int64_t csA,
                 const float* B, int64_t rsB, int64_t csB,
                 float* C, int64_t ldc, bool accumulate) {
  if (m <= 0 || n <= 0 || zero_k(m, n, k, C, ldc, accumulate)) return;
  PackBuffers& buf = buffers();
  const int64_t kStep = slab_depth(k);
  const bool inPlace = rows_in_place(csA, rsA);
  for (int64_t jc = 0; jc < n; jc += NC) {
    const int64_t nc = std::min(NC, n - jc);
    for (int64_t pc = 0; pc < k; pc += kStep) {
      const int64_t kc = std::min(kStep, k - pc);
      pack_b(kc, nc, B + pc * rsB + jc * csB, rsB, csB, buf.b);
      for (int64_t ic = 0; ic < m; ic += MC) {
        const int64_t mc = std::min(MC, m - ic);
        if (inPlace) {
          const float* bs[1] = {buf.b};
          macro_kernel_slabs_rows(mc, nc, 1, &kc, &pc, A + ic * rsA, rsA, bs, C + ic * ldc + jc, ldc, accumulate || pc > 0);
          continue;
        }
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
static void gemm_shared_b(int64_t m, int64_t n, int64_t k,
                   const float* A, int64_t rsA, int64_t csA,
                   const float* B, int64_t rsB, int64_t csB,
                   float* C, int64_t ldc, bool accumulate, int threads) {
  if (zero_k(m, n, k, C, ldc, accumulate)) return;
  float* panel = buffers().b;
  // a multiple of `threads` blocks of whole micro-panels, as equal as they come (at most MC rows
  // each), so no thread is left with the odd one (1024 rows on 2 threads: 6 blocks of 14-15
  // panels, not five of 180 rows and one of 124)
  const int64_t panels = (m + MR - 1) / MR;
  const int64_t perThread = (panels + threads - 1) / threads;
  const int64_t blocks = std::min<int64_t>(panels, (perThread * MR + MC - 1) / MC * threads);
  const int64_t kStep = slab_depth(k);
  // two slabs at a time: each C tile is read and written once per pair instead of once per slab
  // (a 2048³ product went over its 16 MB C eight times)
  const int group = int(kSlabsAtOnce);
  for (int64_t jc = 0; jc < n; jc += NC) {
    const int64_t nc = std::min(NC, n - jc);
    for (int64_t pc = 0; pc < k; pc += group * kStep) {
      int slabs = 0;
      int64_t kcs[kSlabsAtOnce], starts[kSlabsAtOnce];
      for (int64_t p = pc; p < k && slabs < group; p += kStep, slabs++) {
        starts[slabs] = p;
        kcs[slabs] = std::min(kStep, k - p);
      }
      const float* bs[kSlabsAtOnce];
      for (int sl = 0; sl < slabs; sl++) bs[sl] = panel + sl * KC * NC;
      parallel_for(slabs * ((nc + NR - 1) / NR), 1, [&](int64_t p0, int64_t p1) {
        const int64_t per = (nc + NR - 1) / NR;
        for (int64_t p = p0; p < p1; p++) {
          const int64_t sl = p / per, j0 = (p % per) * NR, j1 = std::min(nc, j0 + NR);
          pack_b(kcs[sl], j1 - j0, B + starts[sl] * rsB + (jc + j0) * csB, rsB, csB, panel + sl * KC * NC + j0 * kcs[sl]);
        }
      });
      // one task per thread, each a run of blocks: parallel_for hands out chunks of
      // ⌈n / 4·threads⌉ items, so 10 blocks on 2 threads went as 2+2+2+2+2 chunks, 6 blocks to one
      // thread and 4 to the other (a 2048³ product ran at 73% of peak instead of 88%)
      const bool inPlace = rows_in_place(csA, rsA);
      parallel_for(threads, 1, [&](int64_t t0, int64_t t1) {
        float* a = buffers().a;
        const float* as[kSlabsAtOnce];
        for (int sl = 0; sl < slabs; sl++) as[sl] = a + sl * kMaxMC * KC;
        for (int64_t blk = t0 * blocks / threads; blk < t1 * blocks / threads; blk++) {
          const int64_t ic = blk * panels / blocks * MR, mc = std::min(m, (blk + 1) * panels / blocks * MR) - ic;
          if (inPlace) {
            macro_kernel_slabs_rows(mc, nc, slabs, kcs, starts, A + ic * rsA, rsA, bs, C + ic * ldc + jc, ldc, accumulate || pc > 0);
            continue;
          }
          for (int sl = 0; sl < slabs; sl++) pack_a(mc, kcs[sl], A + ic * rsA + starts[sl] * csA, rsA, csA, a + sl * kMaxMC * KC);
          macro_kernel_slabs(mc, nc, slabs, kcs, as, bs, C + ic * ldc + jc, ldc, accumulate || pc > 0);
        }
      });
    }
  }
}

/** Everything sgemm_batched does past the small-m path, with this blocking. */
static void run(int64_t batch, int64_t m, int64_t n, int64_t k,
                const float* A, int64_t rsA, int64_t csA, int64_t strideA,
                const float* B, int64_t rsB, int64_t csB, int64_t strideB,
                float* C, int64_t ldc, int64_t strideC, bool accumulate);
};

template <int MR_, int NR_, int64_t MC_, int64_t NC_>
MicroKernel Blocked<MR_, NR_, MC_, NC_>::kernel = nullptr;
template <int MR_, int NR_, int64_t MC_, int64_t NC_>
RowsKernel Blocked<MR_, NR_, MC_, NC_>::rows_kernel = nullptr;

using Gemm6x16 = Blocked<MR, NR, VERA_MC>;
#if defined(VERA_X86)
using Gemm12x32 = Blocked<MR512, NR512, VERA_MC512, VERA_NC512>;
#endif
#if defined(__wasm_simd128__)
using GemmWasm = Blocked<MRW, NRW, VERA_MC>;
#endif

template <int MR_, int NR_, int64_t MC_, int64_t NC_>
void Blocked<MR_, NR_, MC_, NC_>::run(int64_t batch, int64_t m, int64_t n, int64_t k,
                                 const float* A, int64_t rsA, int64_t csA, int64_t strideA,
                                 const float* B, int64_t rsB, int64_t csB, int64_t strideB,
                                 float* C, int64_t ldc, int64_t strideC, bool accumulate) {
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

bool init_kernels() {
#if defined(VERA_X86)
  Gemm6x16::kernel = use_avx2 ? micro_kernel_avx2 : micro_kernel_portable;
  Gemm12x32::kernel = micro_kernel_avx512;
  Gemm12x32::rows_kernel = micro_kernel_avx512_rows;
#else
  Gemm6x16::kernel = micro_kernel_portable;
#endif
#if defined(__wasm_simd128__)
  GemmWasm::kernel = micro_kernel_wasm;
#endif
  return true;
}

const bool kernels_ready = init_kernels();

#if defined(VERA_X86)
// ------------------------------------------------------------------ rows against a weight, swapped
//
// Rows of activations against an nn.Linear weight with at least as many rows (B(p, j) = W[j·ldw + p]:
// a Llama projection or LM head in a batched decode step or a prefill chunk). The packed path packs
// W, the larger operand, on every call, from memory (a decode step's weights are not in cache):
// 64-row steps of a SmolLM-135M shape spent 1.6× as long in their GEMMs at m = 128 as this path.
// Instead the AVX-512 tile computes Cᵀ = W·Xᵀ: twelve rows of W are broadcast from memory in place
// and X, the smaller, is packed once into 32-row panels. The slabs, the FMA chain per slab and the
// slab adds are the packed path's, so are the bits (m ≤ 64 stays on the streamed small-m path
// where that takes it).
#ifndef VERA_WEIGHT_ROWS
#define VERA_WEIGHT_ROWS 1
#endif

void gemm_weight_rows(int64_t m, int64_t n, int64_t k, const float* A, int64_t rsA, int64_t csA,
                      const float* W, int64_t ldw, float* C, int64_t ldc, bool accumulate) {
  using G = Gemm12x32;
  if (G::zero_k(m, n, k, C, ldc, accumulate)) return;
  constexpr int64_t R = MR512, P = NR512;
  const int64_t panels = (m + P - 1) / P;
  // kept by the thread up to 8 MB (a 1024-token prefill chunk at width 1536 is 6 MB); a larger X
  // (a long training batch against an LM head) gets a buffer of its own for this call
  static thread_local AlignedFloats scratch;  // grown, never shrunk
  const size_t need = size_t(panels * P * k);
  AlignedFloats once;
  AlignedFloats& buf = need <= (size_t(8) << 20) / sizeof(float) ? scratch : once;
  if (buf.size() < need) buf.resize(need);
  float* const xt = buf.data();
  // X → panels of 32 rows, p-major inside each (xt[(q·k + p)·32 + i]), rows past m zero
  parallel_for(panels, m * k >= 16384 ? 1 : panels, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; q++) {
      float* dst = xt + q * k * P;
      const int64_t rows = std::min<int64_t>(P, m - q * P);
      for (int64_t i = 0; i < rows; i++) {
        const float* src = A + (q * P + i) * rsA;
        for (int64_t p = 0; p < k; p++) dst[p * P + i] = src[p * csA];
      }
      for (int64_t i = rows; i < P; i++)
        for (int64_t p = 0; p < k; p++) dst[p * P + i] = 0.f;
    }
  });
  const int64_t kStep = G::slab_depth(k);
  const int64_t blocks = (n + R - 1) / R;
  const double perBlock = double(R) * panels * P * k;  // multiply-adds
  const int64_t grain = perBlock * blocks < 65536.0 ? blocks : 1;
  parallel_for(blocks, grain, [&](int64_t b0, int64_t b1) {
    alignas(64) float T[R * P] = {};  // rows past m are computed on but never stored
    for (int64_t b = b0; b < b1; b++) {
      const int64_t j0 = b * R;
      const int rows = int(std::min<int64_t>(R, n - j0));
      for (int64_t q = 0; q < panels; q++) {
        const int64_t i0 = q * P, mr = std::min<int64_t>(P, m - i0);
        float* c = C + i0 * ldc + j0;
        if (accumulate)
          for (int64_t i = 0; i < mr; i++)
            for (int j = 0; j < rows; j++) T[j * P + i] = c[i * ldc + j];
        for (int64_t pc = 0; pc < k; pc += kStep)
          micro_kernel_avx512_wt(std::min(kStep, k - pc), W + j0 * ldw + pc, ldw, rows, xt + (q * k + pc) * P, T, accumulate || pc > 0);
        for (int64_t i = 0; i < mr; i++)
          for (int j = 0; j < rows; j++) c[i * ldc + j] = T[j * P + i];
      }
    }
  });
}
#endif

// ------------------------------------------------------------------ small m (see gemm.h)
//
// Token-by-token decoding multiplies a few rows of activations by a large weight matrix: the
// product is bound by reading B once, and packing B (a transposing gather for nn.Linear's (out, in)
// layout) or padding 1 row to a 6-row micro-tile only adds to that. Below kSmallM rows, B is read
// in place, once, with all threads: each takes whole blocks of output columns and computes them
// against every row of A (which stays in L1/L2).

// Crossover measured on a 2-core Zen 2 (AVX2), k = 576/1536/3072, n = 576/768/1536/49152: the
// streamed kernels beat the packed path at every m up to 64 (m = 1: 3-7×, m = 16: 1.5-3×,
// m = 64: 1.1-3×), the "nt" one even to m = 128-192 for k = 576; the packed path is kept for
// larger products, whose B reuse it exploits, and for A past 2 MB (m = 64, k = 8192).
#ifndef VERA_SMALL_M
#define VERA_SMALL_M 64
#endif
constexpr int64_t kSmallM = VERA_SMALL_M;
#ifndef VERA_SMALL_MAX_A
#define VERA_SMALL_MAX_A (int64_t(1) << 19)
#endif
constexpr int64_t kSmallMaxA = VERA_SMALL_MAX_A;  // most floats of A (m×k)
constexpr int64_t kSmallStrip = 16;  // columns per work item

/** Portable "nt" tile: R rows of A against 4 B rows, 8 lanes per element as the AVX2 kernel. */
template <int R>
void nt_tile_portable(int64_t k, const float* A, int64_t lda, const float* const b[4], float* C, int64_t ldc, int nc,
                      bool accumulate, const float* const* rowScale, int64_t col) {
  float s[R][4][8] = {};
  int64_t p = 0;
  for (; p + 8 <= k; p += 8)
    for (int r = 0; r < R; r++)
      for (int c = 0; c < 4; c++)
        for (int l = 0; l < 8; l++) s[r][c][l] += A[r * lda + p + l] * b[c][p + l];
  if (p < k) {
    const int64_t t = k - p;
    float at[R][8] = {}, bt[4][8] = {};
    for (int r = 0; r < R; r++)
      for (int64_t l = 0; l < t; l++) at[r][l] = A[r * lda + p + l];
    for (int c = 0; c < 4; c++)
      for (int64_t l = 0; l < t; l++) bt[c][l] = b[c][p + l];
    for (int r = 0; r < R; r++)
      for (int c = 0; c < 4; c++)
        for (int l = 0; l < 8; l++) s[r][c][l] += at[r][l] * bt[c][l];
  }
  for (int r = 0; r < R; r++)
    for (int c = 0; c < nc; c++) {
      const float* v = s[r][c];
      float sum = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
      if (rowScale) {
        volatile float product = sum * rowScale[r][col + c];  // rounded before the add: never one FMA
        sum = product;
      }
      float& out = C[r * ldc + c];
      out = accumulate ? out + sum : sum;
    }
}

void small_nt_portable(int64_t m, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb,
                       int64_t j0, int64_t j1, float* C, int64_t ldc, bool accumulate, const float* const* rowScale) {
  for (int64_t j = j0; j < j1; j += 4) {
    const int nc = int(std::min<int64_t>(4, j1 - j));
    const float* b[4];
    for (int c = 0; c < 4; c++) b[c] = B + (j + (c < nc ? c : 0)) * ldb;
    for (int64_t i = 0; i < m; i += 2) {
      const float* const* scale = rowScale ? rowScale + i : nullptr;
      if (m - i >= 2) nt_tile_portable<2>(k, A + i * lda, lda, b, C + i * ldc + j, ldc, nc, accumulate, scale, j);
      else nt_tile_portable<1>(k, A + i * lda, lda, b, C + i * ldc + j, ldc, nc, accumulate, scale, j);
    }
  }
}

/** Portable "nn" tile: C[0:R, 0:nc] (+)= A[0:R, :]·B[:, 0:nc], one multiply-add chain per element (from C's value when accumulating). */
template <int R>
void nn_tile_portable(int64_t k, const float* A, int64_t rsA, int64_t csA, const float* B, int64_t ldb, float* C, int64_t ldc,
                      int nc, bool accumulate) {
  float s[R][kSmallStrip] = {};
  if (accumulate)
    for (int r = 0; r < R; r++)
      for (int c = 0; c < nc; c++) s[r][c] = C[r * ldc + c];
  float pad[kSmallStrip] = {};
  for (int64_t p = 0; p < k; p++) {
    const float* b = B + p * ldb;
    if (nc < kSmallStrip) {
      for (int c = 0; c < nc; c++) pad[c] = b[c];
      b = pad;
    }
    for (int r = 0; r < R; r++) {
      const float a = A[r * rsA + p * csA];
      for (int c = 0; c < kSmallStrip; c++) s[r][c] += a * b[c];
    }
  }
  for (int r = 0; r < R; r++)
    for (int c = 0; c < nc; c++) C[r * ldc + c] = s[r][c];
}

void small_nn_portable(int64_t m, int64_t k, const float* A, int64_t rsA, int64_t csA, const float* B, int64_t ldb,
                       int64_t j0, int64_t j1, float* C, int64_t ldc, bool accumulate) {
  for (int64_t j = j0; j < j1; j += kSmallStrip) {
    const int nc = int(std::min<int64_t>(kSmallStrip, j1 - j));
    for (int64_t i = 0; i < m; i += 2) {
      if (m - i >= 2) nn_tile_portable<2>(k, A + i * rsA, rsA, csA, B + j, ldb, C + i * ldc + j, ldc, nc, accumulate);
      else nn_tile_portable<1>(k, A + i * rsA, rsA, csA, B + j, ldb, C + i * ldc + j, ldc, nc, accumulate);
    }
  }
}

#if defined(VERA_X86)
const bool use_avx512vl = use_avx512 && __builtin_cpu_supports("avx512vl");
#endif
const SmallNtKernel small_nt =
#if defined(VERA_X86)
    use_avx512vl ? small_nt_avx512vl : use_avx2 ? small_nt_avx2 :
#endif
    small_nt_portable;
#ifndef VERA_NT_PAIRS
#define VERA_NT_PAIRS 1
#endif

#if defined(VERA_X86)
const bool use_pairs = VERA_NT_PAIRS && use_avx512vl;
void small_nt_pairs(int64_t m, int64_t k, const float* Ap, const float* B, int64_t ldb, int64_t j0, int64_t j1, float* C, int64_t ldc,
                    bool accumulate, const float* const* rowScale) {
  small_nt_pairs_avx512(m, k, Ap, B, ldb, j0, j1, C, ldc, accumulate, rowScale);
}
#else
constexpr bool use_pairs = false;
void small_nt_pairs(int64_t, int64_t, const float*, const float*, int64_t, int64_t, int64_t, float*, int64_t, bool, const float* const*) {}
#endif
#ifndef VERA_SMALL_NT_M
#define VERA_SMALL_NT_M 256
#endif
#if defined(VERA_X86)
const bool wide_nt = use_avx2;
#else
constexpr bool wide_nt = false;
#endif
/**
 * The most rows the small-m path takes: with SIMD, up to 256 in the "nt" layout, whose column
 * groups stay in L1 while passes of 64 rows re-read them (2-core Xeon, AVX-512 rows in pairs,
 * k = 576/1536, n = 576/1536/49152: 1.1-1.5× the packed paths at m = 128 and 256, even at 512;
 * the 8-lane AVX2 kernel 0.95-2×), so batches this large keep each row's bits those of the row alone.
 */
const int64_t kSmallNtM = wide_nt ? std::max<int64_t>(kSmallM, VERA_SMALL_NT_M) : kSmallM;
const SmallNnKernel small_nn =
#if defined(VERA_X86)
    use_avx2 ? small_nn_avx2 :
#endif
    small_nn_portable;

/**
 * The small-m path, or false (nothing done) when the layout is not one it streams: B must be
 * contiguous along k ("nt") or along n ("nn"). Each output element is computed by one kernel call,
 * whatever the thread count, so results are bit-identical for any split.
 */
bool gemm_small_m(int64_t batch, int64_t m, int64_t n, int64_t k,
                  const float* A, int64_t rsA, int64_t csA, int64_t strideA,
                  const float* B, int64_t rsB, int64_t csB, int64_t strideB,
                  float* C, int64_t ldc, int64_t strideC, bool accumulate, const float* const* rowScale = nullptr) {
  if (m > kSmallNtM || m * k > kSmallMaxA || k <= 0) return false;
  // nt reads B rows along k; for a single row/column B is both ways and nt is the cheaper walk
  bool nt;
  if (rsB == 1 && (csB != 1 || n < kSmallStrip)) nt = true;
  else if (csB == 1) nt = false;
  else return false;
  if (m > kSmallM && !nt) return false;  // past 64 rows only the "nt" layout (see kSmallNtM)
  if (rowScale && (!nt || batch != 1)) return false;  // the scaled store is the "nt" kernels' only
  // with AVX-512 the "nt" kernel reads A's rows packed in pairs (two rows per zmm register), and
  // this packs them, transposed or not: a few rows, so small next to B; one row keeps the
  // matrix-vector kernel (memory-bound, it streams eight B rows at once)
  static thread_local AlignedFloats packedA;
  const int64_t kb = (k + 7) / 8, perEntry = (m + 1) / 2 * kb * 16, entries = strideA == 0 ? 1 : batch;
  const bool pairs = nt && use_pairs && m >= 2 && entries * perEntry <= (int64_t(1) << 22);
  if (pairs) {
    if (packedA.size() < size_t(entries * perEntry)) packedA.resize(size_t(entries * perEntry));
    for (int64_t e = 0; e < entries; e++)
      for (int64_t i = 0; i < (m + 1) / 2 * 2; i++) {
        const float* src = A + e * strideA + i * rsA;
        float* dst = packedA.data() + e * perEntry + (i / 2) * kb * 16 + (i % 2) * 8;
        int64_t p = 0;
        if (i < m && csA == 1)
          for (; p + 8 <= k; p += 8) std::memcpy(dst + p * 2, src + p, 8 * sizeof(float));
        // the k tail, a transposed A, and the missing row of an odd m (zeros) element by element
        for (; p < kb * 8; p++) dst[(p / 8) * 16 + p % 8] = i < m && p < k ? src[p * csA] : 0.0f;
      }
    A = packedA.data();
    if (strideA != 0) strideA = perEntry;
  }
  int64_t lda = rsA;
  if (nt && !pairs && csA != 1) {
    if (entries * m * k > (int64_t(1) << 22)) return false;
    packedA.resize(size_t(entries * m * k));
    for (int64_t b = 0; b < entries; b++)
      for (int64_t i = 0; i < m; i++)
        for (int64_t p = 0; p < k; p++) packedA[size_t((b * m + i) * k + p)] = A[b * strideA + i * rsA + p * csA];
    A = packedA.data();
    lda = k;
    if (strideA != 0) strideA = m * k;
  }
  const int64_t strips = (n + kSmallStrip - 1) / kSmallStrip;
  const double perStrip = double(m) * kSmallStrip * k;  // multiply-adds
  // below ~128K multiply-adds a hand-off costs more than it saves, unless B alone is large (a
  // decode step's k/v projection: 442 KB read at one core's bandwidth took 1.7× two cores' time);
  // else two parts a thread, as equal as the strips allow (chunks of a fixed size left one thread
  // idle at the end: 576 columns in chunks of 5 strips, 20 against 16; the even split made 64-row
  // products of width 576 8-10% faster), each part of at least ~32K
  const int64_t items = batch * strips;
  const bool tiny = perStrip * items < 131072.0 && double(batch) * n * k < 32768.0;
  const int64_t minItems = std::max<int64_t>(1, int64_t(32768.0 / perStrip));
  const int64_t parts = tiny ? 1 : std::min<int64_t>(2 * num_threads(), std::max<int64_t>(1, items / minItems));
  parallel_for_parts(items, parts, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1;) {
      const int64_t b = t / strips, s0 = t % strips, s1 = std::min(strips, s0 + (t1 - t));
      const int64_t j0 = s0 * kSmallStrip, j1 = std::min(n, s1 * kSmallStrip);
      if (pairs) small_nt_pairs(m, k, A + b * strideA, B + b * strideB, csB, j0, j1, C + b * strideC, ldc, accumulate, rowScale);
      else if (nt) small_nt(m, k, A + b * strideA, lda, B + b * strideB, csB, j0, j1, C + b * strideC, ldc, accumulate, rowScale);
      else small_nn(m, k, A + b * strideA, rsA, csA, B + b * strideB, rsB, j0, j1, C + b * strideC, ldc, accumulate);
      t += s1 - s0;
    }
  });
  return true;
}

}  // namespace

bool has_avx2_fma() { return use_avx2; }

void small_nt_rows(int64_t m, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb,
                   int64_t j0, int64_t j1, float* C, int64_t ldc, bool accumulate) {
  small_nt(m, k, A, lda, B, ldb, j0, j1, C, ldc, accumulate, nullptr);
}

bool sgemm_nt_row_scaled(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb,
                         const float* const* rowScale, float* C, int64_t ldc, bool accumulate) {
  if (m <= 0 || n <= 0) return true;
  return gemm_small_m(1, m, n, k, A, lda, 1, 0, B, 1, ldb, 0, C, ldc, 0, accumulate, rowScale);
}

const char* gemm_kernel_name() {
#if defined(__wasm_simd128__)
  return "wasm-simd128";
#endif
  return use_avx512 ? "avx512" : use_avx2 ? "avx2-fma" : "portable";
}

double machine_peak_gflops(double seconds) {
#if defined(VERA_X86)
  if (!use_avx2) return 0.0;
  // flops of one call: iters × (24 zmm or 12 ymm FMAs) × 16 or 8 lanes × 2
  const int64_t iters = 20000;
  const double perCall = use_avx512 ? iters * 24.0 * 16 * 2 : iters * 12.0 * 8 * 2;
  auto call = [](int64_t n) { return use_avx512 ? fma_peak_avx512(n) : fma_peak_avx2(n); };
  volatile float sink = call(iters);  // warm up (clocks, pool)
  const int threads = num_threads();
  double best = 0;
  const auto t00 = std::chrono::steady_clock::now();
  // chunks of work handed out dynamically: total flops over the wall time of all of them
  const int64_t chunks = int64_t(threads) * 16;
  do {
    const auto t0 = std::chrono::steady_clock::now();
    parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
      float s = 0;
      for (int64_t c = c0; c < c1; c++) s += call(iters);
      sink = s;
    });
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, perCall * double(chunks) / dt / 1e9);
  } while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t00).count() < seconds);
  (void)sink;
  return best;
#else
  (void)seconds;
  return 0.0;
#endif
}

void sgemm_batched(int64_t batch, int64_t m, int64_t n, int64_t k,
                   const float* A, int64_t rsA, int64_t csA, int64_t strideA,
                   const float* B, int64_t rsB, int64_t csB, int64_t strideB,
                   float* C, int64_t ldc, int64_t strideC, bool accumulate) {
  if (batch <= 0 || m <= 0 || n <= 0) return;
#if defined(VERA_X86)
  // one product (batches of them keep the packed path, which spreads the entries over the threads)
  if (use_avx512 && VERA_WEIGHT_ROWS && batch == 1 && rsB == 1 && csB >= k && k > 0 && m > kSmallNtM && n >= m &&
      rows_share_l1(MR512, csB))
    return gemm_weight_rows(m, n, k, A, rsA, csA, B, csB, C, ldc, accumulate);
#endif
  if (gemm_small_m(batch, m, n, k, A, rsA, csA, strideA, B, rsB, csB, strideB, C, ldc, strideC, accumulate)) return;
#if defined(__wasm_simd128__)
  return GemmWasm::run(batch, m, n, k, A, rsA, csA, strideA, B, rsB, csB, strideB, C, ldc, strideC, accumulate);
#endif
#if defined(VERA_X86)
  if (use_avx512) return Gemm12x32::run(batch, m, n, k, A, rsA, csA, strideA, B, rsB, csB, strideB, C, ldc, strideC, accumulate);
#endif
  Gemm6x16::run(batch, m, n, k, A, rsA, csA, strideA, B, rsB, csB, strideB, C, ldc, strideC, accumulate);
}

void sgemm(int64_t m, int64_t n, int64_t k,
           const float* A, int64_t rsA, int64_t csA,
           const float* B, int64_t rsB, int64_t csB,
           float* C, int64_t ldc, bool accumulate) {
  sgemm_batched(1, m, n, k, A, rsA, csA, 0, B, rsB, csB, 0, C, ldc, 0, accumulate);
}

}  // namespace vera
