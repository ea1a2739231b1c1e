// Kernel entry points shared by the binding files. Each takes the JS arguments as the TypeScript
// side passes them (src/backends/native/index.ts) and returns a JS value or nullptr (undefined).
#pragma once
#include <node_api.h>

#include "napi_args.h"

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

}  // namespace vera
