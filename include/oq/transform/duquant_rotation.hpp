// oq/transform/duquant_rotation.hpp: DuQuant's base block matrix and greedy
// block rotation (docs/design.md §6; Lin et al. 2024, §3.1 and Algorithm 1).
//
// Base block matrix of size b:
//   R = E·(G_(b−2)⋯G_1·G_0)·E, G_i the Givens rotation of the plane (i, i+1)
//       with G_i(i,i) = G_i(i+1,i+1) = cos = 1/√(i+2), G_i(i+1,i) = sin =
//       √(i+1)/√(i+2), G_i(i,i+1) = −sin, and E the exchange of indices 0 and
//       b−1 (rows and columns). Row b−1 of the Givens product is uniformly
//       1/√b, so row 0 of R is: x·R spreads the value in channel 0 evenly over
//       the block.
//   B = R·diag(1, Q′) with Q′ a (b−1)×(b−1) orthogonal matrix (random in the
//       paper; passed in here so that B is a pure function of its inputs).
// This is the released code's construction (get_rot.py, utils.get_rot).
//
// Greedy rotation (Algorithm 1), on the activations viewed as blocks: X
// (tokens × C) reshaped row-major to (tokens·C/b) × b, so every row is one
// block of one token and all blocks share one rotation. For t = 1..N: find the
// entry of largest |x|; its column d is the outlier's channel within its
// block; right-multiply by E_d·B·E_d (E_d exchanges indices 0 and d) — which
// moves channel d to 0, spreads it, and moves it back. Scores s_0..s_N are
// recorded before each step and after the last; the rotation kept is the
// product of the first k steps, k = argmin s (first minimum), projected onto
// the orthogonal matrices in double before it is rounded to the scalar type
// (detail_rotation::project_orthogonal: a float B's rounding would otherwise
// accumulate over the steps). The rotated
// tensor is never stored: each step evaluates x_i·A_t (A_t the product of the
// steps so far) only for the rows whose norm can reach the extremes
// (detail_rotation::NormOrderedRows), which gives the same scores and pivots
// as rotating the whole tensor step by step, to rounding.
//
// Where oq departs from the released code (quantize/quantizer.py, rotation()):
// the release pivots on `exchange_id % block_size` with exchange_id the ROW of
// the reshaped tensor (a token-block index), not the outlier's channel; oq
// pivots on the channel as the paper says (docs/design.md §6). Ties for the largest
// |x| go to the first entry in row-major order of the blocked view, and
// between +v and −v to +v. The release scores by
// max − min of the whole tensor (GreedyScore::kRange, the default here);
// GreedyScore::kAbsMax scores by max |x|.
//
// Weight-aware score (GreedyScore::kActivationTimesWeight; the overload that
// takes the weights W, out × C, of the linear that reads x). The weights are
// viewed as blocks the same way and rotated along with the activations (they
// are folded with the same rotation, W·R). Per step, for every position j of
// the block, a_j = max |x| over the blocked activations' column j and w_j =
// max |w| over the blocked weights' column j; the pivot is the first j of
// largest a_j·w_j and that product is the step's score. a_j·w_j bounds every
// entry of the channels' rank-one contributions x_j·w_jᵀ to X·Wᵀ, so the
// rotation goes after the channels whose quantization error reaches the
// output most, not only the largest activations. The released code has the
// skeleton of this path (rotation(weight, other, score_func):
// score_func(act_max, weight_max).argmax() over the block's positions) but
// never takes it: online_duquant_cali calls rotation(weight) without a score
// function, the release defines none, and the branch reads variables (c, r2,
// c2) that only the other branch sets. The product is oq's choice.
#pragma once

#include <oq/detail/check.hpp>

#include <Eigen/Core>
#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace oq::transform {

