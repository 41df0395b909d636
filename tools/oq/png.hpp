// tools/oq/png.hpp: a minimal PNG writer (8-bit RGB) with its own deflate
// compressor, so that `oq analyze` draws its figures without libpng, zlib or
// Python (the project admits no new dependency).
//
// The file, byte by byte (PNG: ISO/IEC 15948 / W3C PNG 2nd ed.; zlib:
// RFC 1950; deflate: RFC 1951). Multi-byte integers are big-endian except
// inside the deflate stream (see "Bit order" below).
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
//   IDAT data   one zlib stream (RFC 1950 §2.2; one IDAT chunk holds it all):
//                 CMF  0x78   bits 0-3 CM = 8 (deflate), bits 4-7 CINFO = 7
//                             (32 KiB window)
//                 FLG  0x01   bits 0-4 FCHECK: (CMF·256 + FLG) mod 31 == 0
//                             (0x7801 = 31 · 991), bit 5 FDICT = 0,
//                             bits 6-7 FLEVEL = 0 (informational only)
//                 deflate blocks (RFC 1951 §3.2.3), each
//                   stored (BTYPE = 00, §3.2.4) or fixed Huffman (BTYPE = 01,
//                   §3.2.6); never dynamic Huffman (BTYPE = 10)
//                 ADLER32 u32 of the uncompressed data (RFC 1950 §9:
//                   a = 1 + Σ bytes, b = Σ a after each byte, both mod
//                   65521; the value is b·65536 + a)
//               The uncompressed data is the image row by row, top row
//               first: one filter-type byte (PNG §9.2: 0 None, 1 Sub, 2 Up,
//               3 Average, 4 Paeth), then width × 3 filtered bytes R, G, B,
//               left pixel first.
//   IEND data   empty (its CRC is always AE 42 60 82)
//
// Bit order (RFC 1951 §3.1.1). Deflate is a bit stream packed into bytes
// from each byte's least significant bit up. Header fields and extra bits are
// numbers written least significant bit first; Huffman codes are written
// starting with their MOST significant bit, so BitWriter::code reverses a
// code before handing it to the LSB-first packer. A stored block's header
// (3 bits) is followed by padding to the byte boundary, then LEN and NLEN
// (u16 little-endian, NLEN = ~LEN) and LEN bytes copied as they are.
//
// Compression (Options::deflate = fixed_huffman, the default). The filtered
// data is cut into pieces of at most 65535 bytes; each becomes one block,
// fixed Huffman or stored, whichever is fewer bits (random pixels cost 8 or
// 9 bits a literal in the fixed code, so stored wins there). Inside a piece,
// greedy LZ77 (§4): a hash of the next 3 bytes leads through a chain of
// earlier positions with that hash (at most kMaxChain of them, within the
// last 32768 bytes, crossing piece boundaries) to the longest match of 3 to
// 258 bytes; a match is a <length, distance> pair, anything else a literal.
// The fixed code costs at least 13 bits for a 258-byte match (8-bit length
// symbol 285 plus a 5-bit distance code), so a flat image cannot go below
// about raw/258 · 13 bits; the dynamic code that could would need a code-
// length encoder as long as all of this, for figures that are already about
// 100x smaller. Rows are filtered (Options::filter = adaptive by default) with the
// type whose output has the least Σ |byte as int8| (PNG §12.8's heuristic),
// which turns a flat background into runs of zeros.
//
// Sizes of `oq analyze`'s figures for the demo model (build/demo/model/
// baseline, --calib build/demo/calibration.txt, --sequences 16), the pixels
// the same: massive.png (900 × 525) 1 418 198 -> 13 258 bytes, channels.png
// (900 × 960) 2 593 223 -> 23 840 bytes; encoding channels.png takes 12 ms
// (GCC 12 -O3, Xeon, shared machine). Stored blocks (Deflate::stored, the
// simplest reference, still available) make a file about 3 bytes per pixel.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
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

