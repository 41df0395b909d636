// Tests for oq/io/safetensors.hpp: golden bytes from the spec and from the
// reference crate's own tests, writer → reader round trips of every dtype
// (F16/BF16 against core/float16.hpp's rounding), scalars, empty tensors and
// metadata, the matrix/vector/elements conversions (fast paths against the
// per-element core conversion on a 300×257 matrix), and every malformed header
// → FormatError, including every truncation of a valid file.
#include <oq/io/safetensors.hpp>

#include <oq/core/float16.hpp>

#include <doctest/doctest.h>

#include "support/format_error.hpp"
#include "support/matrices.hpp"
#include "support/subprocess.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

using oq::io::DType;
using oq::io::FormatError;
using oq::io::SafetensorsFile;
using oq::io::SafetensorsWriter;
using Bytes = std::vector<std::byte>;
template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

Bytes to_bytes(std::string_view s) {
  Bytes b(s.size());
  if (!s.empty()) std::memcpy(b.data(), s.data(), s.size());
  return b;
}


template <class T>
Bytes le_bytes(const std::vector<T>& values) {
  Bytes b(values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(b.data(), values.data(), b.size());
  return b;
}

Bytes u64_le(std::uint64_t n) {
  Bytes b(8);
  for (std::size_t i = 0; i < 8; ++i) b[i] = static_cast<std::byte>((n >> (8 * i)) & 0xFFu);
  return b;
}

// A file built by hand from the spec: the u64 length of `header` (used as
// given: no padding added), the header, then `data`.
Bytes file_of(std::string_view header, const Bytes& data = {}) {
  Bytes b = u64_le(header.size());
  const Bytes h = to_bytes(header);
  b.insert(b.end(), h.begin(), h.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

std::string format_error_of(const Bytes& b) {
  return oq::test::format_error_message([&] { (void)oq::io::parse_safetensors_header(b); });
}

void expect_format_error(const Bytes& b, std::string_view expected) {
  oq::test::check_format_error(format_error_of(b), "oq::io::parse_safetensors_header: <memory>: ", expected);
}

// A header with one entry for tensor "t" whose JSON is `entry`, and `data_size` zero bytes.
void expect_entry_error(std::string_view entry, std::size_t data_size, std::string_view expected) {
  const std::string header = "{\"t\":" + std::string(entry) + "}";
  INFO("header: ", header);
  const std::string message = format_error_of(file_of(header, Bytes(data_size)));
  INFO("message: ", message);
  CHECK(message.find("tensor 't': ") != std::string::npos);
  CHECK(message.find(expected) != std::string::npos);
}

std::string temp_name(std::string_view stem) {
  std::random_device rd;
  return std::string(stem) + "_" + std::to_string(rd()) + "_" + std::to_string(rd());
}

}  // namespace

TEST_CASE("golden bytes: one F32 tensor [2] = {1, 2}, built by hand from the spec") {
  // {"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} is 54 bytes; the
  // writer pads it with 2 spaces to 56, a multiple of 8, like the crate.
  const std::string json = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  REQUIRE(json.size() == 54);
  Bytes expected = {std::byte{56}, std::byte{0}, std::byte{0}, std::byte{0},
                    std::byte{0},  std::byte{0}, std::byte{0}, std::byte{0}};
  const Bytes header = to_bytes(json + "  ");
  expected.insert(expected.end(), header.begin(), header.end());
  for (unsigned v : {0x00u, 0x00u, 0x80u, 0x3Fu, 0x00u, 0x00u, 0x00u, 0x40u}) {  // 1.0f, 2.0f little-endian
    expected.push_back(static_cast<std::byte>(v));
  }

  SafetensorsWriter w;
  w.add("a", DType::kF32, {2}, le_bytes(std::vector<float>{1.0f, 2.0f}));
  CHECK(w.header() == json + "  ");
  CHECK(w.bytes() == expected);

  SafetensorsWriter from_eigen;
  from_eigen.add("a", Eigen::Vector2f(1.0f, 2.0f));
  CHECK(from_eigen.bytes() == expected);

  const auto h = oq::io::parse_safetensors_header(expected);
  CHECK(h.data_offset == 64);
  REQUIRE(h.tensors.size() == 1);
  CHECK(h.tensors[0].name == "a");
  CHECK(h.tensors[0].dtype == DType::kF32);
  CHECK(h.tensors[0].shape == std::vector<std::size_t>{2});
  CHECK(h.tensors[0].begin == 0);
  CHECK(h.tensors[0].end == 8);
  CHECK(h.metadata.empty());
}

TEST_CASE("golden bytes: the reference crate's serializer tests (safetensors/src/tensor.rs)") {
  SUBCASE("test_empty: no tensors → {} and 6 spaces") {
    CHECK(SafetensorsWriter().bytes() == file_of("{}      "));
  }
  SUBCASE("test_empty with metadata {framework: pt} → 35 bytes + 5 spaces") {
    SafetensorsWriter w;
    w.add_metadata("framework", "pt");
    CHECK(w.bytes() == file_of(R"({"__metadata__":{"framework":"pt"}}     )"));
  }
  SUBCASE("test_serialization: attn.0 F32 [1, 2, 3], a 64-byte header needing no padding") {
    const std::vector<float> values = {0, 1, 2, 3, 4, 5};
    SafetensorsWriter w;
    w.add("attn.0", DType::kF32, {1, 2, 3}, le_bytes(values));
    CHECK(w.bytes() == file_of(R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})", le_bytes(values)));
  }
}

TEST_CASE("the parser accepts the compact style, spaces, any key order and whitespace padding") {
  const Bytes data = le_bytes(std::vector<float>{1.0f, 2.0f});
  for (const std::string& header : {
           std::string(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})"),
           std::string(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})"),
           std::string("{ \"a\" : { \"data_offsets\" : [ 0 , 8 ] , \"shape\" : [ 2 ] , \"dtype\" : \"F32\" } }"),
           std::string(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})") + std::string(17, ' '),
           std::string("{\n  \"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}\n}\n"),
       }) {
    INFO("header: ", header);
    const auto f = SafetensorsFile::from_bytes(file_of(header, data));
    CHECK(f.header().data_offset == 8 + header.size());
    CHECK(f.vector<float>("a") == Eigen::Vector2f(1.0f, 2.0f));
  }
}

