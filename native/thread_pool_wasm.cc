// The WebAssembly build's stand-in for thread_pool.cc: one thread, so parallel_for runs its whole
// range on the caller (std::thread needs emscripten's JavaScript pthread glue, which this build
// leaves out). Kernels split work by rows or element ranges only, so results are those of the
// native backend at VERA_NUM_THREADS=1.
#include "thread_pool.h"

namespace vera {

int num_threads() { return 1; }
void set_num_threads(int) {}

void parallel_for(int64_t n, int64_t, const std::function<void(int64_t, int64_t)>& fn) {
  if (n > 0) fn(0, n);
}

}  // namespace vera
