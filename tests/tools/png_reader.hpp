// A PNG reader for the tests of tools/oq/png.hpp and the figures drawn with
// it, written apart from the writer: CRC-32 by the bitwise loop (no table),
// Adler-32 by its definition (mod 65521 after every byte), an inflater of its
// own, every field read and checked. It reads what the writer promises and
// nothing more — 8-bit RGB, no interlace, filter types 0-4, stored and
// fixed-Huffman deflate blocks — and throws std::runtime_error naming the
// first thing that differs (a dynamic-Huffman block, an invalid code, a
// distance before the data's start, ...), so a test can also show that a
// corrupted file is caught.
//
// The inflater differs from the writer's compressor on purpose: it reads one
// bit at a time; it builds the fixed codes from RFC 1951 §3.2.6's list of code
// lengths by §3.2.2's canonical-code algorithm (bl_count, next_code) and
// looks each code up by (length, value), where the writer computes codes by
// closed-form ranges; and it derives the length and distance base values
// from the extra-bit rule of §3.2.5, where the writer copies the tables.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
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

/// What the inflater met on its way, so a test can say which paths the
/// writer took: each block's type and size, and the extremes of the matches.
struct InflateStats {
  std::vector<int> block_types;          ///< BTYPE of each block: 0 stored, 1 fixed Huffman
  std::vector<std::size_t> block_sizes;  ///< uncompressed bytes from each block (LEN for stored)
  std::size_t literals = 0, matches = 0, matches_258 = 0;
  std::size_t min_length = std::numeric_limits<std::size_t>::max(), max_length = 0;
  std::size_t min_distance = std::numeric_limits<std::size_t>::max(), max_distance = 0;
};

struct Inflated {
  std::vector<std::uint8_t> data;
  InflateStats stats;
};

struct Decoded {
  int width = 0, height = 0;
  std::vector<std::uint8_t> rgb;          ///< width · height · 3, top row first
  std::vector<std::string> chunk_types;   ///< in file order
  std::vector<std::uint8_t> row_filters;  ///< the filter type of each row
  InflateStats deflate;
  Pixel at(int x, int y) const {
    const std::size_t i = 3 * (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x));
    return {rgb.at(i), rgb.at(i + 1), rgb.at(i + 2)};
  }
};

inline std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

[[noreturn]] inline void fail(const std::string& what) { throw std::runtime_error("png_reader: " + what); }

/// Bits of a byte string, each byte from its least significant bit up
/// (RFC 1951 §3.1.1), one at a time.
class BitReader {
 public:
  BitReader(const std::uint8_t* p, std::size_t n) : p_(p), n_(n) {}
  unsigned bit() {
    if (byte_ >= n_) fail("deflate stream ends inside a block");
    const unsigned b = (p_[byte_] >> bit_) & 1u;
    if (++bit_ == 8) bit_ = 0, ++byte_;
    return b;
  }
  /// A number of `count` bits, least significant first.
  std::uint32_t number(int count) {
    std::uint32_t v = 0;
    for (int i = 0; i < count; ++i) v |= static_cast<std::uint32_t>(bit()) << i;
    return v;
  }
  /// Skips to the next byte boundary; the skipped bits must be 0 (the writer
  /// pads with zeros; RFC 1951 ignores them, this reader is stricter).
  void to_byte_boundary() {
    while (bit_ != 0) {
      if (bit() != 0) fail("padding bits before a byte boundary not zero");
    }
  }
  std::size_t byte_position() const { return byte_; }  // valid at a boundary
  void skip_bytes(std::size_t k) { byte_ += k; }

 private:
  const std::uint8_t* p_;
  std::size_t n_, byte_ = 0;
  int bit_ = 0;
};

