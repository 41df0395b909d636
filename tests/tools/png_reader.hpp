// A PNG reader for the tests of tools/oq/png.hpp and the figures drawn with
// it, written apart from the writer: CRC-32 by the bitwise loop (no table),
// Adler-32 by its definition (mod 65521 after every byte), every field read
// and checked. It reads what the writer promises and nothing more — 8-bit
// RGB, no interlace, filter type 0, stored deflate blocks — and throws
// std::runtime_error naming the first thing that differs, so a test can
// also show that a corrupted file is caught.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace oq_test::png_reader {

inline std::uint32_t crc32_bitwise(const std::uint8_t* p, std::size_t n) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

inline std::uint32_t adler32_plain(const std::uint8_t* p, std::size_t n) {
  std::uint32_t a = 1, b = 0;
  for (std::size_t i = 0; i < n; ++i) {
    a = (a + p[i]) % 65521u;
    b = (b + a) % 65521u;
  }
  return (b << 16) | a;
}

struct Pixel {
  std::uint8_t r, g, b;
  friend bool operator==(const Pixel&, const Pixel&) = default;
};

struct Decoded {
  int width = 0, height = 0;
  std::vector<std::uint8_t> rgb;               ///< width · height · 3, top row first
  std::vector<std::string> chunk_types;        ///< in file order
  std::vector<std::size_t> stored_block_lens;  ///< LEN of each deflate block
  Pixel at(int x, int y) const {
    const std::size_t i = 3 * (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x));
    return {rgb.at(i), rgb.at(i + 1), rgb.at(i + 2)};
  }
};

inline std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

inline Decoded decode(const std::vector<std::uint8_t>& f) {
  auto fail = [](const std::string& what) { throw std::runtime_error("png_reader: " + what); };
  static const std::uint8_t kSignature[8] = {137, 80, 78, 71, 13, 10, 26, 10};
  if (f.size() < 8) fail("shorter than the signature");
  for (int i = 0; i < 8; ++i) {
    if (f[static_cast<std::size_t>(i)] != kSignature[i]) fail("bad signature byte " + std::to_string(i));
  }
  Decoded d;
  std::vector<std::uint8_t> ihdr, zlib;
  std::size_t at = 8;
  bool ended = false;
  while (at < f.size()) {
    if (ended) fail("bytes after IEND");
    if (f.size() - at < 12) fail("truncated chunk at byte " + std::to_string(at));
    const std::uint32_t length = be32(&f[at]);
    if (length > 0x7FFFFFFFu) fail("chunk length over 2^31 - 1");
    if (f.size() - at - 12 < length) fail("chunk length " + std::to_string(length) + " runs past the file's end");
    const std::string type(reinterpret_cast<const char*>(&f[at + 4]), 4);
    const std::uint32_t stored_crc = be32(&f[at + 8 + length]);
    if (crc32_bitwise(&f[at + 4], 4 + length) != stored_crc) fail("CRC mismatch in chunk " + type);
    const std::uint8_t* data = &f[at + 8];
    if (d.chunk_types.empty() && type != "IHDR") fail("first chunk is " + type + ", not IHDR");
    if (type == "IHDR") {
      if (!d.chunk_types.empty()) fail("IHDR not first");
      ihdr.assign(data, data + length);
    } else if (type == "IDAT") {
      if (d.chunk_types.back() != "IHDR" && d.chunk_types.back() != "IDAT") fail("IDAT chunks not consecutive");
      zlib.insert(zlib.end(), data, data + length);
    } else if (type == "IEND") {
      if (length != 0) fail("IEND has data");
      ended = true;
    } else {
      fail("unexpected chunk " + type);
    }
    d.chunk_types.push_back(type);
    at += 12 + length;
  }
  if (!ended) fail("no IEND");
  if (ihdr.size() != 13) fail("IHDR length " + std::to_string(ihdr.size()) + ", not 13");
  const std::uint32_t w = be32(&ihdr[0]), h = be32(&ihdr[4]);
  if (w == 0 || h == 0 || w > 0x7FFFFFFFu || h > 0x7FFFFFFFu) fail("bad IHDR size");
  if (ihdr[8] != 8) fail("bit depth " + std::to_string(ihdr[8]));
  if (ihdr[9] != 2) fail("colour type " + std::to_string(ihdr[9]));
  if (ihdr[10] != 0 || ihdr[11] != 0 || ihdr[12] != 0) fail("compression / filter / interlace method not 0");
  d.width = static_cast<int>(w);
  d.height = static_cast<int>(h);

  // zlib: CMF, FLG, blocks, Adler-32.
  if (zlib.size() < 2 + 4) fail("zlib stream too short");
  const unsigned cmf = zlib[0], flg = zlib[1];
  if ((cmf & 0x0Fu) != 8) fail("zlib CM not 8 (deflate)");
  if ((cmf >> 4) > 7) fail("zlib CINFO over 7");
  if ((cmf * 256 + flg) % 31 != 0) fail("zlib FCHECK wrong");
  if (flg & 0x20u) fail("zlib preset dictionary");
  std::vector<std::uint8_t> raw;
  std::size_t z = 2;
  for (bool final = false; !final;) {
    if (zlib.size() - z < 5) fail("truncated stored block header");
    const unsigned header = zlib[z];
    final = (header & 1u) != 0;
    if (((header >> 1) & 3u) != 0) fail("block type " + std::to_string((header >> 1) & 3u) + ", not stored");
    if ((header >> 3) != 0) fail("padding bits of a stored block header not zero");
    const unsigned len = zlib[z + 1] | (unsigned{zlib[z + 2]} << 8);
    const unsigned nlen = zlib[z + 3] | (unsigned{zlib[z + 4]} << 8);
    if ((len ^ 0xFFFFu) != nlen) fail("NLEN is not the complement of LEN");
    z += 5;
    if (zlib.size() - z < len) fail("stored block runs past the stream");
    raw.insert(raw.end(), zlib.begin() + static_cast<std::ptrdiff_t>(z), zlib.begin() + static_cast<std::ptrdiff_t>(z + len));
    d.stored_block_lens.push_back(len);
    z += len;
  }
  if (zlib.size() - z != 4) fail("zlib stream does not end with exactly the Adler-32");
  if (be32(&zlib[z]) != adler32_plain(raw.data(), raw.size())) fail("Adler-32 mismatch");

  const std::size_t row = 3 * static_cast<std::size_t>(w);
  if (raw.size() != (row + 1) * h) fail("image data is " + std::to_string(raw.size()) + " bytes, not height × (1 + 3 width)");
  d.rgb.reserve(row * h);
  for (std::size_t y = 0; y < h; ++y) {
    const std::uint8_t* line = &raw[y * (row + 1)];
    if (line[0] != 0) fail("row " + std::to_string(y) + " filter type " + std::to_string(line[0]) + ", not 0");
    d.rgb.insert(d.rgb.end(), line + 1, line + 1 + row);
  }
  return d;
}

inline std::vector<std::uint8_t> read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("png_reader: cannot open " + p.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline Decoded decode_file(const std::filesystem::path& p) { return decode(read_bytes(p)); }

}  // namespace oq_test::png_reader
