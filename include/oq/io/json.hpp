// oq/io/json.hpp: strict JSON reading for checkpoint files — the safetensors
// header, model.safetensors.index.json and a model's config.json.
//
// Why strict: nlohmann::json (like Python's json module) silently keeps the
// last of two equal keys in an object (RFC 8259 §4 only says names "SHOULD be
// unique" and leaves the behaviour to the parser). For a safetensors header a
// duplicated tensor name would make two readers disagree on where a tensor
// lives, so oq rejects duplicates everywhere: parse_json builds the value
// from the events of nlohmann's SAX parser and throws FormatError naming the
// key and the object that holds it, in time linear in the text. Comments are
// rejected too (the default of nlohmann's parser, and what every other JSON
// reader expects); invalid UTF-8 inside strings is rejected by nlohmann's
// lexer. Syntax errors give the line and column, never the text itself.
//
// nlohmann's parser is iterative and json values are destroyed iteratively
// (3.10+), so parsing cannot exhaust the stack; copying a json value and
// dump() recurse once per nesting level, at most kMaxJsonDepth (512) levels
// here, since nesting deeper than that is refused. The limit is for memory:
// each open level costs the duplicate-key check a frame and nlohmann a value,
// about 200 bytes per byte of "[[[…", so a 100 MB safetensors header (the
// format's limit) of brackets would need some 20 GB. No checkpoint file
// nests more than a handful of levels (serde_json, which the reference
// safetensors reader uses, stops at 128).
//
//   const nlohmann::json config = oq::io::read_json(dir / "config.json");
#pragma once

#include <oq/io/format_error.hpp>
#include <oq/io/mapped_file.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace oq::io {

/// The deepest nesting of arrays and objects parse_json accepts.
inline constexpr std::size_t kMaxJsonDepth = 512;

namespace detail_json {

/// A string from a file, fit for an error message: control bytes (NUL would
/// end what()) as \xNN, and at most 200 bytes (cut at a UTF-8 boundary) —
/// a forged header can hold a key of many megabytes.
inline std::string printable(std::string_view s) {
  constexpr std::size_t kMax = 200;
  bool cut = false;
  if (s.size() > kMax) {
    std::size_t n = kMax;
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0u) == 0x80u) --n;  // not inside a UTF-8 sequence
    s = s.substr(0, n);
    cut = true;
  }
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xF];
    } else {
      out += c;
    }
  }
  if (cut) out += "...";
  return out;
}

/// nlohmann's parse error without the text it quotes: its messages end in
/// "; last read: '<token>'" (the bytes of the token that failed, which can be
/// a whole string of the file) and "number overflow parsing '<number>'". A
/// file named by an untrusted index can be any file (a symlinked shard, see
/// io/checkpoint.hpp), so errors about text that is not yet known to be JSON
/// say what and where (line, column), never what the bytes were.
inline std::string parse_error_text(const nlohmann::json::exception& e) {
  std::string what = e.what();
  if (e.id == 406) return "a number too large for a double";
  constexpr std::string_view kLastRead = "; last read: '";
  if (const auto at = what.find(kLastRead); at != std::string::npos) {
    // nlohmann appends "; expected <token kind>" after the quoted token when
    // it knows what it expected: keep that part (the last occurrence, since
    // the token itself may contain the same characters).
    constexpr std::string_view kExpected = "'; expected ";
    const auto expected = what.rfind(kExpected);
    std::string tail = expected != std::string::npos && expected >= at + kLastRead.size()
                           ? what.substr(expected + 1)
                           : std::string();
    what.erase(at);
    what += tail;
  }
  return what;
}

/// SAX handler that builds a nlohmann::json value (as nlohmann's own DOM
/// parser does) and refuses duplicate keys, nesting deeper than
/// kMaxJsonDepth and, optionally, more than `max_values` values.
///
/// Why not nlohmann's parser callback, which oq used before: at every close of
/// an object or array the callback parser scans the parent container for a
/// discarded value, so a header of n entries cost O(n²) time (40,000 tensors:
/// 17 s; a 100 MB header did not finish; issue 23). Here each event costs
/// O(log n) (the duplicate check is the insertion into the object's std::map).
///
/// `base_path` and `base_depth` place the value inside a document that an
/// outer handler reads (the safetensors header collects one entry at a time):
/// the path of the error messages starts with it, and the depth limit counts
/// the levels above. Past `max_values` values it throws
/// FormatError(too_many_values), the whole message.
class StrictDomBuilder {
 public:
  using json = nlohmann::json;

  StrictDomBuilder(const std::string& prefix, std::string base_path = {}, std::size_t base_depth = 0,
                   std::size_t max_values = std::numeric_limits<std::size_t>::max(),
                   std::string too_many_values = {})
      : prefix_(prefix),
        base_path_(std::move(base_path)),
        base_depth_(base_depth),
        max_values_(max_values),
        too_many_values_(std::move(too_many_values)) {}

