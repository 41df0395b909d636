// oq/cpu/packed_weights.hpp: INT4 weights of a linear layer as the CPU
// kernels (and the CUDA W4A4 kernel) read them.
//
// A linear y = x·Wᵀ with W of N output channels × K inputs, quantized to 4
// bits per channel (one scale per output row) or per group of g consecutive
// inputs (K/g scales per row, W4A16-style):
//
//   codes      N rows of K/2 bytes, rows contiguous (row n starts at byte
//              n·K/2): the packed row of format/int4_row.hpp —
//                  byte n·K/2 + i :  bits 7..4 = q[n, 2i + 1] | bits 3..0 = q[n, 2i]
//              s4 two's complement in [−8, 7] when is_signed (symmetric
//              quantization), u4 in [0, 15] otherwise. K is even: no pad nibble.
//   scales     N × G floats, row-major (G = K/g groups; G = 1 per channel):
//              scales[n·G + j] is s_w of row n, inputs j·g … j·g + g − 1.
//   zeros      N × G int32, the integer zero points z_w (empty when
//              is_signed). Integers, not 4-bit codes: docs/design.md §2's formula
//              puts them outside [0, 15] for a group that does not straddle 0.
//   code_sums  N × G int32, Σ_{k in group} q[n, k], the raw codes, for the
//              epilogue's z_a·Σq_w term (docs/design.md §7).
//
// Dequantized, ŵ[n, k] = s_w[n, G(k)] · (q[n, k] − z_w[n, G(k)]), exactly what
// oq::quant::dequantize gives for the QuantParams the codes came from.
//
// Example (pinned by tests/cpu/packed_weights_test.cpp): one row of s4 codes
// {1, −1, 7, −8} packs to bytes {0xF1, 0x87}.
//
//   auto spec = oq::quant::QuantSpec::per_channel(4, /*symmetric=*/false, 0.8);
//   oq::cpu::PackedWeights w = oq::cpu::quantize_weights(weight, spec);  // or pack_weights(codes, params, spec)
#pragma once

#include <oq/core/int4.hpp>
#include <oq/detail/check.hpp>
#include <oq/format/int4_row.hpp>
#include <oq/quant/params.hpp>
#include <oq/quant/quantize.hpp>
#include <oq/quant/spec.hpp>

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>
#include <type_traits>
#include <vector>

namespace oq::cpu {

/// The largest K the kernels take: every partial sum of the biased int8
/// products (|term| ≤ 255·15, plus the bias corrections) stays inside int32.
inline constexpr std::int64_t kMaxK = std::int64_t{1} << 19;

struct PackedWeights {
  std::int64_t n = 0;           ///< output channels (rows of W)
  std::int64_t k = 0;           ///< inputs (columns of W), even
  std::int64_t group_size = 0;  ///< g: divides k; == k for per-channel weights
  bool is_signed = true;        ///< s4 codes, symmetric (zeros empty) / u4 codes, asymmetric
  std::vector<std::uint8_t> codes;       ///< n × k/2 bytes
  std::vector<float> scales;             ///< n × groups()
  std::vector<std::int32_t> zeros;       ///< n × groups(), or empty when is_signed
  std::vector<std::int32_t> code_sums;   ///< n × groups()

  std::int64_t groups() const noexcept { return group_size > 0 ? k / group_size : 0; }
  std::int64_t row_bytes() const noexcept { return k / 2; }
  const std::uint8_t* row(std::int64_t r) const noexcept { return codes.data() + r * row_bytes(); }

