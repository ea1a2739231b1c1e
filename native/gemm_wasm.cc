// The WebAssembly SIMD128 GEMM micro-kernel (built only for wasm, by scripts/build-wasm.mjs):
// C[R×8] (+)= Ap (kc×R packed) · Bp (kc×8 packed) with two 4-float vectors per row. R×2
// accumulators plus two B vectors and one broadcast A value stay within the 16 vector registers an
// engine has on x86-64 (V8 keeps one for scratch), so nothing spills. Multiply then add: the fused
// f32x4.relaxed_madd is relaxed-SIMD, which Node 20 does not run without a flag.
#include <wasm_simd128.h>

#include "gemm.h"

namespace vera {

template <int R>
static void micro_kernel_simd128(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, bool accumulate) {
  v128_t lo[R], hi[R];
  for (int i = 0; i < R; i++) lo[i] = hi[i] = wasm_f32x4_splat(0.f);
  for (int64_t p = 0; p < kc; p++) {
    const v128_t b0 = wasm_v128_load(Bp + p * 8);
    const v128_t b1 = wasm_v128_load(Bp + p * 8 + 4);
    const float* a = Ap + p * R;
    for (int i = 0; i < R; i++) {
      const v128_t ai = wasm_v128_load32_splat(a + i);
      lo[i] = wasm_f32x4_add(lo[i], wasm_f32x4_mul(ai, b0));
      hi[i] = wasm_f32x4_add(hi[i], wasm_f32x4_mul(ai, b1));
    }
  }
  for (int i = 0; i < R; i++) {
    float* c = C + i * ldc;
    if (accumulate) {
      lo[i] = wasm_f32x4_add(wasm_v128_load(c), lo[i]);
      hi[i] = wasm_f32x4_add(wasm_v128_load(c + 4), hi[i]);
    }
    wasm_v128_store(c, lo[i]);
    wasm_v128_store(c + 4, hi[i]);
  }
}

void micro_kernel_wasm(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, bool accumulate) {
  micro_kernel_simd128<MRW>(kc, Ap, Bp, C, ldc, accumulate);
}

}  // namespace vera
