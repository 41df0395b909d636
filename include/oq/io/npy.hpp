// oq/io/npy.hpp: NumPy .npy files: a strict reader and a writer whose output
// is byte for byte what NumPy's np.save writes.
//
// Why: activation dumps come from PyTorch as `np.save(path, x.float().numpy())`
// and oq's analysis and calibration read them; results go back the same way.
//
// Format (numpy.lib.format, "NPY format", versions 1.0, 2.0 and 3.0;
// https://numpy.org/devdocs/reference/generated/numpy.lib.format.html):
//
//   offset  size   field
//   0       6      magic "\x93NUMPY"
//   6       1      major version (1, 2 or 3)
//   7       1      minor version (0)
//   8       2|4    HEADER_LEN, little-endian: u16 in 1.0, u32 in 2.0 and 3.0
//   10|12   HEADER_LEN   the header: an ASCII (3.0: UTF-8) Python dict literal
//                  {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
//                  padded with spaces and terminated by '\n'
//   …       the data: product(shape) elements of descr, C order (row-major)
//                  unless fortran_order is True (column-major)
//
// The spec pads the header so that the data starts on a multiple of 64 bytes
// (older NumPy versions aligned to 16): the reader accepts any length, the
// writer pads to 64 exactly as numpy/lib/format.py's _wrap_header does, after
// appending the spare spaces of _write_array_header (GROWTH_AXIS_MAX_DIGITS =
// 21 minus the digits of shape[0]) that recent NumPy leaves for growing the
// array in place. So npy_bytes() gives the same bytes as np.save of the same
// C-order array (checked against NumPy 1.24).
//
// Reading is strict (no eval): the dict is parsed by a small recursive-descent
// parser of exactly the literal grammar NumPy's reader accepts for these keys —
// keys in any order, single or double quotes, Python whitespace, an optional
// trailing comma, shape () for a scalar and (n,) for 1-D ((n) is an int in
// Python, not a tuple, and NumPy rejects it too). Every other input — bad
// magic or version, a header running past the end of the file, a missing,
// duplicate or unknown key, an unsupported or big-endian descr, a negative or
// overflowing dimension, data shorter or longer than product(shape)·itemsize —
// throws oq::io::FormatError naming the file (or "<memory>"), what is wrong
// and what was expected. Trailing bytes after the data are an error too: they
// mean the header does not describe the data.
//
//   auto x = oq::io::read_npy_matrix<float>("layer3_input.npy");  // [batch, seq, hidden] → (batch·seq) × hidden
//   oq::io::write_npy("scales.npy", s);                            // shape (rows, cols), '<f4'
#pragma once

#include <oq/detail/checked_size.hpp>
#include <oq/io/dtype.hpp>
#include <oq/io/format_error.hpp>
#include <oq/io/mapped_file.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

namespace oq::io {

/// A parsed .npy array: element type, shape and the raw little-endian
/// elements in C order (row-major), whatever order the file stored.
struct NpyArray {
  DType dtype = DType::kF32;
  std::vector<std::size_t> shape;  ///< empty for a 0-D (scalar) array
  std::vector<std::byte> data;     ///< size() · dtype_size(dtype) bytes, row-major

  /// Number of elements: the product of shape (1 for a 0-D array, 0 when a
  /// dimension is 0). Throws std::invalid_argument if the product overflows
  /// std::size_t, which only a hand-built NpyArray can do (parse_npy rejects it).
  std::size_t size() const;

