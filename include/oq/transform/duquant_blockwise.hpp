// oq/transform/duquant_blockwise.hpp: the DuQuant transform with one
// rotation per block, M = R₁·P₁·R₂ where every R_i = BlockDiag(R_i1, …, R_iK)
// holds K = C/b different b×b rotations, each R_ik the greedy rotation of
// Algorithm 1 (Lin et al. 2024, §3.1) run on block k's own channels.
//
// DuQuantTransform (duquant.hpp) is the released code's reading: one b×b
// rotation per stage, repeated over the blocks, found by a greedy that pivots
// on the largest entry of the whole tensor; a block whose outliers are not
// the largest gets the rotation built for another block's. The paper writes
// R̂ as BlockDiag(R̂_b1, …, R̂_bK), which allows one per block: here each
// block's greedy sees only its own entries, so every block is rotated for its
// own outliers. Both are orthogonal, exactly invertible and fold into the
// weights the same way:
//     y = X·Wᵀ = (X·diag(s)⁻¹·M) · (W·diag(s)·M)ᵀ.
// The cost is K rotations per stage to store and to apply (a general block
// rotation per block instead of one shared matrix). oq/cpu fuses it into the
// per-token quantizer (cpu::TokenTransform::duquant_blockwise); the CUDA
// quantizer takes the shared form only.
//
//   using namespace oq::transform;
//   std::mt19937_64 rng(0);
//   auto t = calibrate_duquant_blockwise(x_calib, DuQuantOptions{}, rng);  // 128-blocks, a Haar Q′ per block
//   auto w_hat = t.fold_into_weight(w);                                    // once, offline
//   auto x_hat = t.apply(x);                                               // per batch
//
// With one block (C = b) both forms are the same transform, bit for bit
// (tests/transform/duquant_blockwise_test.cpp).
#pragma once

#include <oq/detail/check.hpp>
#include <oq/transform/duquant.hpp>
#include <oq/transform/duquant_rotation.hpp>
#include <oq/transform/random_orthogonal.hpp>
#include <oq/transform/zigzag.hpp>

#include <Eigen/Core>

#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace oq::transform {

namespace detail_duquant {

// y ← y·BlockDiag(r[0], …, r[K−1]) (or with every r[k] transposed), block by
// block through a copy of the block's columns, each rotated as
// rotate_blocks_in_place rotates a tensor of one block: with K = 1 the same
// products as DuQuantTransform's, in the same order.
template <class Scalar>
void rotate_each_block_in_place(RowMajorMatrix<Scalar>& y, const std::vector<DenseMatrix<Scalar>>& r, bool transpose) {
  const Eigen::Index b = r.front().rows();
  RowMajorMatrix<Scalar> block(y.rows(), b);
  for (std::size_t k = 0; k < r.size(); ++k) {
    const Eigen::Index first = static_cast<Eigen::Index>(k) * b;
    block = y.middleCols(first, b);
    if (transpose) {
      rotate_blocks_in_place(block, r[k].transpose());
    } else {
      rotate_blocks_in_place(block, r[k]);
    }
    y.middleCols(first, b) = block;
  }
}

}  // namespace detail_duquant

template <class Scalar>
class DuQuantBlockwiseTransform {
 public:
  using Matrix = DenseMatrix<Scalar>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using Result = RowMajorMatrix<Scalar>;

