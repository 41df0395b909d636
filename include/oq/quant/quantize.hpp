// oq/quant/quantize.hpp: quantize to integer codes, dequantize, fake-quantize.
//
//   using namespace oq::quant;
//   const QuantSpec spec = QuantSpec::per_token(4, /*symmetric=*/false, 0.9);
//   auto params = compute_params(x, spec);          // or your own QuantParams
//   auto codes  = quantize(x, params, spec);        // int32 codes in spec.code_range()
//   auto x_hat  = dequantize(codes, params, spec);  // (q − z)·s
//   auto same   = fake_quantize(x, spec);           // both steps, params from x
//   fake_quantize_into(x, params, spec, x);         // in place (coefficient-wise, so
//                                                   // out may alias x)
//
// x is any Eigen matrix expression of float or double: blocks, maps of your
// own buffers, transposes. Results keep x's storage order. Arithmetic is
// vectorised Eigen array code in x's scalar type; rounding is round half to
// even under the default rounding mode (docs/design.md §2; detail/rint.hpp). The
// scalar formulas live in core/quant_math.hpp; reference.hpp re-derives them
// in plain loops for the tests.
//
// NaN/Inf policy: rejected. Every function here throws std::domain_error
// naming the first non-finite entry (row, col) of x, because a single NaN
// would otherwise poison a whole group's scale silently, and converting NaN
// to an integer code is undefined behaviour. Nor does finite input give a
// non-finite output: where a code's value (q − z)·s is beyond the largest
// float (ranges near ±FLT_MAX with a clip ratio above 7/8, or GPTQ's
// full-range grid), fake_quantize and dequantize throw std::domain_error
// naming the entry before writing anything (issue 23). Checked per block in
// O(1) from its parameters; only such blocks are checked code by code.
#pragma once

#include <oq/detail/check.hpp>
#include <oq/detail/rint.hpp>
#include <oq/quant/params.hpp>
#include <oq/quant/spec.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>
#include <type_traits>

