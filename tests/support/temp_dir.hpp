// tests/support/temp_dir.hpp: a fresh directory under the system's temp
// directory, removed (with everything in it) at scope exit. The name holds
// the process id and a random number, so that tests run in parallel by ctest
// (and two runs of the same test binary) never share a directory.
#pragma once

#include <filesystem>
#include <random>
#include <string>
#include <string_view>
#include <system_error>

#include <unistd.h>

namespace oq::test {

class TempDir {
 public:
  explicit TempDir(std::string_view name = "oq_test")
      : path(std::filesystem::temp_directory_path() /
             (std::string(name) + "_" + std::to_string(::getpid()) + "_" + std::to_string(std::random_device{}()))) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;  // a destructor must not throw; a leftover directory is harmless
    std::filesystem::remove_all(path, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path path;
};

}  // namespace oq::test
