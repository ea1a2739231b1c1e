// Module entry: registers every kernel binding plus the memory and thread-pool helpers. Storages
// are Float32Arrays (ArrayBuffer-backed) whose memory the kernels use in place, so a tensor never
// leaves native memory between ops and `read` is a view.
#include <node_api.h>

#include <exception>

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

const BindingEntry kRuntimeBindings[] = {
    {"free", k_free},
    {"numThreads", k_num_threads},
    {"setNumThreads", k_set_num_threads},
    {"gemmKernel", k_gemm_kernel},
    {nullptr, nullptr},
};

napi_value init(napi_env env, napi_value exports) {
  for (const BindingEntry* table : {kRuntimeBindings, kElementwiseBindings, kAttentionBindings, kVeraBindings}) {
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
