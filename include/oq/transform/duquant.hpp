// oq/transform/duquant.hpp: the whole DuQuant transform of one linear layer's
// input, M = R₁·P₁·R₂ (·P₂·R₃ … with more permutation rounds), optionally
// preceded by smoothing scales (docs/design.md §6; Lin et al. 2024, eq. 5).
//
// Every R_i is block-diagonal with one b×b block repeated C/b times (the
// greedy rotation of duquant_rotation.hpp), every P_i the zigzag permutation
// (zigzag.hpp). With smoothing scales s, the layer y = X·Wᵀ becomes
//     y = (X·diag(s)⁻¹·M) · (W·diag(s)·M)ᵀ,
// exact because M is orthogonal (docs/design.md §5): apply() transforms activations,
// fold_into_weight() weights, invert() undoes apply().
//
//   using namespace oq::transform;
//   std::mt19937_64 rng(0);
//   auto t = calibrate_duquant(x_calib, DuQuantOptions{}, rng);   // 128-blocks, 256 steps, Haar Q′
//   Eigen::MatrixXf w_hat = t.fold_into_weight(w);                // once, offline
//   auto x_hat = t.apply(x);                                      // per batch (or fused on GPU)
//
// With the weight-aware greedy score (GreedyScore::kActivationTimesWeight,
// duquant_rotation.hpp), calibration also takes the weights of the linear(s)
// reading x, stacked by rows when several share the input (q/k/v, gate/up):
//   DuQuantOptions o;  o.score = GreedyScore::kActivationTimesWeight;
//   auto t = calibrate_duquant(x_calib, w_qkv_stacked, o, rng);
// The weights follow the activations through smoothing (W·diag(s)), every
// rotation and every permutation, so each stage scores what it will fold.
#pragma once

#include <oq/detail/check.hpp>
#include <oq/transform/duquant_rotation.hpp>
#include <oq/transform/random_orthogonal.hpp>
#include <oq/transform/zigzag.hpp>

#include <Eigen/Core>

#include <cmath>
#include <cstddef>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace oq::transform {

namespace detail_duquant {

// x (channels columns, finite) as a row-major copy in Scalar: the input of
// every transform below.
template <class Scalar, class Derived>
RowMajorMatrix<Scalar> checked_copy(const Eigen::MatrixBase<Derived>& x, Eigen::Index channels, std::string_view where,
                                    std::string_view name) {
  detail::require(x.cols() == channels, where, name, " must have ", channels, " columns, got ", x.cols());
  detail::require_finite(x, where, name);
  return x.template cast<Scalar>();
}

// Finite input and an orthogonal M keep every output entry below its row's
// norm, but that norm, and the division by small smoothing scales, can
// exceed the scalar type's range: a silent ±Inf (or NaN, Inf − Inf in a
// later block product) would reach the quantizer. One vectorised pass
// (detail::all_finite) against the GEMMs; the loop only names the entry.
template <class Scalar>
void require_no_overflow(const RowMajorMatrix<Scalar>& y, std::string_view where, std::string_view what) {
  if (detail::all_finite(y)) return;
  for (Eigen::Index r = 0; r < y.rows(); ++r)
    for (Eigen::Index c = 0; c < y.cols(); ++c)
      detail::require_domain(std::isfinite(y(r, c)), where, "the result ", what, " overflowed the scalar type: (", r,
                             ", ", c, ") is ", y(r, c),
                             " (the input is too large for this transform's smoothing scales or scalar type)");
}

}  // namespace detail_duquant

template <class Scalar>
class DuQuantTransform {
 public:
  using Matrix = DenseMatrix<Scalar>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using Result = RowMajorMatrix<Scalar>;

