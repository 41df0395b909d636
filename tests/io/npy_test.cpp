// Tests for oq/io/npy.hpp: golden bytes from the NPY spec and from NumPy 1.24's
// np.save, round trips of every dtype and both header versions, Fortran-order
// reads, the header dict grammar, and every malformed input → FormatError;
// read_npy_matrix (read straight from the file) against read_npy +
// npy_to_matrix, its peak memory, and FIFOs refused without blocking.
#include <oq/io/npy.hpp>

#include <doctest/doctest.h>

#include "support/format_error.hpp"
#include "support/subprocess.hpp"
#include "support/temp_dir.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <utility>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <sys/stat.h>

namespace {

using oq::io::DType;
using oq::io::FormatError;
using oq::io::NpyArray;
using Bytes = std::vector<std::byte>;

Bytes to_bytes(std::string_view s) {
  Bytes b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

void append(Bytes& b, const Bytes& more) { b.insert(b.end(), more.begin(), more.end()); }

template <class T>
Bytes le_bytes(const std::vector<T>& values) {
  Bytes b(values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(b.data(), values.data(), b.size());
  return b;
}

// A .npy file built by hand from the spec: magic, version major.0, the
// little-endian header length (u16 for 1.0, u32 otherwise), `dict` padded with
// spaces and a final '\n' so that the preamble + header is a multiple of
// `align`, then `data`.
Bytes npy_file(std::string_view dict, const Bytes& data, unsigned major = 1, std::size_t align = 64) {
  const std::size_t preamble = major == 1 ? 10 : 12;
  std::string header(dict);
  while ((preamble + header.size() + 1) % align != 0) header += ' ';
  header += '\n';
  std::string pre = "\x93NUMPY";
  pre += static_cast<char>(major);
  pre += '\0';
  for (std::size_t i = 0; i < preamble - 8; ++i) pre += static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  Bytes b = to_bytes(pre + header);
  append(b, data);
  return b;
}

// The FormatError message parse_npy throws for `b`, or a marker when it throws
// nothing (or something else, which fails the CHECK in expect_format_error).
std::string format_error_of(const Bytes& b) {
  return oq::test::format_error_message([&] { (void)oq::io::parse_npy(b); });
}

void expect_format_error(const Bytes& b, std::string_view expected) {
  oq::test::check_format_error(format_error_of(b), "oq::io::parse_npy: <memory>: ", expected);
}

// The header NumPy 1.24 writes: dict, its growth spaces and the 64-byte
// padding all as spaces, '\n' last; `total` is preamble + header.
std::string numpy_header(std::string_view dict, std::size_t total) {
  std::string h(dict);
  h.append(total - 10 - dict.size() - 1, ' ');
  return h + '\n';
}

Bytes preamble_v1(std::uint16_t header_len) {
  std::string p = "\x93NUMPY\x01";
  p += '\0';
  p += static_cast<char>(header_len & 0xFF);
  p += static_cast<char>(header_len >> 8);
  return to_bytes(p);
}

}  // namespace

TEST_CASE("golden bytes: np.save(f, np.arange(6, dtype='<f4').reshape(2, 3)), built from the spec") {
  // Spec: magic (6) + version 1.0 (2) + u16 HEADER_LEN (2) = 10 bytes, then the
  // dict, spaces, '\n', with 10 + HEADER_LEN a multiple of 64. The dict is 59
  // characters, so 10 + 59 + 1 = 70 rounds up to 128: HEADER_LEN = 118 (0x76).
  // (NumPy's 20 growth spaces for shape[0] = 2 are spaces too and land in the
  // same 128 bytes: 10 + 59 + 20 + 1 = 90.)
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  REQUIRE(dict.size() == 59);
  std::string header = dict + std::string(128 - 10 - 59 - 1, ' ') + "\n";
  Bytes expected = to_bytes(std::string("\x93NUMPY\x01\x00\x76\x00", 10) + header);
  REQUIRE(expected.size() == 128);
  append(expected, le_bytes(std::vector<float>{0, 1, 2, 3, 4, 5}));

  Eigen::MatrixXf x(2, 3);  // column-major storage: the file is C order anyway
  x << 0, 1, 2, 3, 4, 5;
  CHECK(oq::io::npy_bytes(oq::io::make_npy(x)) == expected);

  const NpyArray a = oq::io::parse_npy(expected);
  CHECK(a.dtype == DType::kF32);
  CHECK(a.shape == std::vector<std::size_t>{2, 3});
  CHECK(a.size() == 6);
  const auto m = oq::io::npy_to_matrix(a);
  CHECK(m.rows() == 2);
  CHECK(m.cols() == 3);
  CHECK(m(1, 0) == 3.0f);
  CHECK(m(0, 2) == 2.0f);
}

TEST_CASE("golden headers: what NumPy 1.24's np.save writes for 0-D, 1-D, empty and 3-D arrays") {
  struct Case {
    NpyArray array;
    std::string header;  // what follows the 10-byte preamble, as captured from NumPy
  };
  auto filled = [](DType t, std::vector<std::size_t> shape) {
    NpyArray a;
    a.dtype = t;
    a.shape = std::move(shape);
    a.data.assign(a.size() * oq::io::dtype_size(t), std::byte{0});
    return a;
  };
  const std::vector<Case> cases = {
      // np.save(f, np.float32(3))
      {filled(DType::kF32, {}), numpy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 128)},
      // np.save(f, np.zeros(5, '<f2'))
      {filled(DType::kF16, {5}), numpy_header("{'descr': '<f2', 'fortran_order': False, 'shape': (5,), }", 128)},
      // np.save(f, np.zeros((0, 5), '<f8'))
      {filled(DType::kF64, {0, 5}), numpy_header("{'descr': '<f8', 'fortran_order': False, 'shape': (0, 5), }", 128)},
      // np.save(f, np.ones((2, 3, 4), '|b1'))
      {filled(DType::kBool, {2, 3, 4}),
       numpy_header("{'descr': '|b1', 'fortran_order': False, 'shape': (2, 3, 4), }", 128)},
  };
  for (const Case& c : cases) {
    INFO(c.header);
    REQUIRE(c.header.size() == 118);
    Bytes expected = preamble_v1(118);
    append(expected, to_bytes(c.header));
    append(expected, c.array.data);
    CHECK(oq::io::npy_bytes(c.array) == expected);
    CHECK(oq::io::parse_npy(expected) == c.array);
  }
}

TEST_CASE("the writer pads like NumPy: growth spaces from shape[0], a full 64 when already aligned") {
  // Captured from NumPy 1.24: np.save(f, np.zeros((123456789012, 0), 'u1')).
  // The growth spaces are 21 − 12 digits of shape[0] = 9: 71-character dict
  // + 9 + '\n' = 81, and 10 + 81 = 91 rounds up to 128.
  NpyArray wide;
  wide.dtype = DType::kU8;
  wide.shape = {123456789012, 0};
  Bytes expected = preamble_v1(118);
  append(expected,
         to_bytes(numpy_header("{'descr': '|u1', 'fortran_order': False, 'shape': (123456789012, 0), }", 128)));
  CHECK(oq::io::npy_bytes(wide) == expected);
  CHECK(oq::io::parse_npy(expected) == wide);

  // numpy's _wrap_header pads with 64 − (10 + hlen) % 64 spaces, which is a
  // full 64, not 0, when the unpadded header is already aligned. Captured
  // from NumPy 1.24: np.save(f, np.zeros((0,) * 8 + (10**17,), 'u1')) has a
  // 97-character dict + 20 growth spaces + '\n' = 118, 10 + 118 = 128, and
  // NumPy writes HEADER_LEN 182 (192 bytes in all), not 118.
  NpyArray aligned;
  aligned.dtype = DType::kU8;
  aligned.shape = {0, 0, 0, 0, 0, 0, 0, 0, 100000000000000000};
  const std::string dict =
      "{'descr': '|u1', 'fortran_order': False, 'shape': (0, 0, 0, 0, 0, 0, 0, 0, 100000000000000000), }";
  REQUIRE(dict.size() == 97);
  expected = preamble_v1(182);
  append(expected, to_bytes(numpy_header(dict, 192)));
  CHECK(oq::io::npy_bytes(aligned) == expected);
  CHECK(oq::io::parse_npy(expected) == aligned);
}

TEST_CASE("every dtype round-trips through npy_bytes and parse_npy, and converts through npy_to_matrix") {
  const std::vector<double> values = {0, 1, 1, 0, 1, 0};
  const std::vector<double> signed_values = {-128, 127, -1, 0, 5, 42};
  const std::vector<double> float_values = {-2.5, 0.1, 65504, -0.0, 3.140625, 1e-3};
  for (DType t : oq::io::kAllDTypes) {
    INFO(oq::io::dtype_name(t));
    NpyArray a;
    a.dtype = t;
    a.shape = {2, 3};
    a.data.resize(6 * oq::io::dtype_size(t));
    const std::vector<double>& v = t == DType::kBool ? values
                                   : (t == DType::kI8 || t == DType::kI16 || t == DType::kI32 || t == DType::kI64)
                                       ? signed_values
                                   : oq::io::is_floating(t) ? float_values
                                                            : std::vector<double>{0, 255, 7, 1, 128, 3};
    for (std::size_t i = 0; i < 6; ++i) oq::io::store_element(t, v[i], a.data.data() + i * oq::io::dtype_size(t));
    if (t == DType::kBF16) {
      CHECK_THROWS_WITH_AS(oq::io::npy_bytes(a), doctest::Contains("BF16 has no NumPy dtype"), std::invalid_argument);
      continue;
    }
    const Bytes b = oq::io::npy_bytes(a);
    const NpyArray back = oq::io::parse_npy(b);
    CHECK(back == a);
    const auto m = oq::io::npy_to_matrix<double>(back);
    REQUIRE(m.rows() == 2);
    REQUIRE(m.cols() == 3);
    for (std::size_t i = 0; i < 6; ++i) {
      const double expected = oq::io::load_element(t, a.data.data() + i * oq::io::dtype_size(t));
      CHECK(m(static_cast<Eigen::Index>(i / 3), static_cast<Eigen::Index>(i % 3)) == expected);
    }
  }
}

TEST_CASE("write_npy of an Eigen matrix: C order for any storage order, any stored dtype") {
  Eigen::Matrix<double, 3, 2> col;  // column-major
  col << 1, 2, 3, 4, 5, 6;
  Eigen::Matrix<double, 3, 2, Eigen::RowMajor> row = col;
  for (DType t : {DType::kF32, DType::kF64, DType::kF16, DType::kI32, DType::kU8}) {
    const NpyArray a = oq::io::make_npy(col, t);
    CHECK(a == oq::io::make_npy(row, t));
    CHECK(a.shape == std::vector<std::size_t>{3, 2});
    for (std::size_t i = 0; i < 6; ++i) {
      CHECK(oq::io::load_element(t, a.data.data() + i * oq::io::dtype_size(t)) == static_cast<double>(i + 1));
    }
  }
  // An expression without coefficient access (a product) is evaluated first.
  const NpyArray p = oq::io::make_npy(col * col.transpose(), DType::kF64);
  CHECK(p.shape == std::vector<std::size_t>{3, 3});
  CHECK(oq::io::npy_to_matrix<double>(p)(2, 1) == 5 * 3 + 6 * 4);  // row 2 · row 1
  // A (2^40) × 0 matrix is empty: no data, and no loop over its rows.
  const Eigen::MatrixXf tall(Eigen::Index{1} << 40, 0);
  CHECK(oq::io::make_npy(tall).shape == std::vector<std::size_t>{std::size_t{1} << 40, 0});
  // Integer dtypes never truncate silently.
  Eigen::MatrixXd frac(1, 1);
  frac << 0.5;
  CHECK_THROWS_AS(oq::io::make_npy(frac, DType::kI32), std::domain_error);
}

TEST_CASE("npy_to_matrix: 0-D → 1×1, 1-D → 1×n, k-D → leading dims flattened into rows, empty arrays") {
  auto iota_f32 = [](std::vector<std::size_t> shape) {
    NpyArray a;
    a.dtype = DType::kF32;
    a.shape = std::move(shape);
    std::vector<float> v(a.size());
    std::iota(v.begin(), v.end(), 0.0f);
    a.data = le_bytes(v);
    return a;
  };
  const auto scalar = oq::io::npy_to_matrix(iota_f32({}));
  CHECK(scalar.rows() == 1);
  CHECK(scalar.cols() == 1);
  CHECK(scalar(0, 0) == 0.0f);

  const auto vec = oq::io::npy_to_matrix(iota_f32({5}));
  CHECK(vec.rows() == 1);
  CHECK(vec.cols() == 5);
  CHECK(vec(0, 4) == 4.0f);

  // [batch 2, seq 3, hidden 4] → 6 × 4, row b·3 + s.
  const auto act = oq::io::npy_to_matrix<double>(iota_f32({2, 3, 4}));
  CHECK(act.rows() == 6);
  CHECK(act.cols() == 4);
  CHECK(act(4, 1) == 4 * 4 + 1);  // batch 1, seq 1, channel 1 = element 17

  const auto four_d = oq::io::npy_to_matrix(iota_f32({2, 1, 3, 2}));
  CHECK(four_d.rows() == 6);
  CHECK(four_d.cols() == 2);

  const auto empty = oq::io::npy_to_matrix(iota_f32({0, 5}));
  CHECK(empty.rows() == 0);
  CHECK(empty.cols() == 5);
  const auto empty3 = oq::io::npy_to_matrix(iota_f32({2, 0, 3}));
  CHECK(empty3.rows() == 0);
  CHECK(empty3.cols() == 3);

  // Every dimension is written and read back, whatever the rank.
  for (const auto& shape : std::vector<std::vector<std::size_t>>{{}, {5}, {0}, {0, 5}, {2, 3, 4}, {1, 1, 1, 1, 7}}) {
    const NpyArray a = iota_f32(shape);
    CHECK(oq::io::parse_npy(oq::io::npy_bytes(a)) == a);
  }

  // A leading product that overflows (possible only with a 0 elsewhere)
  // cannot be a matrix; the file itself is valid.
  NpyArray huge;
  huge.dtype = DType::kU8;
  huge.shape = {std::size_t{1} << 40, std::size_t{1} << 40, 0};
  CHECK(oq::io::parse_npy(oq::io::npy_bytes(huge)) == huge);
  CHECK_THROWS_WITH_AS(oq::io::npy_to_matrix(huge), doctest::Contains("overflow"), std::invalid_argument);
  // Inconsistent hand-built arrays are rejected, not read out of bounds.
  NpyArray short_data = iota_f32({2, 3});
  short_data.data.resize(20);
  CHECK_THROWS_AS(oq::io::npy_to_matrix(short_data), std::invalid_argument);
  CHECK_THROWS_AS(oq::io::npy_bytes(short_data), std::invalid_argument);
  NpyArray overflowing;
  overflowing.shape = {std::size_t{1} << 40, std::size_t{1} << 40};
  CHECK_THROWS_AS((void)overflowing.size(), std::invalid_argument);
}

TEST_CASE("npy_to_matrix converts integer, bool and half dtypes through load_element") {
  NpyArray a;
  a.dtype = DType::kI16;
  a.shape = {3};
  a.data = le_bytes(std::vector<std::int16_t>{-32768, 7, 32767});
  const auto m = oq::io::npy_to_matrix(a);
  CHECK(m(0, 0) == -32768.0f);
  CHECK(m(0, 2) == 32767.0f);

  a.dtype = DType::kF16;
  a.data = le_bytes(std::vector<std::uint16_t>{0x3C00, 0xC000, 0x7BFF});  // 1, −2, 65504
  const auto h = oq::io::npy_to_matrix<double>(a);
  CHECK(h(0, 0) == 1.0);
  CHECK(h(0, 1) == -2.0);
  CHECK(h(0, 2) == 65504.0);

  a.dtype = DType::kBool;
  a.data = to_bytes(std::string("\x00\x01\x02", 3));  // NumPy reads any nonzero byte as True
  const auto b = oq::io::npy_to_matrix(a);
  CHECK(b(0, 0) == 0.0f);
  CHECK(b(0, 1) == 1.0f);
  CHECK(b(0, 2) == 1.0f);
}

TEST_CASE("header version 2.0: written when the header exceeds 65535 bytes, and read") {
  // 22000 dimensions of 1 need "1, " × 22000 = 66000 header characters.
  NpyArray a;
  a.dtype = DType::kF64;
  a.shape.assign(22000, 1);
  a.data = le_bytes(std::vector<double>{2.5});
  const Bytes b = oq::io::npy_bytes(a);
  REQUIRE(b.size() > 12);
  CHECK(b[6] == std::byte{2});
  CHECK(b[7] == std::byte{0});
  std::uint32_t header_len = 0;
  std::memcpy(&header_len, b.data() + 8, 4);
  CHECK(header_len > 65535);
  CHECK((12 + header_len) % 64 == 0);
  CHECK(b.size() == 12 + header_len + 8);
  CHECK(oq::io::parse_npy(b) == a);
  CHECK(oq::io::npy_to_matrix<double>(a)(0, 0) == 2.5);

  // The boundary: k ≥ 2 ones make a dict of 3k + 53 characters, + 20 growth
  // spaces + '\n' = 3k + 74, padded so that 10 + HEADER_LEN is a multiple
  // of 64. k = 21817: 10 + 65525 → 65536, HEADER_LEN 65526 fits the u16;
  // k = 21818: 10 + 65528 → 65600, HEADER_LEN 65590 does not → 2.0.
  auto version_and_length = [&](std::size_t k) {
    a.shape.assign(k, 1);
    const Bytes bytes = oq::io::npy_bytes(a);
    std::uint32_t len = 0;
    std::memcpy(&len, bytes.data() + 8, bytes[6] == std::byte{1} ? 2 : 4);
    CHECK(oq::io::parse_npy(bytes) == a);
    return std::pair{static_cast<int>(bytes[6]), len};
  };
  CHECK(version_and_length(21817) == std::pair{1, std::uint32_t{65526}});
  CHECK(version_and_length(21818) == std::pair{2, std::uint32_t{65600 - 12}});

  // Hand-built 2.0 and 3.0 files (u32 length) with a small header read too.
  for (unsigned major : {2u, 3u}) {
    const Bytes f = npy_file("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }",
                             le_bytes(std::vector<std::int32_t>{-7, 9}), major);
    const NpyArray r = oq::io::parse_npy(f);
    CHECK(r.dtype == DType::kI32);
    CHECK(r.shape == std::vector<std::size_t>{2});
    CHECK(oq::io::npy_to_matrix(r)(0, 0) == -7.0f);
  }
}

TEST_CASE("fortran_order True: data is converted to C order") {
  // np.save(f, np.asfortranarray(np.arange(6, dtype='<i2').reshape(2, 3))),
  // header as captured from NumPy 1.24; the data is column-major 0 3 1 4 2 5.
  Bytes f = preamble_v1(118);
  append(f, to_bytes(numpy_header("{'descr': '<i2', 'fortran_order': True, 'shape': (2, 3), }", 128)));
  append(f, le_bytes(std::vector<std::int16_t>{0, 3, 1, 4, 2, 5}));
  const NpyArray a = oq::io::parse_npy(f);
  CHECK(a.shape == std::vector<std::size_t>{2, 3});
  CHECK(a.data == le_bytes(std::vector<std::int16_t>{0, 1, 2, 3, 4, 5}));

  // 3-D (2, 3, 4): element (i, j, k) = 100i + 10j + k sits at Fortran offset
  // i + 2j + 6k; the C-order result must list it at 12i + 4j + k.
  std::vector<float> fortran(24);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) fortran[static_cast<std::size_t>(i + 2 * j + 6 * k)] = 100.0f * i + 10.0f * j + k;
  const NpyArray b = oq::io::parse_npy(
      npy_file("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 4), }", le_bytes(fortran)));
  const auto m = oq::io::npy_to_matrix(b);  // 6 × 4, row 3i + j
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) CHECK(m(3 * i + j, k) == 100.0f * i + 10.0f * j + k);

  // Axes of size 1 do not move anything: (2, 1, 3) Fortran puts (i, 0, k) at
  // i + 2k, and thousands of 1s around the real axes change nothing either.
  const NpyArray ones = oq::io::parse_npy(npy_file("{'descr': '<i2', 'fortran_order': True, 'shape': (2, 1, 3), }",
                                                   le_bytes(std::vector<std::int16_t>{0, 3, 1, 4, 2, 5})));
  CHECK(ones.data == le_bytes(std::vector<std::int16_t>{0, 1, 2, 3, 4, 5}));
  std::string many = "{'descr': '<i2', 'fortran_order': True, 'shape': (";
  for (int i = 0; i < 3000; ++i) many += "1, ";
  many += "2, ";
  for (int i = 0; i < 3000; ++i) many += "1, ";
  many += "3, 1), }";
  const NpyArray many_ones = oq::io::parse_npy(npy_file(many, le_bytes(std::vector<std::int16_t>{0, 3, 1, 4, 2, 5})));
  CHECK(many_ones.shape.size() == 6003);
  CHECK(many_ones.data == le_bytes(std::vector<std::int16_t>{0, 1, 2, 3, 4, 5}));

  // 1-D and 0-D Fortran arrays are their C arrays; empty ones are empty.
  const Bytes v = npy_file("{'descr': '<f4', 'fortran_order': True, 'shape': (3,), }",
                           le_bytes(std::vector<float>{1, 2, 3}));
  CHECK(oq::io::parse_npy(v).data == le_bytes(std::vector<float>{1, 2, 3}));
  const Bytes e = npy_file("{'descr': '<f4', 'fortran_order': True, 'shape': (0, 4), }", {});
  CHECK(oq::io::parse_npy(e).size() == 0);
}

