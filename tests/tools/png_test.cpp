// tools/oq/png.hpp: the checksums against their published check values and
// plain definitions, every file decoded by the independent reader of
// png_reader.hpp (chunk CRCs by a bitwise loop, stored blocks, Adler-32,
// IHDR) giving back every pixel, the stored-block boundaries, and the
// failures: bad sizes, a missing directory, a directory in the way.
#include "../../tools/oq/png.hpp"
#include "png_reader.hpp"

#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace reader = oq_test::png_reader;

namespace {

/// A pixel pattern where neighbouring pixels and channels differ, so a
/// shifted row or swapped channel shows.
std::vector<std::uint8_t> pattern(int w, int h) {
  std::vector<std::uint8_t> rgb;
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      rgb.push_back(static_cast<std::uint8_t>(x * 7 + y * 3));
      rgb.push_back(static_cast<std::uint8_t>(x ^ y));
      rgb.push_back(static_cast<std::uint8_t>((x * y + 11) & 0xFF));
    }
  }
  return rgb;
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    path = fs::temp_directory_path() / ("oq_png_test_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

std::vector<std::uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

}  // namespace

TEST_CASE("CRC-32 and Adler-32: check values, and agreement with their plain definitions") {
  const auto digits = bytes_of("123456789");
  CHECK(oq_tool::png::crc32(digits.data(), digits.size()) == 0xCBF43926u);  // the CRC-32 check value
  CHECK(reader::crc32_bitwise(digits.data(), digits.size()) == 0xCBF43926u);
  const auto wikipedia = bytes_of("Wikipedia");
  CHECK(oq_tool::png::adler32(wikipedia.data(), wikipedia.size()) == 0x11E60398u);  // RFC 1950's running example
  CHECK(oq_tool::png::adler32(nullptr, 0) == 1u);
  const auto iend = bytes_of("IEND");
  CHECK(oq_tool::png::crc32(iend.data(), iend.size()) == 0xAE426082u);  // every PNG's last four bytes

  std::mt19937 rng(7);
  std::vector<std::uint8_t> data(20000);
  for (auto& b : data) b = static_cast<std::uint8_t>(rng());
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{3}, std::size_t{255}, std::size_t{5552},
                        std::size_t{5553}, std::size_t{20000}}) {
    CAPTURE(n);
    CHECK(oq_tool::png::crc32(data.data(), n) == reader::crc32_bitwise(data.data(), n));
    CHECK(oq_tool::png::adler32(data.data(), n) == reader::adler32_plain(data.data(), n));
  }
  // Continuing a CRC over a second piece equals the CRC of the whole.
  const std::uint32_t first = oq_tool::png::crc32(data.data(), 1000);
  CHECK(oq_tool::png::crc32(data.data() + 1000, 19000, first) == reader::crc32_bitwise(data.data(), 20000));
  // All 0xFF bytes: the largest sums, where a late modulo would overflow 32 bits.
  const std::vector<std::uint8_t> ones(100000, 0xFF);
  CHECK(oq_tool::png::adler32(ones.data(), ones.size()) == reader::adler32_plain(ones.data(), ones.size()));
}

TEST_CASE("an encoded image decodes to every pixel, split into stored blocks of at most 65535 bytes") {
  struct Case {
    int w, h;
    std::vector<std::size_t> blocks;  // LEN of each stored block
  };
  // Raw sizes h · (1 + 3w): 4; 85 · 771 = 65535 (one full block); 256 · 256 =
  // 65536 (a full block and one byte); 601 · 200 = 120200.
  const Case cases[] = {{1, 1, {4}}, {28, 771, {65535}}, {85, 256, {65535, 1}}, {200, 200, {65535, 54665}}};
  for (const Case& c : cases) {
    CAPTURE(c.w);
    CAPTURE(c.h);
    const auto rgb = pattern(c.w, c.h);
    const auto file = oq_tool::png::encode_rgb(c.w, c.h, rgb);
    const reader::Decoded d = reader::decode(file);
    CHECK(d.width == c.w);
    CHECK(d.height == c.h);
    CHECK(d.chunk_types == std::vector<std::string>{"IHDR", "IDAT", "IEND"});
    CHECK(d.stored_block_lens == c.blocks);
    CHECK(d.rgb == rgb);
    // Signature, IHDR, IDAT header, blocks, Adler, IEND: nothing else.
    std::size_t blocks_bytes = 0;
    for (std::size_t len : c.blocks) blocks_bytes += 5 + len;
    CHECK(file.size() == 8 + 25 + 12 + 2 + blocks_bytes + 4 + 12);
  }
}

