// oq/quant/spec.hpp: what a quantizer does — bits, symmetry, granularity, clip.
//
//   using namespace oq::quant;
//   QuantSpec act{.bits = 4, .symmetric = false, .granularity = Granularity::kPerRow,
//                 .clip_ratio = 0.9};                       // DuQuant's activations
//   QuantSpec w = QuantSpec::per_group(4, /*symmetric=*/true, /*group_size=*/128);
//
// Granularity is always described for the row-major matrix being quantized:
//   kPerTensor   one (scale, zero) for the whole matrix;
//   kPerRow      one per row;
//   kPerGroup    one per `group_size` consecutive elements of a row.
// In y = X·Wᵀ (docs/design.md §2), X is tokens × channels and W is out × in,
// so kPerRow is per token for X and per output channel for W, and groups run
// along K; the factories per_token() and per_channel() are kPerRow under the
// names the papers use for X and W. There is no per-column granularity: to
// quantize the columns of a matrix (per input channel of X), pass its
// transpose, which Eigen gives without a copy.
//
// kPerChannel and kPerToken, the enumerators' names before kPerRow, are
// deprecated aliases of it: "channel" read as X's channels (columns) is
// wrong, and the two names suggested two behaviours. Being one value, they
// cannot both label cases of one switch.
#pragma once

#include <oq/core/quant_math.hpp>
#include <oq/detail/check.hpp>

#include <Eigen/Core>

#include <stdexcept>
#include <string>
#include <string_view>

namespace oq::quant {

enum class Granularity {
  kPerTensor,
  kPerRow,
  kPerGroup,
  kPerChannel [[deprecated("oq: Granularity::kPerChannel is kPerRow (one scale per row: per output channel of W; "
                           "transpose for per input channel)")]] = kPerRow,
  kPerToken [[deprecated("oq: Granularity::kPerToken is kPerRow (one scale per row: per token of X)")]] = kPerRow,
};

constexpr std::string_view to_string(Granularity g) noexcept {
  switch (g) {
    case Granularity::kPerTensor: return "per-tensor";
    case Granularity::kPerRow: return "per-row";
    case Granularity::kPerGroup: return "per-group";
  }
  return "unknown";
}

/// A uniform affine quantizer's configuration (an aggregate: use designated
/// initializers or the factories). Check it with validate().
struct QuantSpec {
  int bits = 4;                                      ///< 2..8
  bool symmetric = false;                            ///< docs/design.md §2
  Granularity granularity = Granularity::kPerRow;    ///< see the file comment
  Eigen::Index group_size = 0;                       ///< > 0 for kPerGroup only
  double clip_ratio = 1.0;                           ///< c in (0, 1]
  /// Asymmetric only: widen each block's [min, max] to [min(min, 0),
  /// max(max, 0)] before clipping, as GPTQ's reference quantizer does
  /// (gptq/quant.py, Quantizer.find_params). The zero point then always lies
  /// in the code range [0, 2^b − 1], so 0 is exactly representable and a
  /// 4-bit group's zero fits a "gptq_v2" checkpoint ("gptq" stores all but
  /// the zero 0 of a group with no negative entry; io/gptq_checkpoint.hpp).
  /// Without it (docs/design.md §2, DuQuant's quantizer) a group entirely above or
  /// below 0 uses all 2^b levels on its own range. A symmetric range always
  /// holds 0: no effect (validate() accepts the flag either way).
  bool range_includes_zero = false;
  /// Symmetric only: map max|x| to 2^(b−1) − ½ instead of 2^(b−1) − 1, i.e.
  /// s = 2·c·max|x|/(2^b − 1), using the code −2^(b−1) too
  /// (core::symmetric_full_range_params; GPTQ's reference quantizer). An
  /// asymmetric range uses every code already: no effect (validate()
  /// accepts the flag either way).
  bool symmetric_full_range = false;

  /// GPTQ's reference quantizer (gptq/quant.py, Quantizer.find_params without
  /// its MSE grid): asymmetric with the range widened to hold 0, or symmetric
  /// on the full code range; group_size 0 means per-channel. What AutoGPTQ /
  /// GPTQModel checkpoints hold, so that oq's GPTQ reproduces their grids.
  /// Two cases differ from the reference's parameters: a group with no
  /// negative entry in symmetric mode, where the reference's scale is half of
  /// this one and clips the upper half of the group (an accident of its code,
  /// which oq does not copy); and an all-zero group, which the reference
  /// gives the range [−1, 1] and oq scale 1 and zero 0 (docs/design.md §2; either
  /// reconstructs 0).
  static constexpr QuantSpec gptq_reference(int bits, bool symmetric, Eigen::Index group_size = 0) noexcept {
    QuantSpec s = group_size > 0 ? per_group(bits, symmetric, group_size) : per_channel(bits, symmetric);
    s.range_includes_zero = !symmetric;
    s.symmetric_full_range = symmetric;
    return s;
  }

