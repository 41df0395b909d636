// tools/oq/png.hpp: a minimal PNG writer (8-bit RGB, no compression), so that
// `oq analyze` draws its figures without libpng, zlib or Python.
//
// The file, byte by byte (PNG: ISO/IEC 15948 / W3C PNG 2nd ed.; zlib:
// RFC 1950; deflate: RFC 1951). Multi-byte integers are big-endian except
// the stored blocks' LEN/NLEN, which deflate writes little-endian.
//
//   signature   89 50 4E 47 0D 0A 1A 0A        "\x89PNG\r\n\x1a\n"
//   chunk       length u32 (bytes of data only, ≤ 2^31 - 1)
//               type   4 ASCII bytes
//               data   `length` bytes
//               crc    u32: CRC-32 (ISO 3309 / ITU-T V.42: reflected
//                      polynomial 0xEDB88320, initial value and final xor
//                      0xFFFFFFFF) over type + data, not the length
//   IHDR data   width u32 (1 .. 2^31 - 1)      height u32 (1 .. 2^31 - 1)
//               bit depth 8    colour type 2 (truecolour: R, G, B per pixel)
//               compression 0 (deflate)   filter method 0   interlace 0 (none)
//   IDAT data   one zlib stream (one IDAT chunk holds it all here):
//                 CMF  0x78   bits 0-3 CM = 8 (deflate), bits 4-7 CINFO = 7
//                             (32 KiB window; stored blocks use none of it)
//                 FLG  0x01   bits 0-4 FCHECK: (CMF·256 + FLG) mod 31 == 0
//                             (0x7801 = 31 · 991), bit 5 FDICT = 0,
//                             bits 6-7 FLEVEL = 0
//                 deflate blocks, each stored (uncompressed):
//                   1 byte    bit 0 BFINAL (1 on the last block), bits 1-2
//                             BTYPE = 00 (stored), bits 3-7 zero: the
//                             padding to the byte boundary a stored block
//                             starts with; so 0x01 last, 0x00 otherwise
//                   LEN  u16 little-endian, 0 .. 65535 bytes that follow
//                   NLEN u16 little-endian, the ones' complement of LEN
//                   LEN bytes copied from the uncompressed data
//                 ADLER32 u32 of the uncompressed data (RFC 1950 §9:
//                   a = 1 + Σ bytes, b = Σ a after each byte, both mod
//                   65521; the value is b·65536 + a)
//               The uncompressed data is the image row by row, top row
//               first: one filter-type byte 0 (None: bytes as they are),
//               then width × 3 bytes R, G, B, left pixel first.
//   IEND data   empty (its CRC is always AE 42 60 82)
//
// Stored blocks make the file about 3 bytes per pixel (a 900 × 525 figure
// is 1.4 MB); deflate's Huffman coding would need zlib or a compressor of our
// own, and the figures are small enough that the plain format wins on
// simplicity (the project admits no new dependency).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace oq_tool::png {

/// CRC-32 as PNG chunks use it, continuing from `crc` (0 to start). Table
/// driven; tests/tools/png_test.cpp checks it against a bitwise loop.
inline std::uint32_t crc32(const std::uint8_t* data, std::size_t n, std::uint32_t crc = 0) {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

/// Adler-32 (RFC 1950 §9) of `data`. The sums are reduced every 5552 bytes,
/// the most that cannot overflow 32 bits (zlib's NMAX).
inline std::uint32_t adler32(const std::uint8_t* data, std::size_t n) {
  constexpr std::uint32_t kMod = 65521;
  std::uint32_t a = 1, b = 0;
  while (n > 0) {
    const std::size_t chunk = n < 5552 ? n : 5552;
    for (std::size_t i = 0; i < chunk; ++i) {
      a += data[i];
      b += a;
    }
    a %= kMod;
    b %= kMod;
    data += chunk;
    n -= chunk;
  }
  return (b << 16) | a;
}

namespace detail {

inline void put_u32_be(std::vector<std::uint8_t>& out, std::uint32_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 24));
  out.push_back(static_cast<std::uint8_t>(v >> 16));
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v));
}

/// Appends one chunk: length, type, data, CRC-32 over type and data.
inline void put_chunk(std::vector<std::uint8_t>& out, const char (&type)[5], const std::vector<std::uint8_t>& data) {
  put_u32_be(out, static_cast<std::uint32_t>(data.size()));
  const std::size_t type_at = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  put_u32_be(out, crc32(out.data() + type_at, 4 + data.size()));
}

}  // namespace detail

/// Largest bytes in one stored deflate block (LEN is 16 bits).
inline constexpr std::size_t kMaxStoredBlock = 65535;