TEST_CASE("writer → reader round trip of every dtype") {
  // Values each dtype holds exactly, plus for the float types some that must round.
  const std::vector<double> floats = {0.0, -0.0, 1.0, -2.5, 0.1, 1.0 / 3.0, 65504.0, 1e-7, -3e-5, 300.7};
  auto values_for = [&](DType t) -> std::vector<double> {
    switch (t) {
      case DType::kBool: return {0, 1, 1, 0};
      case DType::kU8: return {0, 1, 127, 128, 255};
      case DType::kI8: return {-128, -1, 0, 1, 127};
      case DType::kI16: return {-32768, -1, 0, 300, 32767};
      case DType::kU16: return {0, 1, 40000, 65535};
      case DType::kI32: return {-2147483648.0, -7, 0, 70000, 2147483647.0};
      case DType::kU32: return {0, 1, 3000000000.0, 4294967295.0};
      case DType::kI64: return {-9007199254740992.0, -1, 0, 1, 9007199254740992.0};
      case DType::kU64: return {0, 1, 9007199254740992.0, 18446744073709549568.0};  // 2^64 − 2048
      default: return floats;
    }
  };
  auto expected_of = [](DType t, double v) -> double {
    const auto f = static_cast<float>(v);
    switch (t) {
      case DType::kF16: return oq::core::f16_bits_to_float(oq::core::float_to_f16_bits(f));
      case DType::kBF16: return oq::core::bf16_bits_to_float(oq::core::float_to_bf16_bits(f));
      case DType::kF32: return f;
      default: return v;
    }
  };

  SafetensorsWriter w;
  for (DType t : oq::io::kAllDTypes) {
    const std::vector<double> v = values_for(t);
    const Eigen::Map<const Eigen::VectorXd> x(v.data(), static_cast<Eigen::Index>(v.size()));
    w.add(std::string(oq::io::dtype_name(t)), x, t);
    // The same values through the raw-bytes overload, elements stored by store_element.
    Bytes raw(v.size() * oq::io::dtype_size(t));
    for (std::size_t i = 0; i < v.size(); ++i) oq::io::store_element(t, v[i], raw.data() + i * oq::io::dtype_size(t));
    w.add("raw_" + std::string(oq::io::dtype_name(t)), t, {v.size()}, raw);
  }
  w.add_metadata("format", "pt");
  const auto f = SafetensorsFile::from_bytes(w.bytes());
  CHECK(f.header().data_offset % 8 == 0);
  CHECK(f.tensors().size() == 2 * oq::io::kAllDTypes.size());
  CHECK(f.metadata() == std::map<std::string, std::string>{{"format", "pt"}});
  for (DType t : oq::io::kAllDTypes) {
    const std::string name(oq::io::dtype_name(t));
    INFO("dtype ", name);
    const std::vector<double> v = values_for(t);
    const auto& info = f.info(name);
    CHECK(info.dtype == t);
    CHECK(info.shape == std::vector<std::size_t>{v.size()});
    CHECK(info.size() == v.size());
    CHECK(info.end - info.begin == v.size() * oq::io::dtype_size(t));
    const std::vector<double> got = f.elements<double>(name);
    REQUIRE(got.size() == v.size());
    for (std::size_t i = 0; i < v.size(); ++i) {
      const double e = expected_of(t, v[i]);
      CHECK(got[i] == e);
      CHECK(std::signbit(got[i]) == std::signbit(e));
    }
    const auto raw = f.bytes("raw_" + name);
    const auto eigen = f.bytes(name);
    CHECK(std::equal(raw.begin(), raw.end(), eigen.begin(), eigen.end()));
    // float reads equal double reads rounded to float (exact for all these).
    const auto as_float = f.vector<float>(name);
    for (std::size_t i = 0; i < v.size(); ++i) CHECK(as_float(static_cast<Eigen::Index>(i)) == static_cast<float>(got[i]));
  }
}

TEST_CASE("F16 and BF16 bytes are core/float16.hpp's bits, and NaN/Inf survive") {
  // (−65519 rounds to F16's −65504; −65520 would round to −inf, which the
  // writer refuses: see the overflow test below.)
  const std::vector<float> v = {1.0f, 0.1f, -65519.0f, 1e-8f, std::numeric_limits<float>::infinity(),
                                std::numeric_limits<float>::quiet_NaN()};
  for (DType t : {DType::kF16, DType::kBF16}) {
    SafetensorsWriter w;
    w.add("x", Eigen::Map<const Eigen::VectorXf>(v.data(), static_cast<Eigen::Index>(v.size())), t);
    const auto f = SafetensorsFile::from_bytes(w.bytes());
    const auto bytes = f.bytes("x");
    const auto back = f.vector<float>("x");
    for (std::size_t i = 0; i < v.size(); ++i) {
      std::uint16_t bits;
      std::memcpy(&bits, bytes.data() + 2 * i, 2);
      const std::uint16_t expected =
          t == DType::kF16 ? oq::core::float_to_f16_bits(v[i]) : oq::core::float_to_bf16_bits(v[i]);
      CHECK(bits == expected);
      const float e = t == DType::kF16 ? oq::core::f16_bits_to_float(bits) : oq::core::bf16_bits_to_float(bits);
      if (std::isnan(e)) {
        CHECK(std::isnan(back(static_cast<Eigen::Index>(i))));
      } else {
        CHECK(back(static_cast<Eigen::Index>(i)) == e);
      }
    }
  }
}

TEST_CASE("scalars (shape []) hold one element") {
  SafetensorsWriter w;
  w.add("s", DType::kF64, {}, le_bytes(std::vector<double>{-4.25}));
  w.add("b", DType::kU8, {}, le_bytes(std::vector<std::uint8_t>{7}));
  const Bytes bytes = w.bytes();
  CHECK(w.header().find(R"("s":{"dtype":"F64","shape":[],"data_offsets":[0,8]})") != std::string::npos);
  const auto f = SafetensorsFile::from_bytes(bytes);
  CHECK(f.info("s").shape.empty());
  CHECK(f.info("s").size() == 1);
  CHECK(f.vector<double>("s") == Eigen::VectorXd::Constant(1, -4.25));
  CHECK(f.elements<float>("b") == std::vector<float>{7.0f});
  CHECK_THROWS_WITH_AS(f.matrix<float>("s"), doctest::Contains("has shape []"), std::invalid_argument);
}

