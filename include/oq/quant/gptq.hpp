// oq/quant/gptq.hpp: GPTQ weight quantization (Frantar et al., "GPTQ:
// Accurate Post-Training Quantization for Generative Pre-trained
// Transformers", ICLR 2023, Algorithm 1).
//
// RTN rounds every weight on its own. GPTQ quantizes W (out × in) one input
// column at a time and moves each column's rounding error onto the columns
// not yet quantized, so as to keep the layer's output X·Wᵀ on the
// calibration inputs X (tokens × in). With H = 2·XᵀX/n, the Hessian of
// ‖X·wᵀ − X·ŵᵀ‖²/n for every row w of W, and U the upper Cholesky factor of
// H⁻¹ (H⁻¹ = UᵀU), step j is (§4, "Cholesky reformulation"):
//     q_j = Q(w_j),   e = (w_j − q_j) / U_jj,   w_k ← w_k − e·U_jk  for k > j.
// The updates are applied lazily (§4, "Lazy batch-updates"): inside a block
// of B columns one rank-1 update per column; the columns after the block get
// the block's errors at once, one GEMM. λ = damp·mean(diag H) is added to
// H's diagonal first, so that H is safely positive definite.
//
// What the paper leaves to its reference code (IST-DASLab/gptq, gptq.py,
// GPTQ.fasterquant), followed here:
// - An input that is zero in all of the calibration data (H_jj = 0) gets
//   H_jj = 1 and its weights set to 0.
// - Per-channel (and per-tensor) parameters come from the original W, before
//   any update. Per-group parameters come from the group's current columns,
//   the updates so far included, computed when its first column is reached.
//   (The reference reads them from W, which inside a block of B columns lacks
//   that block's updates so far: for a group that starts inside a block its
//   parameters depend on B. oq's do not, and neither does any result: B only
//   schedules the same arithmetic, up to rounding. With group size = B = 128,
//   the usual setting, both agree.)
// - act_order ("--act-order"): the columns are processed in decreasing H_jj,
//   the inputs with the most energy first. With per-group parameters there
//   are the reference's two choices (GptqOptions::static_groups):
//   - static groups (oq's default; the reference's static_groups): the
//     groups stay the contiguous column ranges of the original W, with
//     parameters from the original W, so that the result fits an ordinary
//     per-group kernel as it is;
//   - groups in the act order (the reference's default, static_groups =
//     false, what "desc_act" GPTQ checkpoints hold): group g is the columns
//     quantized g·G-th to (g+1)·G−1-th, with parameters from their current
//     values like any group. Column j's group is then group_index[j] (the
//     checkpoints' g_idx). An engine either reads g_idx per column, or
//     gathers its activations x(:, order) and runs an ordinary per-group
//     kernel on codes(:, order), whose groups are contiguous again
//     (exllama's approach).
// The quantizer is the spec's: docs/design.md §2's by default (the spec's clip
// ratio, round half to even), or the reference's grids with
// QuantSpec::gptq_reference (asymmetric ranges widened to include 0,
// symmetric scales 2·max|x|/(2^b − 1); see there for the two cases whose
// parameters differ). The reference's optional MSE shrink search (error exponent 2.4)
// is not reproduced; search_clip_mse searches squared error. oq computes in
// double for any scalar of W, and the errors it propagates are those of the
// weights it returns, (q − z)·s rounded to W's scalar.
//
//   oq::quant::GptqHessian hessian(4096);
//   for (const auto& x : calibration_batches) hessian.add(x);  // tokens × 4096
//   auto r = oq::quant::gptq_quantize(w, hessian.matrix(), QuantSpec::per_channel(4, false, 0.8));
//   // r.weight: Ŵ (out × in), r.codes, r.params: what a W4 kernel consumes
//   // q, k and v read one input: factor its hessian once.
//   const oq::quant::GptqFactor factor(hessian.matrix(), {.act_order = true});
//   auto q = gptq_quantize(w_q, factor, spec), k = gptq_quantize(w_k, factor, spec);
//   // The same U with groups formed in the act order (desc_act):
//   auto v = gptq_quantize(w_v, factor.with_options({.act_order = true, .static_groups = false}), spec);
#pragma once

