// oq/quant/params.hpp: scales and zero points, computed from data.
//
//   auto p = oq::quant::compute_params(x, spec);   // x: any Eigen matrix expression
//   p.scale(r, g), p.zero(r, g)                     // parameters of block (r, g)
//
// The parameter matrices are param_rows × param_cols (see QuantSpec): 1 × 1
// per-tensor, rows × 1 per-channel/per-token, rows × (cols / group_size)
// per-group. Entry (i, j) covers the block of x with top-left corner
// (i · block_rows, j · block_cols); for_each_block() walks that mapping and
// is the one place it is written down.
#pragma once

#include <oq/core/quant_math.hpp>
#include <oq/detail/check.hpp>
#include <oq/quant/spec.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>
#include <type_traits>

namespace oq::quant {

/// Scales and zero points (integer-valued) of a quantized matrix.
template <class Scalar>
struct QuantParams {
  static_assert(std::is_floating_point_v<Scalar>, "QuantParams needs a floating-point scalar");
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  Matrix scale;
  Matrix zero;

  core::AffineParams<Scalar> at(Eigen::Index i, Eigen::Index j) const { return {scale(i, j), zero(i, j)}; }
};

/// Calls f(i, j, block) for every parameter entry (i, j) with the block of x it
/// covers (an Eigen block expression, no copy).
template <class Derived, class F>
void for_each_block(const Eigen::MatrixBase<Derived>& x, const QuantSpec& spec, F&& f) {
  const Eigen::Index rows = spec.param_rows(x.rows());
  const Eigen::Index cols = spec.param_cols(x.cols());
  const Eigen::Index height = spec.block_rows(x.rows());
  const Eigen::Index width = spec.block_cols(x.cols());
  for (Eigen::Index i = 0; i < rows; ++i) {
    for (Eigen::Index j = 0; j < cols; ++j) f(i, j, x.block(i * height, j * width, height, width));
  }
}

/// Throws std::invalid_argument unless `params` has the shape `spec` gives for
/// a rows × cols input and holds positive finite scales and finite integer
/// zero points.
template <class Scalar>
void validate_params(const QuantParams<Scalar>& params, const QuantSpec& spec, Eigen::Index rows,
                     Eigen::Index cols, std::string_view where) {
  const Eigen::Index pr = spec.param_rows(rows);
  const Eigen::Index pc = spec.param_cols(cols);
  detail::require(params.scale.rows() == pr && params.scale.cols() == pc, where, "params.scale must be ", pr,
                  " x ", pc, " for a ", rows, " x ", cols, " input with ", to_string(spec.granularity),
                  " quantization, got ", params.scale.rows(), " x ", params.scale.cols());
  detail::require(params.zero.rows() == pr && params.zero.cols() == pc, where, "params.zero must be ", pr,
                  " x ", pc, ", got ", params.zero.rows(), " x ", params.zero.cols());
  for (Eigen::Index i = 0; i < pr; ++i) {
    for (Eigen::Index j = 0; j < pc; ++j) {
      const Scalar s = params.scale(i, j);
      const Scalar z = params.zero(i, j);
      detail::require(std::isfinite(s) && s > Scalar(0), where, "params.scale(", i, ", ", j,
                      ") must be positive and finite, got ", s);
      detail::require(std::isfinite(z) && z == std::nearbyint(z), where, "params.zero(", i, ", ", j,
                      ") must be a finite integer, got ", z);
      if (spec.symmetric) {
        detail::require(z == Scalar(0), where, "params.zero(", i, ", ", j,
                        ") must be 0 for symmetric quantization, got ", z);
      }
    }
  }
}

/// The (scale, zero) of a block whose values span [lo, hi] (finite, lo ≤ hi)
/// under `spec`'s bits, symmetry, range_includes_zero and symmetric_full_range, at clip ratio
/// `clip` (docs/design.md §2). The one place a spec becomes parameters: block_params
/// passes spec.clip_ratio, the clip search each ratio it tries.
template <class Scalar>
core::AffineParams<Scalar> range_params(Scalar lo, Scalar hi, const QuantSpec& spec, Scalar clip) {
  using std::abs;
  if (spec.symmetric) {
    const Scalar absmax = std::max(abs(lo), abs(hi));
    return spec.symmetric_full_range ? core::symmetric_full_range_params(absmax, clip, spec.bits)
                                     : core::symmetric_params(absmax, clip, spec.bits);
  }
  if (!spec.range_includes_zero) return core::asymmetric_params(lo, hi, clip, spec.bits);
  core::AffineParams<Scalar> p =
      core::asymmetric_params(std::min(lo, Scalar(0)), std::max(hi, Scalar(0)), clip, spec.bits);
  // A widened range so small that its scale underflows (subnormal values)
  // takes core's constant-group rule: s = v, z = −1 for v > 0, code 0. Code 1
  // with z = 0 gives the same v, and keeps the zero in the code range.
  if (p.zero < Scalar(0)) p.zero = Scalar(0);
  return p;
}

/// A block's smallest and largest entries, and whether all its entries are
/// finite (lo and hi are meaningful only then).
template <class Scalar>
struct BlockRange {
  Scalar lo;
  Scalar hi;
  bool finite;
};

namespace detail_params {

// The three passes over a block small enough to stay in cache between them.
template <class Block>
BlockRange<typename Block::Scalar> cached_block_range(const Block& block) {
  using Scalar = typename Block::Scalar;
  if (!detail::all_finite(block)) return {Scalar(0), Scalar(0), false};
  return {block.minCoeff(), block.maxCoeff(), true};
}

}  // namespace detail_params

/// block_range(block): the finiteness check, the min and the max of a block,
/// reading it from memory once. Each is a vectorised pass of its own (a fused
/// NaN-propagating min/max is slower, bench/RESULTS.md), so a block larger than
/// a cache-sized chunk (a per-tensor block is the whole tensor) is walked in
/// chunks of whole inner vectors (rows of a row-major x, columns of a
/// column-major one), and the three passes run over each chunk while it is in
/// cache. min and max are exact, so chunking changes no result.
template <class Block>
BlockRange<typename Block::Scalar> block_range(const Block& block) {
  using Scalar = typename Block::Scalar;
  constexpr Eigen::Index kChunkElements = Eigen::Index{1} << 14;  // 64 KiB of float: in L2
  // A block within one chunk (a token's row) is reduced as it is, with no
  // chunk views or running bounds around it (those measured 5–13 % slower).
  if (block.size() <= kChunkElements) return detail_params::cached_block_range(block);
  const Eigen::Index step = std::max<Eigen::Index>(1, kChunkElements / block.innerSize());
  BlockRange<Scalar> range{std::numeric_limits<Scalar>::infinity(), -std::numeric_limits<Scalar>::infinity(), true};
  for (Eigen::Index start = 0; start < block.outerSize() && range.finite; start += step) {
    const Eigen::Index count = std::min(step, block.outerSize() - start);
    BlockRange<Scalar> chunk;
    if constexpr (Block::IsRowMajor) {
      chunk = detail_params::cached_block_range(block.middleRows(start, count));
    } else {
      chunk = detail_params::cached_block_range(block.middleCols(start, count));
    }
    range = {std::min(range.lo, chunk.lo), std::max(range.hi, chunk.hi), chunk.finite};
  }
  return range;
}

/// The (scale, zero) of one block of values under `spec` (range_params at
/// spec.clip_ratio); the block's values must be finite.
template <class Block>
core::AffineParams<typename Block::Scalar> block_params(const Block& block, const QuantSpec& spec) {
  using Scalar = typename Block::Scalar;
  return range_params(block.minCoeff(), block.maxCoeff(), spec, static_cast<Scalar>(spec.clip_ratio));
}

/// Scales and zero points of x under `spec` (docs/design.md §2, core/quant_math.hpp).
/// Throws std::invalid_argument for a bad spec or an empty x, and
/// std::domain_error naming the first NaN/Inf entry of x.
template <class Derived>
QuantParams<typename Derived::Scalar> compute_params(const Eigen::MatrixBase<Derived>& x, const QuantSpec& spec) {
  using Scalar = typename Derived::Scalar;
  constexpr std::string_view kWhere = "oq::quant::compute_params";
  spec.validate(kWhere);
  spec.validate_shape(x.rows(), x.cols(), kWhere);

  QuantParams<Scalar> params;
  params.scale.resize(spec.param_rows(x.rows()), spec.param_cols(x.cols()));
  params.zero.resizeLike(params.scale);
  const auto clip = static_cast<Scalar>(spec.clip_ratio);
  for_each_block(x, spec, [&](Eigen::Index i, Eigen::Index j, const auto& block) {
    // The finiteness check per block (per cache-sized chunk of it), not as a
    // pass of its own over x: the min and max then read data that the check
    // has just brought into cache. The error names x's first bad entry, as
    // require_finite does.
    const BlockRange<Scalar> range = block_range(block);
    if (!range.finite) detail::require_finite(x, kWhere, "x");
    const core::AffineParams<Scalar> p = range_params(range.lo, range.hi, spec, clip);
    params.scale(i, j) = p.scale;
    params.zero(i, j) = p.zero;
  });
  return params;
}

}  // namespace oq::quant
