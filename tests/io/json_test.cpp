// Tests for oq/io/json.hpp: strict parsing (duplicate keys anywhere, comments,
// invalid UTF-8 → FormatError with the source and where, never the text),
// linear time in the number of keys, read_json's file errors (FIFOs and
// devices refused without blocking), deep nesting refused before it
// exhausts the stack or memory, and the parse that releases its text as it
// goes (the same results, release called at every step).
#include <oq/io/json.hpp>

#include <doctest/doctest.h>

#include "support/subprocess.hpp"

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <sys/stat.h>

namespace {

std::string error_of(std::string_view text) {
  try {
    (void)oq::io::parse_json(text, "cfg.json");
  } catch (const oq::io::FormatError& e) {
    return e.what();
  }
  return "<no FormatError>";
}

}  // namespace

TEST_CASE("parse_json: valid documents") {
  const auto j = oq::io::parse_json(R"({"hidden_size": 4096, "a": [{"x": 1}, {"x": 2}], "s": "ü"})");
  CHECK(j["hidden_size"] == 4096);
  CHECK(j["a"][1]["x"] == 2);
  CHECK(j["s"] == "ü");
  CHECK(oq::io::parse_json("  [1, 2]\n").size() == 2);
  CHECK(oq::io::parse_json("3").get<int>() == 3);
}

TEST_CASE("parse_json: duplicate keys are errors, with their place") {
  CHECK(error_of(R"({"a": 1, "a": 2})") ==
        "oq::io::parse_json: cfg.json: duplicate key 'a' in the top-level object "
        "(expected unique keys; JSON parsers would silently keep only the last one)");
  CHECK(error_of(R"({"a": {"b": 1, "b": 1}})").find("duplicate key 'b' in the object at '/a'") != std::string::npos);
  CHECK(error_of(R"({"a": [0, {"c": 1, "c": 1}]})").find("duplicate key 'c' in the object at '/a/[]'") !=
        std::string::npos);
  // Equal keys in sibling objects are fine, and closing an object forgets its keys.
  CHECK_NOTHROW(oq::io::parse_json(R"({"a": {"k": 1}, "b": {"k": 2}, "c": [{"k": 1}, {"k": 2}]})"));
}

TEST_CASE("parse_json: syntax errors, comments, invalid UTF-8") {
  for (const std::string& text : {std::string("{"), std::string("{\"a\": 1,}"), std::string("{} // c"),
                                 std::string("/* c */ {}"), std::string("{\"a\xFF\": 1}"), std::string(""),
                                 std::string("{} {}"), std::string("[1, 2"),
                                  std::string("{}\0 trailing", 12), std::string("{\"a\0\": 1}", 9)}) {
    INFO("text: ", text);
    CHECK(error_of(text).find("oq::io::parse_json: cfg.json: not valid JSON: ") == 0);
  }
}

