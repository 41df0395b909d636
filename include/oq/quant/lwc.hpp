// oq/quant/lwc.hpp: learnable weight clipping (LWC; Shao et al., "OmniQuant:
// Omnidirectionally Calibrated Quantization for Large Language Models", ICLR
// 2024, arXiv 2308.13137, §3.2, eq. 2), which DuQuant+LWC uses for its best
// results (Lin et al. 2024, Table 1). docs/design.md §10.
//
//   using namespace oq::quant;
//   const QuantSpec spec = QuantSpec::per_channel(4, /*symmetric=*/false);
//   GptqHessian hessian(w.cols());                   // H = 2·XᵀX/n of the linear's
//   hessian.add(x);                                  // calibration inputs X (n × in)
//   auto r = train_lwc(w, hessian.matrix(), spec);   // AdamW on the clip logits
//   // r.weight = Ŵ, r.codes and r.params for oq::cpu::pack_weights(r.codes, r.params, spec),
//   // r.upper_clip = γ, r.lower_clip = β per output channel (or group)
//   auto w_hat = lwc_fake_quantize(w, r.upper, r.lower, spec);       // == r.weight
//   auto g = lwc_grad(w, r.upper, r.lower, spec, grad_w_hat);         // ∂L/∂a, ∂L/∂b
//
// Forward (eq. 2). Per output channel (kPerRow) or group (kPerGroup) of W,
// with m, M its smallest and largest entries, two learned logits a (upper)
// and b (lower), γ = σ(a), β = σ(b), σ the logistic sigmoid, L = 2^N − 1:
//   h = (γ·M − β·m)/L,  z = rne(−β·m/h),
//   W_q = clamp(rne(W/h) + z, 0, L),  Ŵ = (W_q − z)·h.
// (The paper writes z = −rne(β·m/h); rne is odd, so it is the same.) Clipping
// both ends of the range by learned factors in (0, 1), instead of one fixed
// ratio (docs/design.md §2's c), lets each channel trade the error of its few
// largest weights against a finer step for all the others, tuned on the
// layer's output error. OmniQuant and DuQuant start at a = b = 4 (γ = β =
// σ(4) ≈ 0.982). The order of operations is the release's
// (quantize/quantizer.py, per_token_dynamic_calibration: xmax = σ(a)·xmax,
// xmin = σ(b)·xmin in the weight's type, range, /L, −xmin/scale, round): it
// is core::asymmetric_params on [β·m, γ·M] with c = 1. So the forward (h, z,
// Ŵ) in float is the release's bit for bit given the same clip factors
// γ = σ(a), β = σ(b) in the weight's type, and where none of the release's
// clamps below acts. That is a claim about the quantizer, not about σ or the
// training: oq evaluates σ in double and rounds it to the weight's type,
// where torch's float sigmoid may differ by an ulp, and the factors oq trains
// are not the release's (the deviations under "Training").
// The parameters are ordinary (scale, zero)
// QuantParams: quantize / fake_quantize / dequantize / oq::cpu::pack_weights
// take them as they are, and the zero point leaves [0, L] only for a group
// that does not straddle 0 (docs/design.md §2).
//
// Backward. Autograd of the release differentiates the surrogate in which
// rne(W/h) = W/h + ρ with ρ = rne(W/h) − W/h a constant (round_ste), the
// clamp's branch decided by the code v = rne(W/h) + z, closed at both ends
// like torch.clamp's backward, and h a function of (γ, β). On each branch:
//   0 ≤ v ≤ L:  Ŵ = (W/h + ρ + z − z)·h = W + ρ·h           ∂Ŵ/∂h = ρ
//   v < 0:      Ŵ = (0 − z)·h                               ∂Ŵ/∂h = −z
//   v > L:      Ŵ = (L − z)·h                               ∂Ŵ/∂h = L − z
// which is the LSQ-style scale gradient of quant/gradients.hpp
// (lsq_grad_scale, zero point held fixed; it is computed by it). Through
// h = (γ·M − β·m)/L and σ'(a) = γ(1 − γ):
//   ∂L/∂a = γ(1 − γ) · (M/L) · ∂L/∂h,
//   ∂L/∂b = β(1 − β) · (−m/L) · ∂L/∂h,
// with ∂L/∂h = Σ over the group of ∂L/∂Ŵ · ∂Ŵ/∂h (in double).
// The zero point: the release rounds it with torch's round(), whose gradient
// is zero, not with round_ste, so z is a constant to autograd
// (LwcZeroGradient::kNone, the default: it is what DuQuant+LWC's published
// numbers were trained with). The paper says only that rounding is
// straight-through; read for z too (LwcZeroGradient::kStraightThrough),
// z = −β·m/h + ρ_z with ρ_z = z + β·m/h constant, which changes the clamped
// entries only (in range z cancels):
//   v < 0:  Ŵ = −z·h = β·m − ρ_z·h       ∂Ŵ/∂h = −ρ_z,      ∂Ŵ/∂β|_h = m
//   v > L:  Ŵ = (L − z)·h = L·h + β·m − ρ_z·h
//                                        ∂Ŵ/∂h = L − ρ_z,   ∂Ŵ/∂β|_h = m
// i.e. ∂L/∂h gains −(β·m/h)·S and ∂L/∂β gains m·S, S = Σ of ∂L/∂Ŵ over the
// group's clamped entries: a clamped entry then moves with its clip bound
// (Ŵ ≈ β·m below, γ·M above) as in PACT, where under kNone it moves with h
// only. tests/quant/lwc_test.cpp checks both against central differences of
// the surrogate, written out in float64 loops.
//
// Degenerate groups. An all-zero group, a constant one, and one whose
// clipped bounds cross (γ·M ≤ β·m, possible only for a group entirely on one
// side of 0 once β and γ part) or whose scale (γ·M − β·m)/L is not a normal
// number, has no LWC grid: it is quantized with the unclipped range [m, M]
// (core::asymmetric_params, c = 1: an all-zero group gets s = 1, z = 0, a
// constant one is reconstructed exactly, docs/design.md §2) and passes no
// gradient to its a and b. The release would clamp such a scale up to 1e−5
// (CLIPMIN, in the weights' units) instead; oq has no absolute floor.
//
// The release's other clamps (quantize/quantizer.py, per_token_dynamic_
// calibration): the scale is clamped to at most 1e4 and the zero point to
// [−1e4, 1e4] before it is rounded, again absolute constants in the weights'
// units. oq does neither: h is (γ·M − β·m)/L however large, and z = rne(−β·m/h)
// however far outside [0, L] (a group entirely on one side of 0 whose range is
// narrow against its offset, e.g. all entries in [1e4, 1e4 + 1] at 4 bits,
// has z ≈ −1.5e5). So the two agree only while h ≤ 1e4 (a clipped range
// below 1.5e5 at 4 bits, 2.55e6 at 8: any real weight) and |−β·m/h| ≤ 1e4;
// beyond that the release's grid is shifted (clamped z) or coarsened
// (clamped h) and oq's reconstructs the group as eq. 2 states it.
//
// Training (train_lwc). One linear at a time: a and b minimise the output
// error on calibration inputs X (n tokens × in),
//   ‖X·Wᵀ − X·Ŵᵀ‖²_F / n = Σ_r ½·e_r·H·e_rᵀ,   e_r = w_r − ŵ_r,  H = 2·XᵀX/n,
// H being GPTQ's Hessian (GptqHessian::matrix()), so the tokens enter once;
// ∂/∂Ŵ = −E·H. E·H = W·H − Ŵ·H with W·H computed once. With one scale per
// row (per channel), Ŵ_r = h_r·(q_r − z_r), so Ŵ·H = diag(h)·(Q − z·1ᵀ)·H,
// and (Q − z·1ᵀ)·H is kept from step to step and updated only where a code
// or a zero point changed (a row of H per changed code): a step costs a few
// passes over W plus O(in) per changed code, after one out × in × in product
// at the start (CodeProducts). Per group, h varies along the row and each
// step computes E·H, an out × in × in product: steps · out · in² multiply-adds
// in all (LwcOptions::max_group_work bounds it). In double throughout.
// Deviation from OmniQuant: the release trains the
// factors of all the linears of a transformer block together on the block's
// output error (backpropagating through attention and the MLP, alongside its
// learnable equivalent transformation), 20 epochs of 128 calibration
// samples in mini-batches of one; here each linear is trained alone on its
// own output error, full-batch, a fixed number of AdamW steps. Rows are
// independent (a_r, b_r enter only ŵ_r), so two more choices follow:
//  - row r's loss is divided by its full-precision output energy
//    ½·w_r·H·w_rᵀ (1 where that is 0). Adam's update is invariant to a
//    positive factor on one parameter's gradient but for ε, so this changes
//    only what ε = 1e−8 means: the same for every row, at every scale of W
//    and X (the release's MSE over a block's output has one factor for all);
//  - with LwcOptions::keep_best (default) each row keeps the factors of the
//    step with its smallest loss (the initial factors included), so the
//    result's loss is never above the loss at a = b = init; the release
//    keeps the last step. Every step's loss is that of the parameters the
//    weights would be packed with. Per channel the steps' losses come from
//    the incrementally updated products (a rounding per update), so the
//    reported initial_loss and loss are both computed afresh, with one
//    out × in × in product each, the same way; a row whose fresh loss at
//    its kept factors is above its fresh loss at init (rounding of the
//    updates made a step look better than it is) is reset to init. So
//    loss ≤ initial_loss holds exactly, not only up to rounding.
// Deterministic: no randomness, no threads; the same inputs give the same
// bits on one build.
//
// Errors: std::invalid_argument for a bad spec (bits outside [2, 8], a
// symmetric spec, range_includes_zero, a granularity other than per-row or
// per-group), an empty W, factors or grad_out of the wrong shape, non-finite
// factors, a Hessian that is not in × in, has a negative diagonal entry or
// is not symmetric within 1e−5·max |H| (train_lwc's comment), a per-group training
// above LwcOptions::max_group_work, or bad options (naming each);
// std::domain_error naming the first NaN/Inf entry of W, grad_out or the
// Hessian. spec.clip_ratio is ignored: the factors are the clip.
#pragma once