/// How encode_rgb compresses: stored blocks only (the plain reference), or
/// LZ77 with deflate's fixed Huffman code (each block falls back to stored
/// where that is smaller).
enum class Deflate { stored, fixed_huffman };

/// The PNG row filter (PNG §9.2): one type for every row, or `adaptive`, per
/// row the type of least Σ |filtered byte as int8|.
enum class Filter { none = 0, sub = 1, up = 2, average = 3, paeth = 4, adaptive = 5 };

struct Options {
  Deflate deflate = Deflate::fixed_huffman;
  Filter filter = Filter::adaptive;
};

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

/// Packs bits into bytes from each byte's least significant bit up
/// (RFC 1951 §3.1.1).
class BitWriter {
 public:
  explicit BitWriter(std::vector<std::uint8_t>& out) : out_(out) {}
  /// A number of `count` ≤ 32 bits, least significant bit first (header
  /// fields, extra bits, LEN/NLEN).
  void bits(std::uint32_t value, int count) {
    acc_ |= static_cast<std::uint64_t>(value) << n_;
    n_ += count;
    while (n_ >= 8) {
      out_.push_back(static_cast<std::uint8_t>(acc_ & 0xFFu));
      acc_ >>= 8;
      n_ -= 8;
    }
  }
  /// A Huffman code of `length` bits, most significant bit first: reversed,
  /// then packed as a number.
  void code(std::uint32_t value, int length) {
    std::uint32_t reversed = 0;
    for (int i = 0; i < length; ++i) reversed |= ((value >> i) & 1u) << (length - 1 - i);
    bits(reversed, length);
  }
  /// Zero bits up to the next byte boundary.
  void align() {
    if (n_ > 0) bits(0, 8 - n_);
  }
  /// Bits already in the current, unfinished byte (0 .. 7).
  int pending() const { return n_; }

 private:
  std::vector<std::uint8_t>& out_;
  std::uint64_t acc_ = 0;
  int n_ = 0;
};

