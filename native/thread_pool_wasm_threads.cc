// The threaded WebAssembly build's pool (wasm/vera-threads.wasm, scripts/build-wasm.mjs): the
// same parallel_for as thread_pool.cc, on workers that JavaScript starts by hand. emcc 3.1.6 links
// pthreads only with its JavaScript glue, which this toolchain cannot emit, so the module is linked
// standalone over an imported shared memory and src/backends/wasm/threads.ts plays the glue's part:
// pthread_create (called here, so that libc sets up the thread's struct, keys and stack) calls the
// imported __pthread_create_js, which starts a Worker instantiating the same module over the same
// memory; the worker sets its stack pointer and enters vera_thread_main, which sets up the thread's
// TLS and runs the worker loop forever (JavaScript terminates the workers).
//
// Hand-off as in thread_pool.cc: the caller publishes a job and bumps `gen`, takes chunks from one
// atomic counter itself, closes the job when none are left and waits only for the workers that
// joined it (a Dekker pair on `open` and `inflight`). Differences: a browser's main thread may not
// wait on an atomic, so there the caller spins until the workers are done; elsewhere (Node, a
// worker) it spins a while, then sleeps on `inflight` in short timed waits (spinning on a loaded
// machine took the core from the worker it waited for: 40% more CPU time on a 1024³ GEMM). Workers
// spin a while after each job, then sleep on `gen` with memory.atomic.wait32 and are woken only
// when one sleeps (another Dekker pair, on `sleepers`). Chunks do not depend on which thread takes
// them, so results are those of one thread.
#include "thread_pool.h"

#include <emscripten/emscripten.h>
#include <emscripten/threading.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <exception>

extern "C" {
// emscripten's libc (-mt): what its JavaScript glue calls to set up a thread
void _emscripten_thread_init(pthread_t ptr, int is_main, int is_runtime, int can_block, int start_profiling);
void* emscripten_tls_init(void);
}

namespace vera {
namespace {

thread_local bool in_worker = false;

// a worker spins this long after each job before it sleeps (as thread_pool.cc): a sleeping worker
// costs a wake-up (tens of µs), which on back-to-back small kernels costs more than the kernels
constexpr double kWorkerSpinMs = 0.4;
// the caller's spins on the workers of a job before it sleeps (where it may), a few µs
constexpr uint32_t kSpin = 1u << 12;
constexpr size_t kStackBytes = 4u << 20;

int started = 1;                      // threads that exist, the caller included
std::atomic<int> active{1};           // threads that take part (setNumThreads), at most `started`
std::atomic<uint32_t> gen{0};         // job generation, the word sleeping workers wait on
std::atomic<uint32_t> open{0};        // the generation workers may still join, else 0
std::atomic<int32_t> inflight{0};     // workers inside a job
std::atomic<int32_t> caller_waits{0}; // the caller sleeps on `inflight`: the last worker out wakes it
bool caller_can_block = true;         // false on a browser's main thread
std::atomic<int> sleepers{0};         // workers waiting on `gen`
std::atomic<bool> busy{false};        // one parallel_for at a time
const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
int64_t n_ = 0, chunk_ = 1;
std::atomic<int64_t> next_{0};
std::atomic<bool> failed{false};
std::exception_ptr error_;            // written by the thread that set `failed`
std::atomic<uint32_t> worker_chunks{0};  // chunks the workers ran (diagnostics: vera_worker_chunks)

inline int32_t* gen_word() { return reinterpret_cast<int32_t*>(&gen); }
inline int32_t* inflight_word() { return reinterpret_cast<int32_t*>(&inflight); }

/** Runs chunks until none are left; the first exception (any thread) stops the rest and is kept. Returns the chunks run. */
uint32_t work() {
  uint32_t done = 0;
  try {
    for (;;) {
      const int64_t b = next_.fetch_add(chunk_, std::memory_order_relaxed);
      if (b >= n_) break;
      (*fn_)(b, std::min(n_, b + chunk_));
      done++;
    }
  } catch (...) {
    next_.store(n_, std::memory_order_relaxed);
    if (!failed.exchange(true)) error_ = std::current_exception();
  }
  return done;
}

/** Start block of a worker (read by JavaScript before the worker runs any code: its stack top). */
struct Start {
  uint32_t stack_top;
  uint32_t index;
};

void* worker_loop(Start* s) {
  in_worker = true;
  const int index = int(s->index);
  uint32_t seen = gen.load(std::memory_order_acquire);
  for (;;) {
    uint32_t g;
    double until = emscripten_get_now() + kWorkerSpinMs;  // the clock is an import: read it now and then
    for (uint32_t i = 1; (g = gen.load(std::memory_order_seq_cst)) == seen; i++) {
      if ((i & 1023) != 0 || emscripten_get_now() < until) continue;
      sleepers.fetch_add(1, std::memory_order_seq_cst);
      // wait32 returns at once if `gen` moved after the check above
      if (gen.load(std::memory_order_seq_cst) == seen) __builtin_wasm_memory_atomic_wait32(gen_word(), int32_t(seen), -1);
      sleepers.fetch_sub(1, std::memory_order_seq_cst);
      until = emscripten_get_now() + kWorkerSpinMs;
    }
    seen = g;
    if (index >= active.load(std::memory_order_relaxed)) continue;
    inflight.fetch_add(1, std::memory_order_seq_cst);
    if (open.load(std::memory_order_seq_cst) == seen) {  // else the caller finished without us
      const uint32_t done = work();
      if (done > 0) worker_chunks.fetch_add(done, std::memory_order_relaxed);
    }
    if (inflight.fetch_sub(1, std::memory_order_seq_cst) == 1 && caller_waits.load(std::memory_order_seq_cst) != 0)
      __builtin_wasm_memory_atomic_notify(inflight_word(), 1);
  }
}

bool run(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& fn) {
  bool idle = false;
  if (!busy.compare_exchange_strong(idle, true)) return false;
  fn_ = &fn;
  n_ = n;
  chunk_ = chunk;
  next_.store(0, std::memory_order_relaxed);
  const uint32_t job = gen.load(std::memory_order_relaxed) + 1;
  open.store(job, std::memory_order_seq_cst);
  gen.store(job, std::memory_order_seq_cst);
  if (sleepers.load(std::memory_order_seq_cst) > 0) __builtin_wasm_memory_atomic_notify(gen_word(), ~0u);
  in_worker = true;
  work();
  in_worker = false;
  // every chunk is taken: no worker may join from now on; wait until those inside are done (they
  // still call *fn_, which lives in our caller)
  open.store(0, std::memory_order_seq_cst);
  for (uint32_t i = 0;; i++) {
    const int32_t inside = inflight.load(std::memory_order_seq_cst);
    if (inside == 0) break;
    if (i < kSpin || !caller_can_block) continue;
    // wait32 returns at once if a worker left after the load; one that leaves later sees the flag
    // and wakes us; the timeout bounds any miss
    caller_waits.store(1, std::memory_order_seq_cst);
    __builtin_wasm_memory_atomic_wait32(inflight_word(), inside, 100000);
    caller_waits.store(0, std::memory_order_seq_cst);
  }
  fn_ = nullptr;
  std::exception_ptr e;
  if (failed.load()) {
    e = error_;
    error_ = nullptr;
    failed.store(false);
  }
  busy.store(false);
  if (e) std::rethrow_exception(e);  // (bad_alloc in a kernel): the caller sees it as an error
  return true;
}

}  // namespace

int num_threads() { return active.load(std::memory_order_relaxed); }
void set_num_threads(int n) { active.store(std::max(1, std::min(n, started)), std::memory_order_relaxed); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int t = num_threads();
  grain = std::max<int64_t>(1, grain);
  if (t == 1 || in_worker || n <= grain) {
    fn(0, n);
    return;
  }
  // a few chunks per thread balances uneven work without much counter traffic (as thread_pool.cc)
  const int64_t chunk = std::max(grain, (n + 4 * t - 1) / (4 * t));
  if (!run(n, chunk, fn)) fn(0, n);
}

}  // namespace vera