TEST_CASE("the header dict grammar: what NumPy's reader accepts is accepted") {
  const Bytes one_f4 = le_bytes(std::vector<float>{1.5f});
  for (std::string_view dict : {
           "{'shape': (1,), 'fortran_order': False, 'descr': '<f4'}",                // any key order, no trailing comma
           "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (1,)}",         // double quotes
           "{ 'descr' :'<f4' ,\t'fortran_order':False,\n'shape':( 1 , ) , }",        // whitespace anywhere
           "  {'descr': '=f4', 'fortran_order': False, 'shape': (1,), }",            // leading spaces, '=' native
           "{'descr': '|f4', 'fortran_order': False, 'shape': (1,), }",              // '|': np.dtype accepts it
           "{'descr': 'f4', 'fortran_order': False, 'shape': (1,), }",               // no byte-order character
           "{'descr': '<f4', 'fortran_order': False, 'shape': (1L,), }",             // Python 2 long, 1.0 file
           "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1), }",          // size 1 in 3-D
       }) {
    INFO(dict);
    const NpyArray a = oq::io::parse_npy(npy_file(dict, one_f4));
    CHECK(a.dtype == DType::kF32);
    CHECK(a.size() == 1);
    CHECK(oq::io::npy_to_matrix(a)(0, 0) == 1.5f);
  }
  // Old NumPy aligned the data to 16 bytes; any header length is fine.
  CHECK(oq::io::parse_npy(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", one_f4, 1, 16))
            .size() == 1);
  CHECK(oq::io::parse_npy(npy_file("{'descr':'<f4','fortran_order':False,'shape':(1,)}", one_f4, 1, 1)).size() == 1);
  // 1-byte types ignore the byte order, '>' included (NumPy writes '|').
  for (std::string_view descr : {"|u1", "<u1", ">u1", "=u1", "u1"}) {
    const NpyArray a = oq::io::parse_npy(
        npy_file("{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': (1,), }",
                 to_bytes("\x07")));
    CHECK(a.dtype == DType::kU8);
  }
  // The 0 dimension and "00" are Python integers.
  CHECK(oq::io::parse_npy(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (00, 3), }", {})).size() == 0);
}

TEST_CASE("read_npy / write_npy through a file; I/O errors name the path") {
  // A directory of its own, so that concurrent runs (default and asan builds) do not collide.
  const auto dir = std::filesystem::temp_directory_path() / ("oq_npy_test_" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  const auto path = dir / "x.npy";
  Eigen::MatrixXf x(3, 4);
  x.setRandom();
  oq::io::write_npy(path, x);
  const auto back = oq::io::read_npy_matrix<float>(path);
  CHECK(back == x);
  CHECK(std::filesystem::file_size(path) == 128 + 12 * 4);

  // A corrupted file names itself in the FormatError.
  {
    std::ofstream out(path, std::ios::binary | std::ios::app);
    out << "junk";
  }
  CHECK_THROWS_AS(oq::io::read_npy(path), FormatError);
  try {
    (void)oq::io::read_npy(path);
  } catch (const FormatError& e) {
    const std::string message = e.what();
    CHECK(message.find(path.string()) != std::string::npos);
    CHECK(message.find("trailing bytes") != std::string::npos);
  }

  CHECK_THROWS_WITH_AS(oq::io::read_npy(dir / "missing.npy"), doctest::Contains("missing.npy"), std::runtime_error);
  CHECK_THROWS_WITH_AS(oq::io::read_npy(dir), doctest::Contains("not a regular file"), std::runtime_error);
  CHECK_THROWS_WITH_AS(oq::io::write_npy(dir / "no_such_dir" / "y.npy", x), doctest::Contains("y.npy"),
                       std::runtime_error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("malformed files: every truncation of a valid file throws FormatError") {
  NpyArray a;
  a.dtype = DType::kF32;
  a.shape = {2, 3};
  a.data = le_bytes(std::vector<float>{1, 2, 3, 4, 5, 6});
  const Bytes full = oq::io::npy_bytes(a);
  for (std::size_t n = 0; n < full.size(); ++n) {
    const Bytes prefix(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    INFO("prefix of ", n, " bytes");
    CHECK_THROWS_AS(oq::io::parse_npy(prefix), FormatError);
  }
  CHECK(oq::io::parse_npy(full) == a);
  // The version 2.0 preamble is 12 bytes: an 11-byte 2.0 file is short too.
  Bytes v2 = npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", le_bytes(std::vector<float>{1}), 2);
  for (std::size_t n = 0; n < v2.size(); ++n) {
    CHECK_THROWS_AS(oq::io::parse_npy(std::span(v2.data(), n)), FormatError);
  }
}

TEST_CASE("malformed files: preamble") {
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }";
  const Bytes one = le_bytes(std::vector<float>{1});
  expect_format_error({}, "too short for the magic");
  Bytes bad_magic = npy_file(dict, one);
  bad_magic[1] = std::byte{'n'};
  expect_format_error(bad_magic, "expected the magic");
  Bytes zero_magic = npy_file(dict, one);
  zero_magic[0] = std::byte{0};
  expect_format_error(zero_magic, "expected the magic");
  for (auto [major, minor] : {std::pair{0, 0}, {4, 0}, {1, 1}, {2, 5}, {255, 255}}) {
    Bytes v = npy_file(dict, one);
    v[6] = static_cast<std::byte>(major);
    v[7] = static_cast<std::byte>(minor);
    expect_format_error(v, "unsupported format version " + std::to_string(major) + "." + std::to_string(minor));
  }
  Bytes past_end = npy_file(dict, one);
  past_end[8] = std::byte{0xFF};
  past_end[9] = std::byte{0xFF};
  expect_format_error(past_end, "header length 65535 runs past the end of the file");
  Bytes v2_past_end = npy_file(dict, one, 2);
  v2_past_end[11] = std::byte{0x80};  // 2^31 + the real length
  expect_format_error(v2_past_end, "runs past the end of the file");
  Bytes zero_len = npy_file(dict, one);
  zero_len[8] = std::byte{0};
  zero_len[9] = std::byte{0};
  expect_format_error(zero_len, "not terminated by '\\n'");
  // A header length one short: the last header byte is a space, not '\n'.
  Bytes short_len = npy_file(dict, one);
  short_len[8] = static_cast<std::byte>(static_cast<unsigned>(short_len[8]) - 1);
  expect_format_error(short_len, "not terminated by '\\n'");
}

TEST_CASE("malformed files: header dict") {
  const Bytes one = le_bytes(std::vector<float>{1});
  auto bad = [&](std::string_view dict, std::string_view expected) {
    INFO("dict: ", dict);
    expect_format_error(npy_file(dict, one), expected);
  };
  bad("", "expected the header to start with '{'");
  bad("descr: '<f4'", "expected the header to start with '{'");
  bad("{'descr': '<f4', 'fortran_order': False}", "the key 'shape' is missing");
  bad("{'fortran_order': False, 'shape': (1,)}", "the key 'descr' is missing");
  bad("{'descr': '<f4', 'shape': (1,)}", "the key 'fortran_order' is missing");
  bad("{}", "the key 'descr' is missing");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}", "unknown key 'extra'");
  bad("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", "the key 'descr' appears twice");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", "expected ',' or '}'");
  bad("{'descr': '<f4' 'fortran_order': False, 'shape': (1,)}", "expected ',' or '}' after the value of 'descr'");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1,),, }", "expected a quoted key or '}'");
  bad("{descr: '<f4', 'fortran_order': False, 'shape': (1,)}", "expected a quoted key or '}'");
  bad("{'descr' '<f4', 'fortran_order': False, 'shape': (1,)}", "expected ':' after the key 'descr'");
  bad("{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}", "expected ',' or '}'");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x", "expected only spaces after the closing '}'");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}}", "expected only spaces after the closing '}'");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}\n", "expected only spaces after the closing '}'");
  bad("{'descr': <f4, 'fortran_order': False, 'shape': (1,)}", "expected a quoted string as the value of 'descr'");
  bad("{'descr': '<\\x66\\x34', 'fortran_order': False, 'shape': (1,)}", "escape sequences");
  bad("{'descr': '<f4", "unterminated string");
  bad("{'descr': '<f4\n', 'fortran_order': False, 'shape': (1,)}", "line break inside a string");
  bad("{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", "expected True or False");
  bad("{'descr': '<f4', 'fortran_order': false, 'shape': (1,)}", "expected True or False");
  bad("{'descr': '<f4', 'fortran_order': Falsey, 'shape': (1,)}", "expected True or False");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': [1]}", "expected a tuple");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': 1}", "expected a tuple");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1)}", "is an integer in Python, not a tuple");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (,)}", "expected a non-negative integer dimension");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1,,)}", "expected a non-negative integer dimension");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1 1)}", "expected ',' or ')' in 'shape'");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2}", "expected ',' or ')' in 'shape'");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", "negative dimension");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (+1,)}", "expected a non-negative integer dimension");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1.0,)}", "expected ',' or ')' in 'shape'");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (0x1,)}", "expected ',' or ')' in 'shape'");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (01,)}", "leading zeros");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1_0,)}", "expected ',' or ')' in 'shape'");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}", "overflows");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551616,)}", "overflows");  // 2^64
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}",
      "has more bytes than size_t can count");  // 2^64 elements
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,)}",
      "has more bytes than size_t can count");  // 2^62 elements × 4 bytes
}

