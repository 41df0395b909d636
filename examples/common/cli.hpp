// examples/common/cli.hpp: the examples' command lines, parsed by CLI11
// (Debian's libcli11-dev). CLI11 gives --help, unknown and repeated flags;
// the checks here give its numeric values whole-string parsing and messages
// that say what was expected (CLI11 2.1's NonNegativeNumber reports "abc" as
// "not in range 0 to 1.8e308", and an unsigned option takes "-1" as 2^64 − 1).
//
// A failed check reads "--flag: expects ..., got '...'" on stderr, and every
// example exits 2 for a bad command line (0 for --help).
#pragma once

#include <CLI/CLI.hpp>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <system_error>

namespace examples::cli {

namespace detail {

/// The whole of `text` as a T, or nothing (empty, trailing characters, out of T's range).
template <class T>
std::optional<T> whole_integer(const std::string& text) {
  T v{};
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return v;
}

}  // namespace detail

/// An integer of type T in [min, max], the whole string (no "12abc", no "-1"
/// wrapped into an unsigned type). Help shows `name` after the type (INT:name).
template <class T>
CLI::Validator integer(T min, T max = std::numeric_limits<T>::max(), std::string name = "") {
  std::string expected;
  if (max == std::numeric_limits<T>::max()) {
    expected = min == 0 ? "a non-negative integer" : min == 1 ? "a positive integer"
                                                               : "an integer >= " + std::to_string(min);
  } else {
    expected = "an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
  }
  if (name.empty()) {
    name = max != std::numeric_limits<T>::max() ? "IN [" + std::to_string(min) + ", " + std::to_string(max) + "]"
           : min == 0                           ? "NONNEGATIVE"
           : min == 1                           ? "POSITIVE"
                                                : ">= " + std::to_string(min);
  }
  return CLI::Validator(
      [min, max, expected](std::string& text) -> std::string {
        const std::optional<T> v = detail::whole_integer<T>(text);
        if (!v || *v < min || *v > max) return "expects " + expected + ", got '" + text + "'";
        return {};
      },
      name);
}

/// A positive multiple of `step` (a block or packed-word size), of type T.
template <class T>
CLI::Validator positive_multiple_of(T step) {
  const std::string expected = "a positive multiple of " + std::to_string(step);
  return CLI::Validator(
      [step, expected](std::string& text) -> std::string {
        const std::optional<T> v = detail::whole_integer<T>(text);
        if (!v || *v < step || *v % step != 0) return "expects " + expected + ", got '" + text + "'";
        return {};
      },
      "MULTIPLE OF " + std::to_string(step));
}

/// A finite number >= 0 (no NaN, no inf), the whole string.
inline CLI::Validator finite_non_negative() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        char* end = nullptr;
        const double v = text.empty() ? -1.0 : std::strtod(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v) || v < 0) {
          return "expects a finite number >= 0, got '" + text + "'";
        }
        return {};
      },
      "NONNEGATIVE");
}

/// Parses the command line. Returns the exit status when the program should
/// stop here: 0 after --help, 2 after a bad command line (CLI11 has printed
/// the message, naming the flag). `check`, when given, runs after parsing for
/// checks across flags; it reports a problem by throwing CLI::ValidationError.
inline std::optional<int> parse(CLI::App& app, int argc, char** argv, const std::function<void()>& check = {}) {
  app.get_formatter()->column_width(36);  // "--flag TYPE:CHECK=default" on the line of its description
  try {
    app.parse(argc, argv);
    if (check) check();
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
}

}  // namespace examples::cli