TEST_CASE("1-D and 2-D tensors: shapes from Eigen, row-major order whatever the storage order") {
  const Eigen::MatrixXf col_major = oq::test::gaussian<float>(3, 4, 1);
  const RowMatrix<double> row_major = oq::test::gaussian<double>(2, 5, 2);
  const Eigen::VectorXf column = Eigen::VectorXf::LinSpaced(5, -1.0f, 1.0f);
  const Eigen::RowVectorXf row = Eigen::RowVectorXf::LinSpaced(4, 0.0f, 3.0f);
  SafetensorsWriter w;
  w.add("col_major", col_major);
  w.add("row_major", row_major, DType::kF64);
  w.add("column", column);
  w.add("row", row);
  w.add("expr", col_major.transpose() * 2.0f);  // an expression, evaluated once
  const auto f = SafetensorsFile::from_bytes(w.bytes());
  CHECK(f.info("col_major").shape == std::vector<std::size_t>{3, 4});
  CHECK(f.info("column").shape == std::vector<std::size_t>{5});
  CHECK(f.info("row").shape == std::vector<std::size_t>{4});
  CHECK(f.info("expr").shape == std::vector<std::size_t>{4, 3});
  CHECK(f.matrix<float>("col_major") == col_major);
  CHECK(f.matrix<double>("row_major") == row_major);
  CHECK(f.matrix<float>("expr") == RowMatrix<float>(col_major.transpose() * 2.0f));
  // The first bytes are row 0: (0,0), (0,1), ... — C order.
  float first[2];
  std::memcpy(first, f.bytes("col_major").data(), sizeof(first));
  CHECK(first[0] == col_major(0, 0));
  CHECK(first[1] == col_major(0, 1));
  CHECK(f.vector<float>("column") == column);
  CHECK(f.matrix<float>("column") == RowMatrix<float>(column.transpose()));  // 1-D → 1 × n
  CHECK(f.vector<float>("row") == row.transpose());
}

TEST_CASE("empty tensors (a 0 in the shape) are valid, wherever they sit") {
  SafetensorsWriter w;
  w.add("e0", DType::kF32, {0}, {});
  w.add("a", DType::kI32, {2}, le_bytes(std::vector<std::int32_t>{5, -6}));
  w.add("e1", DType::kBF16, {0, 4}, {});
  w.add("e2", Eigen::MatrixXd(3, 0), DType::kF64);
  w.add("b", DType::kU8, {1}, le_bytes(std::vector<std::uint8_t>{9}));
  const auto f = SafetensorsFile::from_bytes(w.bytes());
  CHECK(f.info("e0").begin == 0);
  CHECK(f.info("e0").end == 0);
  CHECK(f.info("e1").begin == 8);
  CHECK(f.info("e1").end == 8);
  CHECK(f.info("e2").shape == std::vector<std::size_t>{3, 0});
  CHECK(f.info("e1").size() == 0);
  CHECK(f.vector<float>("e0").size() == 0);
  const auto m = f.matrix<float>("e1");
  CHECK(m.rows() == 0);
  CHECK(m.cols() == 4);
  CHECK(f.matrix<double>("e2").rows() == 3);
  CHECK(f.elements<double>("e2").empty());
  CHECK(f.vector<double>("a") == Eigen::Vector2d(5, -6));
  CHECK(f.vector<double>("b")(0) == 9);
  // Sorted by begin (ties by end, then name): e0 [0,0], a [0,8], e1 [8,8], e2 [8,8], b [8,9].
  std::vector<std::string> order;
  for (const auto& t : f.tensors()) order.push_back(t.name);
  CHECK(order == std::vector<std::string>{"e0", "a", "e1", "e2", "b"});
  // A huge dimension next to a 0 is still an empty tensor.
  const Bytes huge = file_of(R"({"z":{"dtype":"F64","shape":[1099511627776,1099511627776,0],"data_offsets":[0,0]}})");
  CHECK(oq::io::parse_safetensors_header(huge).tensors.at(0).size() == 0);
}

TEST_CASE("metadata: written first in insertion order, read as a map; null accepted") {
  SafetensorsWriter w;
  w.add_metadata("format", "pt");
  w.add_metadata("note", "quotes \" and \\ and\nnewline, ünïcödé");
  w.add("x", Eigen::Vector2f(1, 2));
  CHECK(w.header().rfind(R"({"__metadata__":{"format":"pt","note":"quotes \" and \\ and\nnewline, ünïcödé"},"x":)", 0) ==
        0);
  const auto f = SafetensorsFile::from_bytes(w.bytes());
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.metadata().at("note") == "quotes \" and \\ and\nnewline, ünïcödé");
  CHECK_THROWS_AS(w.add_metadata("format", "np"), std::invalid_argument);

  const auto h = oq::io::parse_safetensors_header(file_of(R"({"__metadata__":null})"));
  CHECK(h.metadata.empty());
  CHECK(h.tensors.empty());
}

TEST_CASE("tensor names are any UTF-8 string, escaped in the header and found again") {
  SafetensorsWriter w;
  const std::vector<std::string> names = {"model.layers.0.self_attn.q_proj.weight", "", "quote\"back\\slash",
                                          "tab\tnl\n", "ünïcödé ✓"};
  for (std::size_t i = 0; i < names.size(); ++i) {
    w.add(names[i], DType::kU8, {1}, le_bytes(std::vector<std::uint8_t>{static_cast<std::uint8_t>(i)}));
  }
  const auto f = SafetensorsFile::from_bytes(w.bytes());
  for (std::size_t i = 0; i < names.size(); ++i) {
    INFO("name ", names[i]);
    REQUIRE(f.contains(names[i]));
    CHECK(f.elements<double>(names[i]) == std::vector<double>{static_cast<double>(i)});
  }
}

TEST_CASE("the writer's header keeps insertion order and aligns the data section to 8 bytes") {
  for (std::size_t len = 1; len <= 16; ++len) {
    SafetensorsWriter w;
    w.add(std::string(len, 'z'), Eigen::Vector3f(1, 2, 3));
    w.add("a", Eigen::Vector2d(4, 5), DType::kF64);
    const std::string h = w.header();
    CHECK(h.size() % 8 == 0);
    CHECK(h.find(std::string(len, 'z')) < h.find("\"a\""));
    const auto f = SafetensorsFile::from_bytes(w.bytes());
    CHECK(f.header().data_offset % 8 == 0);
    CHECK(f.info("a").begin == 12);
    CHECK(f.vector<double>("a") == Eigen::Vector2d(4, 5));
  }
}