TEST_CASE("the reader is strict: each corruption of a written file is caught") {
  const auto good = oq_tool::png::encode_rgb(5, 4, pattern(5, 4));
  REQUIRE_NOTHROW(reader::decode(good));
  // IDAT's data starts after signature (8) + IHDR chunk (25) + IDAT length and type (8).
  const std::size_t idat = 8 + 25 + 8;
  auto corrupt = [&](std::size_t at) {
    auto f = good;
    f[at] ^= 0x01;
    return f;
  };
  CHECK_THROWS_WITH_AS(reader::decode(corrupt(0)), doctest::Contains("signature"), std::runtime_error);
  CHECK_THROWS_WITH_AS(reader::decode(corrupt(8 + 8 + 1)), doctest::Contains("CRC"), std::runtime_error);  // width
  CHECK_THROWS_WITH_AS(reader::decode(corrupt(idat + 10)), doctest::Contains("CRC"), std::runtime_error);  // a pixel
  CHECK_THROWS_WITH_AS(reader::decode(corrupt(good.size() - 1)), doctest::Contains("CRC"), std::runtime_error);
  // A pixel changed and the chunk's CRC recomputed: the Adler-32 catches it.
  auto f = corrupt(idat + 10);
  const std::size_t idat_length = reader::be32(&f[idat - 8]);
  const std::uint32_t crc = reader::crc32_bitwise(&f[idat - 4], 4 + idat_length);
  for (int k = 0; k < 4; ++k) f[idat + idat_length + static_cast<std::size_t>(k)] = static_cast<std::uint8_t>(crc >> (24 - 8 * k));
  CHECK_THROWS_WITH_AS(reader::decode(f), doctest::Contains("Adler"), std::runtime_error);
  auto truncated = good;
  truncated.resize(good.size() - 12);  // no IEND
  CHECK_THROWS_WITH_AS(reader::decode(truncated), doctest::Contains("IEND"), std::runtime_error);
}

TEST_CASE("write_rgb: the file decodes, replaces an older one, and leaves no temporary file") {
  TempDir tmp("write");
  const fs::path p = tmp.path / "a.png";
  oq_tool::png::write_rgb(p, 9, 6, pattern(9, 6));
  CHECK(reader::decode_file(p).rgb == pattern(9, 6));
  oq_tool::png::write_rgb(p, 3, 2, pattern(3, 2));
  const reader::Decoded d = reader::decode_file(p);
  CHECK(d.width == 3);
  CHECK(d.height == 2);
  CHECK(d.rgb == pattern(3, 2));
  CHECK_FALSE(fs::exists(tmp.path / "a.png.tmp"));
  CHECK(std::distance(fs::directory_iterator(tmp.path), fs::directory_iterator{}) == 1);
}

TEST_CASE("bad input: sizes, the pixel count, a missing directory, a directory in the way") {
  TempDir tmp("bad");
  CHECK_THROWS_WITH_AS(oq_tool::png::encode_rgb(0, 4, {}), doctest::Contains("width"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(oq_tool::png::encode_rgb(4, -1, {}), doctest::Contains("height"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(oq_tool::png::encode_rgb(4, 4, pattern(4, 3)), doctest::Contains("rgb"), std::invalid_argument);
  // 30000 × 30000 pixels need 2.7 GB: more than one chunk can hold; refused before any allocation.
  CHECK_THROWS_WITH_AS(oq_tool::png::encode_rgb(30000, 30000, {}), doctest::Contains("too large"),
                       std::invalid_argument);
  const fs::path missing = tmp.path / "no_such_dir" / "x.png";
  CHECK_THROWS_WITH_AS(oq_tool::png::write_rgb(missing, 2, 2, pattern(2, 2)), doctest::Contains(missing.c_str()),
                       std::runtime_error);
  CHECK_FALSE(fs::exists(tmp.path / "no_such_dir"));
  fs::create_directories(tmp.path / "taken.png");
  CHECK_THROWS_WITH_AS(oq_tool::png::write_rgb(tmp.path / "taken.png", 2, 2, pattern(2, 2)),
                       doctest::Contains("taken.png"), std::runtime_error);
  CHECK(fs::is_directory(tmp.path / "taken.png"));
  CHECK_FALSE(fs::exists(tmp.path / "taken.png.tmp"));
}
