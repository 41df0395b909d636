// oq/io/safetensors.hpp: safetensors files — a strict, memory-mapping reader
// and a writer whose output is laid out the way the reference library lays it.
//
// Why: Hugging Face checkpoints (LLaMA, Mistral, ...) are safetensors files;
// oq reads their weights to quantize them and writes quantized tensors back.
//
// Format (https://huggingface.co/docs/safetensors/index, and the reference
// implementation, the Rust crate `safetensors`, src/tensor.rs):
//
//   offset   size  field
//   0        8     N, little-endian u64: the size of the header
//   8        N     the header: a UTF-8 JSON object, which MUST begin with '{'
//                  and MAY be padded at the end with spaces (0x20)
//   8 + N    ...   the data section ("byte-buffer"): every tensor's elements,
//                  little-endian, C order (row-major)
//
// The header maps each tensor name to
//   {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}
// with offsets in bytes relative to the start of the data section, and may
// hold one special key "__metadata__": a map of strings to strings.
//
// Reading is strict: every rule the reference implementation enforces, and a
// few more it leaves to serde's leniency, throws oq::io::FormatError naming the
// file (or "<memory>"), the tensor and what was expected:
//   - the file is shorter than the 8-byte length, N is larger than what
//     follows it, or N exceeds 100,000,000 bytes (the crate's MAX_HEADER_SIZE,
//     which protects a reader from allocating for a forged length);
//   - the header does not start with '{', is not valid JSON (UTF-8 included;
//     after the object only whitespace may follow: the spec's spaces, or any
//     JSON whitespace, which the crate's serde_json accepts as well) or not an
//     object, or repeats a key anywhere (see io/json.hpp: JSON parsers keep
//     the last of two equal keys silently, so two readers could disagree);
//   - an entry is not an object of exactly "dtype" (a string naming a dtype oq
//     knows, io/dtype.hpp), "shape" (an array of non-negative integers) and
//     "data_offsets" (an array of two non-negative integers);
//   - product(shape) · itemsize overflows, begin > end, end lies past the data
//     section, or end − begin ≠ product(shape) · itemsize;
//   - "__metadata__" is not an object of strings (null is accepted, as the
//     crate's Option<HashMap<String, String>> accepts it);
//   - sorted by (begin, end), the tensors do not tile the data section
//     contiguously from byte 0 to its very end: an overlap, a hole or
//     trailing bytes (the crate's Metadata::validate and its
//     MetadataIncompleteBuffer check).
//   - oq's own limits, beyond the crate's, which bound the memory a header
//     can make a reader spend: a shape of more than 1024 dimensions, and
//     "__metadata__" of more than 65,536 entries (PyTorch and NumPy tensors
//     have at most 64 dimensions; real metadata holds a handful of strings).
// Empty tensors (a 0 in the shape, begin == end) and scalars (shape [], one
// element) are valid. FP8 dtypes (F8_E4M3, F8_E5M2) are not supported by oq
// and are reported as unknown.
//
// Cost of reading (issue 23): time linear in the header's length (a 99 MB
// header of 1.4 million tensors in 3 s on one core; bench/RESULTS.md), and
// memory in proportion to it: entries are checked one at a time as the JSON
// parser reads them (io/json.hpp's StrictDomBuilder, one entry at a time)
// and only their TensorInfo is kept: about 120 bytes per tensor with the
// lookup index, 1.7 times the header for 71-byte entries ("t123456" of F32
// [1]). So an error in an entry is reported before a syntax error later in
// the header. A file opened by path gives the header's mapped pages back as
// the parser passes them (MappedFile::release, every MiB), so that they do
// not stay resident beside what is parsed from them: peak memory 1.6 times
// a 100 MB header-only file, against 2.6 when they stayed.
// Error messages name tensors and quote values of a header that parses as
// JSON, but never quote text that does not (see io/json.hpp), nor the bytes
// of the 8-byte length or of the header's first byte: a shard named by an
// untrusted index may be any file (io/checkpoint.hpp).
//
// Writing (SafetensorsWriter) follows the crate's serializer: compact JSON
// ({"__metadata__":{...},"name":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}),
// "__metadata__" first and only when there is metadata, the header padded
// with spaces to a multiple of 8 bytes so that the data section starts 8-byte
// aligned, and the tensors' data one after the other. Tensors keep the order
// they were added in (the crate sorts by dtype alignment, then by name; any
// order is valid).
//
//   oq::io::SafetensorsFile f("model.safetensors");
//   auto w = f.matrix<float>("model.layers.0.mlp.up_proj.weight");  // [out, in] → out × in, row-major
//   oq::io::SafetensorsWriter out;
//   out.add("w", w, oq::io::DType::kBF16);
//   out.write("quantized.safetensors");
#pragma once

#include <oq/core/float16.hpp>
#include <oq/detail/checked_size.hpp>
#include <oq/io/dtype.hpp>
#include <oq/io/format_error.hpp>
#include <oq/io/json.hpp>
#include <oq/io/mapped_file.hpp>

#include <Eigen/Core>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace oq::io {

/// One tensor of a safetensors file, as its header describes it.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::size_t> shape;  ///< empty for a scalar
  std::size_t begin = 0;           ///< byte offset of the first element, relative to the data section
  std::size_t end = 0;             ///< one past the last byte, relative to the data section

  /// Number of elements: the product of shape (1 for a scalar, 0 when a
  /// dimension is 0). Throws std::invalid_argument if the product overflows,
  /// which only a hand-built TensorInfo can do (the parser rejects it).
  std::size_t size() const;

  bool operator==(const TensorInfo&) const = default;
};

/// A parsed and validated header.
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;              ///< sorted by begin (then end, then name)
  std::map<std::string, std::string> metadata;  ///< "__metadata__", empty when absent
  std::size_t data_offset = 8;                  ///< 8 + N: where the data section starts in the file

  bool operator==(const SafetensorsHeader&) const = default;
};

