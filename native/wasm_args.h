// Argument unpacking for the WebAssembly build (wasm_main.cc), in place of napi_args.h: the same
// Args interface over a table of slots that the JavaScript side (src/backends/wasm) fills before
// each call, so the kernel files compile unchanged for both targets. Storages are ranges of the
// module's linear memory; a wrong argument throws an ArgError naming its position.
#pragma once
#include "arg_checks.h"
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

// The two N-API types the kernel files name: a binding returns nullptr (undefined) or a value it
// made with one of the napi_create_* below, which the dispatcher hands back to JavaScript.
struct WasmEnv {
  double num = 0;
  const char* str = nullptr;
};
using napi_env = WasmEnv*;
struct WasmValue {};
using napi_value = const WasmValue*;
constexpr size_t NAPI_AUTO_LENGTH = SIZE_MAX;

inline const WasmValue kReturned{};
inline void napi_create_double(napi_env env, double v, napi_value* r) {
  env->num = v;
  *r = &kReturned;
}
inline void napi_create_int32(napi_env env, int32_t v, napi_value* r) { napi_create_double(env, v, r); }
inline void napi_create_string_utf8(napi_env env, const char* s, size_t, napi_value* r) {
  env->str = s;
  *r = &kReturned;
}

namespace vera {


/**
 * One argument as src/backends/wasm/index.ts writes it (24 bytes). Buffers (f32, i32, u8) are
 * `len` elements at byte address `ptr`; a number list is `len` doubles at `ptr`; a storage list is
 * `len` (ptr, len) pairs of uint32 at `ptr`.
 */
struct Slot {
  double num;
  uint32_t tag;
  uint32_t ptr;
  uint32_t len;
  uint32_t pad;
};
enum SlotTag : uint32_t { kNull = 0, kNumber = 1, kBool = 2, kF32 = 3, kI32 = 4, kU8 = 5, kNumbers = 6, kF32List = 7 };

class Args : public IntegerArgs<Args> {
 public:
  Args(const Slot* slots, size_t argc) : s_(slots), argc_(argc) {}

  bool is_null(size_t i) const { return i >= argc_ || s_[i].tag == kNull; }

  float* f32(size_t i, size_t* len = nullptr) const { return static_cast<float*>(typed(i, kF32, "Float32Array", len)); }
  int32_t* i32(size_t i, size_t* len = nullptr) const { return static_cast<int32_t*>(typed(i, kI32, "Int32Array", len)); }
  uint8_t* u8(size_t i, size_t* len = nullptr) const { return static_cast<uint8_t*>(typed(i, kU8, "Uint8Array", len)); }
  size_t length(size_t i) const {
    size_t n = 0;
    typed(i, kF32, "Float32Array", &n);
    return n;
  }

  double num(size_t i) const {
    if (i >= argc_ || s_[i].tag != kNumber) bad_arg(i, "a number");
    return s_[i].num;
  }
  bool flag(size_t i) const {
    if (i >= argc_ || s_[i].tag != kBool) bad_arg(i, "a boolean");
    return s_[i].num != 0;
  }
  std::vector<double> nums(size_t i) const {
    if (i >= argc_ || s_[i].tag != kNumbers) bad_arg(i, "an array of numbers");
    const double* d = reinterpret_cast<const double*>(uintptr_t(s_[i].ptr));
    return std::vector<double>(d, d + s_[i].len);
  }

  std::vector<float*> f32list(size_t i, std::vector<size_t>* lens) const {
    if (i >= argc_ || s_[i].tag != kF32List) bad_arg(i, "an array of Float32Arrays");
    const uint32_t* pairs = reinterpret_cast<const uint32_t*>(uintptr_t(s_[i].ptr));
    const uint32_t n = s_[i].len;
    std::vector<float*> out(n);
    lens->assign(n, 0);
    for (uint32_t j = 0; j < n; j++) {
      out[j] = pairs[2 * j] != 0 ? reinterpret_cast<float*>(uintptr_t(pairs[2 * j])) : empty();
      (*lens)[j] = pairs[2 * j + 1];
    }
    return out;
  }

 private:

  static float* empty() {
    static float e[1];
    return e;
  }

  void* typed(size_t i, uint32_t want, const char* what, size_t* len) const {
    if (is_null(i)) {
      if (len) *len = 0;
      return nullptr;
    }
    if (s_[i].tag != want) bad_arg(i, what);
    if (len) *len = s_[i].len;
    // as in napi_args.h: an empty buffer still gets a non-null pointer (null means "absent")
    return s_[i].ptr != 0 ? reinterpret_cast<void*>(uintptr_t(s_[i].ptr)) : static_cast<void*>(empty());
  }

  const Slot* s_;
  size_t argc_;
};

}  // namespace vera
