// Entry points of the WebAssembly build (scripts/build-wasm.mjs → wasm/vera.wasm), in place of
// addon.cc: the kernel binding tables of the native addon, called by index through one export.
// JavaScript (src/backends/wasm/index.ts) writes the arguments as Slots into vera_slots(), calls
// vera_call(index, argc) and reads the returned number or string, or the error message on failure.
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "gemm.h"
#include "kernels.h"

namespace vera {
namespace {

constexpr uint32_t kMaxArgs = 24;
Slot slots[kMaxArgs];
WasmEnv env;
std::string error;

const std::vector<BindingEntry>& bindings() {
  static const std::vector<BindingEntry> all = [] {
    std::vector<BindingEntry> v;
    for (const BindingEntry* table : {kElementwiseBindings, kAttentionBindings, kVeraBindings, kRaggedBindings, kQuantBindings, kLoraBindings})
      for (const BindingEntry* e = table; e->name != nullptr; e++) v.push_back(*e);
    return v;
  }();
  return all;
}

}  // namespace
}  // namespace vera

using namespace vera;

extern "C" {

/** The argument table (kMaxArgs Slots) the caller fills before vera_call. */
Slot* vera_slots() { return slots; }
uint32_t vera_max_args() { return kMaxArgs; }
uint32_t vera_binding_count() { return uint32_t(bindings().size()); }
/** The JavaScript name of binding i (as the native addon exports it). */
const char* vera_binding_name(uint32_t i) { return i < bindings().size() ? bindings()[i].name : nullptr; }

/**
 * Runs binding `index` on the first `argc` slots: 0 = nothing returned, 1 = a number
 * (vera_result_number), 2 = a string (vera_result_string), -1 = an error (vera_error).
 */
int32_t vera_call(uint32_t index, uint32_t argc) {
  if (index >= bindings().size() || argc > kMaxArgs) {
    error = "vera_call: bad binding index or argument count";
    return -1;
  }
  env = WasmEnv{};
  try {
    Args args(slots, argc);
    napi_value r = bindings()[index].fn(&env, args);
    if (r == nullptr) return 0;
    return env.str != nullptr ? 2 : 1;
  } catch (const std::bad_alloc&) {
    error = std::string(bindings()[index].name) + ": out of WebAssembly memory";
  } catch (const std::exception& e) {
    error = e.what();
  } catch (...) {
    error = "unknown error";
  }
  return -1;
}

double vera_result_number() { return env.num; }
const char* vera_result_string() { return env.str; }
const char* vera_error() { return error.c_str(); }
const char* vera_gemm_kernel() { return gemm_kernel_name(); }

void* vera_malloc(uint32_t bytes) { return std::malloc(bytes == 0 ? 16 : bytes); }
/** Zero-filled (storages start as zeros, as the interface says). */
void* vera_calloc(uint32_t bytes) { return std::calloc(bytes == 0 ? 16 : bytes, 1); }
void vera_free(void* p) { std::free(p); }

}