#include <oq/core/quant_math.hpp>
#include <oq/detail/check.hpp>
#include <oq/detail/triangular_inverse.hpp>
#include <oq/quant/params.hpp>
#include <oq/quant/spec.hpp>

#include <Eigen/Cholesky>
#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace oq::quant {

/// H = (2/n)·Σ xᵀx over the calibration inputs of one linear layer (n tokens),
/// accumulated batch by batch in double. The reference's add_batch divides
/// by the number of sequences instead. GPTQ does not depend on H's scale but
/// through dead inputs: their H_jj = 1 enters the damping's mean, so with
/// dead inputs the two scalings give slightly different factors.
class GptqHessian {
 public:
  explicit GptqHessian(Eigen::Index channels) : sum_(Eigen::MatrixXd::Zero(channels, channels)) {
    detail::require(channels > 0, "oq::quant::GptqHessian", "channels must be > 0, got ", channels);
  }

  /// Adds the rows of x (tokens × channels) as tokens.
  template <class Derived>
  void add(const Eigen::MatrixBase<Derived>& x) {
    constexpr std::string_view kWhere = "oq::quant::GptqHessian::add";
    detail::require(x.cols() == channels(), kWhere, "x must have ", channels(), " columns, got ", x.cols());
    detail::require_finite(x, kWhere, "x");
    if (x.rows() == 0) return;
    sum_.selfadjointView<Eigen::Lower>().rankUpdate(x.template cast<double>().transpose());
    tokens_ += x.rows();
  }

  Eigen::Index channels() const { return sum_.rows(); }
  Eigen::Index tokens() const { return tokens_; }

  /// (2/n)·Σ xᵀx, symmetric. Throws std::invalid_argument before any token.
  Eigen::MatrixXd matrix() const {
    detail::require(tokens_ > 0, "oq::quant::GptqHessian::matrix", "no tokens added yet");
    Eigen::MatrixXd h = sum_.selfadjointView<Eigen::Lower>();
    return h * (2.0 / static_cast<double>(tokens_));
  }

 private:
  Eigen::MatrixXd sum_;  // Σ xᵀx, lower triangle
  Eigen::Index tokens_ = 0;
};

struct GptqOptions {
  double damp = 0.01;             ///< λ = damp · mean(diag H), >= 0 (the reference's percdamp)
  Eigen::Index block_size = 128;  ///< B of the lazy batch updates, > 0 (changes the result by rounding only)
  bool act_order = false;         ///< columns in decreasing H_jj (file comment)
  /// With act_order and per-group parameters: groups of contiguous original
  /// columns (true) or of consecutive columns in the act order (false, the
  /// reference's default; the result's group_index says which is where).
  /// Without act_order both are the same groups.
  bool static_groups = true;
};

template <class Scalar>
struct GptqResult {
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  Matrix weight;                                                   ///< Ŵ = (codes − z)·s, out × in
  Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic> codes;  ///< out × in, in spec.code_range()
  /// The spec's shape. Per-group: params.scale(r, g) belongs to row r's
  /// columns j with group_index[j] == g.
  QuantParams<Scalar> params;
  std::vector<Eigen::Index> order;  ///< order[k]: the column quantized k-th
  /// Per-group specs: group_index[j] is column j's group (GPTQ checkpoints'
  /// g_idx): j / spec.group_size, or with act_order and
  /// options.static_groups = false, k / spec.group_size for j = order[k].
  /// Empty for per-channel and per-tensor specs.
  std::vector<std::int32_t> group_index;
  /// ½·Σ_j ‖w_j − ŵ_j‖² / U_jj², w_j the column as updated when it is
  /// quantized (the reference's printed "error", up to H's scale). It equals
  /// ½·Σ_rows (w − ŵ)·(H + λI)·(w − ŵ)ᵀ for the original rows w (dead inputs
  /// zeroed): (1/n)‖X·(W − Ŵ)ᵀ‖² plus the damping's ½λ‖W − Ŵ‖².
  double loss = 0.0;
};