TEST_CASE("writer errors: duplicates, reserved name, size mismatch, invalid UTF-8, unrepresentable values") {
  SafetensorsWriter w;
  w.add("x", Eigen::Vector2f(1, 2));
  CHECK_THROWS_WITH_AS(w.add("x", Eigen::Vector2f(1, 2)), doctest::Contains("'x' is already there"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(w.add("__metadata__", Eigen::Vector2f(1, 2)), doctest::Contains("reserved"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(w.add("y", DType::kF32, {3}, le_bytes(std::vector<float>{1, 2})),
                       doctest::Contains("needs 12 bytes, but data holds 8"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(w.add("y", DType::kU8, {std::size_t{1} << 40, std::size_t{1} << 40}, {}),
                       doctest::Contains("more bytes than size_t can count"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(w.add("bad\xFF", Eigen::Vector2f(1, 2)), doctest::Contains("not valid UTF-8"),
                       std::invalid_argument);
  CHECK_THROWS_AS(w.add_metadata("k", "bad\xC3"), std::invalid_argument);
  CHECK_THROWS_AS(w.add("i", Eigen::Vector2f(1.5f, 2), DType::kI32), std::domain_error);
  CHECK_THROWS_AS(w.add("i", Eigen::Vector2f(300, 2), DType::kU8), std::domain_error);
  // Failed adds leave the writer as it was.
  CHECK(w.size() == 1);
  const auto f = SafetensorsFile::from_bytes(w.bytes());
  CHECK(f.tensors().size() == 1);
  CHECK(f.metadata().empty());
}

TEST_CASE("the writer refuses a header the readers would refuse (over 100 MB)") {
  // A metadata value near the limit: the header is the value plus its framing.
  const std::size_t limit = 100'000'000;
  SafetensorsWriter fits;
  fits.add_metadata("k", std::string(limit - 200, 'v'));
  fits.add("x", Eigen::Vector2f(1, 2));
  CHECK(fits.header().size() <= limit);
  SafetensorsWriter over;
  over.add_metadata("k", std::string(limit, 'v'));
  over.add("x", Eigen::Vector2f(1, 2));
  CHECK_THROWS_WITH_AS(over.header(), doctest::Contains("expected at most 100000000, the safetensors limit"),
                       std::invalid_argument);
  CHECK_THROWS_AS(over.bytes(), std::invalid_argument);
}

TEST_CASE("write() → SafetensorsFile(path): memory-mapped read, no .tmp left behind") {
  const auto dir = std::filesystem::temp_directory_path() / temp_name("oq_safetensors_test");
  std::filesystem::create_directories(dir);
  const auto path = dir / "m.safetensors";
  const RowMatrix<float> m = oq::test::gaussian<float>(7, 5, 3);
  SafetensorsWriter w;
  w.add("m", m, DType::kF32);
  w.add_metadata("format", "pt");
  w.write(path);
  CHECK(std::filesystem::exists(path));
  CHECK_FALSE(std::filesystem::exists(dir / "m.safetensors.tmp"));
  CHECK(std::filesystem::file_size(path) == w.bytes().size());
  {
    SafetensorsFile f(path);
    CHECK(f.source() == path.string());
    CHECK(f.matrix<float>("m") == m);
    CHECK(f.metadata().at("format") == "pt");
    // Moving keeps the mapping and the lookups valid.
    SafetensorsFile moved = std::move(f);
    CHECK(moved.matrix<float>("m") == m);
    CHECK_THROWS_WITH_AS(moved.info("nope"), doctest::Contains(("tensor 'nope' not found in " + path.string()).c_str()),
                         std::invalid_argument);
  }
  // Overwriting replaces the file.
  SafetensorsWriter w2;
  w2.add("n", Eigen::Vector2f(1, 2));
  w2.write(path);
  CHECK(SafetensorsFile(path).contains("n"));
  // A malformed file names its path.
  {
    std::ofstream out(dir / "bad.safetensors", std::ios::binary);
    out << "garbage";
  }
  CHECK_THROWS_WITH_AS(SafetensorsFile(dir / "bad.safetensors"),
                       doctest::Contains(((dir / "bad.safetensors").string() + ": file is 7 bytes").c_str()), FormatError);
  CHECK_THROWS_AS(SafetensorsFile(dir / "missing.safetensors"), std::runtime_error);
  // Writing into a directory that does not exist fails with the path.
  CHECK_THROWS_WITH_AS(w.write(dir / "no" / "such" / "x.safetensors"), doctest::Contains("cannot open"),
                       std::runtime_error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("SafetensorsFile lookups and shape errors") {
  SafetensorsWriter w;
  std::vector<float> v(24);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  w.add("t3", DType::kF32, {2, 3, 4}, le_bytes(v));
  w.add("col", DType::kF32, {1, 6, 1}, le_bytes(std::vector<float>(v.begin(), v.begin() + 6)));
  w.add("m", DType::kF32, {2, 3}, le_bytes(std::vector<float>(v.begin(), v.begin() + 6)));
  const auto f = SafetensorsFile::from_bytes(w.bytes(), "mem.safetensors");
  CHECK(f.contains("t3"));
  CHECK_FALSE(f.contains("t4"));
  CHECK_THROWS_WITH_AS(f.info("t4"), "oq::io::SafetensorsFile: tensor 't4' not found in mem.safetensors",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(f.matrix<float>("t3"), doctest::Contains("'t3' in mem.safetensors has shape [2, 3, 4]"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(f.vector<float>("m"), doctest::Contains("has shape [2, 3]"), std::invalid_argument);
  CHECK(f.elements<float>("t3") == v);
  CHECK(f.vector<float>("col").size() == 6);
  CHECK(f.vector<float>("col")(5) == 5.0f);
  CHECK(f.bytes("m").size() == 24);
  CHECK(f.file_bytes().size() == f.header().data_offset + (24 + 6 + 6) * 4);
  // An empty tensor's dimension beyond Eigen::Index is reported, not wrapped.
  const auto big = SafetensorsFile::from_bytes(
      file_of(R"({"z":{"dtype":"F32","shape":[18446744073709551615,0],"data_offsets":[0,0]}})"));
  CHECK_THROWS_WITH_AS(big.matrix<float>("z"), doctest::Contains("do not fit Eigen::Index"), std::invalid_argument);
}

namespace {

// Every dtype's bytes read back as stored into an unsigned integer of its
// size: the same bytes, in C order, whatever the dtype means.
template <class U>
void check_stored_as(DType dtype, std::mt19937_64& rng) {
  CAPTURE(oq::io::dtype_name(dtype));
  std::vector<U> v(2 * 7);
  for (U& e : v) e = static_cast<U>(rng());
  SafetensorsWriter w;
  w.add("m", dtype, {2, 7}, le_bytes(v));
  w.add("t", dtype, {7, 1, 2}, le_bytes(v));
  w.add("e", dtype, {0, 3}, {});
  const auto f = SafetensorsFile::from_bytes(w.bytes(), "stored.safetensors");
  CHECK(f.stored_elements<U>("m", dtype) == v);
  CHECK(f.stored_elements<U>("t", dtype) == v);  // any rank
  const RowMatrix<U> m = f.stored_matrix<U>("m", dtype);
  REQUIRE(m.rows() == 2);
  REQUIRE(m.cols() == 7);
  for (Eigen::Index r = 0; r < 2; ++r)
    for (Eigen::Index c = 0; c < 7; ++c) CHECK(m(r, c) == v[static_cast<std::size_t>(7 * r + c)]);
  CHECK(f.stored_elements<U>("e", dtype).empty());
  CHECK(f.stored_matrix<U>("e", dtype).rows() == 0);
  CHECK_THROWS_WITH_AS(f.stored_matrix<U>("t", dtype), doctest::Contains("has shape [7, 1, 2]"),
                       std::invalid_argument);
  const DType other = dtype == DType::kU8 ? DType::kI8 : DType::kU8;
  const std::string expected = "tensor 'm' in stored.safetensors is " + std::string(oq::io::dtype_name(dtype)) +
                               ", expected " + std::string(oq::io::dtype_name(other));
  CHECK_THROWS_WITH_AS(f.stored_elements<std::uint8_t>("m", other), doctest::Contains(expected.c_str()),
                       std::invalid_argument);
}

}  // namespace

TEST_CASE("stored_elements / stored_matrix: every dtype's bytes as stored, and the wrong dtype or size refused") {
  std::mt19937_64 rng(17);
  for (const DType dtype : oq::io::kAllDTypes) {
    switch (oq::io::dtype_size(dtype)) {
      case 1: check_stored_as<std::uint8_t>(dtype, rng); break;
      case 2: check_stored_as<std::uint16_t>(dtype, rng); break;
      case 4: check_stored_as<std::uint32_t>(dtype, rng); break;
      case 8: check_stored_as<std::uint64_t>(dtype, rng); break;
      default: FAIL("a dtype of ", oq::io::dtype_size(dtype), " bytes");
    }
  }
  SafetensorsWriter w;
  w.add("i", DType::kI32, {2}, le_bytes(std::vector<std::int32_t>{-1, 7}));
  const auto f = SafetensorsFile::from_bytes(w.bytes());
  CHECK(f.stored_elements<std::int32_t>("i", DType::kI32) == std::vector<std::int32_t>{-1, 7});
  CHECK_THROWS_WITH_AS(f.stored_elements<std::int16_t>("i", DType::kI32),
                       doctest::Contains("the element type must have 4 bytes for dtype I32, got 2"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(f.stored_matrix<std::int32_t>("j", DType::kI32), doctest::Contains("'j' not found"),
                       std::invalid_argument);
}

TEST_CASE("big matrix: 300×257 BF16/F16/F32 → float equals the per-element core conversion") {
  const RowMatrix<float> x = oq::test::heavy_tailed<float>(300, 257, 11);
  SafetensorsWriter w;
  w.add("bf16", x, DType::kBF16);
  w.add("f16", x, DType::kF16);
  w.add("f32", x, DType::kF32);
  w.add("f64", x, DType::kF64);
  const auto f = SafetensorsFile::from_bytes(w.bytes());
  for (const char* name : {"bf16", "f16", "f32", "f64"}) {
    INFO("tensor ", name);
    const auto bytes = f.bytes(name);
    const auto dtype = f.info(name).dtype;
    const RowMatrix<float> got = f.matrix<float>(name);
    const RowMatrix<double> got_double = f.matrix<double>(name);
    REQUIRE(got.rows() == 300);
    REQUIRE(got.cols() == 257);
    bool all_equal = true, all_equal_double = true;
    for (Eigen::Index i = 0; i < got.size(); ++i) {
      const std::byte* p = bytes.data() + static_cast<std::size_t>(i) * oq::io::dtype_size(dtype);
      std::uint16_t h;
      std::memcpy(&h, p, 2);
      double expected = 0;
      switch (dtype) {
        case DType::kBF16: expected = oq::core::bf16_bits_to_float(h); break;
        case DType::kF16: expected = oq::core::f16_bits_to_float(h); break;
        default: expected = oq::io::load_element(dtype, p); break;
      }
      all_equal = all_equal && got.data()[i] == static_cast<float>(expected);
      all_equal_double = all_equal_double && got_double.data()[i] == expected;
    }
    CHECK(all_equal);
    CHECK(all_equal_double);
  }
  CHECK(f.matrix<float>("f32") == x);
  CHECK(f.matrix<float>("f64") == x);
}

TEST_CASE("unaligned data sections read correctly (every load is a memcpy)") {
  // Header of odd length (no padding): the data starts at an odd offset.
  const std::string header = R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})";
  REQUIRE((8 + header.size()) % 4 != 0);
  const auto f = SafetensorsFile::from_bytes(file_of(header, le_bytes(std::vector<float>{1.5f, -2.0f, 3.25f})));
  CHECK(f.vector<float>("x") == Eigen::Vector3f(1.5f, -2.0f, 3.25f));
  CHECK(f.vector<double>("x") == Eigen::Vector3d(1.5, -2.0, 3.25));
}

TEST_CASE("malformed: framing (length, header start, JSON)") {
  for (std::size_t n = 0; n < 8; ++n) expect_format_error(Bytes(n), "too short for the 8-byte");
  expect_format_error(u64_le(1), "runs past the end of the file (0 bytes follow");
  Bytes longer = u64_le(100);
  longer.resize(50);
  expect_format_error(longer, "header length runs past the end of the file (42 bytes follow");
  expect_format_error(u64_le(100'000'001), "exceeds the limit of 100000000 bytes");
  expect_format_error(u64_le(std::numeric_limits<std::uint64_t>::max()), "exceeds the limit");
  expect_format_error(file_of(""), "the header is empty");
  expect_format_error(file_of(" {}"), "does not start with '{'");
  expect_format_error(file_of("[]"), "does not start with '{'");
  expect_format_error(file_of(std::string("\0{}", 3)), "does not start with '{'");
  expect_format_error(file_of("{"), "header: not valid JSON");
  expect_format_error(file_of("{} x"), "header: not valid JSON");
  expect_format_error(file_of("{}{}"), "header: not valid JSON");
  expect_format_error(file_of("{} // comment"), "header: not valid JSON");
  expect_format_error(file_of("{\"a\xFF\":1}"), "header: not valid JSON");  // invalid UTF-8
  // (Entries are checked as they are read: a trailing comma after a valid one.)
  expect_format_error(file_of(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},})"), "header: not valid JSON");
  expect_format_error(file_of(std::string("{}\0", 3)), "header: not valid JSON");  // NUL padding is not whitespace
}

TEST_CASE("malformed: entries (types, fields, dtype, shape, offsets)") {
  expect_entry_error("[1]", 0, "the entry is an array of 1 elements");
  expect_entry_error("\"F32\"", 0, "the entry is string \"F32\"");
  expect_entry_error("null", 0, "the entry is null");
  expect_entry_error(R"({"shape":[1],"data_offsets":[0,4]})", 4, "the field 'dtype' is missing");
  expect_entry_error(R"({"dtype":"F32","data_offsets":[0,4]})", 4, "the field 'shape' is missing");
  expect_entry_error(R"({"dtype":"F32","shape":[1]})", 4, "the field 'data_offsets' is missing");
  expect_entry_error(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4],"offsets":[0,4]})", 4,
                     "unknown field 'offsets'");
  expect_entry_error(R"({"dtype":5,"shape":[1],"data_offsets":[0,4]})", 4, "\"dtype\" is number 5");
  expect_entry_error(R"({"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]})", 1, "unknown dtype \"F8_E4M3\"");
  expect_entry_error(R"({"dtype":"f32","shape":[1],"data_offsets":[0,4]})", 4, "unknown dtype \"f32\" (expected one of BOOL");
  expect_entry_error(R"({"dtype":"F32","shape":"1","data_offsets":[0,4]})", 4, "\"shape\" is string \"1\"");
  expect_entry_error(R"({"dtype":"F32","shape":{"0":1},"data_offsets":[0,4]})", 4, "\"shape\" is an object");
  expect_entry_error(R"({"dtype":"F32","shape":[-1],"data_offsets":[0,4]})", 4, "shape[0] is number -1");
  expect_entry_error(R"({"dtype":"F32","shape":[1,2.0],"data_offsets":[0,8]})", 8, "shape[1] is number 2.0");
  expect_entry_error(R"({"dtype":"F32","shape":[1e3],"data_offsets":[0,4000]})", 4000, "shape[0] is number");
  expect_entry_error(R"({"dtype":"F32","shape":[true],"data_offsets":[0,4]})", 4, "shape[0] is boolean true");
  expect_entry_error(R"({"dtype":"F32","shape":[null],"data_offsets":[0,4]})", 4, "shape[0] is null");
  expect_entry_error(R"({"dtype":"F32","shape":[[1]],"data_offsets":[0,4]})", 4, "shape[0] is an array");
  expect_entry_error(R"({"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,4]})", 4,
                     "(expected a non-negative integer that fits 64 bits)");
  expect_entry_error(R"({"dtype":"F32","shape":[1],"data_offsets":[0]})", 4, "\"data_offsets\" is an array of 1");
  expect_entry_error(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4,8]})", 4, "\"data_offsets\" is an array of 3");
  expect_entry_error(R"({"dtype":"F32","shape":[1],"data_offsets":{"0":0,"1":4}})", 4, "\"data_offsets\" is an object");
  expect_entry_error(R"({"dtype":"F32","shape":[1],"data_offsets":["0",4]})", 4, "data_offsets[0] is string \"0\"");
  expect_entry_error(R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})", 4, "data_offsets[0] is number -4");
  expect_entry_error(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4.5]})", 4, "data_offsets[1] is number 4.5");
}

