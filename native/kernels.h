// Kernel entry points shared by the binding files. Each takes the JS arguments as the TypeScript
// side passes them (src/backends/native/index.ts) and returns a JS value or nullptr (undefined).
#pragma once
#if defined(__wasm__)
#include "wasm_args.h"  // the WebAssembly build: the same Args over slots in linear memory
#else
#include <node_api.h>

#include "napi_args.h"
#endif

namespace vera {

using Binding = napi_value (*)(napi_env, const Args&);

struct BindingEntry {
  const char* name;
  Binding fn;
};

// kernels.cc
extern const BindingEntry kElementwiseBindings[];
// attention.cc
extern const BindingEntry kAttentionBindings[];
// vera.cc
extern const BindingEntry kVeraBindings[];
// ragged.cc
extern const BindingEntry kRaggedBindings[];
// quant.cc
extern const BindingEntry kQuantBindings[];
// lora.cc
extern const BindingEntry kLoraBindings[];

}  // namespace vera
