// oq/io/json.hpp: strict JSON reading for checkpoint files — the safetensors
// header, model.safetensors.index.json and a model's config.json.
//
// Why strict: nlohmann::json (like Python's json module) silently keeps the
// last of two equal keys in an object (RFC 8259 §4 only says names "SHOULD be
// unique" and leaves the behaviour to the parser). For a safetensors header a
// duplicated tensor name would make two readers disagree on where a tensor
// lives, so oq rejects duplicates everywhere: parse_json watches the key
// events of nlohmann's parser callback and throws FormatError naming the key
// and the object that holds it. Comments are rejected too (the
// default of nlohmann's parser, and what every other JSON reader expects);
// invalid UTF-8 inside strings is rejected by nlohmann's lexer.
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

#include <nlohmann/json.hpp>

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
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

/// Parses `text`; every error throws FormatError(prefix + what). Duplicate
/// keys are detected with the parser callback: a stack of open containers,
/// each object with the set of keys seen so far and the last one, from which
/// the message builds the path of the offending object ("/a/shape/[]").
inline nlohmann::json parse_strict(std::string_view text, const std::string& prefix) {
  // Paths are built only for the error message (by walking the stack):
  // keeping one per frame would cost O(depth²) on deeply nested input.
  struct Frame {
    bool is_object = false;
    std::set<std::string, std::less<>> keys;
    std::string last_key;
  };
  std::vector<Frame> stack;
  auto path_of_top = [&stack] {
    std::string path;
    for (std::size_t i = 0; i + 1 < stack.size(); ++i) {
      // Appended piecewise: "/" + std::string&& trips GCC 12's -Wrestrict
      // false positive (GCC bug 105329) at -O3.
      path += '/';
      path += stack[i].is_object ? std::string_view(stack[i].last_key) : std::string_view("[]");
    }
    return path;
  };
  auto open = [&stack, &prefix](bool is_object) {
    if (stack.size() >= kMaxJsonDepth) {
      throw FormatError(prefix + "arrays and objects nested deeper than " + std::to_string(kMaxJsonDepth) +
                        " levels (expected at most " + std::to_string(kMaxJsonDepth) + ")");
    }
    Frame f;
    f.is_object = is_object;
    stack.push_back(std::move(f));
  };
  using Event = nlohmann::json::parse_event_t;
  const nlohmann::json::parser_callback_t callback = [&](int /*depth*/, Event event, nlohmann::json& parsed) {
    switch (event) {
      case Event::object_start: open(true); break;
      case Event::array_start: open(false); break;
      case Event::object_end:
      case Event::array_end:
        if (!stack.empty()) stack.pop_back();
        break;
      case Event::key: {
        // A key event only occurs inside an open object.
        Frame& top = stack.back();
        std::string key = parsed.get<std::string>();
        if (!top.keys.insert(key).second) {
          const std::string path = path_of_top();
          const std::string where =
              path.empty() ? "the top-level object" : "the object at '" + printable(path) + "'";
          throw FormatError(prefix + "duplicate key '" + printable(key) + "' in " + where +
                            " (expected unique keys; JSON parsers would silently keep only the last one)");
        }
        top.last_key = std::move(key);
        break;
      }
      case Event::value: break;
    }
    return true;
  };
  // nlohmann's lexer takes a NUL byte for the end of the input (a C-string
  // convention) and would accept "{}\0anything". No valid JSON text holds a
  // raw NUL (RFC 8259 §7: control characters in strings must be escaped).
  if (const auto nul = text.find('\0'); nul != std::string_view::npos) {
    throw FormatError(prefix + "not valid JSON: NUL byte at offset " + std::to_string(nul));
  }
  try {
    return nlohmann::json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                                 /*ignore_comments=*/false);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(prefix + "not valid JSON: " + e.what());
  }
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
/// checkpoint's index). Throws std::runtime_error naming the path when it
/// cannot be read, FormatError naming it when it is not valid JSON.
inline nlohmann::json read_json(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw std::runtime_error("oq::io::read_json: '" + path.string() + "' is not a regular file (or does not exist)");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("oq::io::read_json: cannot open '" + path.string() + "'");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw std::runtime_error("oq::io::read_json: reading '" + path.string() + "' failed");
  return detail_json::parse_strict(text, "oq::io::read_json: " + path.string() + ": ");
}

}  // namespace oq::io