namespace detail_gptq {
// Eigen::MatrixXd as a type that depends on a template parameter
// (GptqFactor's constructor): a member of a class template may be
// specialized, so nothing naming it is instantiated before Deferred is known.
template <class Deferred>
struct DeferredMatrix {
  using type = Eigen::MatrixXd;
};

// hessian (damped, symmetric, in GptqFactor's column order) ← U, the upper
// Cholesky factor of its inverse; damp only names the option in errors.
// Not inline, so that OQ_EXTERN_TEMPLATES can leave its instantiation for
// Eigen::MatrixXd to the one file that includes <oq/instantiate.hpp>.
template <class Matrix>
void upper_inverse_factor_in_place(Matrix& hessian, double damp) {
  constexpr std::string_view kWhere = "oq::quant::GptqFactor";
  // U without forming H⁻¹ (the reference runs cholesky, cholesky_inverse
  // and cholesky again): with J the reversal, J·H·J = L·Lᵀ
  // gives H⁻¹ = (J·L⁻¹·J)ᵀ·(J·L⁻¹·J), and J·L⁻¹·J is upper triangular with
  // a positive diagonal, so it is that factor. One factorisation and one
  // triangular inverse (n³/3 flops each), both in place in the hessian's
  // storage: one n × n matrix (and a quarter of one) while they run.
  hessian.reverseInPlace();
  {
    const Eigen::LLT<Eigen::Ref<Matrix>> factor(hessian);  // L in the lower triangle
    detail::require_domain(factor.info() == Eigen::Success, kWhere,
                           "hessian + damping is not positive definite: raise options.damp (got ", damp,
                           ")");
  }
  detail::invert_lower_triangular_in_place<typename Matrix::Scalar>(hessian);
  hessian.template triangularView<Eigen::StrictlyUpper>().setZero();
  // A factor beyond double (H spanning more than DBL_MAX between its
  // eigenvalues) would give run() NaN codes.
  detail::require_domain(hessian.allFinite() && (hessian.diagonal().array() > 0.0).all(), kWhere,
                         "the inverse factor of hessian + damping is not finite in double (H too ill-conditioned ",
                         "at its scale): raise options.damp (got ", damp, ")");
  hessian.reverseInPlace();
}

#if defined(OQ_EXTERN_TEMPLATES)
extern template void upper_inverse_factor_in_place<Eigen::MatrixXd>(Eigen::MatrixXd&, double);
#endif
}  // namespace detail_gptq

