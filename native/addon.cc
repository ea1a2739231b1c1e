// Module entry: registers every kernel binding plus the memory and thread-pool helpers. Storages
// are Float32Arrays (ArrayBuffer-backed) whose memory the kernels use in place, so a tensor never
// leaves native memory between ops and `read` is a view.
#include <node_api.h>

#include <cstdlib>
#include <exception>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "gemm.h"
#include "kernels.h"
#include "thread_pool.h"

namespace vera {
namespace {

/** The binding to run for each JS function, kept as its callback data. */
napi_value dispatch(napi_env env, napi_callback_info info) {
  void* data = nullptr;
  size_t argc = 0;
  napi_get_cb_info(env, info, &argc, nullptr, nullptr, &data);
  const Binding fn = reinterpret_cast<Binding>(data);
  try {
    Args args(env, info);
    return fn(env, args);
  } catch (const ArgError& e) {
    napi_throw_type_error(env, nullptr, e.what());
  } catch (const std::exception& e) {
    napi_throw_error(env, nullptr, e.what());
  }
  return nullptr;
}

// free(storage): detach the ArrayBuffer so its memory goes now rather than at the next GC
napi_value k_free(napi_env env, const Args& a) {
  napi_value buffer;
  if (napi_get_typedarray_info(env, a.raw(0), nullptr, nullptr, nullptr, &buffer, nullptr) == napi_ok) {
    bool detachable = true;
    napi_is_detached_arraybuffer(env, buffer, &detachable);
    if (!detachable) napi_detach_arraybuffer(env, buffer);
  }
  return nullptr;
}

// alignOffset(arrayBuffer): bytes from the buffer's start to its first 64-byte boundary, so the
// backend can view its storages from there (see src/backends/native/index.ts)
napi_value k_align_offset(napi_env env, const Args& a) {
  void* data = nullptr;
  if (napi_get_arraybuffer_info(env, a.raw(0), &data, nullptr) != napi_ok) bad_arg(0, "an ArrayBuffer");
  napi_value r;
  napi_create_int32(env, int32_t((64 - reinterpret_cast<uintptr_t>(data) % 64) % 64), &r);
  return r;
}

// addressMod64(typedArray): where its first element sits within a 64-byte line (the tests check
// storages' alignment with it, independently of alignOffset)
napi_value k_address_mod64(napi_env env, const Args& a) {
  void* data = nullptr;
  if (napi_get_typedarray_info(env, a.raw(0), nullptr, nullptr, &data, nullptr, nullptr) != napi_ok) bad_arg(0, "a typed array");
  napi_value r;
  napi_create_int32(env, int32_t(reinterpret_cast<uintptr_t>(data) % 64), &r);
  return r;
}

napi_value k_num_threads(napi_env env, const Args&) {
  napi_value r;
  napi_create_int32(env, num_threads(), &r);
  return r;
}

napi_value k_set_num_threads(napi_env, const Args& a) {
  set_num_threads(int(a.i64(0)));
  return nullptr;
}

napi_value k_gemm_kernel(napi_env env, const Args&) {
  napi_value r;
  napi_create_string_utf8(env, gemm_kernel_name(), NAPI_AUTO_LENGTH, &r);
  return r;
}

// machinePeak(seconds) → GFLOP/s of a register-only FMA loop on every pool thread (the widest
// vectors the GEMM uses), for the bench's "% of peak" figures.
napi_value k_machine_peak(napi_env env, const Args& a) {
  napi_value r;
  napi_create_double(env, machine_peak_gflops(a.num(0)), &r);
  return r;
}

const BindingEntry kRuntimeBindings[] = {
    {"free", k_free},
    {"alignOffset", k_align_offset},
    {"addressMod64", k_address_mod64},
    {"numThreads", k_num_threads},
    {"setNumThreads", k_set_num_threads},
    {"gemmKernel", k_gemm_kernel},
    {"machinePeak", k_machine_peak},
    {nullptr, nullptr},
};

/**
 * Storages are ArrayBuffers from Node's allocator (glibc calloc). By default glibc gives every
 * block over 128 KB its own fresh mmap and unmaps it on free, so each new activation or gradient
 * page-faults in all its pages: in a GPT-2 training step that cost more than the elementwise
 * kernels themselves. Keeping blocks up to 32 MB (glibc's ceiling) on the heap, and not trimming
 * it, lets freed storages be reused warm; peak RSS stays what the step needs. The MALLOC_*_
 * environment variables, when set, win.
 */
void keep_freed_blocks() {
#if defined(__GLIBC__)
  if (!std::getenv("MALLOC_MMAP_THRESHOLD_")) mallopt(M_MMAP_THRESHOLD, 32 << 20);
  if (!std::getenv("MALLOC_TRIM_THRESHOLD_")) mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

napi_value init(napi_env env, napi_value exports) {
  keep_freed_blocks();
  for (const BindingEntry* table : {kRuntimeBindings, kElementwiseBindings, kAttentionBindings, kVeraBindings, kRaggedBindings, kQuantBindings, kLoraBindings}) {
    for (const BindingEntry* e = table; e->name != nullptr; e++) {
      napi_value fn;
      napi_create_function(env, e->name, NAPI_AUTO_LENGTH, dispatch, reinterpret_cast<void*>(e->fn), &fn);
      napi_set_named_property(env, exports, e->name, fn);
    }
  }
  return exports;
}

}  // namespace
}  // namespace vera

NAPI_MODULE(NODE_GYP_MODULE_NAME, vera::init)
