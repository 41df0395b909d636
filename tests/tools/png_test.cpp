// tools/oq/png.hpp: the checksums against their published check values and
// plain definitions, every file decoded by the independent reader of
// png_reader.hpp (chunk CRCs by a bitwise loop, its own inflater of stored
// and fixed-Huffman blocks, Adler-32, IHDR, the five row filters) giving back
// every pixel; the stored-block boundaries; the compressor's edge cases
// (matches of 258 bytes, distances 1 and 32768, empty input, incompressible
// data) and its streams checked by python3's zlib where python3 exists; the
// reader's rejections (dynamic Huffman, invalid codes, a distance before the
// start); the size of a flat figure; and the failures: bad sizes, bad
// options, a missing directory, a directory in the way.
#include "support/temp_dir.hpp"
#include "../../tools/oq/png.hpp"
#include "png_reader.hpp"

#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace reader = oq_test::png_reader;
namespace png = oq_tool::png;

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

using oq::test::TempDir;

std::vector<std::uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

std::vector<std::uint8_t> random_bytes(std::size_t n, std::uint32_t seed, unsigned alphabet = 256) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> v(n);
  for (auto& b : v) b = static_cast<std::uint8_t>(rng() % alphabet * (256 / alphabet));
  return v;
}

reader::Inflated inflate(const std::vector<std::uint8_t>& data) {
  return reader::inflate_zlib(png::zlib_compress(data.data(), data.size(), png::Deflate::fixed_huffman));
}

/// A hand-made deflate stream for the reader's tests: numbers LSB-first,
/// Huffman codes given as their bits MSB-first ("0000001" is symbol 257),
/// so that it shares nothing with the writer's BitWriter.
struct HandStream {
  std::vector<std::uint8_t> bytes;
  int used = 8;  // bits used in bytes.back()
  void bit(unsigned b) {
    if (used == 8) bytes.push_back(0), used = 0;
    bytes.back() = static_cast<std::uint8_t>(bytes.back() | (b << used++));
  }
  HandStream& number(unsigned v, int count) {
    for (int i = 0; i < count; ++i) bit((v >> i) & 1u);
    return *this;
  }
  HandStream& align() {
    while (used != 8) bit(0);
    return *this;
  }
  HandStream& code(const std::string& msb_first) {
    for (char c : msb_first) bit(c == '1' ? 1u : 0u);
    return *this;
  }
  /// The zlib stream around it, with the Adler-32 of `data`.
  std::vector<std::uint8_t> zlib(const std::vector<std::uint8_t>& data) const {
    std::vector<std::uint8_t> z(2 + bytes.size());
    z[0] = 0x78;
    z[1] = 0x01;
    std::copy(bytes.begin(), bytes.end(), z.begin() + 2);
    const std::uint32_t a = reader::adler32_plain(data.data(), data.size());
    for (int k = 3; k >= 0; --k) z.push_back(static_cast<std::uint8_t>(a >> (8 * k)));
    return z;
  }
};

bool have_python_zlib() { return std::system("python3 -c 'import zlib' >/dev/null 2>&1") == 0; }

void write_file(const fs::path& p, const std::vector<std::uint8_t>& b) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

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

TEST_CASE("Deflate::stored: an image decodes to every pixel, split into stored blocks of at most 65535 bytes") {
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
    const auto file = png::encode_rgb(c.w, c.h, rgb, {png::Deflate::stored, png::Filter::none});
    const reader::Decoded d = reader::decode(file);
    CHECK(d.width == c.w);
    CHECK(d.height == c.h);
    CHECK(d.chunk_types == std::vector<std::string>{"IHDR", "IDAT", "IEND"});
    CHECK(d.deflate.block_sizes == c.blocks);
    CHECK(d.deflate.block_types == std::vector<int>(c.blocks.size(), 0));
    CHECK(d.row_filters == std::vector<std::uint8_t>(static_cast<std::size_t>(c.h), 0));
    CHECK(d.rgb == rgb);
    // Signature, IHDR, IDAT header, blocks, Adler, IEND: nothing else.
    std::size_t blocks_bytes = 0;
    for (std::size_t len : c.blocks) blocks_bytes += 5 + len;
    CHECK(file.size() == 8 + 25 + 12 + 2 + blocks_bytes + 4 + 12);
  }
}