/// A canonical Huffman code from its code lengths (RFC 1951 §3.2.2): codes
/// of one length are consecutive numbers in symbol order, and each length's
/// first code follows the last code of the length before, shifted left.
class CanonicalCode {
 public:
  explicit CanonicalCode(const std::vector<int>& lengths) {
    std::array<std::uint32_t, 16> bl_count{}, next_code{};
    for (int len : lengths) ++bl_count[static_cast<std::size_t>(len)];
    bl_count[0] = 0;
    std::uint32_t code = 0;
    for (std::size_t bits = 1; bits < 16; ++bits) {
      code = (code + bl_count[bits - 1]) << 1;
      next_code[bits] = code;
    }
    for (std::size_t sym = 0; sym < lengths.size(); ++sym) {
      const auto len = static_cast<std::size_t>(lengths[sym]);
      if (len != 0) by_length_[len][next_code[len]++] = static_cast<int>(sym);
    }
  }
  /// The next symbol: the code's bits arrive most significant first.
  int decode(BitReader& in) const {
    std::uint32_t code = 0;
    for (std::size_t len = 1; len < 16; ++len) {
      code = (code << 1) | in.bit();
      const auto it = by_length_[len].find(code);
      if (it != by_length_[len].end()) return it->second;
    }
    fail("bit pattern that is no code");
  }

 private:
  std::array<std::map<std::uint32_t, int>, 16> by_length_;
};

/// The fixed codes (RFC 1951 §3.2.6): literal/length symbols 0-143 of 8
/// bits, 144-255 of 9, 256-279 of 7, 280-287 of 8; distance codes 0-31 of 5
/// bits. 286, 287, 30 and 31 take part in the code but never occur in valid
/// data.
inline const CanonicalCode& fixed_literal_code() {
  static const CanonicalCode code = [] {
    std::vector<int> lengths(288);
    for (std::size_t s = 0; s < 288; ++s) lengths[s] = s < 144 ? 8 : s < 256 ? 9 : s < 280 ? 7 : 8;
    return CanonicalCode(lengths);
  }();
  return code;
}
inline const CanonicalCode& fixed_distance_code() {
  static const CanonicalCode code(std::vector<int>(32, 5));
  return code;
}

/// Deflate data (RFC 1951) from `p`, stored and fixed-Huffman blocks only;
/// returns the data and sets `*end` to the byte after the last block.
inline Inflated inflate_raw(const std::uint8_t* p, std::size_t n, std::size_t* end) {
  // §3.2.5: lengths 3.. by symbols 257-284 with (i - 4) / 4 extra bits from
  // i = 8 on (0 before), 285 alone is 258; distances 1.. by codes 0-29 with
  // (i - 2) / 2 extra bits from i = 4 on. Each base is the last one plus the
  // values its extra bits covered.
  std::array<std::uint32_t, 29> len_base{}, len_extra{};
  std::array<std::uint32_t, 30> dist_base{}, dist_extra{};
  for (std::size_t i = 0; i < 28; ++i) {
    len_extra[i] = i < 8 ? 0 : static_cast<std::uint32_t>(i - 4) / 4;
    len_base[i] = i == 0 ? 3 : len_base[i - 1] + (1u << len_extra[i - 1]);
  }
  len_base[28] = 258;
  len_extra[28] = 0;
  for (std::size_t i = 0; i < 30; ++i) {
    dist_extra[i] = i < 4 ? 0 : static_cast<std::uint32_t>(i - 2) / 2;
    dist_base[i] = i == 0 ? 1 : dist_base[i - 1] + (1u << dist_extra[i - 1]);
  }

  Inflated r;
  auto& out = r.data;
  auto& st = r.stats;
  BitReader in(p, n);
  for (bool final = false; !final;) {
    final = in.bit() != 0;
    const std::uint32_t type = in.number(2);
    const std::size_t before = out.size();
    if (type == 0) {  // §3.2.4
      in.to_byte_boundary();
      const std::size_t at = in.byte_position();
      if (n - at < 4) fail("truncated stored block header");
      const unsigned len = p[at] | (unsigned{p[at + 1]} << 8);
      const unsigned nlen = p[at + 2] | (unsigned{p[at + 3]} << 8);
      if ((len ^ 0xFFFFu) != nlen) fail("NLEN is not the complement of LEN");
      if (n - at - 4 < len) fail("stored block runs past the stream");
      out.insert(out.end(), p + at + 4, p + at + 4 + len);
      in.skip_bytes(4 + len);
    } else if (type == 1) {  // §3.2.6, decoded as §3.2.5 says
      for (;;) {
        const int sym = fixed_literal_code().decode(in);
        if (sym < 256) {
          out.push_back(static_cast<std::uint8_t>(sym));
          ++st.literals;
          continue;
        }
        if (sym == 256) break;
        if (sym > 285) fail("invalid literal/length code " + std::to_string(sym));
        const auto li = static_cast<std::size_t>(sym - 257);
        const std::size_t length = len_base[li] + in.number(static_cast<int>(len_extra[li]));
        const int dsym = fixed_distance_code().decode(in);
        if (dsym > 29) fail("invalid distance code " + std::to_string(dsym));
        const auto di = static_cast<std::size_t>(dsym);
        const std::size_t distance = dist_base[di] + in.number(static_cast<int>(dist_extra[di]));
        if (distance > out.size()) {
          fail("distance " + std::to_string(distance) + " reaches before the data's start (" +
               std::to_string(out.size()) + " bytes so far)");
        }
        // Byte by byte: a match may overlap the bytes it produces.
        for (std::size_t k = 0; k < length; ++k) out.push_back(out[out.size() - distance]);
        ++st.matches;
        st.matches_258 += length == 258 ? 1 : 0;
        st.min_length = std::min(st.min_length, length);
        st.max_length = std::max(st.max_length, length);
        st.min_distance = std::min(st.min_distance, distance);
        st.max_distance = std::max(st.max_distance, distance);
      }
    } else if (type == 2) {
      fail("dynamic Huffman block (BTYPE = 2): not what the writer makes, not read here");
    } else {
      fail("block type 3 is reserved (invalid)");
    }
    st.block_types.push_back(static_cast<int>(type));
    st.block_sizes.push_back(out.size() - before);
  }
  in.to_byte_boundary();
  *end = in.byte_position();
  return r;
}

