// tools/oq/staging.hpp: writing a directory whole or not at all
// (StagingDirectory) and a JSON file whose write is checked
// (write_json_file). Light on purpose: the oq tool's pipeline and example
// 03's kept models both use it without pulling in the tool.
#pragma once

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>

namespace oq_tool {

/// A directory written under a temporary name beside `target` and renamed
/// onto it by commit(); destroyed uncommitted (an exception, Ctrl-C through
/// throw_if_interrupted), it removes what was written, so a failure leaves
/// nothing half-written. A process killed outright (SIGKILL, out of memory, a
/// second Ctrl-C) cannot clean up: its directory, named
/// .NAME.oq-partial-HOST-PID, is removed by the next run for the same target
/// once nothing holds the flock(2) that every run keeps on the directory's
/// .lock file until it commits (the kernel drops it when the process dies,
/// whatever its PID namespace or host name), and no process PID is alive here.
class StagingDirectory {
 public:
  /// This host's name as it appears in staging directories' names
  /// (characters other than letters, digits, '-' and '.' replaced by '_').
  static std::string host_tag() {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "host";
    std::string tag(name);
    for (char& ch : tag) {
      const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.';
      if (!ok) ch = '_';
    }
    return tag;
  }

  /// The staging directories' names for `target` on this host, up to the PID.
  static std::string staging_prefix(const std::filesystem::path& target) {
    return "." + target.filename().string() + ".oq-partial-" + host_tag() + "-";
  }
  /// The staging directory's name for `target` in a process `pid` on this host.
  static std::string staging_name(const std::filesystem::path& target, long pid) {
    return staging_prefix(target) + std::to_string(pid);
  }

  explicit StagingDirectory(std::filesystem::path target) {
    target = target.lexically_normal();
    if (!target.has_filename()) target = target.parent_path();  // "out/q/" names out/q
    target_ = target;
    if (target.empty() || target == "." || target == "..") {
      throw std::invalid_argument("output directory must name a new directory, got '" + target.string() + "'");
    }
    if (std::filesystem::exists(target)) {
      throw std::invalid_argument("output directory '" + target.string() + "' already exists (remove it, or give --out a new path)");
    }
    const std::filesystem::path parent = target.parent_path().empty() ? "." : target.parent_path();
    if (!std::filesystem::is_directory(parent)) {
      throw std::invalid_argument("output directory's parent '" + parent.string() + "' does not exist");
    }
    remove_stale(parent, target);
    path_ = parent / staging_name(target, static_cast<long>(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directory(path_);
    lock_fd_ = ::open((path_ / kLockFile).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd_ < 0 || ::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      release_lock();
      std::error_code ignored;
      std::filesystem::remove_all(path_, ignored);
      throw std::runtime_error("cannot lock the staging directory '" + path_.string() + "': " + std::strerror(error));
    }
  }
  StagingDirectory(const StagingDirectory&) = delete;
  StagingDirectory& operator=(const StagingDirectory&) = delete;
  ~StagingDirectory() {
    if (!committed_) {
      std::error_code ignored;
      std::filesystem::remove_all(path_, ignored);
    }
    release_lock();
  }
  const std::filesystem::path& path() const { return path_; }
  void commit() {
    // The lock file goes (the output must not carry it); a cleaner that finds
    // no lock file leaves the directory alone, so the short window before the
    // rename is safe.
    std::filesystem::remove(path_ / kLockFile);
    std::filesystem::rename(path_, target_);  // one directory entry: atomic on POSIX
    committed_ = true;
    release_lock();
  }

  /// The lock file's name inside a staging directory.
  static constexpr const char* kLockFile = ".lock";

 private:
  // Removes the staging directories for `target` that processes on this host
  // left when they were killed, each said on stderr.
  static void remove_stale(const std::filesystem::path& parent, const std::filesystem::path& target) {
    const std::string prefix = staging_prefix(target);
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(parent, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
      const std::string digits = name.substr(prefix.size());
      if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
      const long pid = std::stol(digits);
      if (pid <= 0 || pid == static_cast<long>(::getpid())) continue;
      if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // alive, or not ours to judge
      // The PID may be another namespace's: only a lock nobody holds proves
      // the run is gone (no lock file: committing, or not ours: left alone).
      const int fd = ::open((entry.path() / kLockFile).c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
      if (fd < 0) continue;
      const bool free = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
      std::error_code removed;
      if (free) std::filesystem::remove_all(entry.path(), removed);
      ::close(fd);
      if (!free) continue;
      if (removed) {
        std::fprintf(stderr, "oq: could not remove '%s', left by a killed run (process %ld): %s\n",
                     entry.path().string().c_str(), pid, removed.message().c_str());
      } else {
        std::fprintf(stderr, "oq: removed '%s', left by an earlier run (process %ld) that was killed\n",
                     entry.path().string().c_str(), pid);
      }
    }
  }

  void release_lock() {
    if (lock_fd_ >= 0) ::close(lock_fd_);  // closing drops the flock
    lock_fd_ = -1;
  }

  std::filesystem::path target_;
  std::filesystem::path path_;
  int lock_fd_ = -1;
  bool committed_ = false;
};

/// Writes `j` to `path`, checking the write after the file is closed (a
/// buffered write error shows only then).
inline void write_json_file(const std::filesystem::path& path, const nlohmann::json& j) {
  std::ofstream f(path);
  f << j.dump(2) << '\n';
  f.close();
  if (!f) throw std::runtime_error("cannot write '" + path.string() + "'");
}

}  // namespace oq_tool