namespace detail_safetensors {

/// The reference implementation's MAX_HEADER_SIZE (safetensors/src/tensor.rs).
inline constexpr std::uint64_t kMaxHeaderSize = 100'000'000;
/// The writer pads the header to a multiple of this (the crate's serializer:
/// "Force alignment to 8 bytes").
inline constexpr std::size_t kHeaderAlign = 8;
inline constexpr std::string_view kMetadataKey = "__metadata__";
/// oq's limits beyond the crate's, so that reading a header costs memory in
/// proportion to its size (issue 23; see the top of this file). No checkpoint
/// comes near them: PyTorch and NumPy tensors have at most 64 dimensions, and
/// the metadata of real files holds a handful of strings.
inline constexpr std::size_t kMaxRank = 1024;
inline constexpr std::size_t kMaxMetadataEntries = 65536;
/// Collecting an entry stops past this many JSON values, so a forged entry
/// (an array of millions of numbers) is refused before it is held in memory.
/// A valid entry holds kMaxRank + 6 at most (its object, the dtype string,
/// the shape array and its dimensions, the offsets array and its two
/// numbers); the slack lets a shape just past kMaxRank be refused as such.
inline constexpr std::size_t kMaxEntryValues = 2 * kMaxRank;
/// The shortest entry a header can hold, 50 bytes plus a separating comma:
/// "":{"dtype":"U8","shape":[],"data_offsets":[0,1]}. The tensors of an
/// N-byte header are reserved for at most N / this many entries up front
/// (address space only: pages of the reservation that no entry fills are
/// never touched), so that the vector never doubles while the header is read.
inline constexpr std::size_t kMinEntryBytes = 51;

using detail::checked_count;  // oq/detail/checked_size.hpp
using detail::checked_mul;

/// "[2, 3]", "[]".
inline std::string shape_str(std::span<const std::size_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// Both built piecewise: "[" + std::string&& trips GCC 12's -Wrestrict false
// positive (GCC bug 105329) at -O3 where they are inlined.
inline std::string interval_str(std::size_t begin, std::size_t end, char close) {
  std::string s = "[";
  s += std::to_string(begin);
  s += ", ";
  s += std::to_string(end);
  s += close;
  return s;
}

/// data_offsets as the header writes them: "[0, 8]".
inline std::string offsets_str(std::size_t begin, std::size_t end) { return interval_str(begin, end, ']'); }

/// A half-open byte range: "[0, 8)".
inline std::string range_str(std::size_t begin, std::size_t end) { return interval_str(begin, end, ')'); }

inline std::string prefix(std::string_view source) {
  return "oq::io::parse_safetensors_header: " + std::string(source) + ": ";
}

[[noreturn]] inline void fail(std::string_view source, const std::string& what) {
  throw FormatError(prefix(source) + what);
}

[[noreturn]] inline void fail_tensor(std::string_view source, const std::string& name, const std::string& what) {
  fail(source, "tensor '" + detail_json::printable(name) + "': " + what);
}

/// A JSON integer that is ≥ 0 and fits std::size_t, or nullopt.
inline std::optional<std::size_t> as_size(const nlohmann::json& v) {
  if (!v.is_number_unsigned()) return std::nullopt;  // negative, fractional, or beyond 64 bits (a double)
  const auto u = v.get<nlohmann::json::number_unsigned_t>();
  if constexpr (sizeof(nlohmann::json::number_unsigned_t) > sizeof(std::size_t)) {
    if (u > std::numeric_limits<std::size_t>::max()) return std::nullopt;
  }
  return static_cast<std::size_t>(u);
}

/// One header entry → TensorInfo, checking its own consistency and that it
/// lies inside a data section of `data_size` bytes.
inline TensorInfo parse_entry(const std::string& name, const nlohmann::json& entry, std::size_t data_size,
                              std::string_view source) {
  using detail_json::describe;
  static constexpr std::string_view kExpected =
      "(expected an object with exactly \"dtype\", \"shape\" and \"data_offsets\")";
  if (!entry.is_object()) fail_tensor(source, name, "the entry is " + describe(entry) + " " + std::string(kExpected));
  for (const auto& [field, value] : entry.items()) {
    (void)value;
    if (field != "dtype" && field != "shape" && field != "data_offsets") {
      fail_tensor(source, name, "unknown field '" + detail_json::printable(field) + "' " + std::string(kExpected));
    }
  }
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(field)) {
      fail_tensor(source, name, "the field '" + std::string(field) + "' is missing " + std::string(kExpected));
    }
  }

  TensorInfo t;
  t.name = name;

  const nlohmann::json& dtype = entry["dtype"];
  if (!dtype.is_string()) {
    fail_tensor(source, name, "\"dtype\" is " + describe(dtype) + " (expected a string such as \"F32\")");
  }
  const auto& dtype_text = dtype.get_ref<const std::string&>();
  bool known = false;
  for (DType d : kAllDTypes) {
    if (dtype_name(d) == dtype_text) {
      t.dtype = d;
      known = true;
    }
  }
  if (!known) {
    std::string accepted;
    for (DType d : kAllDTypes) {
      if (!accepted.empty()) accepted += ", ";
      accepted += dtype_name(d);
    }
    fail_tensor(source, name,
                "unknown dtype \"" + detail_json::printable(dtype_text) + "\" (expected one of " + accepted + ")");
  }