  /// A transform over `channels` channels from its parts: rotations.size() ==
  /// permutations.size() + 1 orthogonal b×b blocks (b | channels), zigzag
  /// permutations of the channels, and smoothing scales (empty: none; else
  /// `channels` positive finite values).
  DuQuantTransform(Eigen::Index channels, std::vector<Matrix> rotations, std::vector<Permutation> permutations,
                   Vector smoothing = Vector())
      : channels_(channels),
        rotations_(std::move(rotations)),
        permutations_(std::move(permutations)),
        smoothing_(std::move(smoothing)) {
    constexpr std::string_view kWhere = "oq::transform::DuQuantTransform";
    detail::require(channels_ > 0, kWhere, "channels must be > 0, got ", channels_);
    detail::require(!rotations_.empty() && rotations_.size() == permutations_.size() + 1, kWhere,
                    "rotations must hold one more matrix than permutations, got ", rotations_.size(), " and ",
                    permutations_.size());
    const Eigen::Index b = rotations_.front().rows();
    detail::require(b > 0 && channels_ % b == 0, kWhere, "the rotation block size (", b,
                    ") must divide channels (", channels_, ")");
    for (std::size_t i = 0; i < rotations_.size(); ++i)
      require_orthogonal(rotations_[i], b, kWhere, "rotations[" + std::to_string(i) + "]");
    for (std::size_t i = 0; i < permutations_.size(); ++i)
      validate_permutation(permutations_[i], channels_, kWhere, "permutations[" + std::to_string(i) + "]");
    if (smoothing_.size() != 0) {
      detail::require(smoothing_.size() == channels_, kWhere, "smoothing must have ", channels_, " scales, got ",
                      smoothing_.size());
      detail::require_finite(smoothing_, kWhere, "smoothing");
      detail::require((smoothing_.array() > Scalar(0)).all(), kWhere, "smoothing scales must be > 0");
    }
  }

  /// The same transform in a wider scalar type (float → double), every
  /// entry converted exactly. Its rotations are those of the narrower type,
  /// orthogonal to that type's rounding (about 1e-7 for float), not to the
  /// wider type's, so they are not checked again against the wider type's
  /// tolerance, which they would fail: the narrower transform passed its
  /// own checks and the conversion changes no value. scalar_bytes() keeps
  /// the narrower type's size, so that save_duquant writes the transform
  /// with the scalars it came from and it loads back as itself.
  template <class Narrow>
    requires(std::is_floating_point_v<Narrow> && sizeof(Narrow) < sizeof(Scalar))
  explicit DuQuantTransform(const DuQuantTransform<Narrow>& narrow)
      : channels_(narrow.channels()),
        permutations_(narrow.permutations()),
        smoothing_(narrow.smoothing().template cast<Scalar>()),
        scalar_bytes_(narrow.scalar_bytes()) {
    rotations_.reserve(narrow.rotations().size());
    for (const auto& r : narrow.rotations()) rotations_.push_back(r.template cast<Scalar>());
  }

  Eigen::Index channels() const { return channels_; }
  Eigen::Index block_size() const { return rotations_.front().rows(); }
  const std::vector<Matrix>& rotations() const { return rotations_; }
  const std::vector<Permutation>& permutations() const { return permutations_; }
  const Vector& smoothing() const { return smoothing_; }
  /// Bytes per scalar that hold every entry exactly: sizeof(Scalar), or the
  /// narrower type's for a transform widened from one (the constructor above).
  std::size_t scalar_bytes() const { return scalar_bytes_; }

  /// Activations: X·diag(s)⁻¹·M (X is tokens × channels). Throws
  /// std::domain_error when the result overflows the scalar type (all three
  /// transforms below check their output).
  template <class Derived>
  Result apply(const Eigen::MatrixBase<Derived>& x) const {
    constexpr std::string_view kWhere = "oq::transform::DuQuantTransform::apply";
    Result y = detail_duquant::checked_copy<Scalar>(x, channels_, kWhere, "x");
    if (smoothing_.size() != 0) y.array().rowwise() /= smoothing_.transpose().array();
    forward(y);
    detail_duquant::require_no_overflow(y, kWhere, "x·diag(s)⁻¹·M");
    return y;
  }

  /// Weights (out × channels): W·diag(s)·M, so that apply(X)·fold_into_weight(W)ᵀ = X·Wᵀ.
  template <class Derived>
  Result fold_into_weight(const Eigen::MatrixBase<Derived>& w) const {
    constexpr std::string_view kWhere = "oq::transform::DuQuantTransform::fold_into_weight";
    Result y = detail_duquant::checked_copy<Scalar>(w, channels_, kWhere, "w");
    if (smoothing_.size() != 0) y.array().rowwise() *= smoothing_.transpose().array();
    forward(y);
    detail_duquant::require_no_overflow(y, kWhere, "w·diag(s)·M");
    return y;
  }