// RFC 1951 §3.2.5: length symbols 257 .. 285 and distance codes 0 .. 29 with
// the first value each stands for and the extra bits that follow it.
inline constexpr std::array<std::uint16_t, 29> kLengthBase{3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                                           31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
inline constexpr std::array<std::uint8_t, 29> kLengthExtra{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                                           2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
inline constexpr std::array<std::uint16_t, 30> kDistanceBase{
    1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
    193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
inline constexpr std::array<std::uint8_t, 30> kDistanceExtra{0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                                             6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

inline constexpr std::size_t kWindow = 32768;  // largest distance (CINFO = 7)
inline constexpr std::size_t kMinMatch = 3, kMaxMatch = 258;
// Candidates tried per position: enough for the figures (a flat background
// finds its 258-byte match in the first), a bound on time for worse data.
inline constexpr int kMaxChain = 64;
inline constexpr int kHashBits = 15;

/// The fixed literal/length code (RFC 1951 §3.2.6) of `symbol` 0 .. 287,
/// as {code, bits}; within each range the codes count up with the symbol:
///   symbols   0 - 143   8 bits   00110000 .. 10111111
///   symbols 144 - 255   9 bits  110010000 .. 111111111
///   symbols 256 - 279   7 bits    0000000 .. 0010111
///   symbols 280 - 287   8 bits   11000000 .. 11000111
inline std::pair<std::uint32_t, int> fixed_literal_code(unsigned symbol) {
  if (symbol < 144) return {0x30u + symbol, 8};
  if (symbol < 256) return {0x190u + (symbol - 144), 9};
  if (symbol < 280) return {symbol - 256, 7};
  return {0xC0u + (symbol - 280), 8};
}

/// The index of the last entry of `base` ≤ value: the symbol of a length
/// or distance.
template <std::size_t N>
inline unsigned symbol_index(const std::array<std::uint16_t, N>& base, std::size_t value) {
  return static_cast<unsigned>(std::upper_bound(base.begin(), base.end(), value) - base.begin() - 1);
}

/// One LZ77 token: a literal byte (length 0) or a match of `length` bytes
/// `distance` back.
struct Token {
  std::uint16_t length;
  std::uint16_t literal_or_distance;  // distance 32768 fits 16 bits
};

/// Bits of `t` in the fixed code, extra bits included.
inline std::size_t fixed_cost(const Token& t) {
  if (t.length == 0) return t.literal_or_distance < 144 ? 8 : 9;
  const unsigned l = symbol_index(kLengthBase, t.length), d = symbol_index(kDistanceBase, t.literal_or_distance);
  return static_cast<std::size_t>(fixed_literal_code(257 + l).second + kLengthExtra[l] + 5 + kDistanceExtra[d]);
}

inline void put_fixed(BitWriter& w, const Token& t) {
  if (t.length == 0) {
    const auto [code, len] = fixed_literal_code(t.literal_or_distance);
    w.code(code, len);
    return;
  }
  const unsigned l = symbol_index(kLengthBase, t.length), d = symbol_index(kDistanceBase, t.literal_or_distance);
  const auto [code, len] = fixed_literal_code(257 + l);
  w.code(code, len);
  w.bits(t.length - kLengthBase[l], kLengthExtra[l]);
  w.code(d, 5);  // the fixed distance code: the 5-bit number of the code itself
  w.bits(t.literal_or_distance - kDistanceBase[d], kDistanceExtra[d]);
}

/// Greedy LZ77 over data[begin, end) with a hash chain: head[h] is the last
/// position whose next 3 bytes hash to h, prev[p mod 32768] the position
/// before p with p's hash. Positions are inserted as they are passed, so
/// matches reach back into earlier pieces (up to 32768 bytes) but end by
/// `end`, which keeps every piece free to be stored instead.
class Matcher {
 public:
  Matcher(const std::uint8_t* data, std::size_t n)
      : data_(data), n_(n), head_(std::size_t{1} << kHashBits, kNone), prev_(kWindow, kNone) {}

  void tokens(std::size_t begin, std::size_t end, std::vector<Token>& out) {
    std::size_t pos = begin;
    while (pos < end) {
      std::size_t best_len = 0, best_dist = 0;
      if (end - pos >= kMinMatch) {
        const std::size_t max_len = std::min(kMaxMatch, end - pos);
        std::size_t cand = head_[hash(pos)];
        for (int steps = 0; cand != kNone && pos - cand <= kWindow && steps < kMaxChain; ++steps) {
          // Only a candidate that also agrees at best_len can be longer.
          if (data_[cand + best_len] == data_[pos + best_len]) {
            std::size_t len = 0;
            while (len < max_len && data_[cand + len] == data_[pos + len]) ++len;
            if (len > best_len) {
              best_len = len;
              best_dist = pos - cand;
              if (len == max_len) break;
            }
          }
          const std::size_t next = prev_[cand % kWindow];
          if (next == kNone || next >= cand) break;  // the chain ends, or the slot was reused
          cand = next;
        }
      }
      if (best_len >= kMinMatch) {
        out.push_back({static_cast<std::uint16_t>(best_len), static_cast<std::uint16_t>(best_dist)});
        for (std::size_t k = 0; k < best_len; ++k) insert(pos + k);
        pos += best_len;
      } else {
        out.push_back({0, data_[pos]});
        insert(pos);
        ++pos;
      }
    }
  }

 private:
  static constexpr std::size_t kNone = static_cast<std::size_t>(-1);
  std::size_t hash(std::size_t p) const {
    const std::uint32_t v = data_[p] | (std::uint32_t{data_[p + 1]} << 8) | (std::uint32_t{data_[p + 2]} << 16);
    return (v * 2654435761u) >> (32 - kHashBits);  // Knuth's multiplicative hash, top bits
  }
  void insert(std::size_t p) {
    if (n_ - p < kMinMatch) return;
    const std::size_t h = hash(p);
    prev_[p % kWindow] = head_[h];
    head_[h] = p;
  }
  const std::uint8_t* data_;
  std::size_t n_;
  std::vector<std::size_t> head_, prev_;
};

/// The filtered image data (PNG §9): per row a filter-type byte, then the
/// row's bytes minus the predictor from the left pixel a (3 bytes back), the
/// byte above b and the one above-left c, all 0 outside the image.
inline std::vector<std::uint8_t> filter_rows(int width, int height, const std::vector<std::uint8_t>& rgb, Filter filter) {
  const std::size_t row = 3 * static_cast<std::size_t>(width);
  std::vector<std::uint8_t> raw;
  raw.reserve((row + 1) * static_cast<std::size_t>(height));
  std::array<std::vector<std::uint8_t>, 5> out;
  for (auto& o : out) o.resize(row);
  const std::vector<std::uint8_t> zeros(row, 0);
  for (int y = 0; y < height; ++y) {
    const std::uint8_t* cur = rgb.data() + row * static_cast<std::size_t>(y);
    const std::uint8_t* up = y > 0 ? cur - row : zeros.data();
    for (std::size_t i = 0; i < row; ++i) {
      const int a = i >= 3 ? cur[i - 3] : 0, b = up[i], c = i >= 3 ? up[i - 3] : 0;
      const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
      const int paeth = (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);  // PNG §9.4, ties in this order
      out[0][i] = cur[i];
      out[1][i] = static_cast<std::uint8_t>(cur[i] - a);
      out[2][i] = static_cast<std::uint8_t>(cur[i] - b);
      out[3][i] = static_cast<std::uint8_t>(cur[i] - (a + b) / 2);
      out[4][i] = static_cast<std::uint8_t>(cur[i] - paeth);
    }
    std::size_t type = static_cast<std::size_t>(filter);
    if (filter == Filter::adaptive) {
      std::size_t best = static_cast<std::size_t>(-1);
      for (std::size_t t = 0; t < 5; ++t) {
        std::size_t sum = 0;
        for (std::uint8_t v : out[t]) sum += static_cast<std::size_t>(std::abs(static_cast<int>(static_cast<std::int8_t>(v))));
        if (sum < best) best = sum, type = t;
      }
    }
    raw.push_back(static_cast<std::uint8_t>(type));
    raw.insert(raw.end(), out[type].begin(), out[type].end());
  }
  return raw;
}

}  // namespace detail

/// Largest bytes in one stored deflate block (LEN is 16 bits); also the
/// piece of data each fixed-Huffman block codes.
inline constexpr std::size_t kMaxStoredBlock = 65535;

/// The zlib stream (RFC 1950) of data[0, n): header 78 01, deflate blocks
/// as the file comment describes, Adler-32. `n` = 0 gives one empty block.
inline std::vector<std::uint8_t> zlib_compress(const std::uint8_t* data, std::size_t n, Deflate mode) {
  std::vector<std::uint8_t> z = {0x78, 0x01};  // CMF: deflate, 32 KiB window; FLG: FCHECK, no dictionary
  z.reserve(mode == Deflate::stored ? 2 + n + 5 * (n / kMaxStoredBlock + 1) + 4 : 2 + n / 4 + 64);
  detail::BitWriter w(z);
  std::optional<detail::Matcher> matcher;
  if (mode == Deflate::fixed_huffman) matcher.emplace(data, n);
  std::vector<detail::Token> tokens;
  std::size_t at = 0;
  do {
    const std::size_t len = std::min(kMaxStoredBlock, n - at);
    const std::uint32_t final = at + len == n ? 1 : 0;
    bool stored = true;
    if (matcher) {
      tokens.clear();
      matcher->tokens(at, at + len, tokens);
      std::size_t fixed_bits = 3 + 7;  // header, end-of-block symbol 256
      for (const auto& t : tokens) fixed_bits += detail::fixed_cost(t);
      const auto padding = static_cast<std::size_t>((8 - (w.pending() + 3) % 8) % 8);
      const std::size_t stored_bits = 3 + padding + 32 + 8 * len;
      stored = stored_bits < fixed_bits;
    }
    if (stored) {  // RFC 1951 §3.2.4
      w.bits(final, 1);
      w.bits(0, 2);  // BTYPE = 00
      w.align();
      w.bits(static_cast<std::uint32_t>(len), 16);
      w.bits(static_cast<std::uint32_t>(~len & 0xFFFFu), 16);
      z.insert(z.end(), data + at, data + at + len);  // aligned: bytes go straight in
    } else {       // RFC 1951 §3.2.6
      w.bits(final, 1);
      w.bits(1, 2);  // BTYPE = 01
      for (const auto& t : tokens) detail::put_fixed(w, t);
      w.code(0, 7);  // end of block: symbol 256, code 0000000
    }
    at += len;
  } while (at < n);
  w.align();
  detail::put_u32_be(z, adler32(data, n));
  return z;
}

/// The PNG file of a width × height 8-bit RGB image; `rgb` holds
/// width · height · 3 bytes, row by row from the top. Throws
/// std::invalid_argument naming the parameter for a zero or negative size,
/// a size PNG cannot hold, `rgb` of the wrong length, or options out of
/// their enums.
inline std::vector<std::uint8_t> encode_rgb(int width, int height, const std::vector<std::uint8_t>& rgb,
                                            const Options& options = {}) {
  if (width <= 0) throw std::invalid_argument("png::encode_rgb: width must be >= 1, got " + std::to_string(width));
  if (height <= 0) throw std::invalid_argument("png::encode_rgb: height must be >= 1, got " + std::to_string(height));
  const int filter = static_cast<int>(options.filter);
  if (filter < 0 || filter > 5) {
    throw std::invalid_argument("png::encode_rgb: options.filter must be none, sub, up, average, paeth or adaptive (0 .. 5), got " +
                                std::to_string(filter));
  }
  if (options.deflate != Deflate::stored && options.deflate != Deflate::fixed_huffman) {
    throw std::invalid_argument("png::encode_rgb: options.deflate must be stored or fixed_huffman, got " +
                                std::to_string(static_cast<int>(options.deflate)));
  }
  const std::size_t row = 3 * static_cast<std::size_t>(width);
  const std::size_t raw_size = (row + 1) * static_cast<std::size_t>(height);
  // The zlib stream must fit one chunk (length ≤ 2^31 - 1). Checked for the
  // stored stream, the largest (2 header bytes, 5 bytes per stored block, 4
  // Adler bytes; compressed pieces fall back to stored, plus at most one byte
  // of padding), before anything is allocated.
  const std::size_t blocks = (raw_size + kMaxStoredBlock - 1) / kMaxStoredBlock;
  const std::size_t zlib_size = 2 + raw_size + 5 * blocks + 1 + 4;
  if (zlib_size > 0x7FFFFFFFu) {
    throw std::invalid_argument("png::encode_rgb: width × height = " + std::to_string(width) + " × " +
                                std::to_string(height) + " is too large for one IDAT chunk");
  }
  if (rgb.size() != row * static_cast<std::size_t>(height)) {
    throw std::invalid_argument("png::encode_rgb: rgb must hold width × height × 3 = " +
                                std::to_string(row * static_cast<std::size_t>(height)) + " bytes, got " +
                                std::to_string(rgb.size()));
  }
  const std::vector<std::uint8_t> raw = detail::filter_rows(width, height, rgb, options.filter);
  const std::vector<std::uint8_t> zlib = zlib_compress(raw.data(), raw.size(), options.deflate);

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

/// Writes encode_rgb(width, height, rgb, options) to `path`: first to `path` +
/// ".tmp", then renamed over `path`, so that a reader never sees half a
/// figure. Throws what encode_rgb throws, and std::runtime_error naming the
/// path when the file cannot be written or renamed (a missing directory, a
/// full disk); the .tmp file is removed then.
inline void write_rgb(const std::filesystem::path& path, int width, int height, const std::vector<std::uint8_t>& rgb,
                      const Options& options = {}) {
  const std::vector<std::uint8_t> bytes = encode_rgb(width, height, rgb, options);
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