  bool operator==(const NpyArray&) const = default;
};

namespace detail_npy {

inline constexpr std::array<unsigned char, 6> kMagic = {0x93, 'N', 'U', 'M', 'P', 'Y'};
inline constexpr std::size_t kAlign = 64;                 // ARRAY_ALIGN in numpy/lib/format.py
inline constexpr std::size_t kGrowthAxisMaxDigits = 21;   // GROWTH_AXIS_MAX_DIGITS, ibid.
inline constexpr std::size_t kV1HeaderMax = 0xFFFF;       // HEADER_LEN is a u16 in version 1.0

using detail::checked_count;  // oq/detail/checked_size.hpp
using detail::checked_mul;

/// Python's repr of a shape tuple: "()", "(5,)", "(2, 3)".
inline std::string shape_repr(std::span<const std::size_t> shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  s += ")";
  return s;
}

// descr ↔ DType. NumPy writes dtype.str: '<' for multi-byte little-endian
// types and '|' ("not applicable") for 1-byte types.
struct DescrEntry {
  std::string_view code;  // type code without the byte-order character
  DType dtype;
};
inline constexpr std::array<DescrEntry, 12> kDescrs{{{"f4", DType::kF32},
                                                     {"f2", DType::kF16},
                                                     {"f8", DType::kF64},
                                                     {"u1", DType::kU8},
                                                     {"i1", DType::kI8},
                                                     {"i2", DType::kI16},
                                                     {"u2", DType::kU16},
                                                     {"i4", DType::kI32},
                                                     {"u4", DType::kU32},
                                                     {"i8", DType::kI64},
                                                     {"u8", DType::kU64},
                                                     {"b1", DType::kBool}}};

/// The descr NumPy writes for t, or an empty view for BF16 (NumPy has no bfloat16).
constexpr std::string_view descr_of(DType t) noexcept {
  switch (t) {
    case DType::kBool: return "|b1";
    case DType::kU8: return "|u1";
    case DType::kI8: return "|i1";
    case DType::kI16: return "<i2";
    case DType::kU16: return "<u2";
    case DType::kI32: return "<i4";
    case DType::kU32: return "<u4";
    case DType::kI64: return "<i8";
    case DType::kU64: return "<u8";
    case DType::kF16: return "<f2";
    case DType::kF32: return "<f4";
    case DType::kF64: return "<f8";
    case DType::kBF16: return {};
  }
  return {};
}

[[noreturn]] inline void fail(std::string_view source, const std::string& what) {
  throw FormatError("oq::io::parse_npy: " + std::string(source) + ": " + what);
}

/// A byte of the header as text for an error message: 'x', or 0xNN when not printable.
inline std::string show_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7F) return std::string("'") + c + "'";
  static constexpr char kHex[] = "0123456789ABCDEF";
  return std::string("byte 0x") + kHex[u >> 4] + kHex[u & 0xF];
}

/// Maps a descr string to a DType, or throws FormatError. Accepts what
/// np.dtype(descr) accepts for these types: byte order '<', '=' (native,
/// which oq requires to be little-endian), '|' or none; '>' only for 1-byte
/// types, where byte order is meaningless.
inline DType dtype_of_descr(std::string_view descr, std::string_view source) {
  std::string_view code = descr;
  char order = '=';
  if (!code.empty() && (code[0] == '<' || code[0] == '>' || code[0] == '=' || code[0] == '|')) {
    order = code[0];
    code.remove_prefix(1);
  }
  for (const DescrEntry& e : kDescrs) {
    if (e.code != code) continue;
    if (order == '>' && dtype_size(e.dtype) > 1) {
      fail(source, "descr '" + std::string(descr) +
                       "' is big-endian, which oq does not support (expected little-endian '<" + std::string(code) +
                       "'; convert with arr.astype('<" + std::string(code) + "') before np.save)");
    }
    return e.dtype;
  }
  std::string accepted;
  for (const DescrEntry& e : kDescrs) {
    if (!accepted.empty()) accepted += ", ";
    accepted += "'";
    accepted += descr_of(e.dtype);
    accepted += "'";
  }
  fail(source, "unsupported descr '" + std::string(descr) + "' (expected one of " + accepted + ")");
}

/// Recursive-descent parser of the header dict (the header without its final
/// '\n'). Grammar, a subset of Python literals (ws: space, \t, \n, \r, \f):
///   dict   := ws '{' ws [entry (ws ',' ws entry)* ws [',']] ws '}' ' '*
///   entry  := string ws ':' ws value
///   string := "'" chars "'" | '"' chars '"'       (no escapes)
///   value  := string (descr) | 'True' | 'False' (fortran_order) | shape
///   shape  := '(' ws ')' | '(' ws int ws ',' ws ')' | '(' ws int (ws ',' ws int)+ ws [','] ws ')'
///   int    := digits, no sign, no leading zeros (Python 3), optional 'L'
///             (Python 2 longs, which NumPy's _filter_header strips in 1.0/2.0 files)
class HeaderParser {
 public:
  HeaderParser(std::string_view text, std::string_view source, bool allow_long_suffix)
      : text_(text), source_(source), allow_long_suffix_(allow_long_suffix) {}

  struct Result {
    std::string descr;
    bool fortran_order = false;
    std::vector<std::size_t> shape;
  };

