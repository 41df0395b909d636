// oq/cpu/thread_pool.hpp: worker threads that a caller owns and hands to the
// CPU kernels, so that a call does not start threads of its own.
//
//   oq::cpu::ThreadPool pool(8);                          // once per engine (or per engine thread)
//   oq::cpu::gemm(a, w, y, {.isa = Isa::kAuto, .pool = &pool});   // every call
//
// No global state: the pool is the caller's object, and the kernels use only
// the pool they are given. A pool runs one job at a time; callers on several
// threads that share a pool take turns (a mutex), each with all its threads.
// Starting a thread costs tens of microseconds, which is a tenth of a
// decode-sized GEMV (4096 × 4096 INT4 weights, 0.3 ms; bench/RESULTS.md);
// waking a sleeping one costs about as much on a virtual machine, so idle
// workers (and a caller waiting for them) spin briefly before they sleep.
#pragma once

#include <oq/detail/check.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace oq::cpu {

namespace detail_pool {
// A hint to the core that this thread is spinning.
inline void relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}
// Spins before sleeping: about 20 µs of pause instructions.
inline constexpr int kSpins = 1 << 11;
}  // namespace detail_pool

class ThreadPool {
 public:
  /// `threads` in all, the calling thread included (threads − 1 workers);
  /// 0: the hardware's. Throws std::invalid_argument for a negative count,
  /// std::system_error when the system refuses a thread.
  explicit ThreadPool(int threads = 0) {
    detail::require(threads >= 0, "oq::cpu::ThreadPool", "threads must be >= 0 (0: all hardware threads), got ",
                    threads);
    const int total = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    try {
      for (int i = 1; i < total; ++i) workers_.emplace_back([this] { work(); });
    } catch (...) {
      stop();
      throw;
    }
  }

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() { stop(); }

  /// Threads a job runs on: the workers and the caller.
  int size() const noexcept { return static_cast<int>(workers_.size()) + 1; }

  /// Calls task(i) for every i in [0, tasks), spread over the workers and
  /// the calling thread; returns when all are done, rethrowing the exception
  /// of the lowest i that threw.
  void run(std::int64_t tasks, const std::function<void(std::int64_t)>& task) {
    if (tasks <= 0) return;
    const std::lock_guard<std::mutex> one_job(run_mutex_);
    std::vector<std::exception_ptr> errors(static_cast<std::size_t>(tasks));
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      task_ = &task;
      errors_ = &errors;
      tasks_ = tasks;
      next_.store(0);
      busy_.store(static_cast<int>(workers_.size()));
      generation_.fetch_add(1, std::memory_order_release);  // publishes the fields above to spinning workers
    }
    start_.notify_all();
    take_tasks();
    for (int spin = 0; spin < detail_pool::kSpins && busy_.load(std::memory_order_acquire) != 0; ++spin)
      detail_pool::relax();
    {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [this] { return busy_.load(std::memory_order_acquire) == 0; });
      task_ = nullptr;
      errors_ = nullptr;
    }
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
  }

 private:
  void take_tasks() {
    for (std::int64_t i = next_.fetch_add(1); i < tasks_; i = next_.fetch_add(1)) {
      try {
        (*task_)(i);
      } catch (...) {
        (*errors_)[static_cast<std::size_t>(i)] = std::current_exception();
      }
    }
  }

  void work() {
    std::uint64_t seen = 0;
    for (;;) {
      auto has_work = [&] {
        return stopping_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen;
      };
      for (int spin = 0; spin < detail_pool::kSpins && !has_work(); ++spin) detail_pool::relax();
      if (!has_work()) {
        std::unique_lock<std::mutex> lock(mutex_);
        start_.wait(lock, has_work);
      }
      if (stopping_.load(std::memory_order_acquire)) return;
      seen = generation_.load(std::memory_order_acquire);
      take_tasks();
      if (busy_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        // The last worker out wakes the caller, under the mutex so that the
        // wake cannot fall between the caller's check and its sleep.
        const std::lock_guard<std::mutex> lock(mutex_);
        done_.notify_one();
      }
    }
  }

  void stop() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stopping_.store(true, std::memory_order_release);
    }
    start_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one job at a time
  std::mutex mutex_;
  std::condition_variable start_, done_;
  std::atomic<std::uint64_t> generation_{0};  // one per job
  std::atomic<bool> stopping_{false};
  std::atomic<int> busy_{0};  // workers still in the current job
  const std::function<void(std::int64_t)>* task_ = nullptr;
  std::vector<std::exception_ptr>* errors_ = nullptr;
  std::int64_t tasks_ = 0;
  std::atomic<std::int64_t> next_{0};
};

}  // namespace oq::cpu