TEST_CASE("parse_json: nesting up to kMaxJsonDepth parses, deeper is refused before it costs memory") {
  const std::size_t limit = oq::io::kMaxJsonDepth;
  auto arrays = [](std::size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  auto objects = [](std::size_t depth) {
    std::string text;
    for (std::size_t i = 0; i < depth; ++i) text += "{\"k\":";
    text += "1";
    text.append(depth, '}');
    return text;
  };
  CHECK(oq::io::parse_json(arrays(limit)).is_array());
  CHECK(oq::io::parse_json(objects(limit)).is_object());
  const std::string expected = "nested deeper than " + std::to_string(limit) + " levels";
  CHECK_THROWS_WITH_AS(oq::io::parse_json(arrays(limit + 1)), doctest::Contains(expected.c_str()), oq::io::FormatError);
  CHECK_THROWS_WITH_AS(oq::io::parse_json(objects(limit + 1)), doctest::Contains(expected.c_str()), oq::io::FormatError);
  // 300,000 levels: refused at level 513, neither a stack overflow nor the
  // ~60 MB of frames that parsing them all would take.
  CHECK_THROWS_AS(oq::io::parse_json(arrays(300000)), oq::io::FormatError);
  // Unclosed: the limit is met while reading, before the missing brackets.
  CHECK_THROWS_WITH_AS(oq::io::parse_json(std::string(100000, '[')), doctest::Contains(expected.c_str()),
                       oq::io::FormatError);
}

TEST_CASE("read_json: files") {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("oq_json_test_" + std::to_string(std::random_device{}()) + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  {
    std::ofstream(dir / "config.json") << R"({"model_type": "llama", "num_hidden_layers": 32})";
    std::ofstream(dir / "bad.json") << R"({"model_type": "llama",})";
    std::ofstream(dir / "dup.json") << R"({"vocab_size": 1, "vocab_size": 2})";
  }
  const auto j = oq::io::read_json(dir / "config.json");
  CHECK(j["model_type"] == "llama");
  CHECK(j["num_hidden_layers"] == 32);
  CHECK_THROWS_WITH_AS(oq::io::read_json(dir / "bad.json"),
                       doctest::Contains(("oq::io::read_json: " + (dir / "bad.json").string() + ": not valid JSON").c_str()),
                       oq::io::FormatError);
  CHECK_THROWS_WITH_AS(oq::io::read_json(dir / "dup.json"), doctest::Contains("duplicate key 'vocab_size'"),
                       oq::io::FormatError);
  CHECK_THROWS_WITH_AS(oq::io::read_json(dir / "missing.json"), doctest::Contains(((dir / "missing.json").string()).c_str()),
                       std::runtime_error);
  CHECK_THROWS_AS(oq::io::read_json(dir), std::runtime_error);  // a directory
  std::filesystem::remove_all(dir);
}

TEST_CASE("parse_json: an object of 200,000 keys parses in linear time") {
  // nlohmann's parser callback, which the duplicate check used before, rescans
  // the parent object at every close: O(n²), some 7 minutes for this object.
  std::string text = "{";
  for (int i = 0; i < 200000; ++i) {
    if (i > 0) text += ',';
    text += "\"k";
    text += std::to_string(i);
    text += "\":{\"v\":[1]}";
  }
  text += "}";
  CHECK(oq::test::finishes_within(std::chrono::seconds(60), [&] {
    const auto j = oq::io::parse_json(text);
    return j.size() == 200000 && j["k199999"]["v"][0] == 1;
  }));
}

TEST_CASE("parse_json: syntax errors give the place, never the text") {
  // nlohmann's messages end in "last read: '<the token's bytes>'", which can
  // be a whole string of the file, and "number overflow parsing '<digits>'".
  const std::string secret = "hunter2-secret";
  for (const std::string& text : {"{\"a\": \"" + secret, "{\"a\": " + secret, secret, "{\"" + secret + "\u0001\": 1}",
                                  "[1" + std::string(400, '7') + "e99999]"}) {
    const std::string message = error_of(text);
    INFO("message: ", message);
    CHECK(message.find("oq::io::parse_json: cfg.json: not valid JSON: ") == 0);
    CHECK(message.find("hunter") == std::string::npos);
    CHECK(message.find("777") == std::string::npos);
  }
  // What nlohmann expected is kept, and where.
  CHECK(error_of("{\"a\" x").find("line 1, column 6") != std::string::npos);
  CHECK(error_of("{\"a\" x").find("expected ':'") != std::string::npos);
}

TEST_CASE("read_json refuses a FIFO and a device without blocking") {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("oq_json_fifo_" + std::to_string(std::random_device{}()) + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  const auto fifo = dir / "config.json";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  // Before: std::ifstream blocked in open() until a writer came (forever).
  CHECK(oq::test::finishes_within(std::chrono::seconds(5), [&] {
    try {
      (void)oq::io::read_json(fifo);
    } catch (const std::system_error& e) {
      return std::string(e.what()).find("oq::io::read_json: '" + fifo.string() + "' is a FIFO") == 0;
    }
    return false;
  }));
  CHECK_THROWS_WITH_AS(oq::io::read_json("/dev/zero"), doctest::Contains("is a character device"), std::runtime_error);
  std::filesystem::remove_all(dir);
}

namespace {

// What sax_parse_strict's releasing form reported, and the value or error
// it gave.
struct Released {
  std::vector<std::size_t> calls;
  nlohmann::json value;
  std::string error;
};

Released parse_releasing(std::string_view text) {
  Released r;
  const std::string prefix = "p: ";  // the builder keeps a reference to it
  oq::io::detail_json::StrictDomBuilder builder(prefix);
  try {
    oq::io::detail_json::sax_parse_strict(text, builder, prefix, [&r](std::size_t n) { r.calls.push_back(n); });
    r.value = builder.take();
  } catch (const oq::io::FormatError& e) {
    r.error = e.what();
  }
  return r;
}

std::string plain_error(std::string_view text) {
  try {
    (void)oq::io::detail_json::parse_strict(text, "p: ");
  } catch (const oq::io::FormatError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("sax_parse_strict's releasing form: the same value and errors, release at every step of both passes") {
  constexpr std::size_t step = oq::io::detail_json::kReleaseStep;
  // An object of ~3.4 steps: {"k0":[0,1.5,"s"],"k1":…} and trailing spaces.
  std::string text = "{";
  for (int i = 0; text.size() < 3 * step + step / 3; ++i) {
    if (i > 0) text += ',';
    text += "\"k" + std::to_string(i) + "\":[" + std::to_string(i) + ",1.5,\"s\"]";
  }
  text += "}   ";
  const Released ok = parse_releasing(text);
  REQUIRE(ok.error.empty());
  CHECK(ok.value == oq::io::detail_json::parse_strict(text, "p: "));
  // The NUL check's pass, then the parser's, each done with [0, n) at n = 1, 2, 3 steps.
  CHECK(ok.calls == std::vector<std::size_t>{step, 2 * step, 3 * step, step, 2 * step, 3 * step});

  // Exactly 2 steps long: the parser's last call is at the end of the text.
  std::string exact = "[" + std::string(2 * step - 3, ' ') + "1]";
  REQUIRE(exact.size() == 2 * step);
  CHECK(parse_releasing(exact).calls == std::vector<std::size_t>{step, 2 * step, step, 2 * step});

  // A NUL after 2.5 steps: the same error, after the check's first two steps.
  std::string nul = text;
  nul[2 * step + step / 2] = '\0';
  const Released r_nul = parse_releasing(nul);
  CHECK(r_nul.error == plain_error(nul));
  CHECK(r_nul.error.find("NUL byte at offset " + std::to_string(2 * step + step / 2)) != std::string::npos);
  CHECK(r_nul.calls == std::vector<std::size_t>{step, 2 * step});

  // A syntax error after 1.5 steps: the same message (line and column), the
  // parser stopped after its first step.
  std::string bad = text;
  bad[step + step / 2] = '}';
  const Released r_bad = parse_releasing(bad);
  CHECK(!r_bad.error.empty());
  CHECK(r_bad.error == plain_error(bad));
  CHECK(r_bad.calls == std::vector<std::size_t>{step, 2 * step, 3 * step, step});

  // Shorter than a step: no call; an empty text: the parser's error.
  CHECK(parse_releasing("[1, 2]").calls.empty());
  CHECK(parse_releasing("").error == plain_error(""));
}