template <class Scalar>
using DenseMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
template <class Scalar>
using RowMajorMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// R = E·(G_(b−2)⋯G_0)·E of the file comment (b >= 2); orthogonal, row 0 uniform.
template <class Scalar = double>
DenseMatrix<Scalar> givens_spread_matrix(Eigen::Index b) {
  detail::require(b >= 2, "oq::transform::givens_spread_matrix", "b must be >= 2, got ", b);
  // Accumulate in double: the product of b−1 rotations, then round once.
  DenseMatrix<double> m = DenseMatrix<double>::Identity(b, b);
  for (Eigen::Index i = 0; i + 1 < b; ++i) {
    const double c = 1.0 / std::sqrt(static_cast<double>(i + 2));
    const double s = std::sqrt(static_cast<double>(i + 1)) / std::sqrt(static_cast<double>(i + 2));
    // m ← G_i·m touches rows i and i+1 only.
    const Eigen::RowVectorXd row_i = m.row(i), row_next = m.row(i + 1);
    m.row(i) = c * row_i - s * row_next;
    m.row(i + 1) = s * row_i + c * row_next;
  }
  m.row(0).swap(m.row(b - 1));
  m.col(0).swap(m.col(b - 1));
  return m.cast<Scalar>();
}

namespace detail_rotation {

// max |QᵀQ − I| over the entries, computed in double (0 for an empty q).
template <class Derived>
double orthogonality_error(const Eigen::MatrixBase<Derived>& q) {
  if (q.size() == 0) return 0.0;
  const DenseMatrix<double> qd = q.template cast<double>();
  return (qd.transpose() * qd - DenseMatrix<double>::Identity(qd.cols(), qd.cols())).cwiseAbs().maxCoeff();
}

// require_orthogonal's tolerance for an n×n matrix of Scalar (its comment).
template <class Scalar>
double orthogonality_tolerance(Eigen::Index n) {
  const double size = static_cast<double>(n);
  return 8.0 * std::sqrt(size) * static_cast<double>(std::numeric_limits<Scalar>::epsilon()) +
         size * std::numeric_limits<double>::epsilon();
}

// m ← its orthogonal polar factor U·Vᵀ (m = U·Σ·Vᵀ), the orthogonal matrix
// nearest to m in the Frobenius norm (Higham, "Functions of Matrices", 2008,
// Theorem 8.4), in double. Near-orthogonal m (‖mᵀm − I‖_F ≤ 1/2, which
// bounds the spectral norm that must stay below 1) takes Newton–Schulz,
// m ← m·(3I − mᵀm)/2 (ibid. §8.3): quadratic convergence at two b×b products
// an iteration, moving m by about its drift. It stops at the rounding floor
// (b·ε of double, or once an iteration no longer halves the error), keeping
// the better iterate, or after 8 iterations, ample from a drift of 1/2.
// Anything farther takes an SVD (BDCSVD: O(b³) with a large constant;
// seconds at b = 1024, about a minute at 4096).
inline void project_orthogonal(DenseMatrix<double>& m) {
  const Eigen::Index b = m.rows();
  const DenseMatrix<double> identity = DenseMatrix<double>::Identity(b, b);
  DenseMatrix<double> gram = m.transpose() * m;
  double error = (gram - identity).norm();
  if (!(error <= 0.5)) {
    const Eigen::BDCSVD<DenseMatrix<double>> svd(m, Eigen::ComputeFullU | Eigen::ComputeFullV);
    m = svd.matrixU() * svd.matrixV().transpose();
    return;
  }
  const double stop = static_cast<double>(b) * std::numeric_limits<double>::epsilon();
  for (int iteration = 0; iteration < 8 && error > stop; ++iteration) {
    DenseMatrix<double> next = m * (1.5 * identity - 0.5 * gram);
    gram.noalias() = next.transpose() * next;
    const double next_error = (gram - identity).norm();
    if (!(next_error < 0.5 * error)) return;  // the rounding floor: m is the better one
    m = std::move(next);
    error = next_error;
  }
}

}  // namespace detail_rotation