#include <oq/core/quant_math.hpp>
#include <oq/detail/check.hpp>
#include <oq/quant/gradients.hpp>
#include <oq/quant/params.hpp>
#include <oq/quant/quantize.hpp>
#include <oq/quant/spec.hpp>

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace oq::quant {

/// Which gradient the zero point z = rne(−β·m/h) passes (file comment).
enum class LwcZeroGradient {
  kNone,             ///< z is a constant (the release: torch.round, not round_ste)
  kStraightThrough,  ///< z = −β·m/h + const, the paper's rounding read as straight-through for z too
};

/// AdamW and the schedule of train_lwc. The defaults are the OmniQuant and
/// DuQuant releases' (main.py: --lwc_lr 1e-2, --wd 0; torch.optim.AdamW's
/// betas and eps; the factors' init 4) but for the step count: the release
/// runs 20 epochs × 128 samples = 2560 mini-batch steps per block, here a
/// step sees every calibration token, and on heavy-tailed test layers
/// (tests/quant/lwc_test.cpp's kind, 64 × 128) the best loss stopped
/// improving by 500 steps at lr 1e-2 (1000 at 5e-3).
struct LwcOptions {
  int steps = 500;               ///< AdamW steps, >= 0 (0: the factors stay at init)
  double learning_rate = 1e-2;   ///< > 0
  double init = 4.0;             ///< a = b = init at the start (σ(4) ≈ 0.982), finite
  double beta1 = 0.9;            ///< in [0, 1)
  double beta2 = 0.999;          ///< in [0, 1)
  double epsilon = 1e-8;         ///< > 0
  double weight_decay = 0.0;     ///< decoupled (AdamW), >= 0, learning_rate·weight_decay < 1
  LwcZeroGradient zero_gradient = LwcZeroGradient::kNone;
  bool keep_best = true;         ///< each row keeps its best step's factors (file comment)
  /// The most multiply-adds a per-group train_lwc may spend, steps · out · in²
  /// (each step's E·H; a per-channel spec never counts against it: its steps
  /// cost O(out · in) plus O(in) per changed code). Above it train_lwc throws
  /// std::invalid_argument before any work, naming the cost: 2^40 ≈ 1.1e12
  /// by default, which a 1024 × 1024 linear at 500 steps (5.4e11) fits and
  /// LLaMA-2-7B's 4096 × 4096 q_proj at 500 steps (3.4e13) does not. Raise it
  /// to accept the cost, 0 for no limit; or train per channel, fewer steps,
  /// or on the block's output (tools/llama/block_lwc.hpp). >= 0.
  double max_group_work = 1099511627776.0;  // 2^40

  /// The multiply-adds of per-group training of an out × in weight, steps ·
  /// out · in², in double (in int64 it overflows for in ≳ 10^6).
  double group_work(std::int64_t out, std::int64_t in) const {
    return static_cast<double>(steps) * static_cast<double>(out) * static_cast<double>(in) * static_cast<double>(in);
  }
  /// Whether max_group_work admits `work` (0: no limit).
  bool admits_group_work(double work) const { return max_group_work == 0 || work <= max_group_work; }

  /// Throws std::invalid_argument naming the first field out of its range.
  void validate(std::string_view where) const {
    detail::require(steps >= 0, where, "options.steps must be >= 0, got ", steps);
    detail::require(std::isfinite(learning_rate) && learning_rate > 0, where,
                    "options.learning_rate must be finite and > 0, got ", learning_rate);
    detail::require(std::isfinite(init), where, "options.init must be finite, got ", init);
    detail::require(beta1 >= 0 && beta1 < 1, where, "options.beta1 must be in [0, 1), got ", beta1);
    detail::require(beta2 >= 0 && beta2 < 1, where, "options.beta2 must be in [0, 1), got ", beta2);
    detail::require(std::isfinite(epsilon) && epsilon > 0, where, "options.epsilon must be finite and > 0, got ",
                    epsilon);
    detail::require(weight_decay >= 0 && learning_rate * weight_decay < 1, where,
                    "options.weight_decay must be >= 0 with learning_rate·weight_decay < 1, got ", weight_decay);
    detail::require(max_group_work >= 0, where, "options.max_group_work must be >= 0 (0: no limit), got ",
                    max_group_work);
  }
};

/// ∂L/∂a and ∂L/∂b, one entry per parameter entry (the spec's shape).
template <class Matrix>
struct LwcGrad {
  Matrix upper;  ///< ∂L/∂a
  Matrix lower;  ///< ∂L/∂b
};

template <class Scalar>
struct LwcResult {
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  Matrix upper;               ///< a, the logits of the upper clip (param_rows × param_cols)
  Matrix lower;               ///< b, the logits of the lower clip
  Matrix upper_clip;          ///< γ = σ(a)
  Matrix lower_clip;          ///< β = σ(b)
  QuantParams<Scalar> params; ///< h and z per entry: lwc_params(w, upper, lower, spec)
  Matrix weight;              ///< Ŵ = fake_quantize(w, params, spec)
  Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic> codes;  ///< quantize(w, params, spec)
  double initial_loss = 0;    ///< ‖X·(W − Ŵ)ᵀ‖²_F / n at a = b = init
  double loss = 0;            ///< the same at the returned factors, computed the same way (<= initial_loss with keep_best)
};

/// The AdamW of train_lwc (torch.optim.AdamW: decoupled weight decay,
/// bias-corrected moments) over one matrix of logits, for callers that train
/// LWC factors on another objective (tools/llama/block_lwc.hpp trains them on
/// a transformer layer's output, OmniQuant's own objective). The options are
/// taken as given (LwcOptions::validate checks them).
class LwcAdamW {
 public:
  LwcAdamW(const LwcOptions& options, Eigen::Index rows, Eigen::Index cols)
      : o_(options), m_(Eigen::MatrixXd::Zero(rows, cols)), v_(Eigen::MatrixXd::Zero(rows, cols)) {}

  /// One step of the logits p with gradient g (same shape), step t = 1, 2, …
  void step(Eigen::MatrixXd& p, const Eigen::MatrixXd& g, int t) {
    const double c1 = 1 - std::pow(o_.beta1, t);
    const double c2 = 1 - std::pow(o_.beta2, t);
    m_.array() = o_.beta1 * m_.array() + (1 - o_.beta1) * g.array();
    v_.array() = o_.beta2 * v_.array() + (1 - o_.beta2) * g.array().square();
    p *= 1 - o_.learning_rate * o_.weight_decay;
    p.array() -= (o_.learning_rate / c1) * m_.array() / ((v_.array() / c2).sqrt() + o_.epsilon);
  }

 private:
  LwcOptions o_;
  Eigen::MatrixXd m_, v_;
};

namespace detail_lwc {

inline double sigmoid(double a) {
  // Either form is exact to rounding; this one never overflows exp.
  return a >= 0 ? 1.0 / (1.0 + std::exp(-a)) : std::exp(a) / (1.0 + std::exp(a));
}

inline void check_spec(const QuantSpec& spec, std::string_view where) {
  spec.validate(where);
  detail::require(!spec.symmetric, where,
                  "spec.symmetric must be false: learnable weight clipping (OmniQuant eq. 2) clips the two ends "
                  "of an asymmetric range");
  detail::require(!spec.range_includes_zero, where,
                  "spec.range_includes_zero must be false: the learned clip sets the range");
  detail::require(spec.granularity == Granularity::kPerRow || spec.granularity == Granularity::kPerGroup, where,
                  "spec.granularity must be per-row (per output channel) or per-group, got ",
                  to_string(spec.granularity));
}

template <class Derived>
void check_weight(const Eigen::MatrixBase<Derived>& w, const QuantSpec& spec, std::string_view where) {
  static_assert(std::is_floating_point_v<typename Derived::Scalar>, "LWC needs a floating-point weight");
  check_spec(spec, where);
  spec.validate_shape(w.rows(), w.cols(), where);
  detail::require_finite(w, where, "w");
}

template <class Derived, class FDerived>
void check_factors(const Eigen::MatrixBase<Derived>& w, const QuantSpec& spec,
                   const Eigen::MatrixBase<FDerived>& factor, std::string_view name, std::string_view where) {
  static_assert(std::is_same_v<typename Derived::Scalar, typename FDerived::Scalar>,
                "w and the clip factors must have the same scalar type");
  const Eigen::Index rows = spec.param_rows(w.rows());
  const Eigen::Index cols = spec.param_cols(w.cols());
  detail::require(factor.rows() == rows && factor.cols() == cols, where, name, " must be ", rows, " x ", cols,
                  " (one logit per ", spec.granularity == Granularity::kPerGroup ? "group" : "output channel",
                  " of w), got ", factor.rows(), " x ", factor.cols());
  for (Eigen::Index i = 0; i < rows; ++i) {
    for (Eigen::Index j = 0; j < cols; ++j) {
      detail::require(std::isfinite(factor(i, j)), where, name, "(", i, ", ", j, ") must be finite, got ",
                      factor(i, j));
    }
  }
}

// One parameter entry's clip: what the forward used and the backward needs.
struct GroupClip {
  double min = 0;       // m, the group's smallest entry (unclipped)
  double max = 0;       // M, its largest
  double gamma = 0;     // σ(a) as the forward used it (rounded to the weight's type)
  double beta = 0;      // σ(b)
  double lower = 0;     // β·m as the forward rounded it
  bool active = false;  // false: a degenerate group, unclipped and without gradient
};

template <class Scalar>
struct Clips {
  QuantParams<Scalar> params;
  std::vector<GroupClip> groups;  // column-major over the parameter entries, like params' storage
};

// lwc_params' arithmetic on checked arguments.
template <class Derived, class UDerived, class LDerived>
Clips<typename Derived::Scalar> clips(const Eigen::MatrixBase<Derived>& w, const Eigen::MatrixBase<UDerived>& upper,
                                      const Eigen::MatrixBase<LDerived>& lower, const QuantSpec& spec) {
  using Scalar = typename Derived::Scalar;
  Clips<Scalar> out;
  out.params.scale.resize(spec.param_rows(w.rows()), spec.param_cols(w.cols()));
  out.params.zero.resizeLike(out.params.scale);
  out.groups.resize(static_cast<std::size_t>(out.params.scale.size()));
  for_each_block(w, spec, [&](Eigen::Index i, Eigen::Index j, const auto& block) {
    const Scalar m = block.minCoeff();
    const Scalar big = block.maxCoeff();
    // The release multiplies in the weight's type: σ(a)·xmax, σ(b)·xmin.
    const auto gamma = static_cast<Scalar>(sigmoid(static_cast<double>(upper(i, j))));
    const auto beta = static_cast<Scalar>(sigmoid(static_cast<double>(lower(i, j))));
    const Scalar hi = gamma * big;
    const Scalar lo = beta * m;
    core::AffineParams<Scalar> p = core::asymmetric_params(lo, hi, Scalar(1), spec.bits);
    // asymmetric_params' scale is (hi − lo)/L (or hi/L − lo/L where that
    // overflows) whenever it is a normal number and hi > lo; otherwise it took
    // its constant-group rule on the clipped bounds, or a crossed range gave
    // a negative scale: no LWC grid (file comment).
    const bool active = hi > lo && p.scale >= std::numeric_limits<Scalar>::min();
    if (!active) p = core::asymmetric_params(m, big, Scalar(1), spec.bits);
    out.params.scale(i, j) = p.scale;
    out.params.zero(i, j) = p.zero;
    out.groups[static_cast<std::size_t>(j * out.params.scale.rows() + i)] =
        GroupClip{static_cast<double>(m), static_cast<double>(big), static_cast<double>(gamma),
                  static_cast<double>(beta), static_cast<double>(lo), active};
  });
  return out;
}

// A gradient in the weight's type: std::domain_error where it lies beyond
// that type's range (a float cast of such a double is undefined).
template <class Scalar>
typename QuantParams<Scalar>::Matrix to_scalar(const Eigen::MatrixXd& g, std::string_view name,
                                               std::string_view where) {
  for (Eigen::Index j = 0; j < g.cols(); ++j) {
    for (Eigen::Index i = 0; i < g.rows(); ++i) {
      detail::require_domain(std::abs(g(i, j)) <= static_cast<double>(std::numeric_limits<Scalar>::max()), where,
                             "the gradient of ", name, "(", i, ", ", j, ") = ", g(i, j),
                             " is beyond the range of w's type (grad_out near its largest value: scale the loss down)");
    }
  }
  return g.template cast<Scalar>();
}

// ∂L/∂a, ∂L/∂b (in double) from ∂L/∂Ŵ on checked arguments (file comment).
template <class Derived, class GDerived>
LwcGrad<Eigen::MatrixXd> grad(const Eigen::MatrixBase<Derived>& w, const Clips<typename Derived::Scalar>& c,
                              const QuantSpec& spec, const Eigen::MatrixBase<GDerived>& grad_out,
                              LwcZeroGradient zero_gradient) {
  using Scalar = typename Derived::Scalar;
  using Matrix = typename QuantParams<Scalar>::Matrix;
  const double levels = std::ldexp(1.0, spec.bits) - 1;
  // ∂L/∂h with z held fixed: gradients.hpp's scale gradient.
  const Matrix grad_h = lsq_grad_scale(w, c.params, spec, grad_out);
  // Σ of ∂L/∂Ŵ over each group's clamped entries (kStraightThrough only):
  // the whole sum less what the straight-through estimator passes.
  Eigen::MatrixXd clamped = Eigen::MatrixXd::Zero(grad_h.rows(), grad_h.cols());
  if (zero_gradient == LwcZeroGradient::kStraightThrough) {
    const PlainMatrixOf<Derived> passed = ste_grad_input(w, c.params, spec, grad_out);
    const Eigen::Index height = spec.block_rows(w.rows());
    const Eigen::Index width = spec.block_cols(w.cols());
    for (Eigen::Index i = 0; i < clamped.rows(); ++i) {
      for (Eigen::Index j = 0; j < clamped.cols(); ++j) {
        clamped(i, j) = (grad_out.block(i * height, j * width, height, width).template cast<double>() -
                         passed.block(i * height, j * width, height, width).template cast<double>())
                            .sum();
      }
    }
  }
  LwcGrad<Eigen::MatrixXd> out{Eigen::MatrixXd::Zero(grad_h.rows(), grad_h.cols()),
                               Eigen::MatrixXd::Zero(grad_h.rows(), grad_h.cols())};
  for (Eigen::Index j = 0; j < grad_h.cols(); ++j) {
    for (Eigen::Index i = 0; i < grad_h.rows(); ++i) {
      const GroupClip& g = c.groups[static_cast<std::size_t>(j * grad_h.rows() + i)];
      if (!g.active) continue;
      double dh = static_cast<double>(grad_h(i, j));
      double dbeta_direct = 0;
      if (zero_gradient == LwcZeroGradient::kStraightThrough) {
        dh -= g.lower / static_cast<double>(c.params.scale(i, j)) * clamped(i, j);
        dbeta_direct = g.min * clamped(i, j);
      }
      out.upper(i, j) = g.gamma * (1 - g.gamma) * (g.max / levels) * dh;
      out.lower(i, j) = g.beta * (1 - g.beta) * (-(g.min / levels) * dh + dbeta_direct);
    }
  }
  return out;
}

// Ŵ·H for one scale per row (file comment, "Training"): Ŵ_r = h_r·(q_r − z_r),
// so Ŵ·H = diag(h)·C with C = (Q − z·1ᵀ)·H, and C changes only where a code
// or a zero point changed since the last step: row k of H per changed code
// q_rk, z's change times the column sums of H per changed zero point. One
// product (Q − z·1ᵀ)·H at the first call, O(in) per change after it. The
// updates add integer multiples of H's rows in double, a rounding each:
// after N of them a row of C is off by about √N ulp of its size.
class CodeProducts {
 public:
  using RowMatrixD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  explicit CodeProducts(const RowMatrixD& h) : h_(h), column_sums_(h.colwise().sum()) {}

  template <class Codes>
  void move_to(const Codes& q, const Eigen::VectorXd& z) {
    if (codes_.size() == 0) {
      RowMatrixD shifted = q.template cast<double>();
      shifted.colwise() -= z;
      c_.noalias() = shifted * h_;
    } else {
      for (Eigen::Index r = 0; r < q.rows(); ++r) {
        for (Eigen::Index k = 0; k < q.cols(); ++k) {
          const std::int32_t d = q(r, k) - codes_(r, k);
          if (d != 0) c_.row(r) += static_cast<double>(d) * h_.row(k);
        }
        if (z(r) != zeros_(r)) c_.row(r) -= (z(r) - zeros_(r)) * column_sums_;
      }
    }
    codes_ = q;
    zeros_ = z;
  }

  /// C = (Q − z·1ᵀ)·H at the codes of the last move_to.
  const RowMatrixD& matrix() const { return c_; }

 private:
  const RowMatrixD& h_;
  Eigen::RowVectorXd column_sums_;  // 1ᵀ·H
  Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> codes_;
  Eigen::VectorXd zeros_;
  RowMatrixD c_;
};

}  // namespace detail_lwc

/// The (scale h, zero z) of every channel or group of w under LWC with the
/// logits `upper` (a) and `lower` (b), each param_rows × param_cols of spec
/// (file comment; degenerate groups take the unclipped range).
template <class Derived, class UDerived, class LDerived>
QuantParams<typename Derived::Scalar> lwc_params(const Eigen::MatrixBase<Derived>& w,
                                                 const Eigen::MatrixBase<UDerived>& upper,
                                                 const Eigen::MatrixBase<LDerived>& lower, const QuantSpec& spec) {
  constexpr std::string_view kWhere = "oq::quant::lwc_params";
  detail_lwc::check_weight(w, spec, kWhere);
  detail_lwc::check_factors(w, spec, upper, "upper", kWhere);
  detail_lwc::check_factors(w, spec, lower, "lower", kWhere);
  return detail_lwc::clips(w, upper, lower, spec).params;
}

/// Ŵ: w fake-quantized with lwc_params(w, upper, lower, spec).
template <class Derived, class UDerived, class LDerived>
PlainMatrixOf<Derived> lwc_fake_quantize(const Eigen::MatrixBase<Derived>& w, const Eigen::MatrixBase<UDerived>& upper,
                                         const Eigen::MatrixBase<LDerived>& lower, const QuantSpec& spec) {
  return fake_quantize(w, lwc_params(w, upper, lower, spec), spec);
}

/// ∂L/∂a and ∂L/∂b through lwc_fake_quantize(w, upper, lower, spec), given
/// grad_out = ∂L/∂Ŵ (same shape as w); straight-through rounding, the zero
/// point's gradient as `zero_gradient` says (file comment).
template <class Derived, class UDerived, class LDerived, class GDerived>
LwcGrad<typename QuantParams<typename Derived::Scalar>::Matrix> lwc_grad(
    const Eigen::MatrixBase<Derived>& w, const Eigen::MatrixBase<UDerived>& upper,
    const Eigen::MatrixBase<LDerived>& lower, const QuantSpec& spec, const Eigen::MatrixBase<GDerived>& grad_out,
    LwcZeroGradient zero_gradient = LwcZeroGradient::kNone) {
  static_assert(std::is_same_v<typename Derived::Scalar, typename GDerived::Scalar>,
                "w and grad_out must have the same scalar type");
  constexpr std::string_view kWhere = "oq::quant::lwc_grad";
  detail_lwc::check_weight(w, spec, kWhere);
  detail_lwc::check_factors(w, spec, upper, "upper", kWhere);
  detail_lwc::check_factors(w, spec, lower, "lower", kWhere);
  detail::require(grad_out.rows() == w.rows() && grad_out.cols() == w.cols(), kWhere, "grad_out must be ", w.rows(),
                  " x ", w.cols(), " like w, got ", grad_out.rows(), " x ", grad_out.cols());
  detail::require_finite(grad_out, kWhere, "grad_out");
  using Scalar = typename Derived::Scalar;
  const LwcGrad<Eigen::MatrixXd> g =
      detail_lwc::grad(w, detail_lwc::clips(w, upper, lower, spec), spec, grad_out, zero_gradient);
  return {detail_lwc::to_scalar<Scalar>(g.upper, "upper", kWhere), detail_lwc::to_scalar<Scalar>(g.lower, "lower", kWhere)};
}

/// Trains the LWC logits of one linear y = x·wᵀ (w: out × in) on its output
/// error, given H = 2·XᵀX/n of its calibration inputs (in × in, symmetric
/// positive semidefinite: GptqHessian::matrix()). See the file comment.
///
/// The Hessian is checked as GptqFactor checks it: in × in, finite, a
/// diagonal >= 0, and symmetric to rounding, max |H − Hᵀ| ≤ 1e−5·max |H| (a
/// Hessian accumulated in float or by a GEMM that is not bitwise symmetric
/// passes; a matrix that is not meant to be symmetric does not). It is then
/// used as ½(H + Hᵀ): the loss ½·e·H·eᵀ sees only that part, and the
/// gradient −E·H is the loss's gradient only for a symmetric H.
///
/// Cost: per channel, two out × in × in products (the first and the last
/// evaluation) and per step a few passes over W plus O(in) per changed code;
/// per group, one out × in × in product per step, steps · out · in²
/// multiply-adds in all, refused above options.max_group_work (LwcOptions).
template <class Derived, class HDerived>
LwcResult<typename Derived::Scalar> train_lwc(const Eigen::MatrixBase<Derived>& w,
                                              const Eigen::MatrixBase<HDerived>& hessian, const QuantSpec& spec,
                                              const LwcOptions& options = {}) {
  using Scalar = typename Derived::Scalar;
  using Matrix = typename LwcResult<Scalar>::Matrix;
  static_assert(std::is_floating_point_v<typename HDerived::Scalar>, "the Hessian must be a floating-point matrix");
  constexpr std::string_view kWhere = "oq::quant::train_lwc";
  detail_lwc::check_weight(w, spec, kWhere);
  detail::require(hessian.rows() == w.cols() && hessian.cols() == w.cols(), kWhere, "hessian must be ", w.cols(),
                  " x ", w.cols(), " (the inputs of w), got ", hessian.rows(), " x ", hessian.cols());
  detail::require_finite(hessian, kWhere, "hessian");
  options.validate(kWhere);
  const LwcOptions& o = options;
  if (spec.granularity == Granularity::kPerGroup) {
    const double work = o.group_work(w.rows(), w.cols());
    detail::require(o.admits_group_work(work), kWhere, "per-group LWC costs steps · out · in² = ", o.steps, " · ",
                    w.rows(), " · ", w.cols(), "² = ", work, " multiply-adds, above options.max_group_work = ",
                    o.max_group_work, ": raise options.max_group_work (0: no limit) to accept the cost, or train "
                    "per channel, or fewer steps");
  }

  using RowMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using RowMatrixD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const RowMatrix wm = w;  // rows contiguous: every pass here goes row by row
  RowMatrixD h = hessian.template cast<double>();
  {
    const double scale = h.cwiseAbs().maxCoeff();
    const double asymmetry = (h - h.transpose()).cwiseAbs().maxCoeff();
    detail::require(asymmetry <= 1e-5 * scale, kWhere, "hessian must be symmetric (max |H − Hᵀ| <= 1e-5 · max |H|), "
                    "got max |H − Hᵀ| = ", asymmetry, " with max |H| = ", scale);
    detail::require((h.diagonal().array() >= 0.0).all(), kWhere,
                    "hessian's diagonal must be >= 0 (H = 2·XᵀX/n), got a negative entry");
    // ½(H + Hᵀ), bit for bit H where H is symmetric; past DBL_MAX / 2 the
    // sum would overflow, and halving first is the same value there
    // (halving a normal double is exact), as in GptqFactor.
    if (scale <= std::numeric_limits<double>::max() / 2) {
      h = (0.5 * (h + h.transpose())).eval();
    } else {
      h = (0.5 * h + 0.5 * h.transpose()).eval();
    }
  }
  const Eigen::Index out_rows = wm.rows();
  const Eigen::Index prows = spec.param_rows(wm.rows());
  const Eigen::Index pcols = spec.param_cols(wm.cols());
  const RowMatrixD w_h = wm.template cast<double>() * h;  // W·H, once

  // Row r's loss ½·e_r·H·e_rᵀ is divided by ½·w_r·H·w_rᵀ (file comment).
  Eigen::VectorXd row_weight(out_rows);
  {
    const Eigen::VectorXd energy = 0.5 * w_h.cwiseProduct(wm.template cast<double>()).rowwise().sum();
    for (Eigen::Index r = 0; r < out_rows; ++r) {
      row_weight(r) = std::isfinite(energy(r)) && energy(r) > 0 ? 1.0 / energy(r) : 1.0;
    }
  }

  // One scale per row: Ŵ·H from the codes' products, updated where codes change.
  std::optional<detail_lwc::CodeProducts> products;
  if (pcols == 1) products.emplace(h);

  // Every row's loss at factors (upper, lower) in the weight's type, the
  // clips, the codes, Ŵ (as fake_quantize gives it) and E·H for the gradient.
  struct Evaluation {
    detail_lwc::Clips<Scalar> clips;
    CodesOf<RowMatrix> codes;
    RowMatrix weight;
    RowMatrixD error_h;  // E·H
    Eigen::VectorXd row_loss;
  };
  const auto evaluate = [&](const Matrix& upper, const Matrix& lower) {
    Evaluation e;
    e.clips = detail_lwc::clips(wm, upper, lower, spec);
    e.codes = quantize(wm, e.clips.params, spec);
    e.weight = dequantize(e.codes, e.clips.params, spec);  // (q − z)·h, as fake_quantize
    const RowMatrixD error = wm.template cast<double>() - e.weight.template cast<double>();
    if (products) {
      products->move_to(e.codes, e.clips.params.zero.col(0).template cast<double>());
      e.error_h = w_h - e.clips.params.scale.col(0).template cast<double>().asDiagonal() * products->matrix();
    } else {
      e.error_h.noalias() = error * h;
    }
    e.row_loss = 0.5 * e.error_h.cwiseProduct(error).rowwise().sum();
    return e;
  };
  // The same, with the codes' products computed afresh (one product) instead
  // of updated: how the initial and the reported losses are computed.
  const auto evaluate_fresh = [&](const Matrix& upper, const Matrix& lower) {
    if (products) products.emplace(h);
    return evaluate(upper, lower);
  };

  Eigen::MatrixXd a = Eigen::MatrixXd::Constant(prows, pcols, o.init);
  Eigen::MatrixXd b = a;
  LwcAdamW adam_a(o, prows, pcols), adam_b(o, prows, pcols);
  Matrix best_upper = a.template cast<Scalar>(), best_lower = b.template cast<Scalar>();
  Eigen::VectorXd best_loss = Eigen::VectorXd::Constant(out_rows, std::numeric_limits<double>::infinity());
  Eigen::VectorXd initial_row_loss;
  LwcResult<Scalar> result;
  for (int t = 0;; ++t) {
    // The factors are evaluated in the weight's type: the ones returned.
    const Matrix upper = a.template cast<Scalar>(), lower = b.template cast<Scalar>();
    const Evaluation e = evaluate(upper, lower);  // t = 0: the products' first, fresh, computation
    if (t == 0) {
      initial_row_loss = e.row_loss;
      result.initial_loss = e.row_loss.sum();
    }
    if (o.keep_best) {
      for (Eigen::Index r = 0; r < out_rows; ++r) {
        if (e.row_loss(r) < best_loss(r)) {  // strict: ties keep the earlier step
          best_loss(r) = e.row_loss(r);
          best_upper.row(r) = upper.row(r);
          best_lower.row(r) = lower.row(r);
        }
      }
    } else {
      best_upper = upper;
      best_lower = lower;
    }
    if (t == o.steps) break;
    // ∂loss_r/∂ŵ_r = −(E·H)_r; row r's factors see only row r, so the
    // division by its energy is applied to their gradients (in double: a
    // tiny energy cannot overflow ∂L/∂Ŵ in the weight's type).
    const RowMatrix grad_out = (-e.error_h).template cast<Scalar>();
    LwcGrad<Eigen::MatrixXd> g = detail_lwc::grad(wm, e.clips, spec, grad_out, o.zero_gradient);
    g.upper = row_weight.asDiagonal() * g.upper;
    g.lower = row_weight.asDiagonal() * g.lower;
    adam_a.step(a, g.upper, t + 1);
    adam_b.step(b, g.lower, t + 1);
  }
  // The reported loss afresh, as the initial one; a row whose kept factors
  // are worse than init on that count is reset to init (file comment). The
  // fresh evaluation of a row depends on that row alone, so a reset row's
  // loss is its initial loss bit for bit, and loss <= initial_loss exactly.
  Evaluation final = evaluate_fresh(best_upper, best_lower);
  if (o.keep_best) {
    bool reset = false;
    for (Eigen::Index r = 0; r < out_rows; ++r) {
      if (final.row_loss(r) > initial_row_loss(r)) {
        best_upper.row(r).setConstant(static_cast<Scalar>(o.init));
        best_lower.row(r).setConstant(static_cast<Scalar>(o.init));
        reset = true;
      }
    }
    if (reset) final = evaluate_fresh(best_upper, best_lower);
  }
  result.upper = std::move(best_upper);
  result.lower = std::move(best_lower);
  result.upper_clip = result.upper.unaryExpr([](Scalar v) { return static_cast<Scalar>(detail_lwc::sigmoid(v)); });
  result.lower_clip = result.lower.unaryExpr([](Scalar v) { return static_cast<Scalar>(detail_lwc::sigmoid(v)); });
  result.params = final.clips.params;
  result.weight = final.weight;
  result.codes = final.codes;
  result.loss = final.row_loss.sum();
  return result;
}

}  // namespace oq::quant
