// tests/support/format_error.hpp: what the file-format tests check of a
// parser's refusal: the oq::io::FormatError message, its prefix (function and
// source) and the reason it names.
#pragma once

#include <oq/io/format_error.hpp>

#include <doctest/doctest.h>

#include <string>
#include <string_view>

namespace oq::test {

/// The message of the FormatError that `parse()` throws, or "<no FormatError>"
/// when it throws none (any other exception escapes and fails the test).
template <class Parse>
std::string format_error_message(Parse&& parse) {
  try {
    parse();
  } catch (const oq::io::FormatError& e) {
    return e.what();
  }
  return "<no FormatError>";
}

/// `message` starts with `prefix` and names `expected`.
inline void check_format_error(const std::string& message, std::string_view prefix, std::string_view expected) {
  INFO("message: ", message);
  CHECK(message.find(prefix) == 0);
  CHECK(message.find(expected) != std::string::npos);
}

}  // namespace oq::test