TEST_CASE("malformed files: 'L' suffixes are Python 2 (1.0 and 2.0 files), not 3.0") {
  const Bytes one = le_bytes(std::vector<float>{1});
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1L,), }";
  CHECK(oq::io::parse_npy(npy_file(dict, one, 1)).size() == 1);
  CHECK(oq::io::parse_npy(npy_file(dict, one, 2)).size() == 1);
  expect_format_error(npy_file(dict, one, 3), "expected ',' or ')' in 'shape'");
}

TEST_CASE("malformed files: descr") {
  const Bytes four = le_bytes(std::vector<float>{1});
  auto with_descr = [&](std::string_view descr) {
    return npy_file("{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': (1,), }", four);
  };
  for (std::string_view d : {">f4", ">f2", ">f8", ">i2", ">i4", ">i8", ">u2"}) {
    INFO(d);
    expect_format_error(with_descr(d), "is big-endian, which oq does not support");
  }
  for (std::string_view d : {"<U1", "<c8", "<f16", "<V4", "O", "", "<", "f", "!f4", "<f4 ", "<F4", "<i3", "<M8[ns]"}) {
    INFO(d);
    expect_format_error(with_descr(d), "unsupported descr");
  }
  expect_format_error(npy_file("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", four),
                      "structured dtype");
  // A non-ASCII byte (a UTF-8 'é') in the header, in any version.
  for (unsigned major : {1u, 3u}) {
    expect_format_error(
        npy_file("{'descr': '<f\xC3\xA9', 'fortran_order': False, 'shape': (1,), }", four, major),
        "byte 0xC3 at byte 13 is not printable ASCII");
  }
  expect_format_error(npy_file(std::string_view("{'descr': '<f4'\0, 'fortran_order': False, 'shape': (1,), }", 59),
                               four),
                      "byte 0x00");
}