  const nlohmann::json& shape = entry["shape"];
  if (!shape.is_array()) {
    fail_tensor(source, name, "\"shape\" is " + describe(shape) + " (expected an array of non-negative integers)");
  }
  if (shape.size() > kMaxRank) {
    fail_tensor(source, name,
                "\"shape\" has " + std::to_string(shape.size()) + " dimensions (expected at most " +
                    std::to_string(kMaxRank) + ", oq's limit)");
  }
  t.shape.reserve(shape.size());
  for (std::size_t i = 0; i < shape.size(); ++i) {
    const auto d = as_size(shape[i]);
    if (!d) {
      fail_tensor(source, name,
                  "shape[" + std::to_string(i) + "] is " + describe(shape[i]) +
                      " (expected a non-negative integer that fits 64 bits)");
    }
    t.shape.push_back(*d);
  }

  const nlohmann::json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) {
    fail_tensor(source, name,
                "\"data_offsets\" is " + describe(offsets) + " (expected an array [begin, end] of two integers)");
  }
  for (std::size_t i = 0; i < 2; ++i) {
    if (!as_size(offsets[i])) {
      fail_tensor(source, name,
                  "data_offsets[" + std::to_string(i) + "] is " + describe(offsets[i]) +
                      " (expected a non-negative integer that fits 64 bits)");
    }
  }
  t.begin = *as_size(offsets[0]);
  t.end = *as_size(offsets[1]);

  const std::size_t itemsize = dtype_size(t.dtype);
  std::size_t count = 0, nbytes = 0;
  if (!checked_count(t.shape, count) || !checked_mul(count, itemsize, nbytes)) {
    fail_tensor(source, name,
                "shape " + shape_str(t.shape) + " of " + dtype_text + " has more bytes than size_t can count");
  }
  const std::string offsets_text = "data_offsets " + offsets_str(t.begin, t.end);
  if (t.begin > t.end) fail_tensor(source, name, offsets_text + " has begin > end (expected begin <= end)");
  if (t.end > data_size) {
    fail_tensor(source, name,
                offsets_text + " ends past the data section, which has " + std::to_string(data_size) + " bytes");
  }
  if (t.end - t.begin != nbytes) {
    fail_tensor(source, name,
                offsets_text + " spans " + std::to_string(t.end - t.begin) + " bytes, but shape " +
                    shape_str(t.shape) + " of " + dtype_text + " needs " + std::to_string(count) + " × " +
                    std::to_string(itemsize) + " = " + std::to_string(nbytes));
  }
  return t;
}

/// Elements of `dtype` at `src` → dst[0..count), as T. Fast paths for what
/// checkpoints hold (F32, BF16, F16, F64): a memcpy when the layout is the
/// same, a direct bit conversion otherwise; every other dtype goes through
/// load_element (via double, so I64/U64 beyond 2^53 are rounded, and rounded
/// once more when T is float). `src` may be unaligned (the data section of a
/// file starts wherever its header ends): every load is a memcpy.
template <class T>
void convert_elements(DType dtype, const std::byte* src, std::size_t count, T* dst) {
  static_assert(std::is_floating_point_v<T>, "safetensors tensors are read as float or double");
  if (count == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    if (dtype == DType::kF32) {
      std::memcpy(dst, src, count * sizeof(float));
      return;
    }
  }
  if constexpr (std::is_same_v<T, double>) {
    if (dtype == DType::kF64) {
      std::memcpy(dst, src, count * sizeof(double));
      return;
    }
  }
  switch (dtype) {
    case DType::kBF16:
      for (std::size_t i = 0; i < count; ++i) {
        std::uint16_t bits;
        std::memcpy(&bits, src + 2 * i, 2);
        dst[i] = static_cast<T>(core::bf16_bits_to_float(bits));
      }
      return;
    case DType::kF16:
      for (std::size_t i = 0; i < count; ++i) {
        std::uint16_t bits;
        std::memcpy(&bits, src + 2 * i, 2);
        dst[i] = static_cast<T>(core::f16_bits_to_float(bits));
      }
      return;
    case DType::kF32:
      for (std::size_t i = 0; i < count; ++i) {
        float f;
        std::memcpy(&f, src + 4 * i, 4);
        dst[i] = static_cast<T>(f);
      }
      return;
    default: {
      const std::size_t itemsize = dtype_size(dtype);
      for (std::size_t i = 0; i < count; ++i) dst[i] = static_cast<T>(load_element(dtype, src + i * itemsize));
      return;
    }
  }
}

/// "__metadata__" → h.metadata (null is no metadata).
inline void read_metadata(const nlohmann::json& value, SafetensorsHeader& h, std::string_view source) {
  if (value.is_null()) return;
  if (!value.is_object()) {
    fail(source, "\"__metadata__\" is " + detail_json::describe(value) +
                     " (expected an object mapping strings to strings)");
  }
  for (const auto& [mkey, mvalue] : value.items()) {
    if (!mvalue.is_string()) {
      fail(source, "\"__metadata__\" value of key '" + detail_json::printable(mkey) + "' is " +
                       detail_json::describe(mvalue) + " (expected a string)");
    }
    h.metadata.emplace(mkey, mvalue.get<std::string>());
  }
}

/// SAX handler for the header object: each top-level value (a tensor's entry
/// or "__metadata__") is collected on its own as a small nlohmann::json
/// (StrictDomBuilder, at most kMaxEntryValues values for an entry), checked
/// and turned into a TensorInfo, then dropped. So the whole header is never
/// held as a json value (about 10 times its size in memory), and time is
/// linear in its length. Duplicate keys inside an entry or the metadata are
/// refused by the builder; duplicate tensor names are found afterwards by
/// sorting (find_duplicate_name), which costs 4 bytes per tensor instead of
/// a set of names.
class HeaderReader {
 public:
  using json = nlohmann::json;

  HeaderReader(SafetensorsHeader& h, std::size_t data_size, std::string_view source)
      : h_(h), data_size_(data_size), source_(source), json_prefix_(prefix(source) + "header: ") {}

  const std::string& json_prefix() const noexcept { return json_prefix_; }