/// A zlib stream (RFC 1950): CMF, FLG, deflate data, Adler-32 of the data,
/// nothing after.
inline Inflated inflate_zlib(const std::vector<std::uint8_t>& zlib) {
  if (zlib.size() < 2 + 4) fail("zlib stream too short");
  const unsigned cmf = zlib[0], flg = zlib[1];
  if ((cmf & 0x0Fu) != 8) fail("zlib CM not 8 (deflate)");
  if ((cmf >> 4) > 7) fail("zlib CINFO over 7");
  if ((cmf * 256 + flg) % 31 != 0) fail("zlib FCHECK wrong");
  if (flg & 0x20u) fail("zlib preset dictionary");
  std::size_t end = 0;
  Inflated r = inflate_raw(zlib.data() + 2, zlib.size() - 2, &end);
  const std::size_t z = 2 + end;
  if (zlib.size() - z != 4) fail("zlib stream does not end with exactly the Adler-32");
  if (be32(&zlib[z]) != adler32_plain(r.data.data(), r.data.size())) fail("Adler-32 mismatch");
  return r;
}

inline Decoded decode(const std::vector<std::uint8_t>& f) {
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

  Inflated inflated = inflate_zlib(zlib);
  const std::vector<std::uint8_t>& raw = inflated.data;
  d.deflate = std::move(inflated.stats);

  // Undo the filters (PNG §9.2-9.4) in place of the output: x is the
  // filtered byte, a the reconstructed byte one pixel (3 bytes) left, b the
  // one above, c above-left, each 0 outside the image.
  const std::size_t row = 3 * static_cast<std::size_t>(w);
  if (raw.size() != (row + 1) * h) fail("image data is " + std::to_string(raw.size()) + " bytes, not height × (1 + 3 width)");
  d.rgb.resize(row * h);
  for (std::size_t y = 0; y < h; ++y) {
    const std::uint8_t* line = &raw[y * (row + 1)];
    const unsigned type = line[0];
    if (type > 4) fail("row " + std::to_string(y) + " filter type " + std::to_string(type) + ", not 0-4");
    d.row_filters.push_back(static_cast<std::uint8_t>(type));
    std::uint8_t* recon = &d.rgb[y * row];
    for (std::size_t i = 0; i < row; ++i) {
      const int a = i >= 3 ? recon[i - 3] : 0;
      const int b = y > 0 ? recon[i - row] : 0;
      const int c = (i >= 3 && y > 0) ? recon[i - row - 3] : 0;
      int predictor = 0;
      switch (type) {
        case 1: predictor = a; break;
        case 2: predictor = b; break;
        case 3: predictor = (a + b) >> 1; break;
        case 4: {
          const int pa = std::abs(b - c), pb = std::abs(a - c), pc = std::abs(a + b - 2 * c);  // |p - a|, |p - b|, |p - c|
          predictor = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
          break;
        }
        default: break;
      }
      recon[i] = static_cast<std::uint8_t>(line[1 + i] + predictor);
    }
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