/// Throws std::invalid_argument unless q is square n×n and QᵀQ = I to a
/// tolerance of 8·√n·ε of its scalar type plus n·ε of double.
///
/// The terms: an orthogonal matrix rounded once to the scalar type is off by
/// at most 2u + u² ≈ ε (Cauchy–Schwarz on the entries' relative errors), any
/// n; one formed by products in the scalar type (a float QR, B = R·diag(1, Q′)
/// in float) adds dot-product rounding, about √n·u in practice (Higham,
/// "Accuracy and Stability of Numerical Algorithms", §3.1 and §3.5); and QᵀQ
/// is computed here in double, whose own rounding is at most γ_n ≈ n·u of
/// double (ibid., Lemma 3.1): it dominates for double input. The greedy
/// rotation is projected onto the orthogonal matrices before it is rounded
/// (detail_rotation::project_orthogonal), so its step count does not enter.
/// Measured, b = 2..512 (every b to 128 with 1024 greedy steps; every 8th
/// beyond, and 129, 255, 257, 383, 511, with 256), max |QᵀQ − I| over oq's
/// own rotations — random_orthogonal, hadamard_orthogonal, duquant_base_block,
/// the greedy rotation, a transform saved and loaded: float 1.40ε (the base
/// block at b = 4), double 58ε (hadamard_orthogonal at b = 496, the check's
/// own rounding); each kind at least 8.4× below the tolerance at its size
/// (float: 11.5×). An Eigen HouseholderQR in float reached 5.7ε, 8.5× below.
/// A matrix off by 1.0007 (float: 1.4e-3) or 1.001 (double) is rejected at
/// any n up to the 65536 of duquant_io.hpp (float tolerance 2.4e-4 there).
template <class Derived>
void require_orthogonal(const Eigen::MatrixBase<Derived>& q, Eigen::Index n, std::string_view where,
                        std::string_view name) {
  using Scalar = typename Derived::Scalar;
  detail::require(q.rows() == n && q.cols() == n, where, name, " must be ", n, " x ", n, ", got ", q.rows(), " x ",
                  q.cols());
  detail::require_finite(q, where, name);
  const double tolerance = detail_rotation::orthogonality_tolerance<Scalar>(n);
  const double error = detail_rotation::orthogonality_error(q);
  detail::require(error <= tolerance, where, name, " must be orthogonal (max |QᵀQ − I| <= ", tolerance, "), got ",
                  error, "; a rotation computed in lower precision (float or TF32 products) can be projected with "
                  "oq::transform::nearest_orthogonal");
}

/// The orthogonal matrix nearest to m in the Frobenius norm: the polar factor
/// U·Vᵀ of m = U·Σ·Vᵀ (Higham, "Functions of Matrices", 2008, Theorem 8.4),
/// computed in double and rounded once to m's scalar type. For rotations made
/// elsewhere — products of many steps in float, or in TF32 where a framework
/// enables it for matrix products, drift from orthogonality by more than
/// require_orthogonal accepts — before they build a DuQuantTransform:
/// the projection moves m by about its drift, so the transform stays the
/// rotation m was meant to be, and becomes exactly invertible by its
/// transpose. A drifted rotation costs a few b×b products (Newton–Schulz);
/// a matrix far from orthogonal an SVD (detail_rotation::project_orthogonal).
/// Throws std::invalid_argument for an empty or non-square m and
/// std::domain_error for a NaN/Inf entry.
template <class Derived>
DenseMatrix<typename Derived::Scalar> nearest_orthogonal(const Eigen::MatrixBase<Derived>& m) {
  constexpr std::string_view kWhere = "oq::transform::nearest_orthogonal";
  detail::require(m.rows() > 0 && m.rows() == m.cols(), kWhere, "m must be square and non-empty, got ", m.rows(),
                  " x ", m.cols());
  detail::require_finite(m, kWhere, "m");
  DenseMatrix<double> q = m.template cast<double>();
  detail_rotation::project_orthogonal(q);
  return q.template cast<typename Derived::Scalar>();
}

/// B = R·diag(1, Q′) for block size b = q_prime.rows() + 1.
template <class Derived>
DenseMatrix<typename Derived::Scalar> duquant_base_block(const Eigen::MatrixBase<Derived>& q_prime) {
  using Scalar = typename Derived::Scalar;
  const Eigen::Index b = q_prime.rows() + 1;
  detail::require(b >= 2, "oq::transform::duquant_base_block", "q_prime must be at least 1 x 1");
  require_orthogonal(q_prime, b - 1, "oq::transform::duquant_base_block", "q_prime");
  const DenseMatrix<Scalar> r = givens_spread_matrix<Scalar>(b);
  DenseMatrix<Scalar> out(b, b);
  out.col(0) = r.col(0);
  out.rightCols(b - 1).noalias() = r.rightCols(b - 1) * q_prime;
  return out;
}

enum class GreedyScore {
  kRange,                 ///< max x − min x of the whole tensor (the released code)
  kAbsMax,                ///< max |x|
  kActivationTimesWeight, ///< max_j a_j·w_j over block positions (needs the weights; file comment)
};

inline constexpr bool needs_weights(GreedyScore s) { return s == GreedyScore::kActivationTimesWeight; }

