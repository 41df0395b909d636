// Tests for oq/io/mapped_file.hpp: contents, the 0-byte file (no mmap),
// errors naming the path and the system's reason, FIFOs and devices refused
// without blocking, and move semantics.
#include <oq/io/mapped_file.hpp>

#include <doctest/doctest.h>

#include "support/subprocess.hpp"

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include <sys/stat.h>

namespace {

struct TempDir {
  std::filesystem::path path = std::filesystem::temp_directory_path() /
                               ("oq_mapped_file_test_" + std::to_string(std::random_device{}()) +
                                std::to_string(std::random_device{}()));
  TempDir() { std::filesystem::create_directories(path); }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

std::string text_of(const oq::io::MappedFile& f) {
  const auto b = f.bytes();
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

}  // namespace

TEST_CASE("MappedFile maps a file's bytes") {
  TempDir dir;
  std::string content(10000, '\0');
  for (std::size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>(i * 7 + 3);
  std::ofstream(dir.path / "f.bin", std::ios::binary) << content;
  const oq::io::MappedFile f(dir.path / "f.bin");
  CHECK(f.path() == dir.path / "f.bin");
  CHECK(f.bytes().size() == content.size());
  CHECK(text_of(f) == content);
}

TEST_CASE("MappedFile: a 0-byte file gives an empty span") {
  TempDir dir;
  std::ofstream(dir.path / "empty.bin").close();
  const oq::io::MappedFile f(dir.path / "empty.bin");
  CHECK(f.bytes().empty());
}

TEST_CASE("MappedFile errors name the path and the reason") {
  TempDir dir;
  const auto missing = dir.path / "missing.bin";
  CHECK_THROWS_WITH_AS(oq::io::MappedFile{missing},
                       ("oq::io::MappedFile: cannot open '" + missing.string() + "': No such file or directory").c_str(),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(oq::io::MappedFile{dir.path}, doctest::Contains("Is a directory"), std::system_error);
}

TEST_CASE("MappedFile is move-only and moves its mapping") {
  TempDir dir;
  std::ofstream(dir.path / "a.bin", std::ios::binary) << "abc";
  std::ofstream(dir.path / "b.bin", std::ios::binary) << "defgh";
  oq::io::MappedFile a(dir.path / "a.bin");
  const std::byte* data = a.bytes().data();
  oq::io::MappedFile moved(std::move(a));
  CHECK(moved.bytes().data() == data);
  CHECK(text_of(moved) == "abc");
  CHECK(a.bytes().empty());  // NOLINT(bugprone-use-after-move): a moved-from file is empty
  oq::io::MappedFile b(dir.path / "b.bin");
  b = std::move(moved);  // unmaps b's file
  CHECK(text_of(b) == "abc");
  static_assert(!std::is_copy_constructible_v<oq::io::MappedFile>);
  static_assert(std::is_nothrow_move_constructible_v<oq::io::MappedFile>);
}

TEST_CASE("MappedFile refuses a FIFO and a device without blocking, naming the kind of file") {
  // Opening a FIFO for reading blocks until a writer opens it: before the
  // O_NONBLOCK open, this check never finished (the child is killed at 5 s).
  TempDir dir;
  const auto fifo = dir.path / "shard.safetensors";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const bool refused = oq::test::finishes_within(std::chrono::seconds(5), [&] {
    try {
      oq::io::MappedFile f(fifo);
    } catch (const std::system_error& e) {
      return std::string(e.what()).find("'" + fifo.string() + "' is a FIFO, not a regular file") !=
             std::string::npos;
    }
    return false;
  });
  CHECK(refused);
  // A character device opens without blocking but is no file to map.
  CHECK_THROWS_WITH_AS(oq::io::MappedFile{"/dev/null"}, doctest::Contains("'/dev/null' is a character device"),
                       std::system_error);
  CHECK_THROWS_WITH_AS(oq::io::MappedFile{dir.path}, doctest::Contains("is a directory, not a regular file"),
                       std::system_error);
}