/// What GPTQ needs of one linear input's Hessian, computed once and shared by
/// every linear that reads the input (q/k/v, gate/up): the column order, the
/// inputs never active (H_jj = 0), and U, the upper Cholesky factor of
/// (H + λI)⁻¹ in that order. Copies share U (it is immutable); with_options
/// gives the same factor with other column-loop options (block size, kind of
/// groups) without factoring again.
class GptqFactor {
 public:
  /// Throws std::invalid_argument for a hessian that is not square and
  /// symmetric with a diagonal >= 0, or bad options; std::domain_error for
  /// NaN/Inf, a hessian that damping does not make positive definite, or
  /// one whose damping or inverse factor overflows double.
  ///
  /// A template only in name (Deferred is never given: constructors take no
  /// explicit template arguments), so that the Cholesky factorisation and the
  /// triangular inverse are instantiated where a factor is built, not in
  /// every translation unit that includes this header (1.3 of the 2.5 CPU
  /// seconds <oq/quant.hpp> alone cost with GCC 12 -O2; bench/RESULTS.md).
  template <class Deferred = void>
  explicit GptqFactor(Eigen::MatrixXd hessian, const GptqOptions& options = {}) : options_(options) {
    // Eigen::MatrixXd, spelled so that it depends on Deferred.
    using Matrix = typename detail_gptq::DeferredMatrix<Deferred>::type;
    constexpr std::string_view kWhere = "oq::quant::GptqFactor";
    detail::require(hessian.rows() == hessian.cols() && hessian.rows() > 0, kWhere,
                    "hessian must be square and non-empty, got ", hessian.rows(), " x ", hessian.cols());
    detail::require_finite(hessian, kWhere, "hessian");
    // Symmetric to float rounding (a Hessian accumulated in float, or by a
    // GEMM that is not bitwise symmetric, passes), then made exactly so.
    const double scale = hessian.cwiseAbs().maxCoeff();
    const double asymmetry = (hessian - hessian.transpose()).cwiseAbs().maxCoeff();
    detail::require(asymmetry <= 1e-5 * scale, kWhere, "hessian must be symmetric, got max |H − Hᵀ| = ", asymmetry,
                    " (max |H| = ", scale, ")");
    // ½(H + Hᵀ) overflows past DBL_MAX / 2; halving first is the same value
    // there (halving a normal double is exact) and never overflows.
    if (scale <= std::numeric_limits<double>::max() / 2) {
      hessian = (0.5 * (hessian + hessian.transpose())).eval();
    } else {
      hessian = (0.5 * hessian + 0.5 * hessian.transpose()).eval();
    }
    detail::require((hessian.diagonal().array() >= 0.0).all(), kWhere,
                    "hessian's diagonal must be >= 0 (H = 2·XᵀX/n), got a negative entry");
    detail::require(std::isfinite(options.damp) && options.damp >= 0.0, kWhere, "options.damp must be >= 0, got ",
                    options.damp);
    require_loop_options(options, kWhere);

    const Eigen::Index n = hessian.rows();
    dead_.assign(static_cast<std::size_t>(n), false);
    for (Eigen::Index j = 0; j < n; ++j) {
      if (hessian(j, j) == 0.0) {  // never active in calibration
        hessian(j, j) = 1.0;
        dead_[static_cast<std::size_t>(j)] = true;
      }
    }
    order_.resize(static_cast<std::size_t>(n));
    std::iota(order_.begin(), order_.end(), Eigen::Index(0));
    if (options.act_order) {
      std::stable_sort(order_.begin(), order_.end(),
                       [&](Eigen::Index a, Eigen::Index b) { return hessian(a, a) > hessian(b, b); });
      hessian = hessian(order_, order_).eval();
    }
    // λ = damp·mean(diag H). The mean of a diagonal near DBL_MAX overflows as
    // a sum (then λ = inf, or NaN for damp = 0, and U's NaN reached an int
    // cast in run(): undefined behaviour; issue 23): computed from the
    // diagonal divided by n then, which cannot overflow. Ordinary data keeps
    // the plain mean's bits.
    double mean = hessian.diagonal().mean();
    if (!std::isfinite(mean)) mean = (hessian.diagonal() / static_cast<double>(n)).sum();
    const double lambda = options.damp * mean;
    detail::require_domain(std::isfinite(lambda), kWhere, "the damping options.damp · mean(diag H) = ",
                           options.damp, " · ", mean, " overflows double: rescale the hessian (GPTQ's result does ",
                           "not depend on its scale) or lower options.damp");
    hessian.diagonal().array() += lambda;
    detail::require_domain(hessian.diagonal().allFinite(), kWhere,
                           "hessian + damping overflows double on the diagonal: rescale the hessian (GPTQ's result ",
                           "does not depend on its scale)");
    detail_gptq::upper_inverse_factor_in_place<Matrix>(hessian, options.damp);
    u_ = std::make_shared<const Eigen::MatrixXd>(std::move(hessian));
  }

