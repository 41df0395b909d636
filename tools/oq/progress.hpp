// tools/oq/progress.hpp: a progress bar on stderr with elapsed time and ETA,
// drawn only when stderr is a terminal (a log file or a pipe gets nothing,
// so CI logs and redirected runs stay clean).
//
//   Progress bar("quantize", 32);
//   for (int l = 0; l < 32; ++l) { ...; bar.advance("layer " + std::to_string(l)); }
//   bar.finish();
#pragma once

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace oq_tool {

/// The signal number the oq tool's SIGINT / SIGTERM handler received (0:
/// none; main.cpp); every long loop stops at its next step
/// (Progress::advance, and before quantize writes its output), so that a
/// quantize interrupted by Ctrl-C unwinds and removes its staging directory
/// instead of leaving it. A lock-free atomic: the handler may run on any
/// thread (the kernels' pool), and lock-free atomics are signal-safe.
inline std::atomic<int> interrupt_requested{0};
static_assert(std::atomic<int>::is_always_lock_free);

/// What a loop throws when interrupt_requested is set.
struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted") {}
};

inline void throw_if_interrupted() {
  if (interrupt_requested.load() != 0) throw Interrupted();
}

/// Seconds as "1h02m03s" / "2m03s" / "3.4s".
inline std::string format_seconds(double s) {
  char buffer[64];
  if (!(s >= 0) || s > 1e9) return "?";
  const long total = static_cast<long>(s);
  if (total >= 3600) {
    std::snprintf(buffer, sizeof buffer, "%ldh%02ldm%02lds", total / 3600, (total / 60) % 60, total % 60);
  } else if (total >= 60) {
    std::snprintf(buffer, sizeof buffer, "%ldm%02lds", total / 60, total % 60);
  } else {
    std::snprintf(buffer, sizeof buffer, "%.1fs", s);
  }
  return buffer;
}

class Progress {
 public:
  using Clock = std::chrono::steady_clock;

  /// `total` steps; `enabled` defaults to whether stderr is a terminal.
  Progress(std::string label, long total, bool enabled = ::isatty(STDERR_FILENO) != 0)
      : label_(std::move(label)), total_(total > 0 ? total : 1), enabled_(enabled), start_(Clock::now()) {
    draw("");
  }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress() { finish(); }

  /// One more step done; `what` is shown after the bar. Throws Interrupted
  /// when an interrupt was requested (throw_if_interrupted).
  void advance(const std::string& what = "") {
    if (done_ < total_) ++done_;
    draw(what);
    throw_if_interrupted();
  }
  /// Redraws with a new note without counting a step.
  void note(const std::string& what) { draw(what); }

  void finish() {
    if (enabled_ && !finished_) std::fputc('\n', stderr);
    finished_ = true;
  }

  double elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

 private:
  void draw(const std::string& what) {
    if (!enabled_ || finished_) return;
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(kWidth * done_ / total_);
    const double seconds = elapsed();
    const std::string eta = done_ > 0 ? format_seconds(seconds * double(total_ - done_) / double(done_)) : "?";
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.append(static_cast<std::size_t>(kWidth - filled), '.');
    std::fprintf(stderr, "\r\033[K%s [%s] %ld/%ld  %s elapsed, ETA %s  %s", label_.c_str(), bar.c_str(), done_, total_,
                 format_seconds(seconds).c_str(), eta.c_str(), what.c_str());
    std::fflush(stderr);
  }

  std::string label_;
  long total_;
  long done_ = 0;
  bool enabled_;
  bool finished_ = false;
  Clock::time_point start_;
};

}  // namespace oq_tool