namespace oq::quant {

/// A dynamic matrix of T with the storage order of Derived.
template <class Derived, class T = typename Derived::Scalar>
using PlainMatrixOf =
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Derived::IsRowMajor ? Eigen::RowMajor : Eigen::ColMajor>;

/// Integer codes of a quantized Derived (int32, same storage order).
template <class Derived>
using CodesOf = PlainMatrixOf<Derived, std::int32_t>;

namespace detail_quantize {

// The common checks of every function that reads x with given params.
template <class Derived, class Scalar>
void check_input(const Eigen::MatrixBase<Derived>& x, const QuantParams<Scalar>& params, const QuantSpec& spec,
                 std::string_view where) {
  static_assert(std::is_same_v<typename Derived::Scalar, Scalar>,
                "x and params must have the same scalar type");
  spec.validate(where);
  spec.validate_shape(x.rows(), x.cols(), where);
  validate_params(params, spec, x.rows(), x.cols(), where);
  detail::require_finite(x, where, "x");
}

// Calls sink(q) with q = clamp(rne(x/s) + z, lo, hi) of a block, an Eigen array
// expression. x/s is clamped to [lo − z − 1, hi − z + 1] before rounding, which
// changes no code (they are clamped to [lo, hi] after) and bounds the values
// that detail::with_rounded_clamped rounds.
template <class Block, class Scalar, class Sink>
void with_codes(const Block& block, core::AffineParams<Scalar> p, core::CodeRange range, Sink&& sink) {
  const auto lo = static_cast<Scalar>(range.lo);
  const auto hi = static_cast<Scalar>(range.hi);
  detail::with_rounded_clamped(block.array() / p.scale, lo - p.zero - 1, hi - p.zero + 1,
                               [&](const auto& rounded) { sink((rounded + p.zero).max(lo).min(hi)); });
}

// Whether (q − z)·s can leave Scalar's range for some code q of the range:
// s·max(|lo − z|, |hi − z|) beyond the largest value. Only for ranges near
// the largest value (a symmetric clip c > 7/8 of ±FLT_MAX reaches code −8,
// −8·c·FLT_MAX/7; GPTQ's full-range grid −16/15·FLT_MAX); O(1) per block.
template <class Scalar>
bool may_overflow(core::AffineParams<Scalar> p, core::CodeRange range) {
  const double z = static_cast<double>(p.zero);
  const double reach = std::max(std::fabs(range.lo - z), std::fabs(range.hi - z)) * static_cast<double>(p.scale);
  return !(reach <= static_cast<double>(std::numeric_limits<Scalar>::max()));
}

// Whether may_overflow can hold for any block, from two vectorised
// reductions over the parameters (conservative: the largest scale times the
// farthest any code can be from any zero; a per-block call costs as much as
// the pass itself for small groups). Ordinary data is far below the bound.
template <class Scalar>
bool any_may_overflow(const QuantParams<Scalar>& params, core::CodeRange range) {
  // The largest reach is at the largest scale or at a zero far from the
  // range: bound it by max s · max distance, two plain reductions.
  if (params.scale.size() == 0) return false;
  const double largest_scale = static_cast<double>(params.scale.maxCoeff());
  const double z_lo = static_cast<double>(params.zero.minCoeff()), z_hi = static_cast<double>(params.zero.maxCoeff());
  const double distance = std::max(std::fabs(z_lo - range.lo), std::fabs(z_hi - range.hi)) +
                          static_cast<double>(range.hi - range.lo);
  return !(largest_scale * distance <= 0.5 * static_cast<double>(std::numeric_limits<Scalar>::max()));
}

// Throws std::domain_error (`where`) naming the entry whose (q − z)·s, for
// the code q that code_at(r, c) gives, is beyond Scalar's largest value: a
// finite input whose quantized value is not a finite Scalar (issue 23).
template <class Scalar, class CodeAt>
void require_representable(core::AffineParams<Scalar> p, Eigen::Index rows, Eigen::Index cols, Eigen::Index row0,
                           Eigen::Index col0, CodeAt&& code_at, std::string_view where, std::string_view name) {
  // (q − z)·s is exact in double for a float scale (an integer of at most 9
  // bits times 24 bits), and rounds to ±inf in float from (2 − 2^−24)·2^127,
  // half an ulp past FLT_MAX; for double it is the product itself.
  const double rounds_to_inf = sizeof(Scalar) < sizeof(double) ? std::ldexp(2.0 - std::ldexp(1.0, -24), 127)
                                                               : std::numeric_limits<double>::infinity();
  for (Eigen::Index r = 0; r < rows; ++r) {
    for (Eigen::Index c = 0; c < cols; ++c) {
      const double q = static_cast<double>(code_at(r, c));
      const double value = (q - static_cast<double>(p.zero)) * static_cast<double>(p.scale);
      if (!(std::fabs(value) < rounds_to_inf)) {
        detail::require_domain(false, where, name, "(", row0 + r, ", ", col0 + c, ") quantizes to code ", q,
                               ", whose value (q − z)·s = (", q, " − ", p.zero, ")·", p.scale,
                               " overflows the scalar type (a range near its largest value; a smaller clip ratio ",
                               "keeps it finite)");
      }
    }
  }
}

// Before anything is written (out may be x): the blocks whose parameters
// could dequantize beyond the largest value, code by code. A function of its
// own, called only when some block may overflow, so that the pass below
// compiles as it did without it.
template <class Derived>
[[gnu::noinline]] void require_fake_quantizable(const Eigen::MatrixBase<Derived>& x,
                                                const QuantParams<typename Derived::Scalar>& params,
                                                const QuantSpec& spec) {
  const core::CodeRange range = spec.code_range();
  const Eigen::Index height = spec.block_rows(x.rows());
  const Eigen::Index width = spec.block_cols(x.cols());
  for (Eigen::Index i = 0; i < params.scale.rows(); ++i) {
    for (Eigen::Index j = 0; j < params.scale.cols(); ++j) {
      const auto p = params.at(i, j);
      if (!may_overflow(p, range)) continue;
      // The scalar formula of the codes (core/quant_math.hpp), which the
      // vectorised pass computes bit for bit.
      require_representable(
          p, height, width, i * height, j * width,
          [&](Eigen::Index r, Eigen::Index c) {
            return core::quantize_value(x(i * height + r, j * width + c), p, range);
          },
          "oq::quant::fake_quantize", "x");
    }
  }
}

// The fake-quantization pass itself, on arguments already checked.
template <class Derived, class OutDerived>
void fake_quantize_blocks(const Eigen::MatrixBase<Derived>& x, const QuantParams<typename Derived::Scalar>& params,
                          const QuantSpec& spec, Eigen::MatrixBase<OutDerived>& out) {
  const core::CodeRange range = spec.code_range();
  if (any_may_overflow(params, range)) require_fake_quantizable(x, params, spec);
  const Eigen::Index height = spec.block_rows(x.rows());
  const Eigen::Index width = spec.block_cols(x.cols());
  for_each_block(x, spec, [&](Eigen::Index i, Eigen::Index j, const auto& block) {
    const auto p = params.at(i, j);
    with_codes(block, p, range, [&](const auto& codes) {
      out.block(i * height, j * width, height, width).array() = (codes - p.zero) * p.scale;
    });
  });
}

}  // namespace detail_quantize

/// Writes the fake-quantized x, (clamp(rne(x/s)+z) − z)·s, into `out` (same
/// shape as x; may be x itself). `out` is taken as a const reference and
/// written through, the Eigen idiom that lets callers pass blocks and maps.
template <class Derived, class OutDerived>
void fake_quantize_into(const Eigen::MatrixBase<Derived>& x, const QuantParams<typename Derived::Scalar>& params,
                        const QuantSpec& spec, const Eigen::MatrixBase<OutDerived>& out_) {
  constexpr std::string_view kWhere = "oq::quant::fake_quantize_into";
  detail_quantize::check_input(x, params, spec, kWhere);
  auto& out = const_cast<Eigen::MatrixBase<OutDerived>&>(out_);
  detail::require(out.rows() == x.rows() && out.cols() == x.cols(), kWhere, "out must be ", x.rows(), " x ",
                  x.cols(), " like x, got ", out.rows(), " x ", out.cols());
  detail_quantize::fake_quantize_blocks(x, params, spec, out);
}

/// Fake-quantized copy of x with the given parameters.
template <class Derived>
PlainMatrixOf<Derived> fake_quantize(const Eigen::MatrixBase<Derived>& x,
                                     const QuantParams<typename Derived::Scalar>& params, const QuantSpec& spec) {
  PlainMatrixOf<Derived> out(x.rows(), x.cols());
  fake_quantize_into(x, params, spec, out);
  return out;
}

/// Fake-quantized copy of x with parameters computed from x itself.
/// compute_params has checked the spec, the shape and every entry of x, so the
/// pass runs without checking them a second time.
template <class Derived>
PlainMatrixOf<Derived> fake_quantize(const Eigen::MatrixBase<Derived>& x, const QuantSpec& spec) {
  const QuantParams<typename Derived::Scalar> params = compute_params(x, spec);
  PlainMatrixOf<Derived> out(x.rows(), x.cols());
  detail_quantize::fake_quantize_blocks(x, params, spec, out);
  return out;
}

/// Integer codes q = clamp(rne(x/s) + z, lo, hi) of x.
template <class Derived>
CodesOf<Derived> quantize(const Eigen::MatrixBase<Derived>& x, const QuantParams<typename Derived::Scalar>& params,
                          const QuantSpec& spec) {
  constexpr std::string_view kWhere = "oq::quant::quantize";
  detail_quantize::check_input(x, params, spec, kWhere);
  CodesOf<Derived> codes(x.rows(), x.cols());
  const core::CodeRange range = spec.code_range();
  const Eigen::Index height = spec.block_rows(x.rows());
  const Eigen::Index width = spec.block_cols(x.cols());
  for_each_block(x, spec, [&](Eigen::Index i, Eigen::Index j, const auto& block) {
    detail_quantize::with_codes(block, params.at(i, j), range, [&](const auto& q) {
      codes.block(i * height, j * width, height, width) = q.template cast<std::int32_t>().matrix();
    });
  });
  return codes;
}

/// x̂ = (q − z)·s from integer codes. Throws std::invalid_argument if a code is
/// outside spec.code_range() (naming the first one) or shapes disagree, and
/// std::domain_error naming the first code whose value overflows Scalar
/// (parameters of a range near its largest value).
template <class CodesDerived, class Scalar>
PlainMatrixOf<CodesDerived, Scalar> dequantize(const Eigen::MatrixBase<CodesDerived>& codes,
                                               const QuantParams<Scalar>& params, const QuantSpec& spec) {
  static_assert(std::is_integral_v<typename CodesDerived::Scalar>, "codes must be an integer matrix");
  constexpr std::string_view kWhere = "oq::quant::dequantize";
  spec.validate(kWhere);
  spec.validate_shape(codes.rows(), codes.cols(), kWhere);
  validate_params(params, spec, codes.rows(), codes.cols(), kWhere);
  const core::CodeRange range = spec.code_range();
  for (Eigen::Index r = 0; r < codes.rows(); ++r) {
    for (Eigen::Index c = 0; c < codes.cols(); ++c) {
      const auto q = static_cast<long long>(codes(r, c));
      detail::require(q >= range.lo && q <= range.hi, kWhere, "codes(", r, ", ", c, ") = ", q,
                      " is outside the code range [", range.lo, ", ", range.hi, "] of ", spec.bits, "-bit ",
                      spec.symmetric ? "symmetric" : "asymmetric", " quantization");
    }
  }
  PlainMatrixOf<CodesDerived, Scalar> out(codes.rows(), codes.cols());
  const Eigen::Index height = spec.block_rows(codes.rows());
  const Eigen::Index width = spec.block_cols(codes.cols());
  const bool check_overflow = detail_quantize::any_may_overflow(params, range);
  for_each_block(codes, spec, [&](Eigen::Index i, Eigen::Index j, const auto& block) {
    const auto p = params.at(i, j);
    if (check_overflow && detail_quantize::may_overflow(p, range)) {
      detail_quantize::require_representable(
          p, height, width, i * height, j * width, [&](Eigen::Index r, Eigen::Index c) { return block(r, c); },
          kWhere, "codes");
    }
    out.block(i * height, j * width, height, width).array() =
        (block.template cast<Scalar>().array() - p.zero) * p.scale;
  });
  return out;
}

}  // namespace oq::quant
