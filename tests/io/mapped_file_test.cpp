// Tests for oq/io/mapped_file.hpp: contents, the 0-byte file (no mmap),
// errors naming the path and the system's reason, FIFOs and devices refused
// without blocking, move semantics, and release() giving pages back.
#include <oq/io/mapped_file.hpp>

#include <doctest/doctest.h>

#include "support/subprocess.hpp"
#include "support/temp_dir.hpp"

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
#include <unistd.h>

namespace {

using oq::test::TempDir;

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

TEST_CASE("MappedFile::release takes whole pages out of memory and leaves the bytes readable") {
  TempDir dir;
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  std::string content(64 * page, '\0');
  std::mt19937 rng(3);
  for (char& c : content) c = static_cast<char>(rng());
  std::ofstream(dir.path / "f.bin", std::ios::binary) << content;
  const oq::io::MappedFile f(dir.path / "f.bin");
  const std::byte* data = f.bytes().data();
  // Resident bytes of the mapping, where /proc/self/smaps tells (Linux);
  // elsewhere only the bytes are checked.
  const auto resident_pages = [&](std::size_t pages) {
    const long long rss = oq::test::mapping_rss(data);
    return rss < 0 || rss == static_cast<long long>(pages * page);
  };
  CHECK(text_of(f) == content);  // every page read
  CHECK(resident_pages(64));
  // [page/2, 3.5 pages): only pages 1 and 2 lie wholly inside.
  f.release(page / 2, 3 * page);
  CHECK(resident_pages(62));
  // n past the end is clipped: pages 5 to 63 go, 0, 3 and 4 stay.
  f.release(5 * page, 1000 * page);
  CHECK(resident_pages(3));
  // Less than a page, an offset past the end, nothing: no page goes.
  f.release(3 * page + 1, page);
  f.release(content.size(), page);
  f.release(0, 0);
  CHECK(resident_pages(3));
  // The bytes read back as the file's, every page of them.
  CHECK(text_of(f) == content);
  CHECK(resident_pages(64));
  f.release(0, content.size());
  CHECK(resident_pages(0));
  CHECK(text_of(f) == content);

  // A 0-byte file and a moved-from mapping have nothing to release.
  std::ofstream(dir.path / "empty.bin").close();
  const oq::io::MappedFile empty(dir.path / "empty.bin");
  empty.release(0, 100);
  oq::io::MappedFile moved(dir.path / "f.bin");
  const oq::io::MappedFile taken(std::move(moved));
  moved.release(0, content.size());  // NOLINT(bugprone-use-after-move): what is tested
  CHECK(text_of(taken) == content);
}