  /// The inverse of apply(): (X̂·Mᵀ)·diag(s).
  template <class Derived>
  Result invert(const Eigen::MatrixBase<Derived>& x_hat) const {
    constexpr std::string_view kWhere = "oq::transform::DuQuantTransform::invert";
    Result y = detail_duquant::checked_copy<Scalar>(x_hat, channels_, kWhere, "x_hat");
    for (std::size_t i = rotations_.size(); i-- > 0;) {
      rotate_blocks_in_place(y, rotations_[i].transpose());
      if (i > 0) permute_columns_in_place(y, inverse_permutation(permutations_[i - 1]));
    }
    if (smoothing_.size() != 0) y.array().rowwise() *= smoothing_.transpose().array();
    detail_duquant::require_no_overflow(y, kWhere, "x_hat·Mᵀ·diag(s)");
    return y;
  }

  /// The dense orthogonal M (channels × channels), smoothing excluded.
  Matrix matrix() const {
    Result m = Result::Identity(channels_, channels_);
    forward(m);
    return m;
  }

 private:
  void forward(Result& y) const {
    for (std::size_t i = 0; i < rotations_.size(); ++i) {
      rotate_blocks_in_place(y, rotations_[i]);
      if (i < permutations_.size()) permute_columns_in_place(y, permutations_[i]);
    }
  }

  Eigen::Index channels_;
  std::vector<Matrix> rotations_;
  std::vector<Permutation> permutations_;
  Vector smoothing_;
  std::size_t scalar_bytes_ = sizeof(Scalar);
};

/// The most zigzag permutations a calibration may use (64 rotations): the
/// most that duquant_io.hpp stores, so every calibrated transform can be saved.
inline constexpr int kMaxPermutationRounds = 63;

struct DuQuantOptions {
  Eigen::Index block_size = 128;  ///< b (DuQuant's default), >= 2, divides the channel count
  int greedy_steps = 256;         ///< N of Algorithm 1 per rotation, in [0, kMaxGreedySteps]
  int permutation_rounds = 1;     ///< zigzag permutations, in [0, kMaxPermutationRounds]; rotations = rounds + 1
  GreedyScore score = GreedyScore::kRange;
  /// Called after every greedy step as progress(rotation, steps done, steps
  /// in all), the rotation counted from 1 to permutation_rounds + 1 as the
  /// steps are from 1 to greedy_steps, so "rotation r, step d/n" prints as
  /// given (until issue 22 the rotation was counted from 0). May be empty.
  std::function<void(int, int, int)> progress{};
  /// Threads for the greedy steps (0: all hardware threads); the transform
  /// is the same, bit for bit, for every thread count (duquant_rotation.hpp).
  int threads = 0;
  /// A pool the caller owns to run on instead of starting threads; threads
  /// must then be 0 (GreedyRotationOptions::pool).
  cpu::ThreadPool* pool = nullptr;
};