  /// This factor with `options` for the column loop: block_size and
  /// static_groups may differ, and U, the order and the dead inputs are
  /// shared, not recomputed. Throws std::invalid_argument when damp or
  /// act_order differ (they change U: build a new factor) or block_size is
  /// not > 0.
  GptqFactor with_options(const GptqOptions& options) const {
    constexpr std::string_view kWhere = "oq::quant::GptqFactor::with_options";
    detail::require(options.damp == options_.damp && options.act_order == options_.act_order, kWhere,
                    "options.damp and options.act_order must be the factor's (", options_.damp, ", ",
                    options_.act_order ? "true" : "false", "): they change U; got ", options.damp, ", ",
                    options.act_order ? "true" : "false");
    require_loop_options(options, kWhere);
    GptqFactor copy = *this;
    copy.options_ = options;
    return copy;
  }

  // A moved-from factor holds no U: it reports 0 channels (gptq_quantize then
  // refuses every w by its column count) instead of dereferencing null.
  Eigen::Index channels() const { return u_ ? u_->rows() : 0; }
  const GptqOptions& options() const { return options_; }
  /// order()[k]: the column quantized k-th (decreasing H_jj with act_order).
  const std::vector<Eigen::Index>& order() const { return order_; }
  /// dead()[j]: input j is zero in all the calibration data. Its weights are
  /// set to 0 before quantization, so they become Q(0): 0 where the
  /// parameters represent 0 exactly (symmetric, or a zero point in range).
  const std::vector<bool>& dead() const { return dead_; }
  /// U in the order of order(): (H + λI)⁻¹ = UᵀU, upper triangular.
  const Eigen::MatrixXd& u() const {
    static const Eigen::MatrixXd kNone;
    return u_ ? *u_ : kNone;
  }

 private:
  // The column loop's options, the ones with_options may change.
  static void require_loop_options(const GptqOptions& options, std::string_view where) {
    detail::require(options.block_size > 0, where, "options.block_size must be > 0, got ", options.block_size);
  }

  GptqOptions options_;
  std::vector<Eigen::Index> order_;
  std::vector<bool> dead_;
  std::shared_ptr<const Eigen::MatrixXd> u_;
};