  // Each event goes to the builder of the value being collected, if any;
  // a scalar at the top level is a whole value by itself.
  bool null() { return value_ ? forwarded(value_->null()) : finish(json(nullptr)); }
  bool boolean(bool v) { return value_ ? forwarded(value_->boolean(v)) : finish(json(v)); }
  bool number_integer(json::number_integer_t v) {
    return value_ ? forwarded(value_->number_integer(v)) : finish(json(v));
  }
  bool number_unsigned(json::number_unsigned_t v) {
    return value_ ? forwarded(value_->number_unsigned(v)) : finish(json(v));
  }
  bool number_float(json::number_float_t v, const json::string_t& text) {
    return value_ ? forwarded(value_->number_float(v, text)) : finish(json(v));
  }
  bool string(json::string_t& v) { return value_ ? forwarded(value_->string(v)) : finish(json(std::move(v))); }
  bool binary(json::binary_t& v) { return value_ ? forwarded(value_->binary(v)) : finish(json(std::move(v))); }

  bool start_object(std::size_t n) {
    if (value_) return forwarded(value_->start_object(n));
    if (!in_top_) {
      in_top_ = true;  // the header's own object (it starts with '{': checked before parsing)
      return true;
    }
    return begin_value().start_object(n);
  }
  bool start_array(std::size_t n) { return value_ ? forwarded(value_->start_array(n)) : begin_value().start_array(n); }
  bool end_object() {
    if (value_) return forwarded(value_->end_object());
    in_top_ = false;
    return true;
  }
  bool end_array() { return forwarded(value_->end_array()); }  // arrays only occur inside collected values

  bool key(json::string_t& k) {
    if (value_) return forwarded(value_->key(k));
    if (k == kMetadataKey) {
      if (seen_metadata_) duplicate(k);
      seen_metadata_ = true;
    }
    key_ = std::move(k);
    return true;
  }

  bool parse_error(std::size_t /*position*/, const std::string& /*last token*/, const json::exception& e) {
    throw FormatError(json_prefix_ + "not valid JSON: " + detail_json::parse_error_text(e));
  }

  [[noreturn]] void duplicate(const std::string& name) const {
    throw FormatError(json_prefix_ + "duplicate key '" + detail_json::printable(name) +
                      "' in the top-level object (expected unique keys; JSON parsers would silently keep only " +
                      "the last one)");
  }

 private:
  // After an event inside a collected value: when its outermost container
  // has closed, the value is checked and dropped.
  bool forwarded(bool /*builders always go on*/) {
    if (value_->done()) {
      json v = value_->take();
      value_.reset();
      finish(std::move(v));
    }
    return true;
  }

  detail_json::StrictDomBuilder& begin_value() {
    const bool metadata = key_ == kMetadataKey;
    const std::size_t max_values = metadata ? 1 + kMaxMetadataEntries : kMaxEntryValues;
    std::string too_many = metadata ? prefix(source_) + "\"__metadata__\" holds more than " + std::to_string(max_values) +
                                          " JSON values (expected an object of at most " +
                                          std::to_string(kMaxMetadataEntries) + " strings, oq's limit)"
                                    : prefix(source_) + "tensor '" + detail_json::printable(key_) +
                                          "': the entry holds more than " +
                                          std::to_string(max_values) +
                                          " JSON values (expected an object with exactly \"dtype\", \"shape\" " +
                                          "of at most " + std::to_string(kMaxRank) +
                                          " dimensions and \"data_offsets\")";
    std::string path = "/";
    path += key_;
    value_.emplace(json_prefix_, std::move(path), /*base_depth=*/1, max_values, std::move(too_many));
    return *value_;
  }

  bool finish(json&& v) {
    if (key_ == kMetadataKey) {
      read_metadata(v, h_, source_);
    } else {
      h_.tensors.push_back(parse_entry(key_, v, data_size_, source_));
    }
    return true;
  }

  SafetensorsHeader& h_;
  std::size_t data_size_;
  std::string_view source_;
  std::string json_prefix_;
  std::string key_;
  std::optional<detail_json::StrictDomBuilder> value_;
  bool in_top_ = false;
  bool seen_metadata_ = false;
};

/// A tensor whose name another tensor has too, or null: names sorted through
/// a permutation of 32-bit indices (a header holds at most 100 MB /
/// kMinEntryBytes entries), then compared with their neighbours.
inline const TensorInfo* find_duplicate_name(const std::vector<TensorInfo>& tensors) {
  static_assert(kMaxHeaderSize / kMinEntryBytes < std::numeric_limits<std::uint32_t>::max());
  std::vector<std::uint32_t> order(tensors.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<std::uint32_t>(i);
  std::sort(order.begin(), order.end(),
            [&tensors](std::uint32_t a, std::uint32_t b) { return tensors[a].name < tensors[b].name; });
  for (std::size_t i = 1; i < order.size(); ++i) {
    if (tensors[order[i]].name == tensors[order[i - 1]].name) return &tensors[order[i]];
  }
  return nullptr;
}

/// s as a JSON string literal (quotes, escapes). Throws std::invalid_argument
/// naming `what` when s is not valid UTF-8 (a header must be UTF-8).
inline std::string json_string(const std::string& s, std::string_view what) {
  try {
    return nlohmann::json(s).dump();
  } catch (const nlohmann::json::exception&) {
    throw std::invalid_argument("oq::io::SafetensorsWriter: " + std::string(what) + " is not valid UTF-8");
  }
}

}  // namespace detail_safetensors

inline std::size_t TensorInfo::size() const {
  std::size_t n = 0;
  if (!detail_safetensors::checked_count(shape, n)) {
    throw std::invalid_argument("oq::io::TensorInfo::size: the product of shape " +
                                detail_safetensors::shape_str(shape) + " of tensor '" + name + "' overflows size_t");
  }
  return n;
}