  Result parse() {
    Result r;
    bool seen_descr = false, seen_fortran = false, seen_shape = false;
    skip_ws();
    expect('{', "the header to start with '{' (a Python dict literal)");
    while (true) {
      skip_ws();
      if (peek() == '}') {
        ++pos_;
        break;
      }
      const std::string key = parse_string("a quoted key or '}'");
      skip_ws();
      expect(':', "':' after the key '" + key + "'");
      skip_ws();
      if (key == "descr") {
        mark_seen(seen_descr, key);
        if (peek() == '[') {
          error("descr is a list (a structured dtype), which oq does not support; expected a string such as '<f4'");
        }
        r.descr = parse_string("a quoted string as the value of 'descr'");
      } else if (key == "fortran_order") {
        mark_seen(seen_fortran, key);
        r.fortran_order = parse_bool();
      } else if (key == "shape") {
        mark_seen(seen_shape, key);
        r.shape = parse_shape();
      } else {
        error("unknown key '" + key + "' (expected exactly 'descr', 'fortran_order' and 'shape')");
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        break;
      }
      error("expected ',' or '}' after the value of '" + key + "', found " + found());
    }
    // Only the spec's space padding may follow the dict.
    while (pos_ < text_.size() && text_[pos_] == ' ') ++pos_;
    if (pos_ != text_.size()) error("expected only spaces after the closing '}', found " + found());
    if (!seen_descr) missing("descr");
    if (!seen_fortran) missing("fortran_order");
    if (!seen_shape) missing("shape");
    return r;
  }

 private:
  char peek() const noexcept { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  bool at_end() const noexcept { return pos_ >= text_.size(); }

  std::string found() const { return at_end() ? std::string("the end of the header") : show_char(text_[pos_]); }

  [[noreturn]] void error(const std::string& what) const {
    fail(source_, "header: " + what + " (at byte " + std::to_string(pos_) + " of the header dict)");
  }
  [[noreturn]] void missing(std::string_view key) const {
    fail(source_, "header: the key '" + std::string(key) +
                      "' is missing (expected exactly 'descr', 'fortran_order' and 'shape')");
  }
  void mark_seen(bool& seen, const std::string& key) const {
    if (seen) error("the key '" + key + "' appears twice");
    seen = true;
  }

  void skip_ws() noexcept {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\f') break;
      ++pos_;
    }
  }

  void expect(char c, const std::string& what) {
    if (at_end() || text_[pos_] != c) error("expected " + what + ", found " + found());
    ++pos_;
  }

  std::string parse_string(const std::string& what) {
    const char quote = peek();
    if (quote != '\'' && quote != '"') error("expected " + what + ", found " + found());
    ++pos_;
    const std::size_t start = pos_;
    while (true) {
      if (at_end()) error("unterminated string (expected a closing " + show_char(quote) + ")");
      const char c = text_[pos_];
      if (c == quote) break;
      if (c == '\\') error("escape sequences in strings are not supported (no descr oq reads needs one)");
      if (c == '\n' || c == '\r') error("line break inside a string (expected a closing " + show_char(quote) + ")");
      ++pos_;
    }
    std::string s(text_.substr(start, pos_ - start));
    ++pos_;  // closing quote
    return s;
  }

  bool parse_bool() {
    const std::size_t start = pos_;
    while (pos_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_')) ++pos_;
    const std::string_view word = text_.substr(start, pos_ - start);
    if (word == "True") return true;
    if (word == "False") return false;
    pos_ = start;
    error("expected True or False as the value of 'fortran_order', found " + found());
  }

  std::size_t parse_dim() {
    if (peek() == '-') error("negative dimension in 'shape' (expected a non-negative integer)");
    if (!std::isdigit(static_cast<unsigned char>(peek()))) {
      error("expected a non-negative integer dimension in 'shape', found " + found());
    }
    const std::size_t start = pos_;
    std::size_t value = 0;
    while (std::isdigit(static_cast<unsigned char>(peek()))) {
      const auto digit = static_cast<std::size_t>(text_[pos_] - '0');
      if (value > (std::numeric_limits<std::size_t>::max() - digit) / 10) {
        error("dimension " + std::string(text_.substr(start, pos_ + 1 - start)) + "... in 'shape' overflows " +
              std::to_string(std::numeric_limits<std::size_t>::digits) + "-bit size_t");
      }
      value = value * 10 + digit;
      ++pos_;
    }
    if (text_[start] == '0' && value != 0) {
      pos_ = start;
      error("dimension with leading zeros in 'shape' (not a Python 3 integer literal)");
    }
    if (allow_long_suffix_ && peek() == 'L') ++pos_;
    return value;
  }

  std::vector<std::size_t> parse_shape() {
    expect('(', "a tuple such as (2, 3), (5,) or () as the value of 'shape'");
    std::vector<std::size_t> shape;
    skip_ws();
    if (peek() == ')') {
      ++pos_;
      return shape;
    }
    while (true) {
      shape.push_back(parse_dim());
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        skip_ws();
        if (peek() == ')') {
          ++pos_;
          return shape;
        }
        continue;
      }
      if (peek() == ')') {
        if (shape.size() == 1) {
          error("shape (" + std::to_string(shape[0]) + ") is an integer in Python, not a tuple (expected (" +
                std::to_string(shape[0]) + ",) for a 1-D array)");
        }
        ++pos_;
        return shape;
      }
      error("expected ',' or ')' in 'shape', found " + found());
    }
  }