/// The most greedy steps one rotation may try: 256× the paper's N = 256.
/// The bound keeps an untrusted count from reserving pivots and scores for
/// INT_MAX steps (32 GiB) and running for ever: every step costs at least a
/// b×b product.
inline constexpr int kMaxGreedySteps = 1 << 16;

struct GreedyRotationOptions {
  int steps = 256;  ///< N, greedy steps tried, in [0, kMaxGreedySteps]
  GreedyScore score = GreedyScore::kRange;
  /// Called after every step with (steps done, steps in all); may be empty.
  std::function<void(int, int)> progress{};
};

template <class Scalar>
struct GreedyRotation {
  DenseMatrix<Scalar> rotation;       ///< b × b, the product of the kept steps
  std::vector<Eigen::Index> pivots;   ///< channel within the block, every step tried
  std::vector<double> scores;         ///< steps + 1 scores: before each step, after the last
  Eigen::Index kept = 0;              ///< steps kept (argmin of scores)
};

namespace detail_rotation {

// Rows of the blocked view per GEMM: large enough for Eigen's
// (OpenMP-parallel) GEMM, small enough for a tile to stay in L2 while it is
// reduced or copied back.
inline constexpr Eigen::Index kTileRows = 2048;
inline constexpr Eigen::Index kFirstTileRows = 64;

// y's rows viewed as b-wide blocks, each right-multiplied by r (b × b), tile
// by tile through a small buffer instead of a y-sized temporary.
template <class Scalar, class RotationDerived>
void right_multiply_blocks(RowMajorMatrix<Scalar>& y, const Eigen::MatrixBase<RotationDerived>& r) {
  const Eigen::Index b = r.rows();
  Eigen::Map<RowMajorMatrix<Scalar>> blocks(y.data(), y.size() / b, b);
  RowMajorMatrix<Scalar> tile(std::min(kTileRows, blocks.rows()), b);
  for (Eigen::Index start = 0; start < blocks.rows(); start += kTileRows) {
    const Eigen::Index count = std::min(kTileRows, blocks.rows() - start);
    tile.topRows(count).noalias() = blocks.middleRows(start, count) * r;
    blocks.middleRows(start, count) = tile.topRows(count);
  }
}

// Lazy evaluation of the rotated blocks (why the greedy is fast). Step t needs
// only the extremes of Y_t = X_b·A_t, A_t the product of the steps so far,
// and an orthogonal A_t keeps every row's 2-norm: no entry of row i can
// exceed ‖x_i‖ in magnitude. So the rows are visited in order of decreasing
// norm, each computed afresh as x_i·A_t (A_t accumulated in double, rounded
// once per step), and the visit stops at the first row whose norm bound
// cannot reach the extremes found so far. With outliers, the extremes sit in
// the few rows that hold them and most rows are never multiplied; without,
// every row is, at the cost of the plain sequential update Y_t = Y_(t−1)·B_t.
// Nothing is written back: Y_t is never stored.
template <class Scalar>
class NormOrderedRows {
 public:
  /// The blocks of m (rows × C, b | C): row i·(C/b) + k of the blocked view
  /// is m(i, k·b .. k·b + b − 1).
  template <class Derived>
  NormOrderedRows(const Eigen::MatrixBase<Derived>& m, Eigen::Index b)
      : original_(static_cast<std::size_t>(m.rows() * (m.cols() / b))) {
    const Eigen::Index per_row = m.cols() / b, n = m.rows() * per_row;
    Eigen::VectorXd norms(n);
    for (Eigen::Index r = 0; r < n; ++r)
      norms(r) = m.row(r / per_row).segment((r % per_row) * b, b).template cast<double>().norm();
    std::iota(original_.begin(), original_.end(), Eigen::Index(0));
    std::stable_sort(original_.begin(), original_.end(), [&](Eigen::Index i, Eigen::Index j) { return norms(i) > norms(j); });
    rows_.resize(n, b);
    bounds_.resize(static_cast<std::size_t>(n));
    // |fl(x_i·a_j)| ≤ (1 + γ_b)·‖x_i‖·‖a_j‖ (γ_b = b·u/(1 − b·u), the dot
    // product's rounding); visit() multiplies by max_j ‖a_j‖, measured.
    // 4·b·u covers 1 + γ_b with room, and the norms' own rounding.
    const double slack = 1.0 + 4.0 * static_cast<double>(b) * static_cast<double>(std::numeric_limits<Scalar>::epsilon());
    for (Eigen::Index r = 0; r < n; ++r) {
      const Eigen::Index i = original_[static_cast<std::size_t>(r)];
      rows_.row(r) = m.row(i / per_row).segment((i % per_row) * b, b);
      bounds_[static_cast<std::size_t>(r)] = norms(i) * slack;
    }
    tile_.resize(std::min(kTileRows, n), b);
  }