TEST_CASE("malformed: sizes and offsets") {
  // product(shape) overflows, and product · itemsize overflows.
  expect_entry_error(R"({"dtype":"U8","shape":[4294967296,4294967296,2],"data_offsets":[0,0]})", 0,
                     "has more bytes than size_t can count");
  expect_entry_error(R"({"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]})", 0,
                     "shape [4611686018427387904] of F32 has more bytes than size_t can count");
  expect_entry_error(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4]})", 8,
                     "data_offsets [0, 4] spans 4 bytes, but shape [2] of F32 needs 2 × 4 = 8");
  expect_entry_error(R"({"dtype":"F32","shape":[0],"data_offsets":[0,4]})", 4, "spans 4 bytes, but shape [0]");
  expect_entry_error(R"({"dtype":"F32","shape":[],"data_offsets":[0,0]})", 0, "spans 0 bytes, but shape [] of F32 needs 1 × 4");
  expect_entry_error(R"({"dtype":"F32","shape":[1],"data_offsets":[8,4]})", 8, "has begin > end");
  expect_entry_error(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 4,
                     "data_offsets [0, 8] ends past the data section, which has 4 bytes");
  expect_entry_error(R"({"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551616]})", 4,
                     "data_offsets[1] is number");
}

TEST_CASE("malformed: the tensors must tile the data section") {
  const std::string a8 = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  expect_format_error(file_of("{" + a8 + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", Bytes(12)),
                      "tensor 'b': data_offsets [4, 12] overlap those of tensor 'a' [0, 8]");
  expect_format_error(file_of("{" + a8 + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", Bytes(8)),
                      "tensor 'b': data_offsets [0, 8] overlap those of tensor 'a'");
  expect_format_error(file_of("{" + a8 + R"(,"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})", Bytes(8)),
                      "tensor 'e': data_offsets [4, 4] overlap those of tensor 'a'");
  expect_format_error(file_of("{" + a8 + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})", Bytes(16)),
                      "bytes [8, 12) of the data section belong to no tensor (a hole before tensor 'b'");
  expect_format_error(file_of(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", Bytes(8)),
                      "bytes [0, 4) of the data section belong to no tensor");
  expect_format_error(file_of("{" + a8 + "}", Bytes(12)),
                      "the data section has 12 bytes, but the tensors cover only [0, 8)");
  expect_format_error(file_of("{}", Bytes(1)), "the data section has 1 bytes, but the tensors cover only [0, 0)");
  expect_format_error(file_of(R"({"__metadata__":{}})", Bytes(3)), "the data section has 3 bytes");
}

TEST_CASE("malformed: metadata and duplicate keys") {
  expect_format_error(file_of(R"({"__metadata__":[1]})"), "\"__metadata__\" is an array of 1 elements");
  expect_format_error(file_of(R"({"__metadata__":"pt"})"), "\"__metadata__\" is string \"pt\"");
  expect_format_error(file_of(R"({"__metadata__":{"format":1}})"),
                      "\"__metadata__\" value of key 'format' is number 1 (expected a string)");
  expect_format_error(file_of(R"({"__metadata__":{"format":null}})"), "value of key 'format' is null");
  expect_format_error(file_of(R"({"__metadata__":{"a":{"b":"c"}}})"), "value of key 'a' is an object");
  const std::string a8 = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  expect_format_error(file_of("{" + a8 + "," + a8 + "}", Bytes(8)),
                      "header: duplicate key 'a' in the top-level object");
  expect_format_error(file_of(R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", Bytes(8)),
                      "duplicate key 'dtype' in the object at '/a'");
  expect_format_error(file_of(R"({"__metadata__":{"k":"1","k":"2"}})"),
                      "duplicate key 'k' in the object at '/__metadata__'");
  expect_format_error(file_of(R"({"__metadata__":{},"__metadata__":{}})"), "duplicate key '__metadata__'");
  // Keys inside objects nested in arrays are checked too (and reported by path).
  expect_format_error(file_of(R"({"a":{"dtype":"F32","shape":[{"x":1,"x":2}],"data_offsets":[0,8]}})", Bytes(8)),
                      "duplicate key 'x' in the object at '/a/shape/[]'");
  // The same key in different objects is fine.
  CHECK_NOTHROW(oq::io::parse_safetensors_header(
      file_of(R"({"__metadata__":{"a":"x"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", Bytes(8))));
}

TEST_CASE("names in error messages: control bytes escaped, long names shortened") {
  expect_format_error(file_of(R"({"a\u0000b\n":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})"),
                      "tensor 'a\\x00b\\x0A': data_offsets [0, 4] ends past the data section");
  const std::string long_name(5000, 'n');
  const std::string message =
      format_error_of(file_of("{\"" + long_name + R"(":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})"));
  CHECK(message.find("tensor '" + std::string(200, 'n') + "...': ") != std::string::npos);
  CHECK(message.size() < 500);
}

TEST_CASE("deeply nested JSON is rejected without exhausting the stack or memory") {
  const std::size_t depth = 200000;
  const std::string expected = "nested deeper than " + std::to_string(oq::io::kMaxJsonDepth) + " levels";
  std::string header = "{\"a\":";
  header.append(depth, '[');
  header.append(depth, ']');
  header += "}";
  expect_format_error(file_of(header), expected);
  std::string objects = "{";
  for (std::size_t i = 0; i < depth; ++i) objects += "\"k\":{";
  objects.append(depth + 1, '}');
  expect_format_error(file_of(objects), expected);
}

TEST_CASE("every truncation of a valid file, and every extension, throws FormatError") {
  SafetensorsWriter w;
  w.add_metadata("format", "pt");
  w.add("w", Eigen::Matrix2f::Identity(), DType::kBF16);
  w.add("b", Eigen::Vector3d(1, 2, 3), DType::kF64);
  w.add("s", DType::kI8, {}, le_bytes(std::vector<std::int8_t>{-3}));
  const Bytes full = w.bytes();
  REQUIRE_NOTHROW(oq::io::parse_safetensors_header(full));
  std::size_t failures = 0;
  for (std::size_t n = 0; n < full.size(); ++n) {
    const Bytes prefix(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    try {
      (void)oq::io::parse_safetensors_header(prefix);
      FAIL("prefix of ", n, " bytes parsed");
    } catch (const FormatError&) {
      ++failures;
    }
  }
  CHECK(failures == full.size());
  Bytes extended = full;
  extended.push_back(std::byte{0});
  expect_format_error(extended, "the data section has");
}

// Issue 23: what a header costs to read. A header of n entries took O(n²)
// time (nlohmann's parser callback rescans the parent object at every close:
// 40,000 tensors in 17 s, 200,000 would take about 7 minutes) and about 14
// bytes of memory per header byte (a whole json value of it).

namespace {

// n tensors "t0", "t1", … of F32 [1], as the writer lays them out.
Bytes many_tensors(std::size_t n) {
  SafetensorsWriter w;
  const Bytes four = le_bytes(std::vector<float>{1.0f});
  for (std::size_t i = 0; i < n; ++i) {
    std::string name = "t";  // appended: "t" + std::string&& trips GCC 12's -Wrestrict (bug 105329)
    name += std::to_string(i);
    w.add(std::move(name), DType::kF32, {1}, four);
  }
  return w.bytes();
}

}  // namespace

TEST_CASE("a header of 200,000 tensors parses in linear time") {
  const Bytes file = many_tensors(200000);  // a 13 MB header
  // In a child killed at 60 s: linear parsing takes under a second here
  // (a few under the sanitizers); the quadratic one took minutes.
  CHECK(oq::test::finishes_within(std::chrono::seconds(60), [&] {
    const auto h = oq::io::parse_safetensors_header(file);
    return h.tensors.size() == 200000 && h.tensors[199999].begin == 4 * 199999;
  }));
}

TEST_CASE("reading a header costs memory in proportion to its size") {
  if (oq::test::kUnderAsan) return;  // ASan's quarantine keeps what each entry freed
  const Bytes file = many_tensors(100000);
  const std::size_t header = file.size() - 8 - 400000;
  // The header parsed into its tensors and a SafetensorsFile built over it
  // (the bytes are moved in: no copy). Measured: 1.84 times the header's
  // bytes (about 120 bytes per 67-byte entry: TensorInfo, its shape, the
  // lookup index); the whole-json parser took 14 times.
  CHECK(oq::test::finishes_within(std::chrono::seconds(60), [&] {
    Bytes bytes = file;
    const std::size_t before = oq::test::start_peak_rss();
    if (before == 0) return true;  // no way to measure here
    const auto f = SafetensorsFile::from_bytes(std::move(bytes));
    const double ratio = static_cast<double>(oq::test::peak_rss() - before) / static_cast<double>(header);
    std::fprintf(stderr, "header of %zu bytes: peak memory grew by %.2f times it\n", header, ratio);
    return f.tensors().size() == 100000 && ratio < 2.5;
  }));
}

TEST_CASE("a mapped file's header pages leave memory as the header is parsed: the peak is the parsed header's") {
  if (oq::test::kUnderAsan) return;  // ASan's quarantine keeps what each entry freed
  const auto dir = std::filesystem::temp_directory_path() / temp_name("oq_safetensors_test");
  std::filesystem::create_directories(dir);
  const auto path = dir / "many.safetensors";
  {
    const Bytes file = many_tensors(200000);  // a 13 MB header, 800 KB of data
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(file.data()),
                                                static_cast<std::streamsize>(file.size()));
  }
  const auto file_size = static_cast<double>(std::filesystem::file_size(path));
  // In a child (a fresh high-water mark). From memory the parse costs 1.84
  // times the header (the test above); through the mapping, every header
  // page the parser touched stayed resident as well (measured: 2.67 times
  // the file), until the pages were given back as the parser passes them
  // (1.73).
  CHECK(oq::test::finishes_within(std::chrono::seconds(60), [&] {
    const std::size_t before = oq::test::start_peak_rss();
    if (before == 0) return true;  // no way to measure here
    const SafetensorsFile f(path);
    const double ratio = static_cast<double>(oq::test::peak_rss() - before) / file_size;
    const long long mapped = oq::test::mapping_rss(f.file_bytes().data());
    std::fprintf(stderr, "mapped header of %.1f MB: peak memory grew by %.2f times the file; %lld bytes mapped after\n",
                 file_size / 1e6, ratio, mapped);
    // The header's pages are gone once it is parsed (a page or two of the
    // kernel's fault-around may remain), and the tensors still read.
    const bool released = mapped < 0 || mapped <= (1 << 20);
    const bool reads = f.tensors().size() == 200000 && f.vector<float>("t0")(0) == 1.0f &&
                       f.vector<float>("t199999")(0) == 1.0f && f.vector<float>("t123456")(0) == 1.0f;
    return ratio < 2.3 && released && reads;
  }));
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
}

TEST_CASE("oq's limits: a forged entry or metadata is refused before it is held in memory") {
  // An entry of a million numbers: refused at the 2049th value, naming it.
  std::string big = "{\"a\":[0";
  for (int i = 0; i < 1000000; ++i) big += ",0";
  big += "]}";
  expect_format_error(file_of(big), "tensor 'a': the entry holds more than 2048 JSON values");
  // 1025 dimensions (whatever the rest of the entry): a FormatError, and
  // the writer refuses what the reader refuses.
  std::string rank = R"({"e":{"dtype":"U8","shape":[0)";
  for (int i = 1; i < 1025; ++i) rank += ",0";
  rank += R"(],"data_offsets":[0,0]}})";
  expect_format_error(file_of(rank), "tensor 'e': \"shape\" has 1025 dimensions (expected at most 1024");
  SafetensorsWriter w;
  CHECK_NOTHROW(w.add("ok", DType::kU8, std::vector<std::size_t>(1024, 0), {}));
  CHECK(oq::io::parse_safetensors_header(w.bytes()).tensors[0].shape.size() == 1024);
  CHECK_THROWS_WITH_AS(w.add("e", DType::kU8, std::vector<std::size_t>(1025, 0), {}),
                       doctest::Contains("has 1025 dimensions (expected at most 1024"), std::invalid_argument);
  // 65,537 metadata entries: the reader and the writer stop at 65,536.
  std::string meta = R"({"__metadata__":{)";
  for (int i = 0; i <= 65536; ++i) meta += (i > 0 ? ",\"" : "\"") + std::to_string(i) + "\":\"\"";
  meta += "}}";
  expect_format_error(file_of(meta), "\"__metadata__\" holds more than 65537 JSON values");
  SafetensorsWriter m;
  for (int i = 0; i < 65536; ++i) m.add_metadata(std::to_string(i), "");
  CHECK(oq::io::parse_safetensors_header(m.bytes()).metadata.size() == 65536);
  CHECK_THROWS_WITH_AS(m.add_metadata("one more", ""), doctest::Contains("expected at most 65536"),
                       std::invalid_argument);
}

TEST_CASE("errors never quote a file that is not a safetensors header") {
  // Any file can be named as a shard (a symlink in a checkpoint directory):
  // what it holds must not reach an error message. The first 8 bytes (the
  // length), the first byte of the header, and text that is not JSON.
  const std::string secret = "-----BEGIN OPENSSH PRIVATE KEY-----";
  const Bytes key = to_bytes(secret + "\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n");
  const std::string message = format_error_of(key);
  CHECK(message.find("exceeds the limit") != std::string::npos);
  for (const std::string& text : {std::string("{\"a\": \"") + secret, std::string("{\"a\" ") + secret,
                                  std::string("{") + secret, std::string("{\"a\":") + secret,
                                  std::string("{\"a\":{\"") + secret + "\u0001\"}}",
                                  std::string("{\"a\":1") + std::string(100, '9') + "e99999}"}) {
    const std::string m = format_error_of(file_of(text));
    INFO("message: ", m);
    CHECK(m.find("header: not valid JSON") != std::string::npos);
    CHECK(m.find("BEGIN") == std::string::npos);
    CHECK(m.find("BEG") == std::string::npos);
    CHECK(m.find("99999") == std::string::npos);
  }
}

TEST_CASE("the writer refuses finite values its float dtype cannot hold, instead of storing ±inf") {
  // Issue 23: 1e39 was stored as F32 +inf, 70000 as F16 +inf, without a word.
  const double flt_max = std::numeric_limits<float>::max();
  const double rounds_to_inf = std::ldexp(2.0 - std::ldexp(1.0, -24), 127);  // half an ulp past FLT_MAX
  struct Case {
    DType dtype;
    double largest_kept;  // rounds to the type's largest finite value
    double first_refused;
  };
  for (const Case& c : {Case{DType::kF32, std::nextafter(rounds_to_inf, 0.0), rounds_to_inf},
                        Case{DType::kF16, 65519.99, 65520.0},
                        Case{DType::kBF16, 3.3961e38, 3.3962e38}}) {
    INFO("dtype ", oq::io::dtype_name(c.dtype));
    SafetensorsWriter w;
    CHECK_NOTHROW(w.add("kept", Eigen::Vector3d(c.largest_kept, -c.largest_kept, 1.0), c.dtype));
    const auto kept = SafetensorsFile::from_bytes(w.bytes()).vector<double>("kept");
    CHECK(std::isfinite(kept(0)));
    CHECK(kept(1) == -kept(0));
    for (double v : {c.first_refused, -c.first_refused, 1e300, -std::numeric_limits<double>::max()}) {
      CHECK_THROWS_WITH_AS(w.add("x", Eigen::Vector2d(1.0, v), c.dtype), doctest::Contains("is finite but overflows"),
                           std::domain_error);
    }
    CHECK(w.size() == 1);  // unchanged by the refusals
    // ±inf and NaN are values of the type: stored as they are.
    CHECK_NOTHROW(w.add("special", Eigen::Vector3d(std::numeric_limits<double>::infinity(),
                                                   -std::numeric_limits<double>::infinity(),
                                                   std::numeric_limits<double>::quiet_NaN()),
                        c.dtype));
  }
  SafetensorsWriter f32;
  f32.add("max", Eigen::Vector2d(flt_max, -flt_max), DType::kF32);
  CHECK(SafetensorsFile::from_bytes(f32.bytes()).vector<double>("max")(0) == flt_max);
}

TEST_CASE("the size check end − begin = product(shape)·itemsize, for every dtype, one byte off either way") {
  // Issue 23: the check rested on one case (F32 [2] in 4 bytes); a mutant
  // comparing with < or with the element count instead of bytes survived.
  for (DType d : oq::io::kAllDTypes) {
    const std::size_t itemsize = oq::io::dtype_size(d);
    const std::string name(oq::io::dtype_name(d));
    for (const std::vector<std::size_t>& shape : {std::vector<std::size_t>{3}, std::vector<std::size_t>{2, 5},
                                                  std::vector<std::size_t>{}}) {
      std::size_t count = 1;
      for (std::size_t s : shape) count *= s;
      // Built piecewise: "…" + std::string&& trips GCC 12's -Wrestrict (bug 105329).
      std::string dims;
      for (std::size_t i = 0; i < shape.size(); ++i) {
        if (i > 0) dims += ',';
        dims += std::to_string(shape[i]);
      }
      const std::size_t bytes = count * itemsize;
      for (const std::size_t end : {bytes - 1, bytes, bytes + 1}) {
        std::string header = "{\"t\":{\"dtype\":\"";
        header += name;
        header += "\",\"shape\":[";
        header += dims;
        header += "],\"data_offsets\":[0,";
        header += std::to_string(end);
        header += "]}}";
        INFO("header: ", header);
        const Bytes file = file_of(header, Bytes(end));
        if (end == bytes) {
          CHECK(oq::io::parse_safetensors_header(file).tensors.at(0).end == bytes);
        } else {
          CHECK(format_error_of(file).find("spans " + std::to_string(end) + " bytes, but shape") != std::string::npos);
        }
      }
    }
  }
}
