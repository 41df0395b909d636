// tests/support/subprocess.hpp: run a check in a child process with a time
// limit, for code that could block forever (opening a FIFO) or must not be
// allowed to hang the test binary when it regresses (a quadratic parser),
// and measure the peak resident memory of what the child does (Linux, glibc).
#pragma once

#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>
#include <thread>

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace oq::test {

/// Runs `check` (returning bool) in a forked child. Returns true when the
/// child finished within `limit` and `check` returned true; false when it
/// returned false, threw, or was still running at the limit (then it is
/// killed). The child never returns into the test framework: it _exits.
template <class Check>
bool finishes_within(std::chrono::milliseconds limit, Check&& check) {
  const pid_t child = ::fork();
  if (child < 0) return false;
  if (child == 0) {
    int code = 1;
    try {
      code = check() ? 0 : 1;
    } catch (...) {
      code = 2;
    }
    ::_exit(code);
  }
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (true) {
    const pid_t done = ::waitpid(child, &status, WNOHANG);
    if (done == child) return WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (done < 0 || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(child, SIGKILL);
  ::waitpid(child, &status, 0);
  return false;
}

/// A "VmRSS:" / "VmHWM:" line of /proc/self/status, in bytes (0 if absent).
inline std::size_t proc_status_bytes(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string prefix = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) return static_cast<std::size_t>(std::stoull(line.substr(prefix.size()))) * 1024;
  }
  return 0;
}

/// Starts a measurement of peak resident memory: gives the heap's free pages
/// back (a forked child inherits its parent's, resident, which a new
/// allocation would reuse unseen) and resets the kernel's high-water mark
/// (writing 5 to /proc/self/clear_refs, Linux 4.0+). Returns the resident
/// memory now, or 0 when the mark cannot be reset (then measure nothing).
inline std::size_t start_peak_rss() {
#if defined(__GLIBC__)
  ::malloc_trim(0);
#endif
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.close();
  if (!clear) return 0;
  return proc_status_bytes("VmRSS");
}

/// The peak resident memory since start_peak_rss, in bytes.
inline std::size_t peak_rss() { return proc_status_bytes("VmHWM"); }

/// The resident bytes of the mapping that holds address p ("Rss:" of its
/// entry in /proc/self/smaps), or -1 where that cannot be read (not Linux).
inline long long mapping_rss(const void* p) {
  std::ifstream in("/proc/self/smaps");
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  std::string line;
  bool inside = false;
  while (std::getline(in, line)) {
    // An entry starts with "begin-end perms ...", both in hex; then "Key: value kB" lines.
    const auto dash = line.find('-');
    const auto space = line.find(' ');
    if (dash != std::string::npos && space != std::string::npos && dash < space &&
        line.find(':') > space) {
      const auto begin = std::stoull(line.substr(0, dash), nullptr, 16);
      const auto end = std::stoull(line.substr(dash + 1, space - dash - 1), nullptr, 16);
      inside = address >= begin && address < end;
    } else if (inside && line.rfind("Rss:", 0) == 0) {
      return std::stoll(line.substr(4)) * 1024;
    }
  }
  return -1;
}

/// Whether this build runs under AddressSanitizer, whose redzones and
/// quarantine of freed memory make resident memory no measure of the code's.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kUnderAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kUnderAsan = true;
#else
inline constexpr bool kUnderAsan = false;
#endif
#else
inline constexpr bool kUnderAsan = false;
#endif

}  // namespace oq::test
