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

/**
 * fn(begin, end) over `parts` ranges of [0, n) whose sizes differ by at most one, handed out one at
 * a time while parts ≤ 4 × num_threads() (beyond that parallel_for hands out several at once). For
 * items that cost alike: parallel_for's equal chunks leave a short last one, and the thread that
 * does not get it idles at the end (two threads, 36 items in chunks of 5: 20 against 16).
 */
inline void parallel_for_parts(int64_t n, int64_t parts, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  parts = parts < 1 ? 1 : parts > n ? n : parts;
  if (parts == 1) return fn(0, n);
  parallel_for(parts, 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; q++) fn(q * n / parts, (q + 1) * n / parts);
  });
}

}  // namespace vera
