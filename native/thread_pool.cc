#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <exception>
#include <thread>
#include <vector>

namespace vera {
namespace {

thread_local bool in_worker = false;

// Hand-off: a run publishes its job and bumps `gen_`; workers spin on `gen_` for a while after each
// job before falling back to the condition variable. A sleeping worker costs a futex wake-up (tens
// of µs here), which on back-to-back small kernels (a training step issues thousands) cost more than
// the kernels themselves. The caller takes chunks too, and when none are left it closes the job and
// waits only for the workers that joined it (`inflight_`), never for one that has not started: on
// a busy machine a descheduled worker would otherwise hold every kernel call for a time slice
// (measured: 240 s instead of 7 s of work at load 8–10 on 2 cores). Joining is a Dekker pair
// (seq_cst): a worker counts itself in, then checks that the job is still open; the caller closes
// the job, then reads the count; one of them always sees the other.
constexpr auto kSpin = std::chrono::microseconds(400);

inline void cpu_relax() {
#if defined(VERA_X86)
  __builtin_ia32_pause();
#endif
}

class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return nthreads_; }

  void resize(int n) {
    std::lock_guard<std::mutex> busy(busy_);
    n = std::max(1, n);
    if (n == nthreads_) return;
    stop();
    nthreads_ = n;
    quit_.store(false);
    // a worker joins every run after the generation it was created at, even if it starts late
    const uint64_t start = gen_.load();
    for (int i = 1; i < n; i++) workers_.emplace_back([this, start] { loop(start); });
  }

  /** False (and nothing run) when another thread (a Node worker) holds the pool. */
  bool run(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    fn_ = &fn;
    n_ = n;
    chunk_ = chunk;
    next_.store(0, std::memory_order_relaxed);
    const uint64_t job = gen_.load(std::memory_order_relaxed) + 1;
    open_.store(job, std::memory_order_seq_cst);
    {
      // under the lock so a worker between its last check and its wait cannot miss the bump
      std::lock_guard<std::mutex> lk(mu_);
      gen_.store(job, std::memory_order_release);
    }
    cv_.notify_all();
    in_worker = true;
    work();
    in_worker = false;
    // every chunk is taken: no worker may join from now on; wait for those inside (they still call
    // *fn_, which lives in our caller), even after a throw
    open_.store(0, std::memory_order_seq_cst);
    for (uint32_t i = 0; inflight_.load(std::memory_order_seq_cst) != 0; i++) {
      if (i < (1u << 16)) cpu_relax();
      else std::this_thread::yield();  // a worker inside the job was descheduled: give it the core
    }
    fn_ = nullptr;
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);  // (bad_alloc in a kernel): the caller sees it as a JS error
    }
    return true;
  }

 private:
  /** Runs chunks until none are left; the first exception (any thread) stops the rest and is kept. */
  void work() {
    try {
      for (;;) {
        int64_t b = next_.fetch_add(chunk_, std::memory_order_relaxed);
        if (b >= n_) break;
        (*fn_)(b, std::min(n_, b + chunk_));
      }
    } catch (...) {
      next_.store(n_, std::memory_order_relaxed);
      std::lock_guard<std::mutex> lk(error_mu_);
      if (!error_) error_ = std::current_exception();
    }
  }

  void loop(uint64_t seen) {
    in_worker = true;
    for (;;) {
      if (!wait_for_job(seen)) return;
      seen = gen_.load(std::memory_order_acquire);
      inflight_.fetch_add(1, std::memory_order_seq_cst);
      if (open_.load(std::memory_order_seq_cst) == seen) work();  // else the caller finished without us
      inflight_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }

  /** Until a generation after `seen` is published (true) or the pool stops (false). */
  bool wait_for_job(uint64_t seen) {
    const auto until = std::chrono::steady_clock::now() + kSpin;
    for (uint32_t i = 1;; i++) {
      if (quit_.load(std::memory_order_relaxed)) return false;
      if (gen_.load(std::memory_order_acquire) != seen) return true;
      cpu_relax();
      if ((i & 255) == 0 && std::chrono::steady_clock::now() > until) break;
    }
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return quit_.load() || gen_.load() != seen; });
    return !quit_.load();
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      quit_.store(true);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  int nthreads_ = 0;
  std::vector<std::thread> workers_;
  std::mutex busy_;  // one parallel_for at a time
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> quit_{false};
  std::atomic<uint64_t> gen_{0};
  std::atomic<uint64_t> open_{0};  // the generation of the job that workers may still join, else 0
  std::atomic<int> inflight_{0};   // workers inside a job
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, chunk_ = 1;
  std::atomic<int64_t> next_{0};
  std::mutex error_mu_;
  std::exception_ptr error_;
};

int default_threads() {
  if (const char* env = std::getenv("VERA_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

Pool& pool() {
  static Pool* p = new Pool(default_threads());  // never destroyed: workers die with the process
  return *p;
}

}  // namespace

int num_threads() { return pool().size(); }
void set_num_threads(int n) { pool().resize(n); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  int t = num_threads();
  grain = std::max<int64_t>(1, grain);
  if (t == 1 || in_worker || n <= grain) {
    fn(0, n);
    return;
  }
  // a few chunks per thread balances uneven work without much counter traffic
  int64_t chunk = std::max(grain, (n + 4 * t - 1) / (4 * t));
  if (!pool().run(n, chunk, fn)) fn(0, n);
}

}  // namespace vera