  std::string_view text_;
  std::string_view source_;
  bool allow_long_suffix_;
  std::size_t pos_ = 0;
};

/// Visits column-major (Fortran-order) elements in row-major order:
/// visit(i, element) for the C-order index i = 0, 1, … of each element.
/// Odometer over the C-order multi-index, last axis fastest, with the
/// Fortran offset kept incrementally (stride of axis j = product of dims < j).
/// Axes of size 1 do not change the layout and are dropped first: then every
/// axis has ≥ 2 entries, at most log2(count) of them, and a shape with
/// thousands of 1s cannot make the odometer's carries quadratic.
template <class Visit>
void for_each_fortran_in_c_order(std::span<const std::byte> src, std::span<const std::size_t> full_shape,
                                 std::size_t count, std::size_t itemsize, Visit&& visit) {
  if (count == 0) return;
  std::vector<std::size_t> shape;
  for (std::size_t d : full_shape) {
    if (d != 1) shape.push_back(d);
  }
  const std::size_t k = shape.size();
  std::vector<std::size_t> stride(k), index(k, 0);
  for (std::size_t j = 0, s = 1; j < k; ++j) {
    stride[j] = s;
    s *= shape[j];  // ≤ count: no overflow
  }
  std::size_t offset = 0;
  for (std::size_t i = 0; i < count; ++i) {
    visit(i, src.data() + offset * itemsize);
    for (std::size_t j = k; j-- > 0;) {
      if (++index[j] < shape[j]) {
        offset += stride[j];
        break;
      }
      offset -= stride[j] * (shape[j] - 1);
      index[j] = 0;
    }
  }
}

/// Copies column-major (Fortran-order) elements into row-major order.
inline std::vector<std::byte> fortran_to_c(std::span<const std::byte> src, std::span<const std::size_t> full_shape,
                                           std::size_t count, std::size_t itemsize) {
  std::vector<std::byte> dst(src.size());
  for_each_fortran_in_c_order(src, full_shape, count, itemsize, [&](std::size_t i, const std::byte* element) {
    std::memcpy(dst.data() + i * itemsize, element, itemsize);
  });
  return dst;
}

/// The header dict as np.save writes it: keys sorted, Python reprs, a
/// trailing ", " before '}', then the growth spaces (numpy/lib/format.py,
/// _write_array_header).
inline std::string header_dict(std::string_view descr, std::span<const std::size_t> shape) {
  std::string h = "{'descr': '";
  h += descr;
  h += "', 'fortran_order': False, 'shape': ";
  h += shape_repr(shape);
  h += ", }";
  if (!shape.empty()) {
    const std::size_t digits = std::to_string(shape[0]).size();
    if (digits < kGrowthAxisMaxDigits) h.append(kGrowthAxisMaxDigits - digits, ' ');
  }
  return h;
}

}  // namespace detail_npy

inline std::size_t NpyArray::size() const {
  std::size_t n = 0;
  if (!detail_npy::checked_count(shape, n)) {
    throw std::invalid_argument("oq::io::NpyArray::size: the product of shape " + detail_npy::shape_repr(shape) +
                                " overflows size_t");
  }
  return n;
}