  /// Feeds visitor(tile, original_rows) tiles of (rows·a) in norm order while
  /// a row's bound can still reach visitor.threshold(); returns rows computed.
  /// The bound uses the largest column norm of a as it is (a product of many
  /// rounded orthogonal blocks drifts from orthogonal), not 1.
  template <class Visitor>
  Eigen::Index visit(const DenseMatrix<Scalar>& a, Visitor& visitor) {
    const Eigen::Index n = rows_.rows();
    const double column_norm = a.template cast<double>().colwise().norm().maxCoeff();
    Eigen::Index start = 0;
    // The first tiles are small, so that a threshold exists before much is
    // multiplied; they double up to kTileRows.
    Eigen::Index tile_rows = kFirstTileRows;
    while (start < n) {
      const double threshold = visitor.threshold();
      // Bounds are descending: the rows that can still matter are a prefix.
      const auto first = bounds_.begin() + start;
      const auto last = bounds_.begin() + std::min(n, start + tile_rows);
      const Eigen::Index count =
          std::partition_point(first, last, [&](double bound) { return bound * column_norm >= threshold; }) - first;
      if (count == 0) break;
      auto tile = tile_.topRows(count);
      tile.noalias() = rows_.middleRows(start, count) * a;
      visitor(tile, original_.data() + start);
      start += count;
      if (count < tile_rows && start < n) break;  // the next row is below the threshold already
      tile_rows = std::min(2 * tile_rows, kTileRows);
    }
    return start;
  }

 private:
  RowMajorMatrix<Scalar> rows_;          // the blocked rows, largest norm first
  std::vector<double> bounds_;           // their norms with rounding slack, descending
  std::vector<Eigen::Index> original_;   // their rows in the blocked view
  RowMajorMatrix<Scalar> tile_;
};

// The extremes of the tensor for kRange and kAbsMax, and the first entry (in
// row-major order of the blocked view) holding the peak: the one of max and
// min of larger magnitude, +v on a tie with −v.
template <class Scalar>
class ExtremesVisitor {
 public:
  ExtremesVisitor(GreedyScore score, Eigen::Index b) : score_(score), b_(b) {}

  double threshold() const {
    if (!seen_) return -std::numeric_limits<double>::infinity();
    const double hi = static_cast<double>(hi_), lo = static_cast<double>(lo_);
    // kRange needs both extremes exactly; kAbsMax only the larger magnitude.
    return score_ == GreedyScore::kRange ? std::min(hi, -lo) : std::max(hi, -lo);
  }

  template <class Tile>
  void operator()(const Tile& tile, const Eigen::Index* original) {
    // Row extremes first (vectorised along the contiguous rows): they give
    // the tile's extremes and, when one is kept, the rows that hold it.
    row_hi_ = tile.rowwise().maxCoeff();
    row_lo_ = tile.rowwise().minCoeff();
    const Scalar tile_hi = row_hi_.maxCoeff(), tile_lo = row_lo_.minCoeff();
    if (!seen_ || tile_hi >= hi_) take(tile, row_hi_, original, tile_hi, hi_, hi_at_);
    if (!seen_ || tile_lo <= lo_) take(tile, row_lo_, original, tile_lo, lo_, lo_at_);
    seen_ = true;
  }

  double score() const {
    return score_ == GreedyScore::kRange ? static_cast<double>(hi_) - static_cast<double>(lo_)
                                         : std::fabs(static_cast<double>(peak_is_hi() ? hi_ : lo_));
  }
  Eigen::Index channel() const { return (peak_is_hi() ? hi_at_ : lo_at_) % b_; }

 private:
  bool peak_is_hi() const { return !(-lo_ > hi_); }

