// oq/transform/randomized_hadamard.hpp: the randomized Hadamard transform
// M = D·H_n/√n of QuaRot (Ashkboos et al. 2024, arXiv 2404.00456, §3–4;
// docs/design.md §5).
//
//   using namespace oq::transform;
//   auto q = RandomizedHadamard::from_seed(4096, /*seed=*/3);  // d_i = ±1 from std::mt19937_64(3)
//   std::mt19937_64 rng(3);
//   auto same = RandomizedHadamard::random(4096, rng);          // the same signs, the caller's generator
//   q.apply_rows(x);                        // in place, every row: x ← x·M = (x ⊙ d)·H_n/√n
//   q.apply_rows(w);                        // the weights get the same M: (x·M)·(w·M)ᵀ = x·wᵀ
//   q.apply_rows(x, Direction::kInverse);   // x ← x·Mᵀ = x·M⁻¹ = (x·H_nᵀ/√n) ⊙ d
//   Eigen::MatrixXd m = q.matrix<double>(); // the explicit M, to fold offline (w·M)
//
// D = diag(d) with d_i = ±1; H_n is transform/hadamard.hpp's matrix of order n
// (any n with a construction: 4096 = 2^12, 11008 = 344·32, 5120 = 20·256, …),
// so M·Mᵀ = D·H·Hᵀ·D/n = I for every choice of signs. QuaRot draws D once per
// model and rotates the residual stream by it (folded into the embeddings,
// the weights reading the stream and the weights writing into it); the
// random signs make the rotated channels of a fixed x look like sums of
// independent ±x_i/√n, which is what flattens outliers.
//
// The signs. Each d_i is one draw u of the generator: d_i = −1 when
// u − Rng::min() > (Rng::max() − Rng::min())/2, else +1 — for the standard
// engines, whose ranges hold an even number of values (a power of two, or
// 2^31 − 2 for minstd_rand, minstd_rand0 and knuth_b), exactly half of the
// draws each way. The engines are specified bit for bit by the standard, so
// a seed gives the same signs with any standard library (unlike the
// standard distributions, which are implementation-defined).
//
// Errors: n without a Hadamard construction or ≤ 0, signs not all ±1 →
// std::invalid_argument naming them; x of another width → std::invalid_argument;
// NaN/Inf in x → std::domain_error naming the entry, x unchanged (as
// hadamard_rows; an overflow that hadamard_rows refuses leaves x unchanged too).
#pragma once

#include <oq/detail/check.hpp>
#include <oq/transform/hadamard.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <random>
#include <string_view>
#include <type_traits>
#include <utility>

namespace oq::transform {

/// x ↦ x·D·H_n/√n with D = diag(d), d_i = ±1 (see the file comment).
class RandomizedHadamard {
 public:
  /// From given signs (each +1 or −1); n = signs.size() must have a
  /// Hadamard construction.
  explicit RandomizedHadamard(Eigen::VectorXi signs) : signs_(std::move(signs)) {
    constexpr std::string_view kWhere = "oq::transform::RandomizedHadamard";
    detail::require(signs_.size() > 0, kWhere, "signs must be non-empty");
    for (Eigen::Index i = 0; i < signs_.size(); ++i) {
      detail::require(signs_(i) == 1 || signs_(i) == -1, kWhere, "signs(", i, ") must be +1 or -1, got ", signs_(i));
    }
    construction_ = hadamard_construction(signs_.size(), kWhere, "signs.size()");
  }

  /// n signs drawn from `rng` (one draw each, in order; see the file comment).
  template <class Rng>
  static RandomizedHadamard random(Eigen::Index n, Rng& rng) {
    constexpr std::string_view kWhere = "oq::transform::RandomizedHadamard::random";
    // The construction first: a size without one fails before any draw.
    hadamard_construction(n, kWhere, "n");
    using Result = typename Rng::result_type;
    static_assert(std::is_unsigned_v<Result>, "RandomizedHadamard::random needs a uniform random bit generator");
    constexpr Result kHalf = (Rng::max() - Rng::min()) / 2;
    Eigen::VectorXi signs(n);
    for (Eigen::Index i = 0; i < n; ++i) signs(i) = static_cast<Result>(rng() - Rng::min()) > kHalf ? -1 : 1;
    return RandomizedHadamard(std::move(signs));
  }