  /// A transform over `channels` channels from its parts: rotations[i] holds
  /// stage i's K = channels / b orthogonal b×b rotations, block 0 first
  /// (rotations.size() == permutations.size() + 1, every stage the same b),
  /// zigzag permutations of the channels between stages, and smoothing
  /// scales (empty: none; else `channels` positive finite values).
  DuQuantBlockwiseTransform(Eigen::Index channels, std::vector<std::vector<Matrix>> rotations,
                            std::vector<Permutation> permutations, Vector smoothing = Vector())
      : channels_(channels),
        rotations_(std::move(rotations)),
        permutations_(std::move(permutations)),
        smoothing_(std::move(smoothing)) {
    constexpr std::string_view kWhere = "oq::transform::DuQuantBlockwiseTransform";
    detail::require(channels_ > 0, kWhere, "channels must be > 0, got ", channels_);
    detail::require(!rotations_.empty() && rotations_.size() == permutations_.size() + 1, kWhere,
                    "rotations must hold one more stage than permutations, got ", rotations_.size(), " and ",
                    permutations_.size());
    detail::require(!rotations_.front().empty(), kWhere, "rotations[0] must hold at least one block's rotation");
    const Eigen::Index b = rotations_.front().front().rows();
    detail::require(b > 0 && channels_ % b == 0, kWhere, "the rotation block size (", b, ") must divide channels (",
                    channels_, ")");
    const std::size_t blocks = static_cast<std::size_t>(channels_ / b);
    for (std::size_t i = 0; i < rotations_.size(); ++i) {
      detail::require(rotations_[i].size() == blocks, kWhere, "rotations[", i, "] must hold channels / b = ", blocks,
                      " rotations (one per block), got ", rotations_[i].size());
      for (std::size_t k = 0; k < blocks; ++k) {
        require_orthogonal(rotations_[i][k], b, kWhere,
                           "rotations[" + std::to_string(i) + "][" + std::to_string(k) + "]");
      }
    }
    for (std::size_t i = 0; i < permutations_.size(); ++i)
      validate_permutation(permutations_[i], channels_, kWhere, "permutations[" + std::to_string(i) + "]");
    if (smoothing_.size() != 0) {
      detail::require(smoothing_.size() == channels_, kWhere, "smoothing must have ", channels_, " scales, got ",
                      smoothing_.size());
      detail::require_finite(smoothing_, kWhere, "smoothing");
      detail::require((smoothing_.array() > Scalar(0)).all(), kWhere, "smoothing scales must be > 0");
    }
  }

  Eigen::Index channels() const { return channels_; }
  Eigen::Index block_size() const { return rotations_.front().front().rows(); }
  /// K = channels / b.
  Eigen::Index blocks() const { return channels_ / block_size(); }
  /// rotations()[i][k]: stage i's rotation of block k.
  const std::vector<std::vector<Matrix>>& rotations() const { return rotations_; }
  const std::vector<Permutation>& permutations() const { return permutations_; }
  const Vector& smoothing() const { return smoothing_; }

  /// Activations: X·diag(s)⁻¹·M (X is tokens × channels). Throws
  /// std::domain_error when the result overflows the scalar type.
  template <class Derived>
  Result apply(const Eigen::MatrixBase<Derived>& x) const {
    return smoothed_forward(x, /*divide=*/true, "oq::transform::DuQuantBlockwiseTransform::apply", "x",
                            "x·diag(s)⁻¹·M");
  }

  /// Weights (out × channels): W·diag(s)·M, so that apply(X)·fold_into_weight(W)ᵀ = X·Wᵀ.
  template <class Derived>
  Result fold_into_weight(const Eigen::MatrixBase<Derived>& w) const {
    return smoothed_forward(w, /*divide=*/false, "oq::transform::DuQuantBlockwiseTransform::fold_into_weight", "w",
                            "w·diag(s)·M");
  }