TEST_CASE("malformed files: data size must equal product(shape) · itemsize exactly") {
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  const Bytes six = le_bytes(std::vector<float>{1, 2, 3, 4, 5, 6});
  CHECK(oq::io::parse_npy(npy_file(dict, six)).size() == 6);
  Bytes short_data(six.begin(), six.end() - 1);
  expect_format_error(npy_file(dict, short_data),
                      "data is truncated: shape (2, 3) of '<f4' needs 24 bytes, but only 23");
  Bytes long_data = six;
  long_data.push_back(std::byte{0});
  expect_format_error(npy_file(dict, long_data),
                      "25 bytes follow the header, but shape (2, 3) of '<f4' needs exactly 24");
  expect_format_error(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }", six),
                      "needs exactly 0");
  expect_format_error(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", {}), "needs 4 bytes");
  // A huge (but countable) shape over a tiny file: an error, no allocation.
  expect_format_error(npy_file("{'descr': '<f8', 'fortran_order': True, 'shape': (1000000000, 1000000000), }", six),
                      "needs 8000000000000000000 bytes, but only 24");
}

namespace {

using oq::test::TempDir;

void write_bytes(const std::filesystem::path& path, const Bytes& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

}  // namespace

TEST_CASE("read_npy_matrix equals npy_to_matrix(read_npy): same layout, converted in chunks, Fortran order") {
  TempDir dir;
  std::mt19937 rng(23);
  std::uniform_real_distribution<double> value(-100.0, 100.0);
  // 600 × 1000 elements: more than one 1 MiB chunk for every dtype converted.
  const Eigen::MatrixXd x = Eigen::MatrixXd::NullaryExpr(600, 1000, [&] { return std::round(value(rng)); });
  for (DType d : {DType::kF32, DType::kF64, DType::kF16, DType::kI32, DType::kI8, DType::kU8, DType::kI64}) {
    const Eigen::MatrixXd stored = d == DType::kU8 ? x.cwiseAbs().eval() : x;
    const auto path = dir.path / "x.npy";
    oq::io::write_npy(path, stored, d);
    INFO("dtype ", oq::io::dtype_name(d));
    const auto reference_f = oq::io::npy_to_matrix<float>(oq::io::read_npy(path));
    const auto reference_d = oq::io::npy_to_matrix<double>(oq::io::read_npy(path));
    CHECK(oq::io::read_npy_matrix<float>(path) == reference_f);
    CHECK(oq::io::read_npy_matrix<double>(path) == reference_d);
  }
  // Fortran order, 3-D (flattened to 6 × 4 rows), and the 1-D, 0-D, empty shapes.
  std::vector<float> fortran(24);
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) {
      for (int k = 0; k < 4; ++k) fortran[static_cast<std::size_t>(i + 2 * j + 6 * k)] = 100.0f * i + 10.0f * j + k;
    }
  }
  for (const auto& file : std::vector<std::pair<std::string, Bytes>>{
           {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 4), }", le_bytes(fortran)},
           {"{'descr': '<f4', 'fortran_order': False, 'shape': (24,), }", le_bytes(fortran)},
           {"{'descr': '<f4', 'fortran_order': False, 'shape': (), }", le_bytes(std::vector<float>{2.5f})},
           {"{'descr': '<f2', 'fortran_order': True, 'shape': (0, 4), }", {}}}) {
    // (Not a structured binding: clang 14 cannot capture one in INFO's lambda.)
    INFO("header: ", file.first);
    write_bytes(dir.path / "f.npy", npy_file(file.first, file.second));
    CHECK(oq::io::read_npy_matrix<float>(dir.path / "f.npy") ==
          oq::io::npy_to_matrix<float>(oq::io::read_npy(dir.path / "f.npy")));
    CHECK(oq::io::read_npy_matrix<double>(dir.path / "f.npy") ==
          oq::io::npy_to_matrix<double>(oq::io::read_npy(dir.path / "f.npy")));
  }
  // Malformed files are refused as read_npy refuses them, naming the path.
  Bytes truncated = npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", le_bytes(fortran));
  write_bytes(dir.path / "t.npy", truncated);
  CHECK_THROWS_WITH_AS(oq::io::read_npy_matrix<float>(dir.path / "t.npy"),
                       doctest::Contains(((dir.path / "t.npy").string() + ": 96 bytes follow the header").c_str()), FormatError);
  write_bytes(dir.path / "short.npy", Bytes(5));
  CHECK_THROWS_WITH_AS(oq::io::read_npy_matrix<float>(dir.path / "short.npy"), doctest::Contains("file is 5 bytes"),
                       FormatError);
}