namespace detail_safetensors {

/// parse_safetensors_header, with `release` (when not null) called as
/// detail_json::sax_parse_strict's releasing form calls it, with offsets in
/// the file: the passes over the header are done with file[0, n).
inline SafetensorsHeader parse_header(std::span<const std::byte> file, std::string_view source,
                                      const std::function<void(std::size_t)>* release) {
  namespace d = detail_safetensors;
  if (file.size() < 8) {
    d::fail(source, "file is " + std::to_string(file.size()) +
                        " bytes, too short for the 8-byte little-endian header length");
  }
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < 8; ++i) n |= static_cast<std::uint64_t>(file[i]) << (8 * i);
  // The length is the file's first 8 bytes and the first byte of the header
  // the next: neither is quoted (see the top of this file).
  if (n > d::kMaxHeaderSize) {
    d::fail(source, "the 8-byte header length exceeds the limit of " + std::to_string(d::kMaxHeaderSize) +
                        " bytes (the safetensors crate's MAX_HEADER_SIZE; likely not a safetensors file)");
  }
  if (n > file.size() - 8) {
    d::fail(source, "the 8-byte header length runs past the end of the file (" + std::to_string(file.size() - 8) +
                        " bytes follow it: a truncated file, or not a safetensors file)");
  }
  const auto header_size = static_cast<std::size_t>(n);
  const std::string_view text(reinterpret_cast<const char*>(file.data() + 8), header_size);
  if (text.empty() || text.front() != '{') {
    d::fail(source, text.empty() ? std::string("the header is empty (expected a JSON object starting with '{')")
                                 : std::string("the header does not start with '{' (the spec requires the header "
                                               "to begin with 0x7B; likely not a safetensors file)"));
  }
  SafetensorsHeader h;
  h.data_offset = 8 + header_size;
  const std::size_t data_size = file.size() - h.data_offset;
  h.tensors.reserve(header_size / d::kMinEntryBytes + 1);
  // Trailing whitespace (the spec's space padding; serde_json in the crate
  // accepts any JSON whitespace there) is accepted by the JSON parser itself.
  d::HeaderReader reader(h, data_size, source);
  if (release != nullptr) {
    detail_json::sax_parse_strict(text, reader, reader.json_prefix(), [release](std::size_t done) { (*release)(8 + done); });
  } else {
    detail_json::sax_parse_strict(text, reader, reader.json_prefix());
  }
  if (const TensorInfo* dup = d::find_duplicate_name(h.tensors)) reader.duplicate(dup->name);

  // The crate sorts by data_offsets and requires each tensor to start where
  // the previous one ended, the first at 0 and the last to end at the end of
  // the file: together, no overlap, no hole, no trailing bytes. Ties (empty
  // tensors at one offset) are ordered by name, so the order is deterministic.
  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  std::size_t cursor = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : h.tensors) {
    if (t.begin < cursor) {
      d::fail_tensor(source, t.name,
                     "data_offsets " + d::offsets_str(t.begin, t.end) + " overlap those of tensor '" +
                         detail_json::printable(previous->name) + "' " +
                         d::offsets_str(previous->begin, previous->end) +
                         " (expected the tensors to tile the data section without overlapping)");
    }
    if (t.begin > cursor) {
      d::fail(source, "bytes " + d::range_str(cursor, t.begin) + " of the data section belong to no tensor (a hole " +
                          "before tensor '" + detail_json::printable(t.name) + "'; expected the tensors to tile the data section " +
                          "contiguously from byte 0)");
    }
    cursor = t.end;
    previous = &t;
  }
  if (cursor != data_size) {
    d::fail(source, "the data section has " + std::to_string(data_size) + " bytes, but the tensors cover only " +
                        d::range_str(0, cursor) + " (expected the tensors to cover it to its end, " +
                        "with no trailing bytes)");
  }
  return h;
}

}  // namespace detail_safetensors

/// Parses and validates the header of a safetensors file held in `file` (the
/// whole file: the data section's size is part of what is checked). `source`
/// names the file in error messages. Throws FormatError for every violation
/// listed at the top of this file; never reads outside `file`, and allocates
/// in proportion to the header only.
inline SafetensorsHeader parse_safetensors_header(std::span<const std::byte> file,
                                                  std::string_view source = "<memory>") {
  return detail_safetensors::parse_header(file, source, nullptr);
}

/// A safetensors file: the whole file memory-mapped (or held in memory), its
/// validated header, and each tensor as bytes or converted to an Eigen matrix.
/// Move-only. Lookups by name are O(log n). Const member functions may be
/// called from several threads at once.
class SafetensorsFile {
 public:
  template <class T>
  using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  template <class T>
  using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

  /// Memory-maps and validates `path`. Throws std::system_error (a
  /// std::runtime_error) when it cannot be mapped, FormatError when it is
  /// malformed (naming the path).
  explicit SafetensorsFile(const std::filesystem::path& path)
      : mapped_(std::in_place, path), source_(path.string()) {
    init();
  }

  /// Validates `bytes` (a whole file) and keeps them. `source` names it in errors.
  static SafetensorsFile from_bytes(std::vector<std::byte> bytes, std::string source = "<memory>") {
    return SafetensorsFile(std::move(bytes), std::move(source));
  }

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  SafetensorsFile(SafetensorsFile&&) noexcept = default;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept = default;
  ~SafetensorsFile() = default;

