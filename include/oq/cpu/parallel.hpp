// oq/cpu/parallel.hpp: how the CPU kernels split work over threads.
//
// No global state: a call either starts its threads (std::thread) and joins
// them before returning, or runs on a ThreadPool that its caller owns and
// passes in (KernelOptions::pool; thread_pool.hpp), which saves the tens of
// microseconds a thread start costs on every call.
#pragma once

#include <oq/cpu/thread_pool.hpp>
#include <oq/detail/check.hpp>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace oq::cpu {

/// The thread count a kernel uses for `requested`: itself when > 0, else the
/// hardware's (std::thread::hardware_concurrency, at least 1); with a pool,
/// the pool's size (`requested` must then be 0). Negative is an error naming
/// `where`.
inline int resolve_threads(int requested, std::string_view where, const ThreadPool* pool = nullptr) {
  detail::require(requested >= 0, where, "options.threads must be >= 0 (0: all hardware threads), got ",
                  requested);
  if (pool != nullptr) {
    detail::require(requested == 0, where, "options.threads must be 0 when options.pool is given (the pool has ",
                    pool->size(), " threads), got ", requested);
    return pool->size();
  }
  if (requested > 0) return requested;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

/// Calls body(begin, end) on disjoint ranges covering [0, count), on up to
/// `threads` threads (the caller's thread takes the first range), each range
/// a whole number of `grain`s except the last. Returns when all are done;
/// rethrows the exception of the lowest-numbered range that threw. Where a
/// thread cannot be started (a process or container thread limit), the
/// ranges it would have run run on the caller's thread instead.
///
/// With a pool, the ranges run on it (threads is then pool->size()).
template <class Body>
void parallel_for(std::int64_t count, int threads, std::int64_t grain, Body&& body, ThreadPool* pool = nullptr) {
  if (count <= 0) return;
  grain = std::max<std::int64_t>(grain, 1);
  const std::int64_t grains = (count + grain - 1) / grain;
  if (pool != nullptr) threads = pool->size();
  const std::int64_t workers = std::max<std::int64_t>(1, std::min<std::int64_t>(threads, grains));
  if (workers == 1) {
    body(std::int64_t{0}, count);
    return;
  }
  if (pool != nullptr) {
    pool->run(workers, [&](std::int64_t w) {
      const std::int64_t g0 = grains * w / workers, g1 = grains * (w + 1) / workers;
      body(g0 * grain, std::min(count, g1 * grain));
    });
    return;
  }
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(workers));
  auto run = [&](std::int64_t w) {
    try {
      const std::int64_t g0 = grains * w / workers, g1 = grains * (w + 1) / workers;
      body(g0 * grain, std::min(count, g1 * grain));
    } catch (...) {
      errors[static_cast<std::size_t>(w)] = std::current_exception();
    }
  };
  std::vector<std::thread> started_threads;
  started_threads.reserve(static_cast<std::size_t>(workers - 1));
  std::int64_t started = 1;  // ranges 1 .. started − 1 have a thread
  try {
    for (; started < workers; ++started) started_threads.emplace_back(run, started);
  } catch (const std::system_error&) {
    // No more threads: the caller runs the rest below.
  }
  run(0);
  for (std::int64_t w = started; w < workers; ++w) run(w);
  for (auto& t : started_threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace oq::cpu