namespace detail_npy {

/// What a .npy file's preamble and header say, validated against the file's
/// size: everything but the data.
struct Layout {
  DType dtype = DType::kF32;
  std::vector<std::size_t> shape;
  std::string descr;
  bool fortran_order = false;
  std::size_t count = 0;        // product(shape)
  std::size_t itemsize = 0;
  std::size_t data_offset = 0;  // where the data starts in the file
  std::size_t data_bytes = 0;   // count · itemsize, which is what follows data_offset
};

/// How many leading bytes of a file of `file_size` bytes parse_layout needs,
/// given its first min(file_size, 12) bytes `first`: the preamble and the
/// header when the preamble can be read, else what there is.
inline std::size_t head_size(std::span<const std::byte> first, std::size_t file_size) {
  constexpr std::size_t kMaxPreamble = 12;
  if (first.size() < 8) return std::min(file_size, kMaxPreamble);
  const auto major = static_cast<unsigned char>(first[6]);
  if (major < 1 || major > 3) return std::min(file_size, kMaxPreamble);
  const std::size_t len_bytes = major == 1 ? 2 : 4;
  if (first.size() < 8 + len_bytes) return std::min(file_size, kMaxPreamble);
  std::size_t header_len = 0;
  for (std::size_t i = 0; i < len_bytes; ++i) {
    header_len |= static_cast<std::size_t>(static_cast<unsigned char>(first[8 + i])) << (8 * i);
  }
  return std::min(file_size, 8 + len_bytes + header_len);
}

/// Validates the preamble and header of a .npy file of `file_size` bytes
/// whose first bytes are `head` (at least head_size of them, or the whole
/// file) against that size. Throws FormatError as parse_npy documents.
inline Layout parse_layout(std::span<const std::byte> head, std::size_t file_size, std::string_view source) {
  auto byte_at = [&](std::size_t i) { return static_cast<unsigned char>(head[i]); };

  if (file_size < 8) {
    fail(source, "file is " + std::to_string(file_size) +
                     " bytes, too short for the magic \"\\x93NUMPY\" and the version (8 bytes)");
  }
  for (std::size_t i = 0; i < kMagic.size(); ++i) {
    if (byte_at(i) != kMagic[i]) fail(source, "not a .npy file (expected the magic \"\\x93NUMPY\")");
  }
  const unsigned major = byte_at(6), minor = byte_at(7);
  if (major < 1 || major > 3 || minor != 0) {
    fail(source, "unsupported format version " + std::to_string(major) + "." + std::to_string(minor) +
                     " (expected 1.0, 2.0 or 3.0)");
  }
  // 1.0: HEADER_LEN is a little-endian u16; 2.0 and 3.0: u32.
  const std::size_t len_bytes = major == 1 ? 2 : 4;
  const std::size_t preamble = 8 + len_bytes;
  if (file_size < preamble) {
    fail(source, "file is " + std::to_string(file_size) + " bytes, too short for the " + std::to_string(preamble) +
                     "-byte preamble of a version " + std::to_string(major) + ".0 file");
  }
  std::size_t header_len = 0;
  for (std::size_t i = 0; i < len_bytes; ++i) header_len |= static_cast<std::size_t>(byte_at(8 + i)) << (8 * i);
  if (header_len > file_size - preamble) {
    fail(source, "header length " + std::to_string(header_len) + " runs past the end of the file (" +
                     std::to_string(file_size - preamble) + " bytes follow the preamble)");
  }
  if (header_len == 0 || byte_at(preamble + header_len - 1) != '\n') {
    fail(source, "the header is not terminated by '\\n' (expected a space-padded dict ending in a newline)");
  }
  // The header is ASCII in 1.0/2.0 (latin1, but every descr oq reads is
  // ASCII) and UTF-8 in 3.0, where non-ASCII only occurs in structured
  // dtypes' field names: reject any non-ASCII or control byte.
  const std::string_view text(reinterpret_cast<const char*>(head.data() + preamble), header_len - 1);
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f') || c >= 0x7F) {
      fail(source, "header: " + show_char(text[i]) + " at byte " + std::to_string(i) +
                       " is not printable ASCII (expected a Python dict literal)");
    }
  }
  const auto header = HeaderParser(text, source, major <= 2).parse();

  Layout out;
  out.dtype = dtype_of_descr(header.descr, source);
  out.shape = header.shape;
  out.descr = header.descr;
  out.fortran_order = header.fortran_order;
  out.itemsize = dtype_size(out.dtype);
  if (!checked_count(out.shape, out.count) || !checked_mul(out.count, out.itemsize, out.data_bytes)) {
    fail(source, "shape " + shape_repr(out.shape) + " of '" + header.descr + "' has more bytes than size_t can count");
  }
  out.data_offset = preamble + header_len;
  const std::size_t available = file_size - out.data_offset;
  if (available < out.data_bytes) {
    fail(source, "data is truncated: shape " + shape_repr(out.shape) + " of '" + header.descr + "' needs " +
                     std::to_string(out.data_bytes) + " bytes, but only " + std::to_string(available) +
                     " follow the header");
  }
  if (available > out.data_bytes) {
    fail(source, std::to_string(available) + " bytes follow the header, but shape " + shape_repr(out.shape) +
                     " of '" + header.descr + "' needs exactly " + std::to_string(out.data_bytes) +
                     " (trailing bytes: the header does not describe the data)");
  }
  return out;
}