using namespace vera;

extern "C" {

/**
 * Sets up the calling (main) thread's TLS and starts `n - 1` workers through pthread_create (each
 * becomes a Worker once JavaScript gets to it; the pool uses whichever have joined). Returns the
 * threads started, the caller included.
 */
int32_t vera_threads_start(int32_t n) {
  static bool tls = false;
  if (!tls) {
    emscripten_tls_init();
    tls = true;
  }
  for (int i = started; i < n; i++) {
    char* stack = static_cast<char*>(std::aligned_alloc(16, kStackBytes));
    auto* s = static_cast<Start*>(std::malloc(sizeof(Start)));
    if (stack == nullptr || s == nullptr) {
      std::free(stack);
      std::free(s);
      break;
    }
    s->stack_top = uint32_t(reinterpret_cast<uintptr_t>(stack + kStackBytes));
    s->index = uint32_t(i);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstack(&attr, stack, kStackBytes);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    const int rc = pthread_create(&t, &attr, reinterpret_cast<void* (*)(void*)>(worker_loop), s);
    pthread_attr_destroy(&attr);
    if (rc != 0) {  // no workers here (JavaScript could not start one)
      std::free(stack);
      std::free(s);
      break;
    }
    started = i + 1;
  }
  active.store(started);
  return started;
}

/** A worker's entry, after JavaScript has set its stack pointer to start->stack_top. Never returns. */
void vera_thread_main(pthread_t self, Start* start) {
  _emscripten_thread_init(self, 0, 0, 1, 0);
  emscripten_tls_init();
  worker_loop(start);
}

/** Threads that take part from now on (1 … started), e.g. 1 after JavaScript has terminated the workers. */
int32_t vera_set_num_threads(int32_t n) {
  set_num_threads(n);
  return num_threads();
}

/** Chunks of parallel_for the workers have run so far (the rest ran on the caller). */
uint32_t vera_worker_chunks() { return worker_chunks.load(); }

/** The main thread's state, from __emscripten_init_main_thread_js (can_block: false in a browser's main thread). */
void vera_thread_init_main(pthread_t self, int32_t can_block) {
  _emscripten_thread_init(self, 1, 1, can_block, 0);
  caller_can_block = can_block != 0;
}

}