namespace detail_duquant {

// The checks of x and the options that need no Q′, which the generator
// overloads run before drawing any: an oversized block or round count must
// not cost a QR (or bad_alloc) before its error.
template <class Derived>
void check_input(const Eigen::MatrixBase<Derived>& x, bool has_weights, const DuQuantOptions& options,
                 std::string_view where) {
  const Eigen::Index b = options.block_size;
  detail::require(b >= 2, where, "options.block_size must be >= 2, got ", b);
  detail::require(x.rows() > 0 && x.cols() > 0, where, "x must be non-empty, got ", x.rows(), " x ", x.cols());
  detail::require(x.cols() % b == 0, where, "options.block_size (", b, ") must divide the channel count of x (",
                  x.cols(), ")");
  detail::require(options.permutation_rounds >= 0 && options.permutation_rounds <= kMaxPermutationRounds, where,
                  "options.permutation_rounds must be in [0, ", kMaxPermutationRounds, "], got ",
                  options.permutation_rounds);
  detail::require(options.greedy_steps >= 0 && options.greedy_steps <= kMaxGreedySteps, where,
                  "options.greedy_steps must be in [0, ", kMaxGreedySteps, "], got ", options.greedy_steps);
  detail::require(has_weights || !needs_weights(options.score), where,
                  "options.score = kActivationTimesWeight needs the weights: call the overload that takes them");
  cpu::resolve_threads(options.threads, where, options.pool);
  detail::require_finite(x, where, "x");
}

// The weights' shape and values, for the overloads that take them.
template <class Derived, class WeightDerived>
void check_weights(const Eigen::MatrixBase<Derived>& x, const Eigen::MatrixBase<WeightDerived>& w,
                   std::string_view where) {
  detail::require(w.rows() > 0 && w.cols() == x.cols(), where, "w must have x's ", x.cols(),
                  " columns (one per input channel) and at least one row, got ", w.rows(), " x ", w.cols());
  detail::require_finite(w, where, "w");
}

// Calibration once the public overloads have checked x, w and the options
// (check_input, check_weights: each scan of x and w once); `w` is the
// weights (out × channels) when the score uses them, else null.
template <class Scalar, class Derived>
DuQuantTransform<Scalar> calibrate(const Eigen::MatrixBase<Derived>& x, const RowMajorMatrix<Scalar>* w,
                                   const DuQuantOptions& options, const std::vector<DenseMatrix<Scalar>>& q_primes,
                                   const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>& smoothing, std::string_view where) {
  const Eigen::Index b = options.block_size;
  detail::require(static_cast<int>(q_primes.size()) == options.permutation_rounds + 1, where,
                  "q_primes must hold permutation_rounds + 1 = ", options.permutation_rounds + 1, " matrices, got ",
                  q_primes.size());
  // duquant_base_block takes b from Q′: one of another size would silently
  // change the block size of its stage against the zigzag's.
  for (std::size_t i = 0; i < q_primes.size(); ++i) {
    detail::require(q_primes[i].rows() == b - 1 && q_primes[i].cols() == b - 1, where, "q_primes[", i,
                    "] must be (options.block_size - 1) x (options.block_size - 1) = ", b - 1, " x ", b - 1, ", got ",
                    q_primes[i].rows(), " x ", q_primes[i].cols());
  }

  // Validates x, w and smoothing as the finished transform would.
  const DuQuantTransform<Scalar> identity(
      x.cols(), {DenseMatrix<Scalar>::Identity(b, b)}, {}, smoothing);
  RowMajorMatrix<Scalar> y = identity.apply(x);
  RowMajorMatrix<Scalar> wy;
  if (w != nullptr) wy = identity.fold_into_weight(*w);

  // One pool for every stage's greedy steps (none given: started here once).
  std::optional<cpu::ThreadPool> own;
  cpu::ThreadPool* pool =
      greedy_thread_pool(cpu::resolve_threads(options.threads, where, options.pool), options.pool, own);
  std::vector<DenseMatrix<Scalar>> rotations;
  std::vector<Permutation> permutations;
  for (int stage = 0; stage <= options.permutation_rounds; ++stage) {
    GreedyRotationOptions greedy{options.greedy_steps, options.score, {}, pool == nullptr ? 1 : 0, pool};
    if (options.progress) {
      greedy.progress = [&options, stage](int done, int total) { options.progress(stage + 1, done, total); };
    }
    const DenseMatrix<Scalar> base = duquant_base_block(q_primes[static_cast<std::size_t>(stage)]);
    rotations.push_back((w != nullptr ? greedy_block_rotation(y, wy, base, greedy)
                                      : greedy_block_rotation(y, base, greedy)).rotation);
    rotate_blocks_in_place(y, rotations.back());
    if (w != nullptr) rotate_blocks_in_place(wy, rotations.back());
    if (stage < options.permutation_rounds) {
      // The permutation orders channels by the activations' maxima (zigzag.hpp).
      const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> channel_max = y.cwiseAbs().colwise().maxCoeff().transpose();
      permutations.push_back(zigzag_permutation(channel_max, b));
      permute_columns_in_place(y, permutations.back());
      if (w != nullptr) permute_columns_in_place(wy, permutations.back());
    }
  }
  return DuQuantTransform<Scalar>(x.cols(), std::move(rotations), std::move(permutations), smoothing);
}

// The weighted overloads: x, w and the options checked, then calibration with
// the Q′ that `q_primes()` gives, asked for only once the inputs passed (a
// generator is not advanced by a call that fails).
template <class Derived, class WeightDerived, class QPrimes>
DuQuantTransform<typename Derived::Scalar> calibrate_weighted(
    const Eigen::MatrixBase<Derived>& x, const Eigen::MatrixBase<WeightDerived>& w, const DuQuantOptions& options,
    QPrimes&& q_primes, const Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, 1>& smoothing) {
  using Scalar = typename Derived::Scalar;
  static_assert(std::is_same_v<Scalar, typename WeightDerived::Scalar>, "x and w must have the same scalar type");
  constexpr std::string_view kWhere = "oq::transform::calibrate_duquant";
  check_input(x, true, options, kWhere);
  check_weights(x, w, kWhere);
  const RowMajorMatrix<Scalar> weights = w;
  const std::vector<DenseMatrix<Scalar>>& drawn = q_primes();
  return calibrate<Scalar>(x, &weights, options, drawn, smoothing, kWhere);
}

}  // namespace detail_duquant