  // value is the tile's max (or min) and at least as extreme as `best`: keep
  // it with the first row-major position that holds it, here or earlier.
  template <class Tile>
  void take(const Tile& tile, const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>& row_extreme,
            const Eigen::Index* original, Scalar value, Scalar& best, Eigen::Index& best_at) {
    Eigen::Index at = std::numeric_limits<Eigen::Index>::max();
    for (Eigen::Index r = 0; r < tile.rows(); ++r) {
      if (row_extreme(r) != value) continue;
      Eigen::Index c = 0;
      while (tile(r, c) != value) ++c;  // the row holds it: the first column is the earliest
      at = std::min(at, original[r] * b_ + c);
    }
    if (!seen_ || value != best || at < best_at) best_at = at;
    best = value;
  }

  GreedyScore score_;
  Eigen::Index b_;
  bool seen_ = false;
  Scalar hi_{}, lo_{};
  Eigen::Index hi_at_ = 0, lo_at_ = 0;
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> row_hi_, row_lo_;
};

// Column maxima of |Y| for the weight-aware score: a row whose bound is below
// every column's maximum found so far can change none of them.
template <class Scalar>
class ColumnAbsMaxVisitor {
 public:
  explicit ColumnAbsMaxVisitor(Eigen::Index b) : max_(Eigen::ArrayXd::Constant(b, -1.0)) {}

  double threshold() const { return max_.minCoeff(); }

  template <class Tile>
  void operator()(const Tile& tile, const Eigen::Index*) {
    max_ = max_.max(tile.cwiseAbs().colwise().maxCoeff().transpose().template cast<double>().array());
  }

  const Eigen::ArrayXd& maxima() const { return max_; }

 private:
  Eigen::ArrayXd max_;
};

// E_d·B·E_d into `out` (preallocated b × b): B with indices 0 and d exchanged.
template <class Scalar>
void exchanged(const DenseMatrix<Scalar>& base, Eigen::Index d, DenseMatrix<Scalar>& out) {
  out = base;
  if (d == 0) return;
  out.row(0).swap(out.row(d));
  out.col(0).swap(out.col(d));
}

// One step's look: the score and the pivot channel of Y_t = X_b·A_t.
struct Look {
  double score;
  Eigen::Index channel;
};

// Algorithm 1 on the blocked activations (and the blocked weights when the
// score uses them: `weights` engaged). Inputs already checked.
template <class Scalar>
GreedyRotation<Scalar> greedy_on_blocks(NormOrderedRows<Scalar>& activations,
                                        std::optional<NormOrderedRows<Scalar>>& weights,
                                        const DenseMatrix<Scalar>& base, const GreedyRotationOptions& options) {
  const Eigen::Index b = base.rows();

  // A_t in double; a_t = A_t rounded once to Scalar for the GEMMs.
  const DenseMatrix<double> base_d = base.template cast<double>();
  DenseMatrix<double> accumulated = DenseMatrix<double>::Identity(b, b), product(b, b), step(b, b);
  DenseMatrix<Scalar> a = DenseMatrix<Scalar>::Identity(b, b);
  auto look = [&]() {
    if (!weights) {
      ExtremesVisitor<Scalar> extremes(options.score, b);
      activations.visit(a, extremes);
      return Look{extremes.score(), extremes.channel()};
    }
    ColumnAbsMaxVisitor<Scalar> x_max(b), w_max(b);
    activations.visit(a, x_max);
    weights->visit(a, w_max);
    // a_j·w_j per block position; the first j of the largest product.
    const Eigen::ArrayXd product_max = x_max.maxima() * w_max.maxima();
    Eigen::Index channel = 0;
    const double best = product_max.maxCoeff(&channel);  // Eigen returns the first maximum
    return Look{best, channel};
  };

  GreedyRotation<Scalar> result;
  result.pivots.reserve(static_cast<std::size_t>(options.steps));
  result.scores.reserve(static_cast<std::size_t>(options.steps) + 1);
  // The kept rotation is A_k at the first lowest score, taken as the loop
  // passes it. A_t is accumulated in double and rounded once, so that a float
  // rotation stays orthogonal to float precision after hundreds of steps.
  DenseMatrix<double> kept = accumulated;
  auto record = [&](double score) {
    if (result.scores.empty() || score < result.scores[static_cast<std::size_t>(result.kept)]) {
      result.kept = static_cast<Eigen::Index>(result.scores.size());
      kept = accumulated;
    }
    result.scores.push_back(score);
  };
  for (int t = 0; t < options.steps; ++t) {
    const Look e = look();
    record(e.score);
    result.pivots.push_back(e.channel);
    exchanged(base_d, e.channel, step);
    product.noalias() = accumulated * step;
    accumulated.swap(product);
    a = accumulated.cast<Scalar>();
    if (options.progress) options.progress(t + 1, options.steps);
  }
  record(look().score);
  // The kept rotation is a product of up to kMaxGreedySteps copies of B, and
  // a float B is orthogonal only to its rounding (~ε), an error the product
  // accumulates: unprojected, max |AᵀA − I| reached 254ε at b = 4 with 207
  // steps kept and 1175ε at b = 2 with 4093 (measured, float). Projected, it
  // is still the product of the steps to the precision it had.
  detail_rotation::project_orthogonal(kept);
  result.rotation = kept.cast<Scalar>();
  return result;
}

template <class Derived>
void check_greedy_input(const Eigen::MatrixBase<Derived>& x, const DenseMatrix<typename Derived::Scalar>& base,
                        const GreedyRotationOptions& options, std::string_view where) {
  const Eigen::Index b = base.rows();
  detail::require(b >= 2 && base.cols() == b, where, "base must be square with size >= 2, got ", base.rows(), " x ",
                  base.cols());
  detail::require(x.rows() > 0 && x.cols() > 0, where, "x must be non-empty, got ", x.rows(), " x ", x.cols());
  detail::require(x.cols() % b == 0, where, "the block size (", b, ") must divide the channel count of x (",
                  x.cols(), ")");
  detail::require(options.steps >= 0 && options.steps <= kMaxGreedySteps, where, "options.steps must be in [0, ",
                  kMaxGreedySteps, "], got ", options.steps);
  detail::require_finite(x, where, "x");
  require_orthogonal(base, b, where, "base");
}

}  // namespace detail_rotation