  bool null() { return add(json(nullptr)); }
  bool boolean(bool v) { return add(json(v)); }
  bool number_integer(json::number_integer_t v) { return add(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return add(json(v)); }
  bool number_float(json::number_float_t v, const json::string_t& /*text*/) { return add(json(v)); }
  bool string(json::string_t& v) { return add(json(std::move(v))); }
  bool binary(json::binary_t& v) { return add(json(std::move(v))); }  // never from JSON text

  bool start_object(std::size_t /*unknown size*/) { return open(json::value_t::object); }
  bool start_array(std::size_t /*unknown size*/) { return open(json::value_t::array); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(json::string_t& k) {
    // A key event only occurs inside an open object.
    Frame& top = stack_.back();
    auto& object = top.value->get_ref<json::object_t&>();
    const auto [it, inserted] = object.emplace(std::move(k), nullptr);
    if (!inserted) {
      const std::string path = path_of_top();
      const std::string where = path.empty() ? "the top-level object" : "the object at '" + printable(path) + "'";
      throw FormatError(prefix_ + "duplicate key '" + printable(it->first) + "' in " + where +
                        " (expected unique keys; JSON parsers would silently keep only the last one)");
    }
    top.last_key = &it->first;  // std::map keys do not move
    element_ = &it->second;
    return true;
  }

  bool parse_error(std::size_t /*position*/, const std::string& /*last token*/, const json::exception& e) {
    throw FormatError(prefix_ + "not valid JSON: " + parse_error_text(e));
  }

  /// Whether the value is complete (its outermost container closed, or a scalar read).
  bool done() const noexcept { return started_ && stack_.empty(); }
  json take() { return std::move(root_); }

 private:
  struct Frame {
    json* value = nullptr;
    const std::string* last_key = nullptr;  // null for an array
  };

  // Paths are built only for the error message (by walking the stack):
  // keeping one per frame would cost O(depth²) on deeply nested input.
  std::string path_of_top() const {
    std::string path = base_path_;
    for (std::size_t i = 0; i + 1 < stack_.size(); ++i) {
      // Appended piecewise: "/" + std::string&& trips GCC 12's -Wrestrict
      // false positive (GCC bug 105329) at -O3.
      path += '/';
      path += stack_[i].last_key != nullptr ? std::string_view(*stack_[i].last_key) : std::string_view("[]");
    }
    return path;
  }

  /// Places v where the document is: the root, the end of the open array or
  /// the value of the last key. Returns its address (stable while it is open:
  /// a container only grows after its last element is closed).
  json* place(json&& v) {
    if (++values_ > max_values_) throw FormatError(too_many_values_);
    started_ = true;
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    json& top = *stack_.back().value;
    if (top.is_array()) {
      auto& array = top.get_ref<json::array_t&>();
      array.push_back(std::move(v));
      return &array.back();
    }
    *element_ = std::move(v);
    return element_;
  }

  bool add(json&& v) {
    place(std::move(v));
    return true;
  }

  bool open(json::value_t kind) {
    if (base_depth_ + stack_.size() >= kMaxJsonDepth) {
      throw FormatError(prefix_ + "arrays and objects nested deeper than " + std::to_string(kMaxJsonDepth) +
                        " levels (expected at most " + std::to_string(kMaxJsonDepth) + ")");
    }
    json* v = place(json(kind));
    stack_.push_back(Frame{v, nullptr});
    return true;
  }

  bool close() {
    stack_.pop_back();
    return true;
  }

  const std::string& prefix_;
  std::string base_path_;
  std::size_t base_depth_;
  std::size_t max_values_;
  std::string too_many_values_;
  json root_;
  std::vector<Frame> stack_;
  json* element_ = nullptr;
  std::size_t values_ = 0;
  bool started_ = false;
};

/// nlohmann's lexer takes a NUL byte for the end of the input (a C-string
/// convention) and would accept "{}\0anything". No valid JSON text holds a
/// raw NUL (RFC 8259 §7: control characters in strings must be escaped).
inline void refuse_nul(std::string_view text, const std::string& prefix) {
  if (const auto nul = text.find('\0'); nul != std::string_view::npos) {
    throw FormatError(prefix + "not valid JSON: NUL byte at offset " + std::to_string(nul));
  }
}

/// Runs nlohmann's SAX parser over `text` (strict: nothing but whitespace
/// after the value; no comments) with `handler`, which throws FormatError on
/// every error (see StrictDomBuilder::parse_error).
template <class Handler>
void sax_parse_strict(std::string_view text, Handler& handler, const std::string& prefix) {
  refuse_nul(text, prefix);
  // nlohmann's parser is iterative (no recursion per level) and reports every
  // syntax error through handler.parse_error, which throws.
  (void)nlohmann::json::sax_parse(text.begin(), text.end(), &handler, nlohmann::json::input_format_t::json,
                                  /*strict=*/true, /*ignore_comments=*/false);
}

/// How many bytes the passes of sax_parse_strict's releasing form read
/// between two calls of its `release`.
inline constexpr std::size_t kReleaseStep = std::size_t{1} << 20;

/// A forward iterator over text[0, size) for nlohmann's parser (which reads
/// its input once, front to back) that calls release(i) each time it steps
/// onto an offset i that is a multiple of kReleaseStep: the parser is done
/// with text[0, i). One comparison per byte, beside the parser's dozens.
template <class Release>
class ReleasingIterator {
 public:
  using iterator_category = std::forward_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = const char&;

  ReleasingIterator() = default;
  ReleasingIterator(const char* text, std::size_t i, Release* release)
      : text_(text), i_(i), next_((i / kReleaseStep + 1) * kReleaseStep), release_(release) {}

  reference operator*() const noexcept { return text_[i_]; }
  ReleasingIterator& operator++() {
    if (++i_ == next_) {
      (*release_)(i_);
      next_ += kReleaseStep;
    }
    return *this;
  }
  ReleasingIterator operator++(int) {
    ReleasingIterator old = *this;
    ++*this;
    return old;
  }
  bool operator==(const ReleasingIterator& other) const noexcept { return i_ == other.i_; }

 private:
  const char* text_ = nullptr;
  std::size_t i_ = 0;
  std::size_t next_ = 0;
  Release* release_ = nullptr;
};

/// sax_parse_strict for a text that lies in memory the caller can give back
/// as the passes go (a memory-mapped file: MappedFile::release): release(n)
/// is called with n a multiple of kReleaseStep once a pass is done with
/// text[0, n), first by the NUL check (after which the parser reads the text
/// again, from its start), then by the parser. Releasing must leave the
/// bytes readable; it only lets them leave memory, so that a pass over a
/// large text keeps about kReleaseStep of it resident instead of all of it.
/// The same events and errors as sax_parse_strict(text, handler, prefix).
template <class Handler, class Release>
void sax_parse_strict(std::string_view text, Handler& handler, const std::string& prefix, Release&& release) {
  for (std::size_t i = 0; i < text.size(); i += kReleaseStep) {
    const std::size_t n = std::min(kReleaseStep, text.size() - i);
    if (const void* nul = std::memchr(text.data() + i, '\0', n)) {
      throw FormatError(prefix + "not valid JSON: NUL byte at offset " +
                        std::to_string(static_cast<const char*>(nul) - text.data()));
    }
    if (n == kReleaseStep) release(i + n);
  }
  using Iterator = ReleasingIterator<std::remove_reference_t<Release>>;
  (void)nlohmann::json::sax_parse(Iterator(text.data(), 0, &release), Iterator(text.data(), text.size(), &release),
                                  &handler, nlohmann::json::input_format_t::json, /*strict=*/true,
                                  /*ignore_comments=*/false);
}

/// Parses `text`; every error throws FormatError(prefix + what): duplicate
/// keys (naming the key and the path of the object that holds it, "/a/[]"),
/// nesting deeper than kMaxJsonDepth, syntax errors (without quoting the
/// text, see parse_error_text). Time linear in the text (times log of the
/// widest object).
inline nlohmann::json parse_strict(std::string_view text, const std::string& prefix) {
  StrictDomBuilder builder(prefix);
  sax_parse_strict(text, builder, prefix);
  return builder.take();
}

/// A JSON value for an error message: scalars as JSON text (shortened),
/// containers by their kind and size (never dumped: they can be huge).
inline std::string describe(const nlohmann::json& v) {
  if (v.is_object()) return "an object with " + std::to_string(v.size()) + " keys";
  if (v.is_array()) return "an array of " + std::to_string(v.size()) + " elements";
  if (v.is_null()) return "null";
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 64) s = s.substr(0, 61) + "...";
  return std::string(v.type_name()) + " " + s;
}

}  // namespace detail_json

/// Parses JSON text strictly (no duplicate keys, no comments). Throws
/// FormatError "oq::io::parse_json: <source>: ..." on any error.
inline nlohmann::json parse_json(std::string_view text, std::string_view source = "<memory>") {
  return detail_json::parse_strict(text, "oq::io::parse_json: " + std::string(source) + ": ");
}

/// Reads and strictly parses a JSON file (a model's config.json, a sharded
/// checkpoint's index). Throws std::runtime_error (std::system_error) naming
/// the path when it cannot be opened or read or is not a regular file (a
/// FIFO or a device is refused without blocking: detail_file::RegularFile),
/// FormatError naming it when it is not valid JSON.
inline nlohmann::json read_json(const std::filesystem::path& path) {
  const detail_file::RegularFile file(path, "oq::io::read_json");
  std::string text(file.size(), '\0');
  file.read_at(0, text.data(), text.size());
  return detail_json::parse_strict(text, "oq::io::read_json: " + path.string() + ": ");
}

}  // namespace oq::io