/// Opens `path` (a regular file, without blocking on a FIFO: see
/// detail_file::RegularFile) and reads and validates its preamble and header.
inline Layout read_layout(const detail_file::RegularFile& file, const std::string& source) {
  std::vector<std::byte> head(std::min<std::size_t>(file.size(), 12));
  file.read_at(0, head.data(), head.size());
  const std::size_t needed = head_size(head, file.size());
  if (needed > head.size()) {
    const std::size_t have = head.size();
    head.resize(needed);
    file.read_at(have, head.data() + have, needed - have);
  }
  return parse_layout(head, file.size(), source);
}

}  // namespace detail_npy

/// Parses the bytes of a .npy file (versions 1.0, 2.0, 3.0). `source` names
/// the file in error messages. Throws FormatError for anything that is not a
/// well-formed .npy file of a supported dtype (see the top of this file);
/// never reads outside `bytes`, and allocates in proportion to its size (a
/// huge shape over a short file is an error before any allocation).
inline NpyArray parse_npy(std::span<const std::byte> bytes, std::string_view source = "<memory>") {
  const detail_npy::Layout layout = detail_npy::parse_layout(bytes, bytes.size(), source);
  NpyArray out;
  out.dtype = layout.dtype;
  out.shape = layout.shape;
  const auto data = bytes.subspan(layout.data_offset, layout.data_bytes);
  if (layout.fortran_order && out.shape.size() >= 2) {
    out.data = detail_npy::fortran_to_c(data, out.shape, layout.count, layout.itemsize);
  } else {
    out.data.assign(data.begin(), data.end());
  }
  return out;
}

/// Reads and parses a .npy file. Throws std::runtime_error (std::system_error)
/// naming the path when it cannot be opened or read or is not a regular file
/// (a FIFO or a device is refused without blocking), and FormatError when it
/// is malformed. The data is read straight into the result: peak memory is
/// the array's size (twice that for a Fortran-order array, which is
/// reordered from a copy).
inline NpyArray read_npy(const std::filesystem::path& path) {
  const detail_file::RegularFile file(path, "oq::io::read_npy");
  const detail_npy::Layout layout = detail_npy::read_layout(file, path.string());
  NpyArray out;
  out.dtype = layout.dtype;
  out.shape = layout.shape;
  if (layout.fortran_order && out.shape.size() >= 2) {
    std::vector<std::byte> stored(layout.data_bytes);
    file.read_at(layout.data_offset, stored.data(), stored.size());
    out.data = detail_npy::fortran_to_c(stored, out.shape, layout.count, layout.itemsize);
  } else {
    out.data.resize(layout.data_bytes);
    file.read_at(layout.data_offset, out.data.data(), out.data.size());
  }
  return out;
}

namespace detail_npy {

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// The matrix npy_to_matrix makes of `shape`, uninitialised: 2-D as is, 1-D
/// (n,) → 1×n, 0-D → 1×1, k-D → leading dims flattened into rows. Throws
/// std::invalid_argument "<who>: …" when a dimension does not fit Eigen::Index.
template <class T>
RowMatrix<T> matrix_of_shape(std::span<const std::size_t> shape, const char* who) {
  std::size_t rows = 1, cols = 1;
  if (!shape.empty()) {
    cols = shape.back();
    // The leading product can overflow only when another dimension is 0.
    for (std::size_t i = 0; i + 1 < shape.size(); ++i) {
      if (!checked_mul(rows, shape[i], rows)) {
        throw std::invalid_argument(std::string(who) + ": the leading dimensions of shape " + shape_repr(shape) +
                                    " overflow size_t");
      }
    }
  }
  constexpr auto kMaxIndex = static_cast<std::size_t>(std::numeric_limits<Eigen::Index>::max());
  if (rows > kMaxIndex || cols > kMaxIndex) {
    throw std::invalid_argument(std::string(who) + ": shape " + shape_repr(shape) + " does not fit Eigen::Index");
  }
  return RowMatrix<T>(static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols));
}

