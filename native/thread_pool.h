// A persistent pool of worker threads. parallel_for splits [0, n) into chunks that the caller and
// the workers take from one atomic counter; calls made from inside a worker run serially, so
// kernels can nest freely.
#pragma once
#include <cstdint>
#include <functional>

namespace vera {

/** Number of threads (including the caller) parallel_for uses. */
int num_threads();
void set_num_threads(int n);

/** fn(begin, end) over chunks of [0, n); at least `grain` items per chunk. */
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace vera
