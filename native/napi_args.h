// Argument unpacking for the N-API bindings. Storages arrive as Float32Arrays whose memory the
// kernels use in place; a wrong argument throws a TypeError naming its position.
#pragma once
#include "arg_checks.h"
#include <node_api.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace vera {


class Args : public IntegerArgs<Args> {
 public:
  Args(napi_env env, napi_callback_info info) : env_(env) {
    argc_ = kMax;
    napi_get_cb_info(env, info, &argc_, argv_, nullptr, nullptr);
  }

  bool is_null(size_t i) const {
    napi_valuetype t;
    if (i >= argc_ || napi_typeof(env_, argv_[i], &t) != napi_ok) return true;
    return t == napi_null || t == napi_undefined;
  }

  /** Float32Array data (nullptr for null); its element count in *len when given. */
  float* f32(size_t i, size_t* len = nullptr) const { return static_cast<float*>(typed(i, napi_float32_array, "Float32Array", len)); }
  int32_t* i32(size_t i, size_t* len = nullptr) const { return static_cast<int32_t*>(typed(i, napi_int32_array, "Int32Array", len)); }
  uint8_t* u8(size_t i, size_t* len = nullptr) const { return static_cast<uint8_t*>(typed(i, napi_uint8_array, "Uint8Array", len)); }
  size_t length(size_t i) const {
    size_t n = 0;
    typed(i, napi_float32_array, "Float32Array", &n);
    return n;
  }

  double num(size_t i) const {
    double v;
    if (i >= argc_ || napi_get_value_double(env_, argv_[i], &v) != napi_ok) bad_arg(i, "a number");
    return v;
  }
  bool flag(size_t i) const {
    bool v;
    if (i >= argc_ || napi_get_value_bool(env_, argv_[i], &v) != napi_ok) bad_arg(i, "a boolean");
    return v;
  }
  std::vector<double> nums(size_t i) const {
    uint32_t n = 0;
    if (i >= argc_ || napi_get_array_length(env_, argv_[i], &n) != napi_ok) bad_arg(i, "an array of numbers");
    std::vector<double> out(n);
    for (uint32_t j = 0; j < n; j++) {
      napi_value e;
      if (napi_get_element(env_, argv_[i], j, &e) != napi_ok || napi_get_value_double(env_, e, &out[j]) != napi_ok) bad_arg(i, "an array of numbers");
    }
    return out;
  }
  napi_value raw(size_t i) const { return argv_[i]; }

  /** An array of live Float32Arrays: their data, and their element counts in *lens. */
  std::vector<float*> f32list(size_t i, std::vector<size_t>* lens) const {
    uint32_t n = 0;
    bool isArray = false;
    if (i >= argc_ || napi_is_array(env_, argv_[i], &isArray) != napi_ok || !isArray || napi_get_array_length(env_, argv_[i], &n) != napi_ok) bad_arg(i, "an array of Float32Arrays");
    std::vector<float*> out(n);
    lens->assign(n, 0);
    for (uint32_t j = 0; j < n; j++) {
      napi_value e;
      bool is = false;
      if (napi_get_element(env_, argv_[i], j, &e) != napi_ok || napi_is_typedarray(env_, e, &is) != napi_ok || !is) bad_arg(i, "an array of Float32Arrays");
      napi_typedarray_type t;
      void* data;
      napi_value buffer;
      napi_get_typedarray_info(env_, e, &t, &(*lens)[j], &data, &buffer, nullptr);
      bool detached = false;
      napi_is_detached_arraybuffer(env_, buffer, &detached);
      if (t != napi_float32_array || detached) bad_arg(i, "an array of live Float32Arrays");
      out[j] = static_cast<float*>(data);
    }
    return out;
  }

 private:
  static constexpr size_t kMax = 24;


  void* typed(size_t i, napi_typedarray_type want, const char* what, size_t* len) const {
    if (is_null(i)) {
      if (len) *len = 0;
      return nullptr;
    }
    bool is = false;
    napi_is_typedarray(env_, argv_[i], &is);
    if (!is) bad_arg(i, what);
    napi_typedarray_type t;
    size_t n;
    void* data;
    napi_value buffer;
    napi_get_typedarray_info(env_, argv_[i], &t, &n, &data, &buffer, nullptr);
    if (t != want) bad_arg(i, what);
    // a freed (detached) buffer, e.g. a reshape whose storage another tensor released, reads as
    // empty: refuse it rather than let a kernel index a null pointer
    bool detached = false;
    napi_is_detached_arraybuffer(env_, buffer, &detached);
    if (detached) bad_arg(i, "a live buffer (it was freed)");
    if (len) *len = n;
    // an empty array may report no data pointer; kernels read a null pointer as "absent" for
    // optional buffers, so give it a non-null one: the bounds checks then refuse it where sizes
    // need elements, and nothing reads or writes it where they need none
    static float empty[1];
    return data != nullptr ? data : static_cast<void*>(empty);
  }

  napi_env env_;
  size_t argc_;
  napi_value argv_[kMax];
};

}  // namespace vera