  /// Throws std::invalid_argument naming the first field that disagrees with
  /// the others (shape, group, buffer sizes, scales that are not positive
  /// finite). O(n·groups): the GEMM calls it on every call. It does not read
  /// the codes: see validate_code_sums.
  void validate(std::string_view where) const {
    detail::require(n >= 0, where, "weights.n must be >= 0, got ", n);
    detail::require(k > 0 && k % 2 == 0 && k <= kMaxK, where,
                    "weights.k must be even (two INT4 codes per byte) and in [2, ", kMaxK, "], got ", k);
    detail::require(group_size > 0 && group_size % 2 == 0 && k % group_size == 0, where,
                    "weights.group_size must be even and divide k = ", k, ", got ", group_size);
    const auto cells = static_cast<std::size_t>(n * groups());
    detail::require(codes.size() == static_cast<std::size_t>(n * row_bytes()), where, "weights.codes must hold n * k/2 = ",
                    n * row_bytes(), " bytes, got ", codes.size());
    detail::require(scales.size() == cells, where, "weights.scales must hold n * groups = ", cells, " values, got ",
                    scales.size());
    detail::require(zeros.size() == (is_signed ? 0 : cells), where, "weights.zeros must hold ",
                    is_signed ? 0 : cells, " values (", is_signed ? "signed codes have none" : "n * groups",
                    "), got ", zeros.size());
    detail::require(code_sums.size() == cells, where, "weights.code_sums must hold n * groups = ", cells,
                    " values, got ", code_sums.size());
    for (std::size_t i = 0; i < cells; ++i)
      detail::require(std::isfinite(scales[i]) && scales[i] > 0.0f, where, "weights.scales[", i,
                      "] must be positive and finite, got ", scales[i]);
  }