  const SafetensorsHeader& header() const noexcept { return header_; }
  /// Sorted by begin, as in the header.
  const std::vector<TensorInfo>& tensors() const noexcept { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const noexcept { return header_.metadata; }
  /// The path, or the name given to from_bytes.
  const std::string& source() const noexcept { return source_; }
  /// The whole file.
  std::span<const std::byte> file_bytes() const noexcept {
    return mapped_ ? mapped_->bytes() : std::span<const std::byte>(owned_);
  }

  bool contains(std::string_view name) const { return find(name) != nullptr; }

  /// Throws std::invalid_argument "tensor 'x' not found in <file>".
  const TensorInfo& info(std::string_view name) const {
    const TensorInfo* t = find(name);
    if (t == nullptr) {
      throw std::invalid_argument("oq::io::SafetensorsFile: tensor '" + std::string(name) + "' not found in " +
                                  source_);
    }
    return *t;
  }

  /// The tensor's raw little-endian elements, C order.
  std::span<const std::byte> bytes(std::string_view name) const {
    const TensorInfo& t = info(name);
    return file_bytes().subspan(header_.data_offset + t.begin, t.end - t.begin);
  }

  /// A 2-D tensor as a rows × cols row-major matrix (PyTorch's nn.Linear
  /// weight [out, in] is row-major: W as oq's y = X·Wᵀ wants it); a 1-D
  /// tensor [n] as 1 × n. Any dtype is converted to T (float or double; see
  /// detail_safetensors::convert_elements). Throws std::invalid_argument for
  /// other ranks, naming the shape, or when a dimension exceeds Eigen::Index.
  template <class T = float>
  Matrix<T> matrix(std::string_view name) const {
    const TensorInfo& t = info(name);
    Matrix<T> m = matrix_of_shape<T>(t, "matrix");
    detail_safetensors::convert_elements(t.dtype, data_of(t), t.size(), m.data());
    return m;
  }

  /// Every element of a tensor of dtype `dtype`, C order, as stored: the
  /// bytes copied into T with no conversion (std::int32_t for I32's packed
  /// words, std::uint16_t for F16 or BF16 bits, std::int8_t for I8, …; the
  /// file is little-endian, as the host is). Throws std::invalid_argument
  /// when the tensor's dtype is not `dtype`, or T's size is not its size.
  template <class T>
  std::vector<T> stored_elements(std::string_view name, DType dtype) const {
    const TensorInfo& t = info(name);
    check_stored<T>(t, dtype, "stored_elements");
    std::vector<T> out(t.size());
    if (!out.empty()) std::memcpy(out.data(), data_of(t), out.size() * sizeof(T));
    return out;
  }

  /// stored_elements as matrix() shapes them (2-D: rows × cols, 1-D: 1 × n).
  template <class T>
  Matrix<T> stored_matrix(std::string_view name, DType dtype) const {
    const TensorInfo& t = info(name);
    check_stored<T>(t, dtype, "stored_matrix");
    Matrix<T> m = matrix_of_shape<T>(t, "stored_matrix");
    if (m.size() > 0) std::memcpy(m.data(), data_of(t), static_cast<std::size_t>(m.size()) * sizeof(T));
    return m;
  }

  /// A tensor with at most one dimension ≠ 1 ([n], [1, n], [n, 1, 1], a
  /// scalar) as a column vector of its size(). Throws std::invalid_argument
  /// naming the shape otherwise.
  template <class T = float>
  Vector<T> vector(std::string_view name) const {
    const TensorInfo& t = info(name);
    if (std::count_if(t.shape.begin(), t.shape.end(), [](std::size_t d) { return d != 1; }) > 1) {
      throw std::invalid_argument("oq::io::SafetensorsFile::vector: tensor '" + t.name + "' in " + source_ +
                                  " has shape " + detail_safetensors::shape_str(t.shape) +
                                  " (expected at most one dimension other than 1)");
    }
    check_index(t, "vector");
    Vector<T> v(static_cast<Eigen::Index>(t.size()));
    detail_safetensors::convert_elements(t.dtype, data_of(t), t.size(), v.data());
    return v;
  }

  /// Every element of a tensor of any rank, C order, converted to T.
  template <class T = float>
  std::vector<T> elements(std::string_view name) const {
    const TensorInfo& t = info(name);
    std::vector<T> out(t.size());
    detail_safetensors::convert_elements(t.dtype, data_of(t), out.size(), out.data());
    return out;
  }

 private:
  SafetensorsFile(std::vector<std::byte> bytes, std::string source)
      : owned_(std::move(bytes)), source_(std::move(source)) {
    init();
  }

  void init() {
    if (mapped_) {
      // The header's pages are let go as the parser passes them, and the
      // rest of them after it: the parsed header holds all it needs, and a
      // 100 MB header would otherwise stay resident beside it (issue 23:
      // 2.6 times the file at peak). Tensors' data is mapped again on use.
      const std::function<void(std::size_t)> release = [this](std::size_t n) { mapped_->release(0, n); };
      header_ = detail_safetensors::parse_header(file_bytes(), source_, &release);
      mapped_->release(0, header_.data_offset);
    } else {
      header_ = parse_safetensors_header(file_bytes(), source_);
    }
    // The names sorted through indices into the header's tensors: 8 bytes a
    // tensor, where a std::map<std::string, …> held a node and a second copy
    // of every name (issue 23: memory in proportion to the header).
    by_name_.resize(header_.tensors.size());
    for (std::size_t i = 0; i < by_name_.size(); ++i) by_name_[i] = i;
    std::sort(by_name_.begin(), by_name_.end(), [this](std::size_t a, std::size_t b) {
      return header_.tensors[a].name < header_.tensors[b].name;
    });
  }

  const TensorInfo* find(std::string_view name) const {
    const auto it = std::lower_bound(by_name_.begin(), by_name_.end(), name, [this](std::size_t i, std::string_view n) {
      return std::string_view(header_.tensors[i].name) < n;
    });
    if (it == by_name_.end() || header_.tensors[*it].name != name) return nullptr;
    return &header_.tensors[*it];
  }

  const std::byte* data_of(const TensorInfo& t) const noexcept {
    return file_bytes().data() + header_.data_offset + t.begin;
  }

  // An uninitialised matrix of t's shape: rows × cols for 2-D, 1 × n for 1-D.
  template <class T>
  Matrix<T> matrix_of_shape(const TensorInfo& t, const char* what) const {
    std::size_t rows = 1, cols = 1;
    if (t.shape.size() == 2) {
      rows = t.shape[0];
      cols = t.shape[1];
    } else if (t.shape.size() == 1) {
      cols = t.shape[0];
    } else {
      throw std::invalid_argument("oq::io::SafetensorsFile::" + std::string(what) + ": tensor '" + t.name + "' in " +
                                  source_ + " has shape " + detail_safetensors::shape_str(t.shape) +
                                  " (expected 1-D or 2-D; elements() reads any rank)");
    }
    check_index(t, what);
    return Matrix<T>(static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols));
  }

