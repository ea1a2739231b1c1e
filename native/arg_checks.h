// The argument checks every kernel entry uses, whichever way its arguments arrive (N-API in
// napi_args.h, WebAssembly slots in wasm_args.h): one-line errors naming the kernel.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace vera {

struct ArgError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/**
 * A kernel's bounds check: a buffer of `have` elements must hold the `want` it will touch. `want`
 * is computed in double by the caller, so huge dimensions cannot overflow into a small number.
 */
inline void need(const char* kernel, const char* what, size_t have, double want) {
  if (double(have) < want) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", want);
    throw ArgError(std::string(kernel) + ": " + what + " holds " + std::to_string(have) + " elements, " + buf + " needed");
  }
}

inline void require(bool ok, const char* kernel, const std::string& msg) {
  if (!ok) throw ArgError(std::string(kernel) + ": " + msg);
}

/** Argument `i` of a binding call is not what it must be. */
[[noreturn]] inline void bad_arg(size_t i, const char* what) {
  throw ArgError("argument " + std::to_string(i) + " must be " + what);
}

/** An exact integer within ±2^53 (a fraction, NaN or ±inf would be truncated into a wrong size or offset). */
inline bool exact_int(double v) { return v == std::floor(v) && std::fabs(v) <= 9007199254740992.0; }

/** The integer readers of an argument table (N-API or WebAssembly slots), over its num(i). */
template <class Reader>
struct IntegerArgs {
  /** An integer: refused when num(i) is not one. */
  int64_t i64(size_t i) const {
    const double v = static_cast<const Reader&>(*this).num(i);
    if (!exact_int(v)) bad_arg(i, "an integer");
    return static_cast<int64_t>(v);
  }
  /** A size: an integer ≥ 0. */
  int64_t dim(size_t i) const {
    const int64_t v = i64(i);
    if (v < 0) bad_arg(i, "an integer >= 0");
    return v;
  }
  /** An array of integers: refused when nums(i) holds anything else. */
  std::vector<int64_t> ints(size_t i) const {
    const std::vector<double> d = static_cast<const Reader&>(*this).nums(i);
    std::vector<int64_t> out(d.size());
    for (size_t j = 0; j < d.size(); j++) {
      if (!exact_int(d[j])) bad_arg(i, "an array of integers");
      out[j] = static_cast<int64_t>(d[j]);
    }
    return out;
  }
};

}  // namespace vera