TEST_CASE("the reader is strict: each corruption of a written file is caught") {
  const auto good = png::encode_rgb(5, 4, pattern(5, 4), {png::Deflate::stored, png::Filter::none});
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

TEST_CASE("fixed Huffman: random, flat, striped and small-palette images round trip under every filter") {
  struct Img {
    const char* name;
    int w, h;
    std::vector<std::uint8_t> rgb;
  };
  std::vector<Img> images;
  images.push_back({"random 1x1", 1, 1, random_bytes(3, 1)});
  images.push_back({"random 37x23", 37, 23, random_bytes(37 * 23 * 3, 2)});
  images.push_back({"random 300x250 (over one 65535-byte piece)", 300, 250, random_bytes(300 * 250 * 3, 3)});
  images.push_back({"4-colour palette 200x120", 200, 120, random_bytes(200 * 120 * 3, 4, 4)});
  images.push_back({"flat white 640x90", 640, 90, std::vector<std::uint8_t>(640 * 90 * 3, 255)});
  images.push_back({"pattern 211x77", 211, 77, pattern(211, 77)});
  {
    // Long horizontal runs: stripes of one colour 1 .. 700 pixels wide.
    std::vector<std::uint8_t> rgb;
    std::mt19937 rng(5);
    while (rgb.size() < 800 * 60 * 3) {
      const std::size_t run = 1 + rng() % 700;
      const std::uint8_t r = static_cast<std::uint8_t>(rng()), g = static_cast<std::uint8_t>(rng());
      for (std::size_t k = 0; k < run && rgb.size() < 800 * 60 * 3; ++k) rgb.insert(rgb.end(), {r, g, 200});
    }
    images.push_back({"runs 800x60", 800, 60, rgb});
  }
  for (const Img& img : images) {
    for (int f = 0; f <= 5; ++f) {
      CAPTURE(img.name);
      CAPTURE(f);
      const auto filter = static_cast<png::Filter>(f);
      const reader::Decoded d = reader::decode(png::encode_rgb(img.w, img.h, img.rgb, {png::Deflate::fixed_huffman, filter}));
      CHECK(d.width == img.w);
      CHECK(d.height == img.h);
      CHECK(d.rgb == img.rgb);
      if (filter != png::Filter::adaptive) {
        CHECK(d.row_filters == std::vector<std::uint8_t>(static_cast<std::size_t>(img.h), static_cast<std::uint8_t>(f)));
      }
      // Pieces of 65535 filtered bytes, one block each.
      const std::size_t raw = static_cast<std::size_t>(img.h) * (1 + 3 * static_cast<std::size_t>(img.w));
      CHECK(d.deflate.block_types.size() == (raw + 65534) / 65535);
    }
  }
  // Which filters adaptive picks follows from the data: a flat image's first
  // row is constant, so Sub (and Paeth, which is Sub with nothing above, but
  // Sub comes first) leaves it zero after the first pixel; every later row
  // equals the one above, where Up gives all zeros (ties go to the lower
  // type, and None/Sub leave 255s or a first pixel).
  const reader::Decoded flat = reader::decode(png::encode_rgb(640, 90, images[4].rgb));
  std::vector<std::uint8_t> expected(90, 2);
  expected[0] = 1;
  CHECK(flat.row_filters == expected);
  // Random pixels: the fixed code spends 8-9 bits a literal, so the pieces
  // stay stored.
  const reader::Decoded noise = reader::decode(png::encode_rgb(300, 250, images[2].rgb));
  CHECK(noise.deflate.block_types == std::vector<int>{0, 0, 0, 0});
  // The palette image and the runs do compress: fixed-Huffman blocks, one per
  // 65535-byte piece (120 · 601 = 72120 and 60 · 2401 = 144060 bytes).
  CHECK(reader::decode(png::encode_rgb(200, 120, images[3].rgb)).deflate.block_types == std::vector<int>{1, 1});
  CHECK(reader::decode(png::encode_rgb(800, 60, images[6].rgb)).deflate.block_types == std::vector<int>{1, 1, 1});
}

TEST_CASE("zlib_compress: the edge cases of lengths and distances, read back by the reader's inflater") {
  SUBCASE("empty input: one empty block") {
    const reader::Inflated r = inflate({});
    CHECK(r.data.empty());
    CHECK(r.stats.block_types == std::vector<int>{1});
    CHECK(png::zlib_compress(nullptr, 0, png::Deflate::stored) ==
          std::vector<std::uint8_t>{0x78, 0x01, 0x01, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x01});
  }
  SUBCASE("one literal, then exactly 258 bytes at distance 1; one byte more is a literal") {
    const reader::Inflated a = inflate(std::vector<std::uint8_t>(1 + 258, 'a'));
    CHECK(a.data == std::vector<std::uint8_t>(259, 'a'));
    CHECK(a.stats.literals == 1);
    CHECK(a.stats.matches == 1);
    CHECK(a.stats.matches_258 == 1);
    CHECK(a.stats.min_distance == 1);
    const reader::Inflated b = inflate(std::vector<std::uint8_t>(1 + 258 + 1, 'a'));
    CHECK(b.stats.literals == 2);  // 2 bytes left after the match: too few for another (3 .. 258)
    CHECK(b.stats.matches == 1);
  }
  SUBCASE("the shortest match: 3 bytes") {
    const reader::Inflated r = inflate(bytes_of("xyzxyz"));
    CHECK(r.data == bytes_of("xyzxyz"));
    CHECK(r.stats.literals == 3);
    CHECK(r.stats.matches == 1);
    CHECK(r.stats.min_length == 3);
    CHECK(r.stats.min_distance == 3);
  }
  SUBCASE("100000 zeros: 258-byte matches at distance 1, at most 13 bits each") {
    const std::vector<std::uint8_t> zeros(100000, 0);
    const auto z = png::zlib_compress(zeros.data(), zeros.size(), png::Deflate::fixed_huffman);
    const reader::Inflated r = reader::inflate_zlib(z);
    CHECK(r.data == zeros);
    CHECK(r.stats.min_distance == 1);
    CHECK(r.stats.max_distance == 1);
    // 2 pieces (65535 + 34465 bytes), each one literal and as many
    // 258-byte matches as fit, then a shorter one.
    CHECK(r.stats.matches_258 == 65534 / 258 + 34464 / 258);
    CHECK(r.stats.block_types == std::vector<int>{1, 1});
    // 13 bits a match (8-bit symbol 285, 5-bit distance code 0) plus the
    // literals, short matches and block framing: 389 matches ≈ 632 bytes.
    CHECK(z.size() < 700);
  }
  SUBCASE("distance 32768: random bytes repeated exactly one window later") {
    const auto block = random_bytes(32768, 11);
    std::vector<std::uint8_t> data = block;
    data.insert(data.end(), block.begin(), block.end());
    const reader::Inflated r = inflate(data);
    CHECK(r.data == data);
    CHECK(r.stats.max_distance == 32768);
    CHECK(r.stats.matches_258 >= 32768 / 258 - 1);  // the copy, cut only at the 65535-byte piece boundary
  }
  SUBCASE("distance 32769 is out of the window: the repeat one byte further back stays literal") {
    const auto block = random_bytes(32769, 12);
    std::vector<std::uint8_t> data = block;
    data.insert(data.end(), block.begin(), block.end());
    const reader::Inflated r = inflate(data);
    CHECK(r.data == data);
    CHECK(r.stats.matches_258 == 0);
    CHECK(r.stats.max_distance <= 32768);
  }
  SUBCASE("copies of every length 3 .. 258 from every distance range, across piece boundaries") {
    std::mt19937 rng(13);
    std::vector<std::uint8_t> data = random_bytes(33000, 14);
    const std::size_t distances[] = {1, 2, 3, 4, 5, 7, 12, 24, 48, 100, 200, 300, 600, 1000, 1500, 2500, 3500, 5000, 7000,
                                     10000, 15000, 20000, 30000, 32768};
    for (std::size_t len = 3; len <= 258; ++len) {
      for (std::size_t dist : distances) {
        if (rng() % 4 != 0) continue;
        const std::size_t from = data.size() - dist;
        for (std::size_t k = 0; k < len; ++k) data.push_back(data[from + k]);
        data.push_back(static_cast<std::uint8_t>(rng()));
      }
    }
    REQUIRE(data.size() > 3 * 65535);
    const reader::Inflated r = inflate(data);
    CHECK(r.data == data);
    CHECK(r.stats.min_length == 3);
    CHECK(r.stats.max_length == 258);
    CHECK(r.stats.min_distance == 1);
    CHECK(r.stats.max_distance == 32768);
  }
}

TEST_CASE("the reader's inflater: hand-made streams, and each invalid one rejected by name") {
  // 'a' is literal 97: 8-bit code 0x30 + 97 = 10010001. Length 3 is symbol
  // 257 (7 bits 0000001), distance 1 code 0 (00000); end of block 0000000.
  HandStream ok;
  ok.number(1, 1).number(1, 2).code("10010001").code("0000001").code("00000").code("0000000");
  const reader::Inflated r = reader::inflate_zlib(ok.zlib(bytes_of("aaaa")));
  CHECK(r.data == bytes_of("aaaa"));
  CHECK(r.stats.block_types == std::vector<int>{1});

  // A 9-bit literal (255: 111111111), then a stored block after the fixed one.
  HandStream mixed;
  mixed.number(0, 1).number(1, 2).code("111111111").code("0000000");
  mixed.number(1, 1).number(0, 2).align().number(2, 16).number(0xFFFD, 16).number('x', 8).number('y', 8);
  const auto mixed_data = std::vector<std::uint8_t>{255, 'x', 'y'};
  const reader::Inflated m = reader::inflate_zlib(mixed.zlib(mixed_data));
  CHECK(m.data == mixed_data);
  CHECK(m.stats.block_types == std::vector<int>{1, 0});
  CHECK(m.stats.block_sizes == std::vector<std::size_t>{1, 2});

  auto rejects = [](const HandStream& h, const std::string& what) {
    CAPTURE(what);
    CHECK_THROWS_WITH_AS(reader::inflate_zlib(h.zlib({})), doctest::Contains(what.c_str()), std::runtime_error);
  };
  HandStream dynamic;
  dynamic.number(1, 1).number(2, 2).number(0, 5);
  rejects(dynamic, "dynamic Huffman");
  HandStream reserved;
  reserved.number(1, 1).number(3, 2).number(0, 5);
  rejects(reserved, "reserved");
  HandStream l286, l287;
  l286.number(1, 1).number(1, 2).code("11000110");
  l287.number(1, 1).number(1, 2).code("11000111");
  rejects(l286, "invalid literal/length code 286");
  rejects(l287, "invalid literal/length code 287");
  HandStream d30, d31;
  d30.number(1, 1).number(1, 2).code("10010001").code("0000001").code("11110");
  d31.number(1, 1).number(1, 2).code("10010001").code("0000001").code("11111");
  rejects(d30, "invalid distance code 30");
  rejects(d31, "invalid distance code 31");
  HandStream too_far;  // one literal, then a match from 2 back
  too_far.number(1, 1).number(1, 2).code("10010001").code("0000001").code("00001").code("0000000");
  rejects(too_far, "reaches before the data's start");
  HandStream no_end;  // a fixed block without its end-of-block code
  no_end.number(1, 1).number(1, 2).code("10010001");
  CHECK_THROWS_AS(reader::inflate_zlib(no_end.zlib(bytes_of("a"))), std::runtime_error);
  HandStream bad_nlen;
  bad_nlen.number(1, 1).number(0, 2).number(0, 5).number(1, 16).number(0xFFFF, 16).number('x', 8);
  rejects(bad_nlen, "NLEN");

  // A written file whose first deflate block is made dynamic (BTYPE 01 ->
  // 10), its CRC recomputed: the reader names the block type.
  auto f = png::encode_rgb(20, 20, std::vector<std::uint8_t>(20 * 20 * 3, 7));
  const std::size_t first_block = 8 + 25 + 8 + 2;
  REQUIRE(((f[first_block] >> 1) & 3u) == 1u);
  f[first_block] = static_cast<std::uint8_t>(f[first_block] ^ 0b110);
  const std::size_t idat_length = reader::be32(&f[8 + 25]);
  const std::uint32_t crc = reader::crc32_bitwise(&f[8 + 25 + 4], 4 + idat_length);
  for (int k = 0; k < 4; ++k) f[8 + 25 + 8 + idat_length + static_cast<std::size_t>(k)] = static_cast<std::uint8_t>(crc >> (24 - 8 * k));
  CHECK_THROWS_WITH_AS(reader::decode(f), doctest::Contains("dynamic Huffman"), std::runtime_error);
}

TEST_CASE("python3's zlib, an independent decoder, reads the streams; the reader refuses zlib's dynamic blocks") {
  if (!have_python_zlib()) {
    MESSAGE("python3 with zlib not found: skipped");
    return;
  }
  TempDir tmp("python");
  std::vector<std::vector<std::uint8_t>> inputs = {{}, std::vector<std::uint8_t>(100000, 0), random_bytes(70000, 21),
                                                   random_bytes(150000, 22, 4), bytes_of("xyzxyz")};
  {
    const auto block = random_bytes(32768, 23);
    std::vector<std::uint8_t> twice = block;
    twice.insert(twice.end(), block.begin(), block.end());
    inputs.push_back(twice);
  }
  const auto rgb = pattern(300, 200);
  for (int f = 0; f <= 5; ++f) {
    // The filtered data of a pattern under each filter, as the PNG holds it.
    const reader::Decoded d = reader::decode(png::encode_rgb(300, 200, rgb, {png::Deflate::stored, static_cast<png::Filter>(f)}));
    const auto file = png::encode_rgb(300, 200, rgb, {png::Deflate::stored, static_cast<png::Filter>(f)});
    std::vector<std::uint8_t> idat(file.begin() + 8 + 25 + 8, file.end() - 12 - 4);
    inputs.push_back(reader::inflate_zlib(idat).data);
    CHECK(d.rgb == rgb);
  }
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    write_file(tmp.path / (std::to_string(i) + ".raw"), inputs[i]);
    write_file(tmp.path / (std::to_string(i) + ".z"), png::zlib_compress(inputs[i].data(), inputs[i].size(), png::Deflate::fixed_huffman));
  }
  const std::string script =
      "import zlib,sys,os; d=sys.argv[1]; n=int(sys.argv[2]); "
      "bad=[i for i in range(n) if zlib.decompress(open(os.path.join(d,'%d.z'%i),'rb').read())"
      " != open(os.path.join(d,'%d.raw'%i),'rb').read()]; "
      "open(os.path.join(d,'dyn.z'),'wb').write(zlib.compress(b'the quick brown fox jumps over the lazy dog '*500+bytes(range(256)),9)); "
      "sys.exit(1 if bad else 0)";
  const std::string cmd = "python3 -c \"" + script + "\" '" + tmp.path.string() + "' " + std::to_string(inputs.size());
  CHECK(std::system(cmd.c_str()) == 0);
  const auto dyn = reader::read_bytes(tmp.path / "dyn.z");
  REQUIRE(dyn.size() > 3);
  REQUIRE(((dyn[2] >> 1) & 3u) == 2u);  // zlib chose a dynamic-Huffman block
  CHECK_THROWS_WITH_AS(reader::inflate_zlib(dyn), doctest::Contains("dynamic Huffman"), std::runtime_error);
}