/// Calibrates M on activations x (tokens × channels), with the random factor
/// Q′ of every rotation stage given explicitly (permutation_rounds + 1
/// matrices of (b−1)×(b−1)), and optional smoothing scales applied first.
/// A pure function of its inputs. Scores kRange and kAbsMax only; the
/// weight-aware score needs the overload below.
template <class Derived>
DuQuantTransform<typename Derived::Scalar> calibrate_duquant(
    const Eigen::MatrixBase<Derived>& x, const DuQuantOptions& options,
    const std::vector<DenseMatrix<typename Derived::Scalar>>& q_primes,
    const Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, 1>& smoothing = {}) {
  using Scalar = typename Derived::Scalar;
  constexpr std::string_view kWhere = "oq::transform::calibrate_duquant";
  detail_duquant::check_input(x, false, options, kWhere);
  return detail_duquant::calibrate<Scalar>(x, static_cast<const RowMajorMatrix<Scalar>*>(nullptr), options, q_primes,
                                           smoothing, kWhere);
}

/// The same with the weights w (out × channels) of the linear(s) reading x,
/// stacked by rows when several share it, for the weight-aware score
/// (GreedyScore::kActivationTimesWeight; other scores ignore w).
template <class Derived, class WeightDerived>
DuQuantTransform<typename Derived::Scalar> calibrate_duquant(
    const Eigen::MatrixBase<Derived>& x, const Eigen::MatrixBase<WeightDerived>& w, const DuQuantOptions& options,
    const std::vector<DenseMatrix<typename Derived::Scalar>>& q_primes,
    const Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, 1>& smoothing = {}) {
  return detail_duquant::calibrate_weighted(
      x, w, options, [&]() -> const std::vector<DenseMatrix<typename Derived::Scalar>>& { return q_primes; },
      smoothing);
}

namespace detail_duquant {

// One Haar-random Q′ per rotation stage, drawn in order from `generator`;
// options already checked (check_input).
template <class Scalar, class Generator>
std::vector<DenseMatrix<Scalar>> draw_q_primes(const DuQuantOptions& options, Generator& generator) {
  std::vector<DenseMatrix<Scalar>> q_primes;
  for (int stage = 0; stage <= options.permutation_rounds; ++stage)
    q_primes.push_back(random_orthogonal<Scalar>(options.block_size - 1, generator));
  return q_primes;
}

}  // namespace detail_duquant

/// Calibrates M with every Q′ drawn Haar-random from `generator`
/// (random_orthogonal.hpp), one per rotation stage in order, as the paper
/// does; a seeded generator makes the result reproducible.
template <class Derived, std::uniform_random_bit_generator Generator>
DuQuantTransform<typename Derived::Scalar> calibrate_duquant(
    const Eigen::MatrixBase<Derived>& x, const DuQuantOptions& options, Generator& generator,
    const Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, 1>& smoothing = {}) {
  using Scalar = typename Derived::Scalar;
  constexpr std::string_view kWhere = "oq::transform::calibrate_duquant";
  detail_duquant::check_input(x, false, options, kWhere);
  return detail_duquant::calibrate<Scalar>(x, static_cast<const RowMajorMatrix<Scalar>*>(nullptr), options,
                                           detail_duquant::draw_q_primes<Scalar>(options, generator), smoothing,
                                           kWhere);
}

/// calibrate_duquant(x, w, options, q_primes, smoothing) with every Q′ drawn
/// Haar-random from `generator`, one per rotation stage in order.
template <class Derived, class WeightDerived, std::uniform_random_bit_generator Generator>
DuQuantTransform<typename Derived::Scalar> calibrate_duquant(
    const Eigen::MatrixBase<Derived>& x, const Eigen::MatrixBase<WeightDerived>& w, const DuQuantOptions& options,
    Generator& generator, const Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, 1>& smoothing = {}) {
  return detail_duquant::calibrate_weighted(
      x, w, options, [&] { return detail_duquant::draw_q_primes<typename Derived::Scalar>(options, generator); },
      smoothing);
}

}  // namespace oq::transform