namespace detail_gptq {

inline constexpr std::string_view kWhere = "oq::quant::gptq_quantize";

template <class Derived>
void check_weights(const Eigen::MatrixBase<Derived>& w, const GptqFactor& factor, const QuantSpec& spec) {
  spec.validate(kWhere);
  spec.validate_shape(w.rows(), w.cols(), kWhere);
  detail::require(w.cols() == factor.channels(), kWhere, "w must have ", factor.channels(),
                  " columns (the hessian's size), got ", w.rows(), " x ", w.cols());
  detail::require_finite(w, kWhere, "w");
}

// Given per-group parameters belong to contiguous column groups: they cannot
// name groups that form in the act order.
inline void check_given_groups(const GptqOptions& options, const QuantSpec& spec) {
  detail::require(!(spec.granularity == Granularity::kPerGroup && options.act_order && !options.static_groups), kWhere,
                  "given per-group parameters need options.static_groups = true with act_order (groups of "
                  "contiguous columns), got static_groups = false");
}

template <class Derived>
void check_hessian_size(const Eigen::MatrixBase<Derived>& w, const Eigen::MatrixXd& hessian) {
  detail::require(hessian.rows() == w.cols(), kWhere, "hessian must be ", w.cols(), " x ", w.cols(),
                  " (in × in for w of ", w.rows(), " x ", w.cols(), "), got ", hessian.rows(), " x ", hessian.cols());
}

template <class Scalar, class Derived>
GptqResult<Scalar> run(const Eigen::MatrixBase<Derived>& w_in, const GptqFactor& factor, const QuantSpec& spec,
                       const std::optional<QuantParams<Scalar>>& fixed) {
  const Eigen::Index rows = w_in.rows(), cols = w_in.cols();
  const bool grouped = spec.granularity == Granularity::kPerGroup;
  const Eigen::Index group = grouped ? spec.group_size : cols;
  // Groups of consecutive positions k in the act order, or of columns.
  const bool groups_in_order = grouped && factor.options().act_order && !factor.options().static_groups;
  const Eigen::Index block = factor.options().block_size;
  const core::CodeRange range = spec.code_range();
  const Eigen::MatrixXd& u = factor.u();

  GptqResult<Scalar> result;
  // Per-channel / per-tensor parameters: from the original W (the reference
  // calls find_params before anything else).
  if (fixed) {
    result.params = *fixed;
  } else if (!grouped) {
    result.params = compute_params(w_in, spec);
  } else {
    result.params.scale.resize(rows, cols / group);
    result.params.zero.resizeLike(result.params.scale);
  }

  Eigen::MatrixXd w = w_in.template cast<double>();
  for (Eigen::Index j = 0; j < cols; ++j)
    if (factor.dead()[static_cast<std::size_t>(j)]) w.col(j).setZero();
  // Static groups (act_order): every group's parameters from the original W,
  // its dead inputs zeroed, before any update.
  const bool static_groups = grouped && !fixed && factor.options().act_order && !groups_in_order;
  if (static_groups) result.params = compute_params(w.cast<Scalar>().eval(), spec);

  result.order = factor.order();
  if (grouped) {
    result.group_index.resize(static_cast<std::size_t>(cols));
    for (Eigen::Index k = 0; k < cols; ++k) {
      const Eigen::Index column = result.order[static_cast<std::size_t>(k)];
      result.group_index[static_cast<std::size_t>(column)] =
          static_cast<std::int32_t>((groups_in_order ? k : column) / group);
    }
  }
  if (factor.options().act_order) w = w(Eigen::all, result.order).eval();

  result.weight.resize(rows, cols);
  result.codes.resize(rows, cols);
  Eigen::MatrixXd errors(rows, std::min(block, cols));
  for (Eigen::Index start = 0, end = 0; start < cols; start = end) {
    end = start + std::min(block, cols - start);
    for (Eigen::Index k = start; k < end; ++k) {
      const Eigen::Index column = result.order[static_cast<std::size_t>(k)];
      const Eigen::Index member = groups_in_order ? k : column;  // what the groups partition
      const Eigen::Index g = member / group;
      if (grouped && !fixed && !static_groups && member % group == 0) {
        // Without act_order k == column; with groups in the act order the
        // group is positions k..k+group−1. Either way it is w's columns
        // k..k+group−1, as they are now. Those past the block still lack
        // the errors of columns start..k−1 (they come once per block): add
        // them here.
        Eigen::MatrixXd current = w.middleCols(k, group);
        const Eigen::Index pending = k + group - end;
        if (pending > 0 && k > start)
          current.rightCols(pending).noalias() -=
              errors.leftCols(k - start) * u.block(start, end, k - start, pending);
        for (Eigen::Index r = 0; r < rows; ++r) {
          // Cast to Scalar first, as compute_params would see the weights.
          const core::AffineParams<Scalar> p = block_params(current.row(r).template cast<Scalar>(), spec);
          result.params.scale(r, g) = p.scale;
          result.params.zero(r, g) = p.zero;
        }
      }
      const double d = u(k, k);
      for (Eigen::Index r = 0; r < rows; ++r) {
        const Eigen::Index pi = spec.granularity == Granularity::kPerTensor ? 0 : r;
        const Eigen::Index pj = grouped ? g : 0;
        const core::AffineParams<Scalar> p = result.params.at(pi, pj);
        const core::AffineParams<double> pd{static_cast<double>(p.scale), static_cast<double>(p.zero)};
        // A weight updated past double (an ill-conditioned H amplifies the
        // errors it spreads) would make the code NaN, and casting NaN to
        // int32 is undefined behaviour.
        if (!std::isfinite(w(r, k))) {
          detail::require_domain(false, kWhere, "GPTQ's error updates overflow double at w(", r, ", ", column,
                                 "): the hessian's inverse amplifies the rounding errors beyond double; raise ",
                                 "options.damp (got ", factor.options().damp, ")");
        }
        const double code = core::quantize_value(w(r, k), pd, range);
        const Scalar dequantized = core::dequantize_value(static_cast<Scalar>(code), p);
        result.codes(r, column) = static_cast<std::int32_t>(code);
        result.weight(r, column) = dequantized;
        const double e = (w(r, k) - static_cast<double>(dequantized)) / d;
        result.loss += 0.5 * e * e;
        errors(r, k - start) = e;
      }
      // The rest of the block now; the columns after it once per block.
      const Eigen::Index rest = end - k - 1;
      if (rest > 0) w.middleCols(k + 1, rest).noalias() -= errors.col(k - start) * u.row(k).segment(k + 1, rest);
    }
    if (end < cols)
      w.rightCols(cols - end).noalias() -= errors.leftCols(end - start) * u.block(start, end, end - start, cols - end);
  }
  detail::require_domain(std::isfinite(result.loss), kWhere, "the loss ½·Σ((w − ŵ)/U_kk)² overflows double: ",
                         "rescale the hessian (GPTQ's codes do not depend on its scale, the loss does)");
  return result;
}

}  // namespace detail_gptq

