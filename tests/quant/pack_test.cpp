#include <oq/quant/pack.hpp>
#include <oq/quant/quantize.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <stdexcept>

using namespace oq::quant;

TEST_CASE("quantized codes pack and unpack losslessly, odd widths included") {
  for (Eigen::Index cols : {1, 2, 7, 64, 129}) {
    const auto x = oq::test::gaussian<float>(5, cols, static_cast<std::uint64_t>(cols));
    for (bool symmetric : {true, false}) {
      const QuantSpec spec = QuantSpec::per_token(4, symmetric);
      const auto codes = quantize(x, compute_params(x, spec), spec);
      const Int4Kind kind = symmetric ? Int4Kind::kSigned : Int4Kind::kUnsigned;
      const PackedInt4 packed = pack_int4(codes, kind);
      CHECK(packed.rows() == 5);
      CHECK(packed.cols() == (cols + 1) / 2);
      CHECK(unpack_int4(packed, cols, kind) == Int4Codes(codes));
    }
  }
}

TEST_CASE("golden: a packed matrix row is the documented byte sequence") {
  Int4Codes codes(2, 3);
  codes << 1, -1, 7,  //
      -8, 0, 3;
  const PackedInt4 packed = pack_int4(codes, Int4Kind::kSigned);
  CHECK(packed(0, 0) == 0xF1);
  CHECK(packed(0, 1) == 0x07);
  CHECK(packed(1, 0) == 0x08);
  CHECK(packed(1, 1) == 0x03);
}

TEST_CASE("out-of-range codes and wrong sizes are rejected") {
  Int4Codes codes = Int4Codes::Zero(2, 4);
  codes(1, 3) = 8;
  CHECK_THROWS_WITH_AS(pack_int4(codes, Int4Kind::kSigned), doctest::Contains("codes(1, 3) = 8 is outside [-8, 7]"),
                       std::invalid_argument);
  CHECK_NOTHROW(pack_int4(codes, Int4Kind::kUnsigned));
  codes(0, 0) = -1;
  CHECK_THROWS_AS(pack_int4(codes, Int4Kind::kUnsigned), std::invalid_argument);
  CHECK_THROWS_WITH_AS(unpack_int4(PackedInt4::Zero(2, 2), 5, Int4Kind::kSigned),
                       doctest::Contains("3 bytes per row"), std::invalid_argument);
  CHECK(unpack_int4(PackedInt4(0, 2), 4, Int4Kind::kSigned).rows() == 0);
}
