// The argument checks every kernel entry uses, whichever way its arguments arrive (N-API in
// napi_args.h, WebAssembly slots in wasm_args.h): one-line errors naming the kernel.
#pragma once
#include <cstddef>
#include <cstdio>
#include <stdexcept>
#include <string>

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

}  // namespace vera