TEST_CASE("read_npy_matrix holds the data once: peak memory is the matrix") {
  if (oq::test::kUnderAsan) return;  // ASan's shadow memory and redzones change what is resident
  TempDir dir;
  // A 64 MiB '<f4' file, written in pieces (the test itself holds no copy).
  constexpr std::size_t kRows = 16384, kCols = 1024;
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (16384, 1024), }";
  const Bytes head = npy_file(dict, {});
  {
    std::ofstream out(dir.path / "big.npy", std::ios::binary);
    out.write(reinterpret_cast<const char*>(head.data()), static_cast<std::streamsize>(head.size()));
    const std::vector<float> row(kCols, 0.5f);
    for (std::size_t r = 0; r < kRows; ++r) {
      out.write(reinterpret_cast<const char*>(row.data()), static_cast<std::streamsize>(kCols * sizeof(float)));
    }
  }
  const double payload = static_cast<double>(kRows * kCols * sizeof(float));
  // Before: the file read into a vector, copied into the NpyArray, then into
  // the matrix: twice the payload at the peak.
  CHECK(oq::test::finishes_within(std::chrono::seconds(60), [&] {
    const std::size_t before = oq::test::start_peak_rss();
    if (before == 0) return true;  // no way to measure here
    const auto m = oq::io::read_npy_matrix<float>(dir.path / "big.npy");
    const double ratio = static_cast<double>(oq::test::peak_rss() - before) / payload;
    std::fprintf(stderr, "read_npy_matrix<float> of 64 MiB: peak memory grew by %.2f times the payload\n", ratio);
    return m.rows() == 16384 && m(16383, 1023) == 0.5f && ratio < 1.2;
  }));
}