  /// validate(), then that code_sums holds the codes' sums. O(n·k), a pass
  /// over the codes: for weights built by hand or read from a file, once,
  /// before the first GEMM (which trusts the sums: its zero-point terms and
  /// the SIMD paths' bias corrections use them). pack_weights computes them.
  void validate_code_sums(std::string_view where) const {
    validate(where);
    const std::int64_t g = groups();
    for (std::int64_t r = 0; r < n; ++r) {
      for (std::int64_t j = 0; j < g; ++j) {
        std::int64_t sum = 0;
        for (std::int64_t c = j * group_size; c < (j + 1) * group_size; ++c) {
          sum += is_signed ? format::load_s4(row(r), static_cast<std::size_t>(c))
                           : static_cast<std::int64_t>(format::load_u4(row(r), static_cast<std::size_t>(c)));
        }
        const auto cell = static_cast<std::size_t>(r * g + j);
        detail::require(sum == code_sums[cell], where, "weights.code_sums[", cell, "] = ", code_sums[cell],
                        " is not the sum of row ", r, "'s codes in group ", j, " (", sum, ")");
      }
    }
  }
};

namespace detail_packed {

// A float scale from a QuantParams entry: positive, finite and representable.
template <class Scalar>
float checked_scale(Scalar s, std::string_view where, Eigen::Index r, Eigen::Index c) {
  const auto f = static_cast<float>(s);
  detail::require(std::isfinite(s) && s > Scalar(0) && std::isfinite(f) && f > 0.0f, where, "params.scale(", r, ", ",
                  c, ") = ", s, " must be positive and finite as a float");
  return f;
}

// An int32 zero point from a QuantParams entry, which must be an integer.
template <class Scalar>
std::int32_t checked_zero(Scalar z, std::string_view where, Eigen::Index r, Eigen::Index c) {
  detail::require(std::isfinite(z) && z == std::nearbyint(z) &&
                      std::abs(z) <= static_cast<Scalar>(std::numeric_limits<std::int32_t>::max()),
                  where, "params.zero(", r, ", ", c, ") = ", z, " must be an integer in int32's range");
  return static_cast<std::int32_t>(z);
}

}  // namespace detail_packed

/// Packs N × K integer codes quantized with `params` under `spec` (4 bits,
/// per channel or per group of an even size; what oq::quant::quantize or GPTQ
/// produced). Throws std::invalid_argument naming the first code outside the
/// spec's range, a zero point that is not an integer, or a bad shape.
template <class CodesDerived, class Scalar>
PackedWeights pack_weights(const Eigen::MatrixBase<CodesDerived>& codes, const quant::QuantParams<Scalar>& params,
                           const quant::QuantSpec& spec) {
  static_assert(std::is_integral_v<typename CodesDerived::Scalar>, "codes must be an integer matrix");
  constexpr std::string_view kWhere = "oq::cpu::pack_weights";
  spec.validate(kWhere);
  detail::require(spec.bits == 4, kWhere, "spec.bits must be 4 (packed INT4 weights), got ", spec.bits);
  detail::require(spec.granularity == quant::Granularity::kPerRow || spec.granularity == quant::Granularity::kPerGroup,
                  kWhere, "spec.granularity must be per-row (per output channel) or per-group, got ",
                  to_string(spec.granularity));
  spec.validate_shape(codes.rows(), codes.cols(), kWhere);
  quant::validate_params(params, spec, codes.rows(), codes.cols(), kWhere);
  PackedWeights w;
  w.n = codes.rows();
  w.k = codes.cols();
  w.group_size = spec.block_cols(codes.cols());
  w.is_signed = spec.symmetric;
  detail::require(w.k % 2 == 0 && w.k <= kMaxK, kWhere, "codes must have an even number of columns up to ", kMaxK,
                  " (two INT4 codes per byte), got ", w.k);
  detail::require(w.group_size % 2 == 0, kWhere, "spec.group_size must be even (a group starts on a byte), got ",
                  w.group_size);
  const std::int64_t groups = w.groups();
  const core::CodeRange range = spec.code_range();
  w.codes.assign(static_cast<std::size_t>(w.n * w.row_bytes()), 0);
  w.scales.resize(static_cast<std::size_t>(w.n * groups));
  w.code_sums.assign(static_cast<std::size_t>(w.n * groups), 0);
  if (!w.is_signed) w.zeros.resize(static_cast<std::size_t>(w.n * groups));
  std::vector<std::int32_t> row(static_cast<std::size_t>(w.k));
  for (std::int64_t r = 0; r < w.n; ++r) {
    for (std::int64_t c = 0; c < w.k; ++c) {
      const auto q = static_cast<long long>(codes(r, c));
      detail::require(q >= range.lo && q <= range.hi, kWhere, "codes(", r, ", ", c, ") = ", q, " is outside [",
                      range.lo, ", ", range.hi, "]");
      row[static_cast<std::size_t>(c)] = static_cast<std::int32_t>(q);
      w.code_sums[static_cast<std::size_t>(r * groups + c / w.group_size)] += static_cast<std::int32_t>(q);
    }
    format::pack_int4_row(row.data(), static_cast<std::size_t>(w.k), w.codes.data() + r * w.row_bytes());
    for (std::int64_t g = 0; g < groups; ++g) {
      const auto cell = static_cast<std::size_t>(r * groups + g);
      w.scales[cell] = detail_packed::checked_scale(params.scale(r, g), kWhere, r, g);
      if (!w.is_signed) w.zeros[cell] = detail_packed::checked_zero(params.zero(r, g), kWhere, r, g);
    }
  }
  return w;
}

/// Quantizes W (N × K, float or double) under `spec` with oq::quant
/// (compute_params, quantize) and packs it. An expression is evaluated once
/// (a plain matrix is not copied), so the parameters and the codes see the
/// same values even for expressions that differ between reads (Random()).
template <class Derived>
PackedWeights quantize_weights(const Eigen::MatrixBase<Derived>& w, const quant::QuantSpec& spec) {
  const auto& values = w.derived().eval();
  const auto params = quant::compute_params(values, spec);
  return pack_weights(quant::quantize(values, params, spec), params, spec);
}

/// Packs a GPTQ result. Its groups must be contiguous (group_index[j] ==
/// j / g: no act-order, or act-order with static groups); a desc_act result
/// whose groups follow the act order is refused — re-sort its columns first
/// (io/gptq_checkpoint.hpp) and permute the activations the same way.
///
/// `result` is a quant::GptqResult (a template here, so that this header
/// need not include quant/gptq.hpp).
template <class GptqResult>
PackedWeights pack_weights(const GptqResult& result, const quant::QuantSpec& spec) {
  constexpr std::string_view kWhere = "oq::cpu::pack_weights";
  if (spec.granularity == quant::Granularity::kPerGroup) {
    detail::require(static_cast<Eigen::Index>(result.group_index.size()) == result.codes.cols(), kWhere,
                    "result.group_index must hold one group per column (", result.codes.cols(), "), got ",
                    result.group_index.size());
    for (std::size_t j = 0; j < result.group_index.size(); ++j)
      detail::require(result.group_index[j] == static_cast<std::int32_t>(static_cast<Eigen::Index>(j) / spec.group_size),
                      kWhere, "result.group_index[", j, "] = ", result.group_index[j], " is not j / group_size = ",
                      static_cast<Eigen::Index>(j) / spec.group_size,
                      ": groups in act order must be re-sorted into contiguous groups first");
  }
  return pack_weights(result.codes, result.params, spec);
}

}  // namespace oq::cpu