/// GPTQ of w (out × in) with the factor of its input's hessian, parameters
/// computed as the file comment says. spec: per-channel (one pair per output
/// row, the usual choice), per-group along the inputs, or per-tensor.
/// Throws std::invalid_argument for bad shapes or a bad spec, and
/// std::domain_error for NaN/Inf in w, or when the error updates or the loss
/// overflow double (an H whose inverse amplifies the rounding errors past
/// DBL_MAX, or a loss beyond it at H's scale), naming what overflowed.
template <class Derived>
GptqResult<typename Derived::Scalar> gptq_quantize(const Eigen::MatrixBase<Derived>& w, const GptqFactor& factor,
                                                   const QuantSpec& spec) {
  detail_gptq::check_weights(w, factor, spec);
  return detail_gptq::run<typename Derived::Scalar>(w, factor, spec, std::nullopt);
}

/// The same with the parameters given (spec's shape for w, e.g. from
/// search_clip_mse or compute_params); they are used as they are.
template <class Derived>
GptqResult<typename Derived::Scalar> gptq_quantize(const Eigen::MatrixBase<Derived>& w, const GptqFactor& factor,
                                                   const QuantSpec& spec,
                                                   const QuantParams<typename Derived::Scalar>& params) {
  using Scalar = typename Derived::Scalar;
  detail_gptq::check_weights(w, factor, spec);
  validate_params(params, spec, w.rows(), w.cols(), detail_gptq::kWhere);
  detail_gptq::check_given_groups(factor.options(), spec);
  return detail_gptq::run<Scalar>(w, factor, spec, std::optional<QuantParams<Scalar>>(params));
}

/// GPTQ of one linear from its input's hessian (in × in, e.g.
/// GptqHessian::matrix()). For linears that share an input, build one
/// GptqFactor and pass it instead.
template <class Derived>
GptqResult<typename Derived::Scalar> gptq_quantize(const Eigen::MatrixBase<Derived>& w, const Eigen::MatrixXd& hessian,
                                                   const QuantSpec& spec, const GptqOptions& options = {}) {
  detail_gptq::check_hessian_size(w, hessian);
  return gptq_quantize(w, GptqFactor(hessian, options), spec);
}

/// The same with the parameters given.
template <class Derived>
GptqResult<typename Derived::Scalar> gptq_quantize(const Eigen::MatrixBase<Derived>& w, const Eigen::MatrixXd& hessian,
                                                   const QuantSpec& spec,
                                                   const QuantParams<typename Derived::Scalar>& params,
                                                   const GptqOptions& options = {}) {
  detail_gptq::check_hessian_size(w, hessian);
  spec.validate(detail_gptq::kWhere);
  validate_params(params, spec, w.rows(), w.cols(), detail_gptq::kWhere);  // before the O(n³) factor
  detail_gptq::check_given_groups(options, spec);
  return gptq_quantize(w, GptqFactor(hessian, options), spec, params);
}

}  // namespace oq::quant