  /// random(n, rng) with rng = std::mt19937_64(seed).
  static RandomizedHadamard from_seed(Eigen::Index n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    return random(n, rng);
  }

  Eigen::Index size() const noexcept { return signs_.size(); }
  /// d: the diagonal of D, each ±1.
  const Eigen::VectorXi& signs() const noexcept { return signs_; }
  /// How H_n is built.
  const HadamardConstruction& construction() const noexcept { return construction_; }

  /// In place, every row: x ← x·M = (x ⊙ d)·H_n/√n (kForward) or
  /// x ← x·Mᵀ = (x·H_nᵀ/√n) ⊙ d (kInverse). x is any writable Eigen
  /// expression of float or double with n columns, taken as a const
  /// reference and written through (the Eigen idiom).
  template <class Derived>
  void apply_rows(const Eigen::MatrixBase<Derived>& x_, Direction direction = Direction::kForward) const {
    using Scalar = typename Derived::Scalar;
    static_assert(std::is_floating_point_v<Scalar>, "RandomizedHadamard::apply_rows needs a floating-point matrix");
    constexpr std::string_view kWhere = "oq::transform::RandomizedHadamard::apply_rows";
    auto& x = const_cast<Eigen::MatrixBase<Derived>&>(x_);
    detail::require(x.cols() == size(), kWhere, "x.cols() must be n = ", size(), ", got ", x.cols());
    detail::require_finite(x, kWhere, "x");
    if (direction == Direction::kForward) {
      flip(x);
      try {
        hadamard_rows(x, Direction::kForward);
      } catch (...) {
        flip(x);  // exact: x is as it was
        throw;
      }
    } else {
      hadamard_rows(x, Direction::kInverse);  // leaves x unchanged when it throws
      flip(x);
    }
  }

  /// x·M (a copy), for any matrix expression of float or double.
  template <class Derived>
  Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, Eigen::Dynamic, Derived::IsRowMajor ? Eigen::RowMajor : Eigen::ColMajor>
  apply(const Eigen::MatrixBase<Derived>& x) const {
    Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, Eigen::Dynamic,
                  Derived::IsRowMajor ? Eigen::RowMajor : Eigen::ColMajor>
        out = x;
    apply_rows(out);
    return out;
  }

  /// W·M for y = X·Wᵀ (W out × in): the same rotation of W's rows, so that
  /// (X·M)·(W·M)ᵀ = X·Wᵀ (docs/design.md §5).
  template <class Derived>
  auto fold_into_weight(const Eigen::MatrixBase<Derived>& w) const {
    return apply(w);
  }

  /// The explicit orthogonal M = D·H_n/√n (n × n).
  template <class Scalar = double>
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> matrix() const {
    static_assert(std::is_floating_point_v<Scalar>, "RandomizedHadamard::matrix needs a floating-point scalar");
    Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> m = hadamard_orthogonal<Scalar>(size());
    for (Eigen::Index i = 0; i < size(); ++i) {
      if (signs_(i) < 0) m.row(i) = -m.row(i);  // D·H: row i times d_i
    }
    return m;
  }

 private:
  // x ← x·D: column j times d_j = ±1 (exact), row by row whatever the storage order.
  template <class Derived>
  void flip(Eigen::MatrixBase<Derived>& x) const {
    using Scalar = typename Derived::Scalar;
    const Eigen::Array<Scalar, 1, Eigen::Dynamic> d = signs_.transpose().cast<Scalar>().array();
    x.array().rowwise() *= d;
  }

  Eigen::VectorXi signs_;
  HadamardConstruction construction_;
};

}  // namespace oq::transform