  template <class T>
  void check_stored(const TensorInfo& t, DType dtype, const char* what) const {
    static_assert(std::is_trivially_copyable_v<T>, "stored elements are copied bytewise");
    static_assert(!std::is_same_v<T, bool>, "read BOOL as std::uint8_t: a file's byte need not be 0 or 1");
    const std::string where = "oq::io::SafetensorsFile::" + std::string(what) + ": ";
    if (sizeof(T) != dtype_size(dtype)) {
      throw std::invalid_argument(where + "the element type must have " + std::to_string(dtype_size(dtype)) +
                                  " bytes for dtype " + std::string(dtype_name(dtype)) + ", got " +
                                  std::to_string(sizeof(T)));
    }
    if (t.dtype != dtype) {
      throw std::invalid_argument(where + "tensor '" + t.name + "' in " + source_ + " is " +
                                  std::string(dtype_name(t.dtype)) + ", expected " + std::string(dtype_name(dtype)));
    }
  }

  void check_index(const TensorInfo& t, const char* what) const {
    constexpr auto kMax = static_cast<std::size_t>(std::numeric_limits<Eigen::Index>::max());
    for (std::size_t d : t.shape) {
      if (d > kMax) {
        throw std::invalid_argument("oq::io::SafetensorsFile::" + std::string(what) + ": tensor '" + t.name +
                                    "' in " + source_ + " has shape " + detail_safetensors::shape_str(t.shape) +
                                    ", whose dimensions do not fit Eigen::Index");
      }
    }
  }

  // Exactly one holds the file: the mapping (from a path) or the vector
  // (from_bytes). A moved vector keeps its buffer, so moving is safe.
  std::optional<MappedFile> mapped_;
  std::vector<std::byte> owned_;
  std::string source_;
  SafetensorsHeader header_;
  std::vector<std::size_t> by_name_;  // indices into header_.tensors, sorted by name
};

/// Builds a safetensors file in memory: add tensors and metadata, then
/// bytes() or write(). The data is copied in, so the sources need not outlive
/// the writer.
class SafetensorsWriter {
 public:
  /// Adds a tensor from its raw little-endian C-order bytes. Throws
  /// std::invalid_argument when data.size() ≠ product(shape)·itemsize, when
  /// the shape has more than 1024 dimensions (what oq's reader accepts), when
  /// the name is taken, is "__metadata__" or is not valid UTF-8.
  void add(std::string name, DType dtype, std::vector<std::size_t> shape, std::span<const std::byte> data) {
    add_owned(std::move(name), dtype, std::move(shape), std::vector<std::byte>(data.begin(), data.end()));
  }

  /// Adds an Eigen matrix or vector, elements in row-major order whatever
  /// x's storage order, each stored as `stored` through store_element (integer
  /// dtypes throw std::domain_error for a non-integral or out-of-range entry
  /// instead of truncating it; the writer is unchanged then). A column vector
  /// (cols() == 1) or a row vector (rows() == 1) is stored 1-D as [size()];
  /// anything else 2-D as [rows, cols].
  template <class Derived>
  void add(std::string name, const Eigen::DenseBase<Derived>& x, DType stored = DType::kF32) {
    // Expressions without coefficient access (products) are evaluated once; a
    // plain matrix is used in place (eval() returns a reference to it).
    const auto& e = x.derived().eval();
    std::vector<std::size_t> shape;
    if (e.cols() == 1 || e.rows() == 1) {
      shape = {static_cast<std::size_t>(e.size())};
    } else {
      shape = {static_cast<std::size_t>(e.rows()), static_cast<std::size_t>(e.cols())};
    }
    const std::size_t itemsize = dtype_size(stored);
    std::vector<std::byte> data(static_cast<std::size_t>(e.size()) * itemsize);
    if (e.size() > 0) {
      std::byte* dst = data.data();
      for (Eigen::Index r = 0; r < e.rows(); ++r) {
        for (Eigen::Index c = 0; c < e.cols(); ++c) {
          store_element(stored, static_cast<double>(e(r, c)), dst);
          dst += itemsize;
        }
      }
    }
    add_owned(std::move(name), stored, std::move(shape), std::move(data));
  }

  /// Adds a "__metadata__" entry. Throws std::invalid_argument when the key
  /// is already there, either string is not valid UTF-8, or there are
  /// already 65,536 entries (what oq's reader accepts).
  void add_metadata(std::string key, std::string value) {
    if (metadata_keys_.count(key) != 0) {
      throw std::invalid_argument("oq::io::SafetensorsWriter::add_metadata: key '" + key + "' is already there");
    }
    if (metadata_.size() >= detail_safetensors::kMaxMetadataEntries) {
      throw std::invalid_argument("oq::io::SafetensorsWriter::add_metadata: already " +
                                  std::to_string(metadata_.size()) + " entries (expected at most " +
                                  std::to_string(detail_safetensors::kMaxMetadataEntries) +
                                  ", which readers refuse beyond)");
    }
    (void)detail_safetensors::json_string(key, "metadata key '" + key + "'");
    (void)detail_safetensors::json_string(value, "the value of metadata key '" + key + "'");
    metadata_keys_.insert(key);
    metadata_.emplace_back(std::move(key), std::move(value));
  }