  /// The inverse of apply(): (X̂·Mᵀ)·diag(s).
  template <class Derived>
  Result invert(const Eigen::MatrixBase<Derived>& x_hat) const {
    constexpr std::string_view kWhere = "oq::transform::DuQuantBlockwiseTransform::invert";
    Result y = detail_duquant::checked_copy<Scalar>(x_hat, channels_, kWhere, "x_hat");
    for (std::size_t i = rotations_.size(); i-- > 0;) {
      detail_duquant::rotate_each_block_in_place(y, rotations_[i], /*transpose=*/true);
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
  // apply() and fold_into_weight(): m divided (activations) or multiplied
  // (weights) by the smoothing scales, then M, checked for overflow.
  template <class Derived>
  Result smoothed_forward(const Eigen::MatrixBase<Derived>& m, bool divide, std::string_view where,
                          std::string_view name, std::string_view what) const {
    Result y = detail_duquant::checked_copy<Scalar>(m, channels_, where, name);
    if (smoothing_.size() != 0) {
      if (divide) {
        y.array().rowwise() /= smoothing_.transpose().array();
      } else {
        y.array().rowwise() *= smoothing_.transpose().array();
      }
    }
    forward(y);
    detail_duquant::require_no_overflow(y, where, what);
    return y;
  }

  void forward(Result& y) const {
    for (std::size_t i = 0; i < rotations_.size(); ++i) {
      detail_duquant::rotate_each_block_in_place(y, rotations_[i], /*transpose=*/false);
      if (i < permutations_.size()) permute_columns_in_place(y, permutations_[i]);
    }
  }

  Eigen::Index channels_;
  std::vector<std::vector<Matrix>> rotations_;
  std::vector<Permutation> permutations_;
  Vector smoothing_;
};

namespace detail_duquant {

// The blockwise calibration's checks that need no Q′ (run before any is drawn).
template <class Derived>
void check_blockwise_input(const Eigen::MatrixBase<Derived>& x, const DuQuantOptions& options, std::string_view where) {
  detail::require(!needs_weights(options.score), where,
                  "options.score must be kRange or kAbsMax (the blockwise calibration scores activations only)");
  check_input(x, false, options, where);
}

// Calibration once x and the options are checked (check_blockwise_input).
template <class Scalar, class Derived>
DuQuantBlockwiseTransform<Scalar> calibrate_blockwise(
    const Eigen::MatrixBase<Derived>& x, const DuQuantOptions& options,
    const std::vector<std::vector<DenseMatrix<Scalar>>>& q_primes,
    const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>& smoothing, std::string_view where) {
  const Eigen::Index b = options.block_size;
  const std::size_t blocks = static_cast<std::size_t>(x.cols() / b);
  detail::require(static_cast<int>(q_primes.size()) == options.permutation_rounds + 1, where,
                  "q_primes must hold permutation_rounds + 1 = ", options.permutation_rounds + 1, " stages, got ",
                  q_primes.size());
  for (std::size_t i = 0; i < q_primes.size(); ++i) {
    detail::require(q_primes[i].size() == blocks, where, "q_primes[", i, "] must hold one matrix per block (",
                    blocks, "), got ", q_primes[i].size());
    for (std::size_t k = 0; k < blocks; ++k) {
      detail::require(q_primes[i][k].rows() == b - 1 && q_primes[i][k].cols() == b - 1, where, "q_primes[", i, "][",
                      k, "] must be (options.block_size - 1) x (options.block_size - 1) = ", b - 1, " x ", b - 1,
                      ", got ", q_primes[i][k].rows(), " x ", q_primes[i][k].cols());
    }
  }

  // Validates the smoothing scales as the finished transform would.
  const DuQuantTransform<Scalar> identity(x.cols(), {DenseMatrix<Scalar>::Identity(b, b)}, {}, smoothing);
  RowMajorMatrix<Scalar> y = identity.apply(x);

  std::optional<cpu::ThreadPool> own;
  cpu::ThreadPool* pool =
      greedy_thread_pool(cpu::resolve_threads(options.threads, where, options.pool), options.pool, own);
  std::vector<std::vector<DenseMatrix<Scalar>>> rotations;
  std::vector<Permutation> permutations;
  RowMajorMatrix<Scalar> block(y.rows(), b);
  for (int stage = 0; stage <= options.permutation_rounds; ++stage) {
    std::vector<DenseMatrix<Scalar>> stage_rotations;
    for (std::size_t k = 0; k < blocks; ++k) {
      GreedyRotationOptions greedy{options.greedy_steps, options.score, {}, pool == nullptr ? 1 : 0, pool};
      if (options.progress) {
        const int before = static_cast<int>(k) * options.greedy_steps;
        const int total = static_cast<int>(blocks) * options.greedy_steps;
        greedy.progress = [&options, stage, before, total](int done, int) {
          options.progress(stage + 1, before + done, total);
        };
      }
      block = y.middleCols(static_cast<Eigen::Index>(k) * b, b);
      const DenseMatrix<Scalar> base = duquant_base_block(q_primes[static_cast<std::size_t>(stage)][k]);
      stage_rotations.push_back(greedy_block_rotation(block, base, greedy).rotation);
    }
    rotate_each_block_in_place(y, stage_rotations, /*transpose=*/false);
    rotations.push_back(std::move(stage_rotations));
    if (stage < options.permutation_rounds) {
      // The permutation orders channels by the activations' maxima (zigzag.hpp).
      const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> channel_max = y.cwiseAbs().colwise().maxCoeff().transpose();
      permutations.push_back(zigzag_permutation(channel_max, b));
      permute_columns_in_place(y, permutations.back());
    }
  }
  return DuQuantBlockwiseTransform<Scalar>(x.cols(), std::move(rotations), std::move(permutations), smoothing);
}

}  // namespace detail_duquant

/// Calibrates the blockwise M on activations x (tokens × channels): at each
/// stage, block k's rotation is Algorithm 1 on block k's columns alone, with
/// base block B(q_primes[stage][k]) (duquant_base_block); between stages the
/// zigzag permutation of DuQuantTransform's calibration. q_primes holds
/// permutation_rounds + 1 stages of K = C/b matrices of (b−1)×(b−1).
/// Smoothing scales, when given, divide x first. The scores kRange and
/// kAbsMax (of the block's entries); the weight-aware score is refused.
/// options.progress reports (stage, steps done over the stage's blocks,
/// K·greedy_steps).
template <class Derived>
DuQuantBlockwiseTransform<typename Derived::Scalar> calibrate_duquant_blockwise(
    const Eigen::MatrixBase<Derived>& x, const DuQuantOptions& options,
    const std::vector<std::vector<DenseMatrix<typename Derived::Scalar>>>& q_primes,
    const Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, 1>& smoothing = {}) {
  constexpr std::string_view kWhere = "oq::transform::calibrate_duquant_blockwise";
  detail_duquant::check_blockwise_input(x, options, kWhere);
  return detail_duquant::calibrate_blockwise<typename Derived::Scalar>(x, options, q_primes, smoothing, kWhere);
}

/// The same with every Q′ drawn Haar-random from `generator`
/// (random_orthogonal.hpp), stage by stage, block 0 first within a stage.
template <class Derived, std::uniform_random_bit_generator Generator>
DuQuantBlockwiseTransform<typename Derived::Scalar> calibrate_duquant_blockwise(
    const Eigen::MatrixBase<Derived>& x, const DuQuantOptions& options, Generator& generator,
    const Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, 1>& smoothing = {}) {
  using Scalar = typename Derived::Scalar;
  constexpr std::string_view kWhere = "oq::transform::calibrate_duquant_blockwise";
  // Checked before drawing: a bad block size must not cost K QRs first.
  detail_duquant::check_blockwise_input(x, options, kWhere);
  const std::size_t blocks = static_cast<std::size_t>(x.cols() / options.block_size);
  std::vector<std::vector<DenseMatrix<Scalar>>> q_primes(static_cast<std::size_t>(options.permutation_rounds) + 1);
  for (auto& stage : q_primes) {
    for (std::size_t k = 0; k < blocks; ++k) {
      stage.push_back(random_orthogonal<Scalar>(options.block_size - 1, generator));
    }
  }
  return detail_duquant::calibrate_blockwise<Scalar>(x, options, q_primes, smoothing, kWhere);
}

}  // namespace oq::transform