  static constexpr QuantSpec per_tensor(int bits, bool symmetric, double clip_ratio = 1.0) noexcept {
    return {bits, symmetric, Granularity::kPerTensor, 0, clip_ratio, false, false};
  }
  /// One (scale, zero) per row of the matrix quantized.
  static constexpr QuantSpec per_row(int bits, bool symmetric, double clip_ratio = 1.0) noexcept {
    return {bits, symmetric, Granularity::kPerRow, 0, clip_ratio, false, false};
  }
  /// per_row() for a weight W (out × in): one per output channel.
  static constexpr QuantSpec per_channel(int bits, bool symmetric, double clip_ratio = 1.0) noexcept {
    return per_row(bits, symmetric, clip_ratio);
  }
  /// per_row() for activations X (tokens × channels): one per token.
  static constexpr QuantSpec per_token(int bits, bool symmetric, double clip_ratio = 1.0) noexcept {
    return per_row(bits, symmetric, clip_ratio);
  }
  static constexpr QuantSpec per_group(int bits, bool symmetric, Eigen::Index group_size,
                                       double clip_ratio = 1.0) noexcept {
    return {bits, symmetric, Granularity::kPerGroup, group_size, clip_ratio, false, false};
  }

  /// The integer codes' range for these bits and this symmetry. Throws
  /// std::invalid_argument naming spec.bits outside [2, 8]: the range is
  /// 1 << bits, undefined behaviour for a negative count or one past the
  /// int's width (issue 23), and callers may ask before validate().
  constexpr core::CodeRange code_range() const {
    if (bits < core::kMinBits || bits > core::kMaxBits) {
      throw std::invalid_argument("oq::quant::QuantSpec::code_range: spec.bits must be in [" +
                                  std::to_string(core::kMinBits) + ", " + std::to_string(core::kMaxBits) +
                                  "], got " + std::to_string(bits));
    }
    return core::code_range(bits, symmetric);
  }

  /// Throws std::invalid_argument naming the offending field.
  void validate(std::string_view where) const {
    detail::require(bits >= core::kMinBits && bits <= core::kMaxBits, where, "spec.bits must be in [",
                    core::kMinBits, ", ", core::kMaxBits, "], got ", bits);
    detail::require(clip_ratio > 0.0 && clip_ratio <= 1.0, where, "spec.clip_ratio must be in (0, 1], got ",
                    clip_ratio);
    if (granularity == Granularity::kPerGroup) {
      detail::require(group_size > 0, where, "spec.group_size must be > 0 for per-group quantization, got ",
                      group_size);
    } else {
      detail::require(group_size == 0, where, "spec.group_size must be 0 unless granularity is per-group, got ",
                      group_size, " with ", to_string(granularity));
    }
  }

  /// Throws std::invalid_argument if a rows × cols matrix cannot be quantized
  /// with this spec (empty, or cols not a multiple of group_size).
  void validate_shape(Eigen::Index rows, Eigen::Index cols, std::string_view where) const {
    detail::require(rows > 0 && cols > 0, where, "x must be non-empty, got ", rows, " x ", cols);
    if (granularity == Granularity::kPerGroup) {
      detail::require(cols % group_size == 0, where, "spec.group_size (", group_size,
                      ") must divide the row length of x (", cols, ")");
    }
  }

  /// Rows of the parameter matrices for a rows × cols input.
  constexpr Eigen::Index param_rows(Eigen::Index rows) const noexcept {
    return granularity == Granularity::kPerTensor ? 1 : rows;
  }
  /// Columns of the parameter matrices (groups per row) for a rows × cols input.
  constexpr Eigen::Index param_cols(Eigen::Index cols) const noexcept {
    return granularity == Granularity::kPerGroup ? cols / group_size : 1;
  }
  /// Height of the block of x that one parameter pair covers.
  constexpr Eigen::Index block_rows(Eigen::Index rows) const noexcept {
    return granularity == Granularity::kPerTensor ? rows : 1;
  }
  /// Width of the block of x that one parameter pair covers.
  constexpr Eigen::Index block_cols(Eigen::Index cols) const noexcept {
    return granularity == Granularity::kPerGroup ? group_size : cols;
  }
};

}  // namespace oq::quant
