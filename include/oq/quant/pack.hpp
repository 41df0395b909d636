// oq/quant/pack.hpp: integer codes <-> packed INT4 matrices on the host.
//
// A packed INT4 matrix is row-major: row r of the codes becomes the packed row
// of format/int4_row.hpp (element 2i in the low nibble of byte i, element
// 2i+1 in the high nibble, a zero pad nibble for odd widths), stored as an
// Eigen row-major uint8 matrix of rows × ceil(cols/2) bytes.
//
//   auto codes  = oq::quant::quantize(x, params, QuantSpec::per_token(4, true));
//   auto packed = oq::quant::pack_int4(codes, oq::quant::Int4Kind::kSigned);
//   auto back   = oq::quant::unpack_int4(packed, x.cols(), oq::quant::Int4Kind::kSigned);
#pragma once

#include <oq/core/int4.hpp>
#include <oq/detail/check.hpp>
#include <oq/format/int4_row.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <string_view>

namespace oq::quant {

enum class Int4Kind { kSigned, kUnsigned };  ///< s4 in [−8, 7] or u4 in [0, 15]

using PackedInt4 = Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Int4Codes = Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Packs integer codes; throws std::invalid_argument naming the first code
/// outside the kind's range (packing would otherwise keep only its low bits).
template <class Derived>
PackedInt4 pack_int4(const Eigen::MatrixBase<Derived>& codes, Int4Kind kind) {
  static_assert(std::is_integral_v<typename Derived::Scalar>, "codes must be an integer matrix");
  constexpr std::string_view kWhere = "oq::quant::pack_int4";
  const long long lo = kind == Int4Kind::kSigned ? core::kS4Min : core::kU4Min;
  const long long hi = kind == Int4Kind::kSigned ? core::kS4Max : core::kU4Max;
  PackedInt4 packed(codes.rows(), static_cast<Eigen::Index>(format::packed_int4_bytes(codes.cols())));
  Eigen::Matrix<std::int32_t, 1, Eigen::Dynamic> row(codes.cols());
  for (Eigen::Index r = 0; r < codes.rows(); ++r) {
    for (Eigen::Index c = 0; c < codes.cols(); ++c) {
      const auto v = static_cast<long long>(codes(r, c));
      detail::require(v >= lo && v <= hi, kWhere, "codes(", r, ", ", c, ") = ", v, " is outside [", lo, ", ",
                      hi, "] of ", kind == Int4Kind::kSigned ? "s4" : "u4");
      row[c] = static_cast<std::int32_t>(v);
    }
    format::pack_int4_row(row.data(), static_cast<std::size_t>(codes.cols()), packed.row(r).data());
  }
  return packed;
}

/// Unpacks `cols` codes per row from a packed matrix of ceil(cols/2) bytes a row.
inline Int4Codes unpack_int4(const PackedInt4& packed, Eigen::Index cols, Int4Kind kind) {
  constexpr std::string_view kWhere = "oq::quant::unpack_int4";
  detail::require(cols >= 0, kWhere, "cols must be >= 0, got ", cols);
  const auto bytes = static_cast<Eigen::Index>(format::packed_int4_bytes(static_cast<std::size_t>(cols)));
  detail::require(packed.cols() == bytes, kWhere, "packed must have ceil(cols / 2) = ", bytes,
                  " bytes per row for cols = ", cols, ", got ", packed.cols());
  Int4Codes codes(packed.rows(), cols);
  for (Eigen::Index r = 0; r < packed.rows(); ++r) {
    const std::uint8_t* src = packed.row(r).data();
    if (kind == Int4Kind::kSigned) {
      format::unpack_s4_row(src, static_cast<std::size_t>(cols), codes.row(r).data());
    } else {
      format::unpack_u4_row(src, static_cast<std::size_t>(cols), codes.row(r).data());
    }
  }
  return codes;
}

}  // namespace oq::quant