TEST_CASE("read_npy and read_npy_matrix refuse a FIFO and a device without blocking") {
  TempDir dir;
  const auto fifo = dir.path / "x.npy";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  // Before: std::filesystem::is_regular_file refused the FIFO, but a path
  // checked and then opened can be replaced in between; the descriptor is
  // what is checked now, opened without blocking.
  CHECK(oq::test::finishes_within(std::chrono::seconds(5), [&] {
    try {
      (void)oq::io::read_npy_matrix<float>(fifo);
    } catch (const std::system_error& e) {
      return std::string(e.what()).find("oq::io::read_npy_matrix: '" + fifo.string() + "' is a FIFO") == 0;
    }
    return false;
  }));
  CHECK_THROWS_WITH_AS(oq::io::read_npy(fifo), doctest::Contains("is a FIFO, not a regular file"), std::runtime_error);
  CHECK_THROWS_WITH_AS(oq::io::read_npy("/dev/zero"), doctest::Contains("is a character device"), std::runtime_error);
}

TEST_CASE("make_npy refuses finite values its float dtype cannot hold, instead of storing ±inf") {
  CHECK_THROWS_WITH_AS(oq::io::make_npy(Eigen::Vector2d(1.0, 1e39), DType::kF32),
                       doctest::Contains("value 1e+39 is finite but overflows F32"),
                       std::domain_error);
  CHECK_THROWS_AS(oq::io::make_npy(Eigen::Vector2d(1.0, -7e4), DType::kF16), std::domain_error);
  CHECK(oq::io::npy_to_matrix<double>(oq::io::make_npy(Eigen::Vector2d(1.0, 65504.0), DType::kF16))(1, 0) == 65504.0);
}