TEST_CASE("a flat 900 x 960 figure shrinks from 2.6 MB to a few KB") {
  // Filtered, the image is 960 rows of a filter byte and 2700 zeros
  // (2 592 960 bytes). The fixed code spends at least 13 bits on a match of
  // at most 258 bytes, so no fixed-Huffman stream is under
  // 2 592 960 / 258 · 13 / 8 ≈ 16.3 KB; per row the greedy matcher spends one
  // literal on the filter byte and ceil(2700 / 258) = 11 matches of at most
  // 8 + 5 + 5 + 13 bits (a length symbol of 8 bits with its 5 extra bits, a
  // distance code with at most 13), 44 bytes a row, 42 KB in all.
  const std::vector<std::uint8_t> white(900 * 960 * 3, 255);
  const auto stored = png::encode_rgb(900, 960, white, {png::Deflate::stored, png::Filter::none});
  const auto file = png::encode_rgb(900, 960, white);
  CHECK(stored.size() == 2593223);  // as `oq analyze` wrote channels.png before compression
  CHECK(file.size() > 16300);
  CHECK(file.size() < 42 * 1024);
  MESSAGE("flat 900 x 960: " << file.size() << " bytes");
  CHECK(reader::decode(file).rgb == white);
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
  CHECK_THROWS_WITH_AS(png::encode_rgb(4, 4, pattern(4, 4), {png::Deflate::fixed_huffman, static_cast<png::Filter>(6)}),
                       doctest::Contains("options.filter"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(png::encode_rgb(4, 4, pattern(4, 4), {static_cast<png::Deflate>(2), png::Filter::none}),
                       doctest::Contains("options.deflate"), std::invalid_argument);
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