  /// Number of tensors added.
  std::size_t size() const noexcept { return tensors_.size(); }

  /// The header JSON, padded with spaces to a multiple of 8 bytes. Throws
  /// std::invalid_argument when it would exceed the format's 100 MB limit,
  /// which readers (oq's, and the reference one) refuse.
  std::string header() const {
    std::string h = "{";
    if (!metadata_.empty()) {
      h += "\"__metadata__\":{";
      for (std::size_t i = 0; i < metadata_.size(); ++i) {
        if (i > 0) h += ",";
        h += nlohmann::json(metadata_[i].first).dump() + ":" + nlohmann::json(metadata_[i].second).dump();
      }
      h += "}";
    }
    std::size_t offset = 0;
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      const Entry& t = tensors_[i];
      if (i > 0 || !metadata_.empty()) h += ",";
      h += nlohmann::json(t.name).dump();
      h += ":{\"dtype\":\"";
      h += dtype_name(t.dtype);
      h += "\",\"shape\":[";
      for (std::size_t k = 0; k < t.shape.size(); ++k) {
        if (k > 0) h += ",";
        h += std::to_string(t.shape[k]);
      }
      h += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + t.data.size()) + "]}";
      offset += t.data.size();
    }
    h += "}";
    h.append((detail_safetensors::kHeaderAlign - h.size() % detail_safetensors::kHeaderAlign) %
                 detail_safetensors::kHeaderAlign,
             ' ');
    if (h.size() > detail_safetensors::kMaxHeaderSize) {
      throw std::invalid_argument("oq::io::SafetensorsWriter: the header would be " + std::to_string(h.size()) +
                                  " bytes (expected at most " + std::to_string(detail_safetensors::kMaxHeaderSize) +
                                  ", the safetensors limit: fewer tensors, shorter names or less metadata)");
    }
    return h;
  }

  /// The whole file.
  std::vector<std::byte> bytes() const {
    const std::string h = header();
    std::size_t total = 8 + h.size();
    for (const Entry& t : tensors_) total += t.data.size();
    std::vector<std::byte> out;
    out.reserve(total);
    append_length(out, h.size());
    for (char c : h) out.push_back(static_cast<std::byte>(c));
    for (const Entry& t : tensors_) out.insert(out.end(), t.data.begin(), t.data.end());
    return out;
  }

  /// Writes the file to `path + ".tmp"`, then renames it to `path`, so a
  /// reader never sees a half-written checkpoint. Throws std::runtime_error
  /// naming the path when writing or renaming fails (the .tmp file is removed).
  void write(const std::filesystem::path& path) const {
    std::filesystem::path tmp = path;
    tmp += ".tmp";
    auto fail = [&](const std::string& what) {
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      throw std::runtime_error("oq::io::SafetensorsWriter::write: " + what);
    };
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      if (!out) fail("cannot open '" + tmp.string() + "' for writing");
      const std::string h = header();
      std::vector<std::byte> length;
      append_length(length, h.size());
      out.write(reinterpret_cast<const char*>(length.data()), static_cast<std::streamsize>(length.size()));
      out.write(h.data(), static_cast<std::streamsize>(h.size()));
      for (const Entry& t : tensors_) {
        out.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(t.data.size()));
      }
      out.close();
      if (!out) fail("writing '" + tmp.string() + "' failed");
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) fail("cannot rename '" + tmp.string() + "' to '" + path.string() + "': " + ec.message());
  }

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<std::size_t> shape;
    std::vector<std::byte> data;
  };

  static void append_length(std::vector<std::byte>& out, std::size_t n) {
    for (std::size_t i = 0; i < 8; ++i) {
      out.push_back(static_cast<std::byte>((static_cast<std::uint64_t>(n) >> (8 * i)) & 0xFFu));
    }
  }

  void add_owned(std::string name, DType dtype, std::vector<std::size_t> shape, std::vector<std::byte> data) {
    if (name == detail_safetensors::kMetadataKey) {
      throw std::invalid_argument("oq::io::SafetensorsWriter::add: '__metadata__' is reserved, not a tensor name");
    }
    if (names_.count(name) != 0) {
      throw std::invalid_argument("oq::io::SafetensorsWriter::add: tensor '" + name + "' is already there");
    }
    (void)detail_safetensors::json_string(name, "tensor name '" + name + "'");
    if (shape.size() > detail_safetensors::kMaxRank) {
      throw std::invalid_argument("oq::io::SafetensorsWriter::add: tensor '" + name + "' has " +
                                  std::to_string(shape.size()) + " dimensions (expected at most " +
                                  std::to_string(detail_safetensors::kMaxRank) + ", which readers refuse beyond)");
    }
    std::size_t count = 0, nbytes = 0;
    const bool counted = detail_safetensors::checked_count(shape, count) &&
                         detail_safetensors::checked_mul(count, dtype_size(dtype), nbytes);
    if (!counted || nbytes != data.size()) {
      throw std::invalid_argument("oq::io::SafetensorsWriter::add: tensor '" + name + "' of shape " +
                                  detail_safetensors::shape_str(shape) + " and dtype " +
                                  std::string(dtype_name(dtype)) + " needs " +
                                  (counted ? std::to_string(nbytes) + " bytes" : "more bytes than size_t can count") +
                                  ", but data holds " + std::to_string(data.size()));
    }
    names_.insert(name);
    tensors_.push_back(Entry{std::move(name), dtype, std::move(shape), std::move(data)});
  }

  std::vector<Entry> tensors_;
  std::set<std::string, std::less<>> names_;
  std::vector<std::pair<std::string, std::string>> metadata_;  // in insertion order, as written
  std::set<std::string, std::less<>> metadata_keys_;            // the duplicate check, O(log n) per key
};

}  // namespace oq::io