/// Algorithm 1 on x (tokens × C) with the base block `base` (b × b, b | C),
/// scored on the activations alone (kRange or kAbsMax).
template <class Derived>
GreedyRotation<typename Derived::Scalar> greedy_block_rotation(const Eigen::MatrixBase<Derived>& x,
                                                               const DenseMatrix<typename Derived::Scalar>& base,
                                                               const GreedyRotationOptions& options = {}) {
  constexpr std::string_view kWhere = "oq::transform::greedy_block_rotation";
  detail_rotation::check_greedy_input(x, base, options, kWhere);
  detail::require(!needs_weights(options.score), kWhere,
                  "options.score = kActivationTimesWeight needs the weights: call the overload that takes them");
  using Scalar = typename Derived::Scalar;
  detail_rotation::NormOrderedRows<Scalar> activations(x, base.rows());
  std::optional<detail_rotation::NormOrderedRows<Scalar>> no_weights;
  return detail_rotation::greedy_on_blocks(activations, no_weights, base, options);
}

/// Algorithm 1 with the weights w (out × C) of the linear that reads x, for
/// the weight-aware score kActivationTimesWeight (other scores ignore w,
/// which must still have C columns).
template <class Derived, class WeightDerived>
GreedyRotation<typename Derived::Scalar> greedy_block_rotation(const Eigen::MatrixBase<Derived>& x,
                                                               const Eigen::MatrixBase<WeightDerived>& w,
                                                               const DenseMatrix<typename Derived::Scalar>& base,
                                                               const GreedyRotationOptions& options = {}) {
  using Scalar = typename Derived::Scalar;
  static_assert(std::is_same_v<Scalar, typename WeightDerived::Scalar>, "x and w must have the same scalar type");
  constexpr std::string_view kWhere = "oq::transform::greedy_block_rotation";
  detail_rotation::check_greedy_input(x, base, options, kWhere);
  detail::require(w.rows() > 0 && w.cols() == x.cols(), kWhere, "w must have x's ", x.cols(),
                  " columns (one per input channel) and at least one row, got ", w.rows(), " x ", w.cols());
  detail::require_finite(w, kWhere, "w");
  if (!needs_weights(options.score)) return greedy_block_rotation(x, base, options);
  detail_rotation::NormOrderedRows<Scalar> activations(x, base.rows());
  std::optional<detail_rotation::NormOrderedRows<Scalar>> weights(std::in_place, w, base.rows());
  return detail_rotation::greedy_on_blocks(activations, weights, base, options);
}

}  // namespace oq::transform