/// count elements of `dtype` at src (C order) → dst, as T.
template <class T>
void convert_elements(DType dtype, const std::byte* src, std::size_t count, T* dst) {
  if ((std::is_same_v<T, float> && dtype == DType::kF32) || (std::is_same_v<T, double> && dtype == DType::kF64)) {
    if (count > 0) std::memcpy(dst, src, count * sizeof(T));  // same layout: no conversion
    return;
  }
  const std::size_t itemsize = dtype_size(dtype);
  for (std::size_t i = 0; i < count; ++i) dst[i] = static_cast<T>(load_element(dtype, src + i * itemsize));
}

}  // namespace detail_npy

/// The array as a row-major matrix of T (float or double), converting every
/// dtype through load_element: 2-D as is; 1-D (n,) → 1×n; 0-D → 1×1; k-D,
/// k ≥ 3, → leading dims flattened into rows (an activation dump
/// [batch, seq, hidden] becomes (batch·seq) × hidden). Throws
/// std::invalid_argument when a dimension does not fit Eigen::Index or the
/// data size does not match the shape.
template <class T = float>
Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> npy_to_matrix(const NpyArray& a) {
  static_assert(std::is_floating_point_v<T>, "npy_to_matrix converts to float or double");
  const std::size_t count = a.size();
  const std::size_t itemsize = dtype_size(a.dtype);
  if (a.data.size() / itemsize != count || a.data.size() % itemsize != 0) {
    throw std::invalid_argument("oq::io::npy_to_matrix: " + std::to_string(a.data.size()) + " data bytes, but shape " +
                                detail_npy::shape_repr(a.shape) + " of " + std::string(dtype_name(a.dtype)) +
                                " needs " + std::to_string(count) + " elements of " + std::to_string(itemsize) +
                                " bytes");
  }
  auto m = detail_npy::matrix_of_shape<T>(a.shape, "oq::io::npy_to_matrix");
  detail_npy::convert_elements(a.dtype, a.data.data(), count, m.data());
  return m;
}

/// read_npy + npy_to_matrix, without holding the file's bytes and the matrix
/// at once: the data is read straight into the matrix when the layouts agree
/// ('<f4' as float, '<f8' as double), else converted from 1 MiB chunks; a
/// Fortran-order array is read whole, then reordered into the matrix. So peak
/// memory is the matrix (plus the stored bytes for Fortran order), where
/// read_npy then npy_to_matrix holds the array and the matrix together
/// (issue 23). Throws as read_npy and npy_to_matrix do.
template <class T = float>
Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> read_npy_matrix(const std::filesystem::path& path) {
  static_assert(std::is_floating_point_v<T>, "read_npy_matrix converts to float or double");
  const detail_file::RegularFile file(path, "oq::io::read_npy_matrix");
  const detail_npy::Layout layout = detail_npy::read_layout(file, path.string());
  auto m = detail_npy::matrix_of_shape<T>(layout.shape, "oq::io::read_npy_matrix");
  if (layout.fortran_order && layout.shape.size() >= 2) {
    std::vector<std::byte> stored(layout.data_bytes);
    file.read_at(layout.data_offset, stored.data(), stored.size());
    detail_npy::for_each_fortran_in_c_order(
        stored, layout.shape, layout.count, layout.itemsize, [&](std::size_t i, const std::byte* element) {
          detail_npy::convert_elements(layout.dtype, element, 1, m.data() + i);
        });
  } else if ((std::is_same_v<T, float> && layout.dtype == DType::kF32) ||
             (std::is_same_v<T, double> && layout.dtype == DType::kF64)) {
    file.read_at(layout.data_offset, m.data(), layout.data_bytes);
  } else {
    constexpr std::size_t kChunkBytes = std::size_t{1} << 20;
    const std::size_t per_chunk = std::max<std::size_t>(1, kChunkBytes / layout.itemsize);
    std::vector<std::byte> chunk(std::min(layout.count, per_chunk) * layout.itemsize);
    for (std::size_t done = 0; done < layout.count;) {
      const std::size_t n = std::min(per_chunk, layout.count - done);
      file.read_at(layout.data_offset + done * layout.itemsize, chunk.data(), n * layout.itemsize);
      detail_npy::convert_elements(layout.dtype, chunk.data(), n, m.data() + done);
      done += n;
    }
  }
  return m;
}

