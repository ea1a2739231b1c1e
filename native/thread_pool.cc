#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace vera {
namespace {

thread_local bool in_worker = false;

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
    quit_ = false;
    // a worker joins every run after the generation it was created at, even if it starts late
    const uint64_t start = generation_;
    for (int i = 1; i < n; i++) workers_.emplace_back([this, start] { loop(start); });
  }

  /** False (and nothing run) when another thread (a Node worker) holds the pool. */
  bool run(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    std::unique_lock<std::mutex> lk(mu_);
    fn_ = &fn;
    n_ = n;
    chunk_ = chunk;
    next_.store(0);
    active_ = static_cast<int>(workers_.size());
    generation_++;
    lk.unlock();
    cv_.notify_all();
    in_worker = true;
    work();
    in_worker = false;
    lk.lock();
    done_cv_.wait(lk, [this] { return active_ == 0; });
    fn_ = nullptr;
    return true;
  }

 private:
  void work() {
    for (;;) {
      int64_t b = next_.fetch_add(chunk_);
      if (b >= n_) break;
      (*fn_)(b, std::min(n_, b + chunk_));
    }
  }

  void loop(uint64_t seen) {
    in_worker = true;
    for (;;) {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return quit_ || generation_ != seen; });
      if (quit_) return;
      seen = generation_;
      lk.unlock();
      work();
      lk.lock();
      if (--active_ == 0) done_cv_.notify_one();
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  int nthreads_ = 0;
  std::vector<std::thread> workers_;
  std::mutex busy_;  // one parallel_for at a time
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  bool quit_ = false;
  uint64_t generation_ = 0;
  int active_ = 0;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, chunk_ = 1;
  std::atomic<int64_t> next_{0};
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