/// The PNG file of a width × height 8-bit RGB image; `rgb` holds
/// width · height · 3 bytes, row by row from the top. Throws
/// std::invalid_argument naming the parameter for a zero or negative size,
/// a size PNG cannot hold, or `rgb` of the wrong length.
inline std::vector<std::uint8_t> encode_rgb(int width, int height, const std::vector<std::uint8_t>& rgb) {
  if (width <= 0) throw std::invalid_argument("png::encode_rgb: width must be >= 1, got " + std::to_string(width));
  if (height <= 0) throw std::invalid_argument("png::encode_rgb: height must be >= 1, got " + std::to_string(height));
  const std::size_t row = 3 * static_cast<std::size_t>(width);
  const std::size_t raw_size = (row + 1) * static_cast<std::size_t>(height);
  // The zlib stream must fit one chunk (length ≤ 2^31 - 1): 2 header bytes,
  // 5 bytes per stored block, 4 Adler bytes.
  const std::size_t blocks = (raw_size + kMaxStoredBlock - 1) / kMaxStoredBlock;
  const std::size_t zlib_size = 2 + raw_size + 5 * blocks + 4;
  if (zlib_size > 0x7FFFFFFFu) {
    throw std::invalid_argument("png::encode_rgb: width × height = " + std::to_string(width) + " × " +
                                std::to_string(height) + " is too large for one uncompressed IDAT chunk");
  }
  if (rgb.size() != row * static_cast<std::size_t>(height)) {
    throw std::invalid_argument("png::encode_rgb: rgb must hold width × height × 3 = " +
                                std::to_string(row * static_cast<std::size_t>(height)) + " bytes, got " +
                                std::to_string(rgb.size()));
  }
  // The filtered rows: a 0 (None) before each row's bytes.
  std::vector<std::uint8_t> raw;
  raw.reserve(raw_size);
  for (int y = 0; y < height; ++y) {
    raw.push_back(0);
    const auto* begin = rgb.data() + row * static_cast<std::size_t>(y);
    raw.insert(raw.end(), begin, begin + row);
  }

  std::vector<std::uint8_t> zlib;
  zlib.reserve(zlib_size);
  zlib.push_back(0x78);  // CMF: deflate, 32 KiB window
  zlib.push_back(0x01);  // FLG: FCHECK for 0x78, no dictionary
  for (std::size_t at = 0; at < raw.size(); at += kMaxStoredBlock) {
    const std::size_t len = std::min(kMaxStoredBlock, raw.size() - at);
    const bool last = at + len == raw.size();
    zlib.push_back(last ? 0x01 : 0x00);  // BFINAL, BTYPE = 00, padding
    zlib.push_back(static_cast<std::uint8_t>(len & 0xFFu));
    zlib.push_back(static_cast<std::uint8_t>(len >> 8));
    zlib.push_back(static_cast<std::uint8_t>(~len & 0xFFu));
    zlib.push_back(static_cast<std::uint8_t>((~len >> 8) & 0xFFu));
    zlib.insert(zlib.end(), raw.begin() + static_cast<std::ptrdiff_t>(at),
                raw.begin() + static_cast<std::ptrdiff_t>(at + len));
  }
  detail::put_u32_be(zlib, adler32(raw.data(), raw.size()));

  std::vector<std::uint8_t> ihdr;
  detail::put_u32_be(ihdr, static_cast<std::uint32_t>(width));
  detail::put_u32_be(ihdr, static_cast<std::uint32_t>(height));
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // bit depth, colour type RGB, compression, filter, interlace

  std::vector<std::uint8_t> file = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  file.reserve(8 + 3 * 12 + ihdr.size() + zlib.size());
  detail::put_chunk(file, "IHDR", ihdr);
  detail::put_chunk(file, "IDAT", zlib);
  detail::put_chunk(file, "IEND", {});
  return file;
}

/// Writes encode_rgb(width, height, rgb) to `path`: first to `path` +
/// ".tmp", then renamed over `path`, so that a reader never sees half a
/// figure. Throws what encode_rgb throws, and std::runtime_error naming the
/// path when the file cannot be written or renamed (a missing directory, a
/// full disk); the .tmp file is removed then.
inline void write_rgb(const std::filesystem::path& path, int width, int height, const std::vector<std::uint8_t>& rgb) {
  const std::vector<std::uint8_t> bytes = encode_rgb(width, height, rgb);
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  auto fail = [&](const std::string& what) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw std::runtime_error("cannot write the PNG file '" + path.string() + "': " + what);
  };
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail("cannot open '" + tmp.string() + "' for writing");
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) fail("writing '" + tmp.string() + "' failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail("cannot rename '" + tmp.string() + "' to it: " + ec.message());
}

}  // namespace oq_tool::png