/// A 2-D NpyArray of shape (rows, cols) holding x in C order whatever x's
/// storage order, each entry stored as `stored` through store_element (so
/// integer dtypes throw std::domain_error for a non-integral or out-of-range
/// entry instead of truncating it).
template <class Derived>
NpyArray make_npy(const Eigen::DenseBase<Derived>& x, DType stored = DType::kF32) {
  // Products and other expressions without coefficient access are evaluated
  // once; a plain matrix is used in place (eval() returns a reference to it).
  const auto& e = x.derived().eval();
  NpyArray a;
  a.dtype = stored;
  a.shape = {static_cast<std::size_t>(e.rows()), static_cast<std::size_t>(e.cols())};
  const std::size_t itemsize = dtype_size(stored);
  a.data.resize(static_cast<std::size_t>(e.size()) * itemsize);
  if (e.size() == 0) return a;  // (huge, 0) must not loop over its rows
  std::byte* dst = a.data.data();
  for (Eigen::Index r = 0; r < e.rows(); ++r) {
    for (Eigen::Index c = 0; c < e.cols(); ++c) {
      store_element(stored, static_cast<double>(e(r, c)), dst);
      dst += itemsize;
    }
  }
  return a;
}

/// The bytes np.save writes for `a` (C order): version 1.0, or 2.0 when the
/// header does not fit 1.0's u16 length. Throws std::invalid_argument for
/// BF16 (NumPy has no bfloat16 dtype) and when data does not match shape.
inline std::vector<std::byte> npy_bytes(const NpyArray& a) {
  const std::string_view descr = detail_npy::descr_of(a.dtype);
  if (descr.empty()) {
    throw std::invalid_argument("oq::io::npy_bytes: " + std::string(dtype_name(a.dtype)) +
                                " has no NumPy dtype (NumPy has no bfloat16); convert to F32 or F16 first");
  }
  const std::size_t count = a.size();
  std::size_t needed = 0;
  if (!detail_npy::checked_mul(count, dtype_size(a.dtype), needed) || needed != a.data.size()) {
    throw std::invalid_argument("oq::io::npy_bytes: shape " + detail_npy::shape_repr(a.shape) + " of " +
                                std::string(dtype_name(a.dtype)) + " needs " + std::to_string(count) +
                                " elements, but data holds " + std::to_string(a.data.size()) + " bytes");
  }
  const std::string dict = detail_npy::header_dict(descr, a.shape);
  // numpy/lib/format.py, _wrap_header: hlen = len(dict) + 1 ('\n');
  // padlen = 64 − (preamble + hlen) % 64, always ≥ 1 space (a full 64 when
  // already aligned, as NumPy does).
  auto header_len_for = [&](std::size_t preamble) {
    const std::size_t hlen = dict.size() + 1;
    return hlen + (detail_npy::kAlign - (preamble + hlen) % detail_npy::kAlign);
  };
  unsigned major = 1;
  std::size_t preamble = 10, header_len = header_len_for(10);
  if (header_len > detail_npy::kV1HeaderMax) {
    major = 2;
    preamble = 12;
    header_len = header_len_for(12);
    if (header_len > std::numeric_limits<std::uint32_t>::max()) {
      throw std::invalid_argument("oq::io::npy_bytes: a header of " + std::to_string(header_len) +
                                  " bytes does not fit the format's 32-bit length");
    }
  }
  std::vector<std::byte> out;
  out.reserve(preamble + header_len + a.data.size());
  auto put = [&out](unsigned char c) { out.push_back(static_cast<std::byte>(c)); };
  for (unsigned char c : detail_npy::kMagic) put(c);
  put(static_cast<unsigned char>(major));
  put(0);
  for (std::size_t i = 0; i < preamble - 8; ++i) put(static_cast<unsigned char>((header_len >> (8 * i)) & 0xFF));
  for (char c : dict) put(static_cast<unsigned char>(c));
  for (std::size_t i = dict.size() + 1; i < header_len; ++i) put(' ');
  put('\n');
  out.insert(out.end(), a.data.begin(), a.data.end());
  return out;
}

/// Writes npy_bytes(a) to `path`. Throws std::runtime_error naming the path
/// when the file cannot be opened or written.
inline void write_npy(const std::filesystem::path& path, const NpyArray& a) {
  const std::vector<std::byte> bytes = npy_bytes(a);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("oq::io::write_npy: cannot open '" + path.string() + "' for writing");
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw std::runtime_error("oq::io::write_npy: writing '" + path.string() + "' failed");
}

/// Writes x as a 2-D array of shape (rows, cols), C order, elements stored as
/// `stored` (default '<f4'): write_npy(path, make_npy(x, stored)).
template <class Derived>
void write_npy(const std::filesystem::path& path, const Eigen::DenseBase<Derived>& x, DType stored = DType::kF32) {
  write_npy(path, make_npy(x, stored));
}

}  // namespace oq::io
