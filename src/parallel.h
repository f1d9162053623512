// needle's intra-op parallelism: parallel_for over a range, on a small pool of threads.
//
// Design, for kernels that must give the same bits at any thread count and must never be
// slower than one thread on a busy machine:
// - The range is cut into chunks of at least `grain` elements; a chunk boundary never depends
//   on the thread count, and every kernel computes each output element (or column, or row)
//   inside one chunk, in the same order as on one thread. So results are bit-identical.
// - The calling thread works too, and chunks are claimed one at a time from a shared counter.
//   The caller only waits for chunks that a worker has already claimed: a worker that the
//   operating system has not scheduled (another process is using the core) claims nothing,
//   and the caller does its share. A short range (fewer than two chunks) never wakes anyone.
// - Workers sleep on a condition variable between jobs (no spinning that would steal a busy
//   core), and a forked child starts with no workers (they do not survive fork()).
// - Workers take the caller's floating-point mode (x86's MXCSR: flush-to-zero, rounding) for
//   each job, so set_flush_denormal on the calling thread holds for every chunk.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define NEEDLE_POOL_MXCSR 1
#endif

namespace needle {

/// Elements a chunk of a cheap elementwise kernel holds at least: ~20-40 µs of work, well
/// above the few microseconds it costs to wake a worker.
constexpr int64_t kGrain = int64_t{1} << 15;

class ThreadPool {
 public:
  /// The process's pool. Never destroyed: workers may be blocked in it at interpreter exit.
  static ThreadPool& instance() {
    static ThreadPool* pool = new ThreadPool();
    return *pool;
  }

  /// Threads used by parallel_for, the caller included (>= 1).
  int threads() const { return threads_.load(std::memory_order_relaxed); }

  void set_threads(int n) { threads_.store(std::max(1, n), std::memory_order_relaxed); }

  /// Calls task(c) for every chunk c in [0, chunks), on the caller and up to threads() - 1
  /// workers; returns when every chunk is done.
  template <typename Task>
  void run(int64_t chunks, const Task& task) {
    const int helpers = static_cast<int>(std::min<int64_t>(threads() - 1, chunks - 1));
    if (helpers <= 0 || in_worker_) {
      for (int64_t c = 0; c < chunks; ++c) task(c);
      return;
    }
    std::lock_guard<std::mutex> one_job(job_mutex_);  // jobs from several Python threads queue
    ensure_workers(helpers);
    const Job job{&call<Task>, &task, chunks, float_mode()};
    uint64_t generation;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation = ++generation_;
      job_ = job;
      done_.store(0, std::memory_order_relaxed);
      claim_.store(generation << 32, std::memory_order_release);
      wanted_ = helpers;
    }
    wake_.notify_all();
    int64_t mine = 0;
    for (int64_t c; (c = claim(generation, chunks)) >= 0; ++mine) task(c);
    // Only chunks that workers claimed are left; they are running now.
    while (done_.load(std::memory_order_acquire) + mine < chunks) std::this_thread::yield();
  }

 private:
  struct Job {
    void (*call)(const void* task, int64_t chunk);
    const void* task;
    int64_t chunks;
    unsigned float_mode;  // the caller's, for the workers
  };

  static unsigned float_mode() {
#ifdef NEEDLE_POOL_MXCSR
    return _mm_getcsr();
#else
    return 0;
#endif
  }

  static void set_float_mode([[maybe_unused]] unsigned mode) {
#ifdef NEEDLE_POOL_MXCSR
    if (_mm_getcsr() != mode) _mm_setcsr(mode);
#endif
  }

  template <typename Task>
  static void call(const void* task, int64_t chunk) {
    (*static_cast<const Task*>(task))(chunk);
  }

  ThreadPool() : threads_(default_threads()) {}

  static int default_threads() {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(n);
  }

  /// The next chunk of job `generation`, or -1 when none is left (or the job is over). The
  /// generation lives in the counter's high bits, so a worker that wakes late can never take
  /// a chunk of a later job for the task of an earlier one.
  int64_t claim(uint64_t generation, int64_t chunks) {
    uint64_t current = claim_.load(std::memory_order_acquire);
    while ((current >> 32) == generation && static_cast<int64_t>(current & 0xFFFFFFFFu) < chunks) {
      if (claim_.compare_exchange_weak(current, current + 1, std::memory_order_acq_rel)) {
        return static_cast<int64_t>(current & 0xFFFFFFFFu);
      }
    }
    return -1;
  }

  void ensure_workers(int helpers) {
    if (pid_ != current_pid()) {  // a forked child: the parent's workers do not exist here
      workers_.clear();
      pid_ = current_pid();
    }
    while (static_cast<int>(workers_.size()) < helpers) {
      workers_.emplace_back([this] { work(); });
      workers_.back().detach();
    }
  }

  static long current_pid();

  void work() {
    in_worker_ = true;
    uint64_t seen = 0;
    for (;;) {
      Job job;
      uint64_t generation;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen && wanted_ > 0; });
        seen = generation = generation_;
        --wanted_;
        job = job_;
      }
      set_float_mode(job.float_mode);
      for (int64_t c; (c = claim(generation, job.chunks)) >= 0;) {
        job.call(job.task, c);
        done_.fetch_add(1, std::memory_order_acq_rel);
      }
    }
  }

  std::atomic<int> threads_;
  std::mutex job_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  uint64_t generation_ = 0;
  int wanted_ = 0;  // workers still to wake for the current job
  Job job_{};
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> done_{0};
  std::vector<std::thread> workers_;
  long pid_ = current_pid();
  static thread_local bool in_worker_;
};

inline thread_local bool ThreadPool::in_worker_ = false;

}  // namespace needle

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
inline long needle::ThreadPool::current_pid() { return static_cast<long>(::getpid()); }
#else
inline long needle::ThreadPool::current_pid() { return 0; }
#endif

namespace needle {

/// Calls body(begin, end) over [0, n) in chunks of `grain` elements (the last one shorter),
/// in parallel when there are two chunks or more. A call may cover several consecutive
/// chunks (all of them on one thread); `begin` is always a multiple of `grain`, so a body
/// that must not depend on the thread count walks its range in steps of `grain`.
template <typename Body>
void parallel_for(int64_t n, int64_t grain, const Body& body) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = (n + grain - 1) / grain;
  if (chunks < 2 || ThreadPool::instance().threads() < 2) {
    body(int64_t{0}, n);
    return;
  }
  ThreadPool::instance().run(chunks,
                             [&](int64_t c) { body(c * grain, std::min(n, (c + 1) * grain)); });
}

}  // namespace needle
