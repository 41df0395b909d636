#include <oq/cpu/thread_pool.hpp>
#include <oq/detail/eigen_types.hpp>
#include <oq/transform/duquant_rotation.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <Eigen/QR>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

using namespace oq::transform;
using Matrix = Eigen::MatrixXd;

namespace {

// Some orthogonal matrix (not necessarily Haar) for Q′.
Matrix some_orthogonal(Eigen::Index n, std::uint64_t seed) {
  return Eigen::HouseholderQR<Matrix>(oq::test::gaussian<double>(n, n, seed)).householderQ();
}

// Plain float64 reference of the spreading matrix: explicit Givens matrices
// multiplied in the order the formula is written, then the index exchange.
Matrix givens_ref(Eigen::Index b) {
  Matrix product = Matrix::Identity(b, b);
  for (Eigen::Index i = 0; i + 1 < b; ++i) {
    Matrix g = Matrix::Identity(b, b);
    const double c = 1.0 / std::sqrt(double(i + 2)), s = std::sqrt(double(i + 1)) / std::sqrt(double(i + 2));
    g(i, i) = c;
    g(i + 1, i + 1) = c;
    g(i, i + 1) = -s;
    g(i + 1, i) = s;
    product = g * product;  // G_(b−2)⋯G_0: later rotations on the left
  }
  Matrix e = Matrix::Identity(b, b);
  e(0, 0) = e(b - 1, b - 1) = 0;
  e(0, b - 1) = e(b - 1, 0) = 1;
  return e * product * e;
}

struct GreedyRef {
  std::vector<Eigen::Index> pivots;
  std::vector<double> scores;
  Eigen::Index kept;
  Matrix rotation;
};

// Algorithm 1 in plain loops: blocks as a vector of rows, explicit argmax,
// exchanged matrix built by index mapping, triple-loop products. With `w`,
// the weight-aware score: per block position j, max|x| · max|w| over the
// blocked rows, pivot at the first largest product.
GreedyRef greedy_ref(const Matrix& x, const Matrix& base, int steps, const Matrix* w = nullptr, bool abs_max = false) {
  const Eigen::Index b = base.rows();
  auto to_rows = [b](const Matrix& m) {
    std::vector<std::vector<double>> rows;
    for (Eigen::Index t = 0; t < m.rows(); ++t)
      for (Eigen::Index k = 0; k < m.cols() / b; ++k) {
        std::vector<double> row(static_cast<std::size_t>(b));
        for (Eigen::Index j = 0; j < b; ++j) row[static_cast<std::size_t>(j)] = m(t, k * b + j);
        rows.push_back(row);
      }
    return rows;
  };
  std::vector<std::vector<double>> rows = to_rows(x);
  std::vector<std::vector<double>> weight_rows = w != nullptr ? to_rows(*w) : std::vector<std::vector<double>>{};
  auto column_max = [b](const std::vector<std::vector<double>>& rs, Eigen::Index j) {
    double m = 0;
    for (const auto& r : rs) m = std::max(m, std::fabs(r[static_cast<std::size_t>(j)]));
    (void)b;
    return m;
  };
  // The weighted score and its pivot.
  auto weighted = [&] {
    double best = -1;
    Eigen::Index at = 0;
    for (Eigen::Index j = 0; j < b; ++j) {
      const double p = column_max(rows, j) * column_max(weight_rows, j);
      if (p > best) best = p, at = j;
    }
    return std::make_pair(best, at);
  };
  auto score = [&] {
    if (w != nullptr) return weighted().first;
    double hi = -1e300, lo = 1e300;
    for (const auto& r : rows)
      for (double v : r) hi = std::max(hi, v), lo = std::min(lo, v);
    return abs_max ? std::max(hi, -lo) : hi - lo;
  };
  auto exchanged = [&](Eigen::Index d) {
    auto swap_index = [&](Eigen::Index i) { return i == 0 ? d : i == d ? 0 : i; };
    Matrix m(b, b);
    for (Eigen::Index i = 0; i < b; ++i)
      for (Eigen::Index j = 0; j < b; ++j) m(i, j) = base(swap_index(i), swap_index(j));
    return m;
  };
  GreedyRef ref;
  for (int t = 0; t < steps; ++t) {
    ref.scores.push_back(score());
    // The peak: the first (row-major) entry holding the max or the min,
    // whichever has the larger magnitude, and the max on a tie +v / −v
    // (the documented rule, wherever −v sits).
    double hi = -1e300, lo = 1e300;
    Eigen::Index hi_at = 0, lo_at = 0;
    for (const auto& r : rows)
      for (Eigen::Index j = 0; j < b; ++j) {
        const double v = r[static_cast<std::size_t>(j)];
        if (v > hi) hi = v, hi_at = j;
        if (v < lo) lo = v, lo_at = j;
      }
    Eigen::Index d = hi >= -lo ? hi_at : lo_at;
    if (w != nullptr) d = weighted().second;
    ref.pivots.push_back(d);
    const Matrix m = exchanged(d);
    for (auto* rs : {&rows, &weight_rows}) {
      for (auto& r : *rs) {
        std::vector<double> out(static_cast<std::size_t>(b), 0.0);
        for (Eigen::Index j = 0; j < b; ++j)
          for (Eigen::Index i = 0; i < b; ++i) out[static_cast<std::size_t>(j)] += r[static_cast<std::size_t>(i)] * m(i, j);
        r = out;
      }
    }
  }
  ref.scores.push_back(score());
  ref.kept = 0;
  for (std::size_t t = 1; t < ref.scores.size(); ++t)
    if (ref.scores[t] < ref.scores[static_cast<std::size_t>(ref.kept)]) ref.kept = static_cast<Eigen::Index>(t);
  ref.rotation = Matrix::Identity(b, b);
  for (Eigen::Index t = 0; t < ref.kept; ++t) ref.rotation = ref.rotation * exchanged(ref.pivots[static_cast<std::size_t>(t)]);
  return ref;
}

// Every step's pivot and score, the kept count and the rotation agree, and at
// least one step is kept (so the comparison of rotations is not trivial).
void check_matches(const GreedyRotation<double>& got, const GreedyRef& ref) {
  CHECK(got.pivots == ref.pivots);
  REQUIRE(got.scores.size() == ref.scores.size());
  for (std::size_t t = 0; t < ref.scores.size(); ++t) CHECK(got.scores[t] == doctest::Approx(ref.scores[t]).epsilon(1e-12));
  CHECK(got.kept == ref.kept);
  CHECK(got.kept > 0);
  CHECK((got.rotation - ref.rotation).cwiseAbs().maxCoeff() < 1e-12);
}


// The greedy in float (or the scalar type of x) written plainly: every
// blocked row, in row-major order, multiplied at every step entry by entry
// in the order the product kernel documents (duquant_rotation.hpp,
// BlockKernel: one chain of multiply-adds over k = 0..b−1 from 0, fused
// where Eigen's packets fuse), no sorting, no lazy evaluation, no chunks or
// threads. A_t is accumulated in double by the same Eigen product as the
// library's (its rounding is not what this reference checks) and projected
// by the same helper. Equal bit for bit to the library, any thread count.
template <class Scalar>
Scalar chain(const std::vector<Scalar>& row, const DenseMatrix<Scalar>& a, Eigen::Index j) {
  Scalar acc = 0;
  for (Eigen::Index k = 0; k < a.rows(); ++k) {
#ifdef EIGEN_VECTORIZE_FMA
    acc = std::fma(row[static_cast<std::size_t>(k)], a(k, j), acc);
#else
    acc = row[static_cast<std::size_t>(k)] * a(k, j) + acc;  // oq's tests build with -ffp-contract=off
#endif
  }
  return acc;
}

template <class Scalar>
GreedyRotation<Scalar> greedy_plain(const DenseMatrix<Scalar>& x, const DenseMatrix<Scalar>& base, int steps,
                                    GreedyScore score, const DenseMatrix<Scalar>* w = nullptr) {
  const Eigen::Index b = base.rows();
  auto to_rows = [b](const DenseMatrix<Scalar>& m) {
    std::vector<std::vector<Scalar>> rows;
    for (Eigen::Index t = 0; t < m.rows(); ++t)
      for (Eigen::Index k = 0; k < m.cols() / b; ++k) {
        std::vector<Scalar> row;
        for (Eigen::Index j = 0; j < b; ++j) row.push_back(m(t, k * b + j));
        rows.push_back(row);
      }
    return rows;
  };
  const auto rows = to_rows(x);
  const auto weight_rows = w != nullptr ? to_rows(*w) : std::vector<std::vector<Scalar>>{};
  const Matrix base_d = base.template cast<double>();
  Matrix accumulated = Matrix::Identity(b, b), kept = accumulated;
  GreedyRotation<Scalar> out;
  auto look = [&]() -> std::pair<double, Eigen::Index> {
    const DenseMatrix<Scalar> a = accumulated.cast<Scalar>();
    if (w != nullptr) {
      auto column_max = [&](const std::vector<std::vector<Scalar>>& rs, Eigen::Index j) {
        double m = 0;
        for (const auto& r : rs) m = std::max(m, double(std::fabs(chain(r, a, j))));
        return m;
      };
      double best = -1;
      Eigen::Index at = 0;
      for (Eigen::Index j = 0; j < b; ++j) {
        const double p = column_max(rows, j) * column_max(weight_rows, j);
        if (p > best) best = p, at = j;
      }
      return {best, at};
    }
    Scalar hi = -std::numeric_limits<Scalar>::infinity(), lo = std::numeric_limits<Scalar>::infinity();
    Eigen::Index hi_at = 0, lo_at = 0;
    for (const auto& r : rows)
      for (Eigen::Index j = 0; j < b; ++j) {
        const Scalar v = chain(r, a, j);
        if (v > hi) hi = v, hi_at = j;
        if (v < lo) lo = v, lo_at = j;
      }
    const bool peak_is_hi = !(-lo > hi);
    const double s = score == GreedyScore::kRange ? double(hi) - double(lo) : std::fabs(double(peak_is_hi ? hi : lo));
    return {s, peak_is_hi ? hi_at : lo_at};
  };
  auto record = [&](double s) {
    if (out.scores.empty() || s < out.scores[static_cast<std::size_t>(out.kept)]) {
      out.kept = static_cast<Eigen::Index>(out.scores.size());
      kept = accumulated;
    }
    out.scores.push_back(s);
  };
  for (int t = 0; t < steps; ++t) {
    const auto [s, d] = look();
    record(s);
    out.pivots.push_back(d);
    Matrix step = base_d;
    step.row(0).swap(step.row(d));
    step.col(0).swap(step.col(d));
    const Matrix next = accumulated * step;
    accumulated = next;
  }
  record(look().first);
  detail_rotation::project_orthogonal(kept);
  out.rotation = kept.cast<Scalar>();
  return out;
}

// Pivots, scores, kept count and rotation equal bit for bit.
template <class Scalar>
void check_identical(const GreedyRotation<Scalar>& got, const GreedyRotation<Scalar>& want) {
  CHECK(got.pivots == want.pivots);
  CHECK(got.scores == want.scores);
  CHECK(got.kept == want.kept);
  REQUIRE(got.rotation.rows() == want.rotation.rows());
  CHECK(got.rotation == want.rotation);
}

// Inputs where nothing can be pruned and where most is, with the adversarial
// rows of oq's tests: Gaussian; Gaussian with zero tokens; a huge outlier;
// constant rows (ties for the peak in every chunk). Tokens × channels.
DenseMatrix<float> greedy_input(int kind, Eigen::Index tokens, Eigen::Index channels, std::uint64_t seed) {
  DenseMatrix<float> x = oq::test::gaussian<float>(tokens, channels, seed);
  if (kind == 1)
    for (Eigen::Index t = 0; t < tokens; t += 3) x.row(t).setZero();
  if (kind == 2) x(tokens / 2, channels - 1) = 3e4f;
  if (kind == 3) {
    x.setConstant(0.5f);
    x.row(tokens - 1).setConstant(-0.5f);
  }
  return x;
}
}  // namespace

TEST_CASE("the Givens spreading matrix: orthogonal, first row uniformly 1/sqrt(b), as the formula says") {
  for (Eigen::Index b : {2, 3, 8, 128}) {
    CAPTURE(b);
    const Matrix r = givens_spread_matrix(b);
    CHECK((r * r.transpose() - Matrix::Identity(b, b)).cwiseAbs().maxCoeff() < 1e-13);
    CHECK((r.row(0).array() - 1.0 / std::sqrt(double(b))).abs().maxCoeff() < 1e-14);
    CHECK((r - givens_ref(b)).cwiseAbs().maxCoeff() < 1e-13);
  }
}

TEST_CASE("the base block B = R·diag(1, Q′)") {
  const Matrix q = some_orthogonal(15, 1);
  const Matrix base = duquant_base_block(q);
  CHECK((base * base.transpose() - Matrix::Identity(16, 16)).cwiseAbs().maxCoeff() < 1e-13);
  Matrix diag = Matrix::Identity(16, 16);
  diag.bottomRightCorner(15, 15) = q;
  CHECK((base - givens_spread_matrix(16) * diag).cwiseAbs().maxCoeff() < 1e-14);
  CHECK(duquant_base_block(Matrix::Identity(7, 7)).isApprox(givens_spread_matrix(8), 1e-15));
  const Eigen::MatrixXf base_f = duquant_base_block(q.cast<float>().eval());
  CHECK((base_f * base_f.transpose() - Eigen::MatrixXf::Identity(16, 16)).cwiseAbs().maxCoeff() < 1e-5f);
}

TEST_CASE("greedy rotation equals a plain float64 implementation of Algorithm 1") {
  Matrix x = oq::test::gaussian<double>(6, 32, 7);
  x(2, 13) = 80.0;  // channel 5 of block 1
  x(4, 6) = -60.0;  // channel 6 of block 0
  x.col(25) *= 10.0;
  const Matrix base = duquant_base_block(some_orthogonal(7, 2));
  const auto got = greedy_block_rotation(x, base, {.steps = 12});
  check_matches(got, greedy_ref(x, base, 12));
  // The paper pivots on the outlier's channel: the first pivot is channel 5.
  CHECK(got.pivots[0] == 5);
  // The kept rotation attains the minimum score.
  using RowMatrix = Eigen::Matrix<double, -1, -1, Eigen::RowMajor>;
  const RowMatrix x_row = x;
  const Matrix blocks = Eigen::Map<const RowMatrix>(x_row.data(), 6 * 4, 8);  // (token, block) rows
  const Matrix rotated = blocks * got.rotation;
  CHECK(rotated.maxCoeff() - rotated.minCoeff() == doctest::Approx(got.scores[static_cast<std::size_t>(got.kept)]));
}

TEST_CASE("lazy evaluation over many chunks, most rows never multiplied, equals the reference") {
  // 96 tokens × 32 blocks of 16 = 3072 blocked rows: more than one chunk
  // of the lazy evaluation, and with these outliers the extremes sit in a few
  // rows, so the visit stops early at most steps. The reference rotates every
  // row at every step.
  Matrix x = oq::test::gaussian<double>(96, 512, 21);
  x(3, 100) = 500.0;
  x(70, 301) = -400.0;
  x.col(77) *= 8.0;
  const Matrix base = duquant_base_block(some_orthogonal(15, 6));
  check_matches(greedy_block_rotation(x, base, {.steps = 24}), greedy_ref(x, base, 24));

  Matrix w = oq::test::gaussian<double>(40, 512, 22) * 0.1;
  w(7, 205) = 30.0;
  const GreedyRotationOptions weighted{.steps = 24, .score = GreedyScore::kActivationTimesWeight, .progress = {}};
  check_matches(greedy_block_rotation(x, w, base, weighted), greedy_ref(x, base, 24, &w));

  // How early the visit stops: the first chunk (64 rows) holds the outliers'
  // rows and sets a threshold no other row's norm reaches.
  detail_rotation::NormOrderedRows<double> rows(x, 16);
  detail_rotation::PackedRotation<double> identity(16);
  identity.assign(DenseMatrix<double>::Identity(16, 16));
  const detail_rotation::Extremes extremes = rows.extremes(identity, GreedyScore::kRange, nullptr);
  CHECK(extremes.rows == detail_rotation::kChunkRows);
  CHECK(extremes.score(GreedyScore::kRange) == doctest::Approx(900.0));  // 500 − (−400)

  // Gaussian rows: the extremes are spread, the visits run over several
  // chunks before they stop.
  const Matrix gaussian = oq::test::gaussian<double>(96, 512, 23);
  check_matches(greedy_block_rotation(gaussian, base, {.steps = 24}), greedy_ref(gaussian, base, 24));
  const GreedyRotationOptions abs_max{.steps = 24, .score = GreedyScore::kAbsMax, .progress = {}};
  check_matches(greedy_block_rotation(gaussian, base, abs_max), greedy_ref(gaussian, base, 24, nullptr, true));
  check_matches(greedy_block_rotation(x, base, abs_max), greedy_ref(x, base, 24, nullptr, true));
}

TEST_CASE("a tie for the peak across chunks goes to the row-major first entry, not the first visited") {
  // 200 blocked rows of 8, visited by decreasing norm in chunks of 64
  // Blocked row 150 (token 75, block 0) holds 20 at position 2 and has the
  // largest norm: visited first. Blocked row 3 (token 1, block 1) holds 20
  // at position 6 alone: the smallest norm, visited in the last chunk. The
  // other 198 rows are all 10 (norm 28.3, below the peak nowhere).
  Matrix x = Matrix::Constant(100, 16, 10.0);
  x(75, 2) = 20.0;
  x.row(1).tail(8).setZero();
  x(1, 8 + 6) = 20.0;
  const Matrix base = duquant_base_block(some_orthogonal(7, 9));
  const auto first = greedy_block_rotation(x, base, {.steps = 1});
  CHECK(first.pivots[0] == 6);
  CHECK(first.scores[0] == 20.0);  // 20 − 0
  // Without row 3's 20, row 150's is the peak.
  x(1, 8 + 6) = 0.0;
  CHECK(greedy_block_rotation(x, base, {.steps = 1}).pivots[0] == 2);
}

TEST_CASE("a tie between +v and -v pivots on +v, wherever -v sits") {
  // docs/design.md §6 and the file comment: "between +v and −v to +v". −20 comes
  // first in row-major order (token 0, channel 3), +20 later (token 5,
  // channel 13, block 1 position 5); a first-largest-|x| rule would take 3.
  Matrix x = oq::test::gaussian<double>(8, 16, 21, 0.1);
  x(0, 3) = -20.0;
  x(5, 13) = 20.0;
  const Matrix base = duquant_base_block(some_orthogonal(7, 22));
  for (const GreedyScore score : {GreedyScore::kRange, GreedyScore::kAbsMax}) {
    const auto g = greedy_block_rotation(x, base, {.steps = 1, .score = score});
    CHECK(g.pivots[0] == 5);
  }
  // And with +v first, still +v.
  x(0, 3) = 20.0;
  x(5, 13) = -20.0;
  CHECK(greedy_block_rotation(x, base, {.steps = 1}).pivots[0] == 3);
  // Not a tie: the larger magnitude wins, whatever its sign.
  x(5, 13) = -20.5;
  CHECK(greedy_block_rotation(x, base, {.steps = 1}).pivots[0] == 5);
}

TEST_CASE("one massive outlier is spread to value/sqrt(b)") {
  // With Q′ = I one step spreads channel d evenly: the outlier v becomes v/√b
  // in every channel of its block, plus at most the rotated Gaussian noise.
  const Eigen::Index b = 64;
  Matrix x = oq::test::gaussian<double>(16, 256, 3, 0.01);
  const double v = 2000.0;
  x(0, 70) = v;
  const auto g = greedy_block_rotation(x, duquant_base_block(Matrix::Identity(b - 1, b - 1)), {.steps = 8});
  REQUIRE(g.kept >= 1);
  CHECK(g.pivots[0] == 70 % b);
  Eigen::Matrix<double, -1, -1, Eigen::RowMajor> y = x;
  Eigen::Map<Eigen::Matrix<double, -1, -1, Eigen::RowMajor>> blocks(y.data(), 16 * 4, b);
  blocks = (blocks * g.rotation).eval();
  // The noise of a row-block has norm <= 0.01·√b·5 (5 sigma), and rotations keep norms.
  CHECK(y.cwiseAbs().maxCoeff() <= v / std::sqrt(double(b)) + 0.05 * std::sqrt(double(b)));
  CHECK(x.cwiseAbs().maxCoeff() / y.cwiseAbs().maxCoeff() > 0.9 * std::sqrt(double(b)));
}

TEST_CASE("zero steps keep the identity; the float path stays orthogonal") {
  const Matrix x = oq::test::gaussian<double>(4, 16, 1);
  const Matrix base = duquant_base_block(some_orthogonal(7, 3));
  const auto none = greedy_block_rotation(x, base, {.steps = 0});
  CHECK(none.kept == 0);
  CHECK(none.scores.size() == 1);
  CHECK(none.rotation == Matrix::Identity(8, 8));

  Eigen::MatrixXf xf = oq::test::heavy_tailed<float>(64, 256, 5);
  const auto gf = greedy_block_rotation(xf, duquant_base_block(some_orthogonal(127, 4).cast<float>().eval()),
                                        {.steps = 64, .score = GreedyScore::kAbsMax});
  CHECK((gf.rotation * gf.rotation.transpose() - Eigen::MatrixXf::Identity(128, 128)).cwiseAbs().maxCoeff() < 1e-5f);
}

TEST_CASE("after thousands of float steps the rotation is still orthogonal to float precision") {
  // A float B is orthogonal only to its rounding, and the product of the
  // kept steps accumulates that error step by step: here (measured) 1175ε
  // after 4093 steps at b = 2 and 171ε after 4029 at b = 4, beyond what
  // DuQuantTransform accepts. The kept product is projected onto the
  // orthogonal matrices (detail_rotation::project_orthogonal), which moves it by
  // no more than its distance from orthogonal.
  for (Eigen::Index b : {2, 4}) {
    CAPTURE(b);
    const Eigen::MatrixXf x = oq::test::heavy_tailed<float>(16, 4 * b, 1);
    const Eigen::MatrixXf base = duquant_base_block(Eigen::MatrixXf::Identity(b - 1, b - 1).eval());
    const auto g = greedy_block_rotation(x, base, {.steps = 4096});
    REQUIRE(g.kept > 4000);  // a long product, or the test shows nothing
    Matrix product = Matrix::Identity(b, b);
    for (Eigen::Index t = 0; t < g.kept; ++t) {
      Matrix step = base.cast<double>();
      const Eigen::Index d = g.pivots[static_cast<std::size_t>(t)];
      step.row(0).swap(step.row(d));
      step.col(0).swap(step.col(d));
      product = product * step;
    }
    auto off = [b](const Matrix& m) { return (m.transpose() * m - Matrix::Identity(b, b)).cwiseAbs().maxCoeff(); };
    const double drift = off(product);
    const Matrix rotation = g.rotation.cast<double>();
    const double eps = std::numeric_limits<float>::epsilon();
    MESSAGE("b = " << b << ": product of " << g.kept << " steps off by " << drift / eps << " eps; kept rotation by "
                   << off(rotation) / eps << " eps");
    CHECK(drift > 100 * std::numeric_limits<float>::epsilon());  // the case the projection is for
    CHECK(off(rotation) <= std::numeric_limits<float>::epsilon());
    CHECK((rotation - product).cwiseAbs().maxCoeff() <= drift);
    CHECK_NOTHROW(require_orthogonal(g.rotation, b, "test", "rotation"));
  }
}

TEST_CASE("the weight-aware score equals a plain float64 implementation, and pivots where x and W are both large") {
  Matrix x = oq::test::gaussian<double>(6, 32, 11);
  x(2, 13) = 80.0;  // the largest activation: channel 5 of block 1
  x(1, 2) = 30.0;   // a smaller one, channel 2 of block 0 ...
  Matrix w = oq::test::gaussian<double>(5, 32, 12) * 0.1;
  w(3, 26) = 40.0;  // ... whose block position 2 carries a huge weight (channel 26 = block 3, position 2)
  const Matrix base = duquant_base_block(some_orthogonal(7, 3));
  const GreedyRotationOptions options{.steps = 12, .score = GreedyScore::kActivationTimesWeight, .progress = {}};
  const auto got = greedy_block_rotation(x, w, base, options);
  check_matches(got, greedy_ref(x, base, 12, &w));
  // max|x|·max|w| is largest at position 2 (30·40 against 80·~0.3), where the
  // activation-only score pivots on position 5.
  CHECK(got.pivots[0] == 2);
  CHECK(greedy_block_rotation(x, base, {.steps = 1}).pivots[0] == 5);
  // Other scores ignore the weights.
  const auto range = greedy_block_rotation(x, w, base, {.steps = 12});
  CHECK(range.pivots == greedy_block_rotation(x, base, {.steps = 12}).pivots);
}

TEST_CASE("the greedy is the same bit for bit on 1, 2, 3 and 8 threads and a caller's pool, and equals a plain float loop") {
  // Ragged sizes: blocked rows not a whole number of chunks (64), block
  // sizes that are not whole packets (AVX-512: 16 floats) nor whole register
  // tiles, a single token, b = 2; inputs where no row can be pruned, and
  // enough of them (up to 38 chunks) that every thread gets chunks: a pass
  // runs on at most one task per 4 chunks.
  struct Case {
    Eigen::Index tokens, channels, b;
    int kind;
  };
  oq::cpu::ThreadPool pool(3);
  for (const Case c : {Case{96, 256, 128, 0}, Case{37, 384, 128, 0}, Case{37, 384, 128, 1}, Case{50, 96, 32, 2},
                       Case{1, 128, 128, 0}, Case{1, 24, 24, 2}, Case{29, 60, 12, 0}, Case{70, 40, 20, 3},
                       Case{130, 8, 2, 0}, Case{64, 192, 64, 1}, Case{3, 96, 96, 0}, Case{300, 512, 64, 0},
                       Case{101, 640, 40, 1}, Case{256, 256, 128, 2}}) {
    CAPTURE(c.tokens);
    CAPTURE(c.channels);
    CAPTURE(c.b);
    CAPTURE(c.kind);
    const DenseMatrix<float> x = greedy_input(c.kind, c.tokens, c.channels, 40 + std::uint64_t(c.b));
    const DenseMatrix<float> base = duquant_base_block(some_orthogonal(c.b - 1, 41).cast<float>().eval());
    for (const GreedyScore score : {GreedyScore::kRange, GreedyScore::kAbsMax}) {
      CAPTURE(int(score));
      GreedyRotationOptions options{.steps = 20, .score = score, .progress = {}, .threads = 1};
      const auto one = greedy_block_rotation(x, base, options);
      check_identical(one, greedy_plain(x, base, 20, score));
      for (const int threads : {2, 3, 8}) {
        options.threads = threads;
        check_identical(greedy_block_rotation(x, base, options), one);
      }
      options.threads = 0;
      options.pool = &pool;
      check_identical(greedy_block_rotation(x, base, options), one);
    }
    // The weight-aware score: both passes (activations, weights) threaded.
    const DenseMatrix<float> w = oq::test::heavy_tailed<float>(45, c.channels, 42);
    GreedyRotationOptions weighted{.steps = 12, .score = GreedyScore::kActivationTimesWeight, .progress = {}, .threads = 1};
    const auto one = greedy_block_rotation(x, w, base, weighted);
    check_identical(one, greedy_plain(x, base, 12, GreedyScore::kActivationTimesWeight, &w));
    weighted.threads = 3;
    check_identical(greedy_block_rotation(x, w, base, weighted), one);
  }
}

TEST_CASE("an all-zero input: every entry ties at 0, the pivot is channel 0 and the identity is kept") {
  const DenseMatrix<float> zero = DenseMatrix<float>::Zero(70, 256);
  const DenseMatrix<float> base = duquant_base_block(some_orthogonal(127, 43).cast<float>().eval());
  for (const int threads : {1, 2}) {
    const auto g = greedy_block_rotation(zero, base, {.steps = 3, .score = GreedyScore::kRange, .progress = {}, .threads = threads});
    CHECK(g.pivots == std::vector<Eigen::Index>{0, 0, 0});
    CHECK(g.scores == std::vector<double>{0, 0, 0, 0});
    CHECK(g.kept == 0);
    CHECK(g.rotation == DenseMatrix<float>::Identity(128, 128));
  }
}

TEST_CASE("float against float64: every score within the rounding bound, every clear pivot the same") {
  // The float path computes fl(x·â) with â = A_t rounded to float, in some
  // order of the sum. Per entry, against the exact x·A_t (Higham, "Accuracy
  // and Stability of Numerical Algorithms", Lemma 3.4 and eq. 3.5):
  //   |fl(x·â_j) − x·A_j| ≤ γ_b·Σ|x_k|·|â_kj| + u·Σ|x_k|·|A_kj| ≤ (γ_b + u)(1 + u)·‖x‖·‖A_j‖,
  // with ‖A_j‖ ≈ 1: e = (γ_b + 2u)·max_i ‖x_i‖. The extremes move by at most
  // e each, a kRange score by 2e. Any two orders of the sum (this kernel's
  // and Eigen's GEMM paths, which the previous implementation used) differ
  // by at most 2e per entry. Here the float64 reference follows the float
  // run's pivots (a near-tie may pick another channel, and the runs would
  // part), and where the peak leads every entry of another channel by more
  // than 2e, the pivot must be the same.
  const Eigen::Index b = 64;
  DenseMatrix<float> x = oq::test::gaussian<float>(40, 256, 44);
  x(7, 77) = 40.0f;
  const DenseMatrix<float> base = duquant_base_block(some_orthogonal(b - 1, 45).cast<float>().eval());
  const int steps = 40;
  const auto g = greedy_block_rotation(x, base, {.steps = steps, .score = GreedyScore::kRange, .progress = {}, .threads = 2});
  using RowMatrix = Eigen::Matrix<double, -1, -1, Eigen::RowMajor>;
  const RowMatrix x_row = x.cast<double>();
  const Matrix blocks = Eigen::Map<const RowMatrix>(x_row.data(), x.rows() * x.cols() / b, b);
  const double u = std::numeric_limits<float>::epsilon() / 2;
  const double e = (b * u / (1 - b * u) + 2 * u) * blocks.rowwise().norm().maxCoeff();
  Matrix a = Matrix::Identity(b, b);
  int clear = 0;
  for (int t = 0; t <= steps; ++t) {
    CAPTURE(t);
    const Matrix y = blocks * a;
    CHECK(std::fabs(g.scores[static_cast<std::size_t>(t)] - (y.maxCoeff() - y.minCoeff())) <= 2 * e);
    if (t == steps) break;
    // The peak's channel, and how far it leads every other channel's |y|.
    Eigen::Index r_hi, c_hi, r_lo, c_lo;
    const double hi = y.maxCoeff(&r_hi, &c_hi), lo = y.minCoeff(&r_lo, &c_lo);
    const Eigen::Index channel = -lo > hi ? c_lo : c_hi;
    Eigen::RowVectorXd others = y.cwiseAbs().colwise().maxCoeff();
    others(channel) = 0;
    if (std::max(hi, -lo) - others.maxCoeff() > 2 * e) {
      ++clear;
      CHECK(g.pivots[static_cast<std::size_t>(t)] == channel);
    }
    Matrix step = base.cast<double>();
    const Eigen::Index d = g.pivots[static_cast<std::size_t>(t)];
    step.row(0).swap(step.row(d));
    step.col(0).swap(step.col(d));
    a = (a * step).eval();
  }
  CHECK(clear >= steps / 2);  // the pivot check is not vacuous
}

TEST_CASE("nearest_orthogonal: a drifted rotation is refused with the way out, and projected it is accepted") {
  // A float rotation drifted as products in float/TF32 leave it: Q + E with
  // |E| ~ 1e-4, far beyond require_orthogonal's 8·√n·ε (1.1e-5 at n = 128).
  const Eigen::Index n = 128;
  const Matrix q = some_orthogonal(n, 5);
  const Eigen::MatrixXf drifted = (q + 1e-4 * oq::test::gaussian<double>(n, n, 6)).cast<float>();
  CHECK_THROWS_WITH_AS(duquant_base_block(drifted.bottomRightCorner(n - 1, n - 1)),
                       doctest::Contains("can be projected with oq::transform::nearest_orthogonal"),
                       std::invalid_argument);
  const Eigen::MatrixXf projected = nearest_orthogonal(drifted.bottomRightCorner(n - 1, n - 1));
  CHECK_NOTHROW(duquant_base_block(projected));
  const Eigen::MatrixXd p = nearest_orthogonal(drifted.cast<double>());
  CHECK((p.transpose() * p - Matrix::Identity(n, n)).cwiseAbs().maxCoeff() <= 1e-13);
  // The nearest: within the drift of q (Frobenius), not merely some orthogonal matrix.
  CHECK((p - drifted.cast<double>()).norm() <= (q - drifted.cast<double>()).norm());
  // An orthogonal matrix is its own projection.
  CHECK((nearest_orthogonal(q) - q).cwiseAbs().maxCoeff() <= 1e-13);
  CHECK_THROWS_AS(nearest_orthogonal(Matrix(3, 4)), std::invalid_argument);
  CHECK_THROWS_AS(nearest_orthogonal(Matrix(0, 0)), std::invalid_argument);
  Matrix nan = q;
  nan(3, 4) = std::nan("");
  CHECK_THROWS_WITH_AS(nearest_orthogonal(nan), doctest::Contains("m(3, 4) is nan"), std::domain_error);
}

TEST_CASE("bad input") {
  {
    const Matrix base8 = duquant_base_block(Matrix::Identity(7, 7));
    const Matrix x = oq::test::gaussian<double>(2, 16, 1);
    const GreedyRotationOptions weighted{.steps = 4, .score = GreedyScore::kActivationTimesWeight, .progress = {}};
    CHECK_THROWS_WITH_AS(greedy_block_rotation(x, base8, weighted), doctest::Contains("needs the weights"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(greedy_block_rotation(x, oq::test::gaussian<double>(3, 8, 2), base8, weighted),
                         doctest::Contains("w must have x's 16 columns"), std::invalid_argument);
    Matrix w_nan = oq::test::gaussian<double>(3, 16, 2);
    w_nan(2, 9) = std::numeric_limits<double>::infinity();
    CHECK_THROWS_WITH_AS(greedy_block_rotation(x, w_nan, base8, weighted), doctest::Contains("w(2, 9)"),
                         std::domain_error);
  }
  const Matrix base = duquant_base_block(Matrix::Identity(7, 7));
  CHECK_THROWS_WITH_AS(greedy_block_rotation(oq::test::gaussian<double>(2, 12, 1), base),
                       doctest::Contains("the block size (8) must divide the channel count of x (12)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(greedy_block_rotation(oq::test::gaussian<double>(2, 16, 1), base,
                                             {.steps = 4, .score = GreedyScore::kRange, .progress = {}, .threads = -1}),
                       doctest::Contains("options.threads must be >= 0"), std::invalid_argument);
  {
    oq::cpu::ThreadPool pool(2);
    CHECK_THROWS_WITH_AS(
        greedy_block_rotation(oq::test::gaussian<double>(2, 16, 1), base,
                              {.steps = 4, .score = GreedyScore::kRange, .progress = {}, .threads = 2, .pool = &pool}),
        doctest::Contains("options.threads must be 0 when options.pool is given"), std::invalid_argument);
  }
  CHECK_THROWS_WITH_AS(greedy_block_rotation(oq::test::gaussian<double>(2, 16, 1), base, {.steps = -1}),
                       doctest::Contains("options.steps must be in [0, 65536], got -1"), std::invalid_argument);
  // Bounded (kMaxGreedySteps): INT_MAX steps would reserve 32 GiB of pivots
  // and scores (bad_alloc) and run for ever.
  CHECK_THROWS_WITH_AS(
      greedy_block_rotation(oq::test::gaussian<double>(2, 16, 1), base, {.steps = std::numeric_limits<int>::max()}),
      doctest::Contains("options.steps must be in [0, 65536], got 2147483647"), std::invalid_argument);
  Matrix nan = oq::test::gaussian<double>(2, 16, 1);
  nan(1, 3) = std::nan("");
  CHECK_THROWS_WITH_AS(greedy_block_rotation(nan, base), doctest::Contains("x(1, 3) is nan"), std::domain_error);
  CHECK_THROWS_WITH_AS(duquant_base_block(Matrix::Ones(3, 3)), doctest::Contains("q_prime must be orthogonal"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(duquant_base_block(Matrix::Identity(3, 4)), doctest::Contains("q_prime must be 3 x 3"),
                       std::invalid_argument);
}

TEST_CASE("rotate_blocks_in_place: y·diag(r, …, r), across the tile boundary") {
  // 300 × 64 with b = 8: the blocked view has 2,400 rows, more than one
  // 2,048-row tile. Reference: the dense product with the block-diagonal
  // matrix, in double, written out entry by entry.
  std::mt19937 rng(11);
  std::normal_distribution<double> normal;
  const Eigen::Index rows = 300, cols = 64, b = 8;
  oq::transform::RowMajorMatrix<double> y(rows, cols);
  for (Eigen::Index i = 0; i < y.size(); ++i) y.data()[i] = normal(rng);
  Eigen::MatrixXd r(b, b);
  for (Eigen::Index i = 0; i < r.size(); ++i) r.data()[i] = normal(rng);
  Eigen::MatrixXd expected = Eigen::MatrixXd::Zero(rows, cols);
  for (Eigen::Index t = 0; t < rows; ++t)
    for (Eigen::Index block = 0; block < cols / b; ++block)
      for (Eigen::Index j = 0; j < b; ++j)
        for (Eigen::Index i = 0; i < b; ++i) expected(t, block * b + j) += y(t, block * b + i) * r(i, j);
  oq::transform::rotate_blocks_in_place(y, r);
  CHECK((y - expected).cwiseAbs().maxCoeff() <= 1e-12);
  // The transpose undoes an orthogonal r.
  const Eigen::MatrixXd q = Eigen::HouseholderQR<Eigen::MatrixXd>(r).householderQ();
  oq::transform::RowMajorMatrix<double> z = expected;
  oq::transform::rotate_blocks_in_place(z, q);
  oq::transform::rotate_blocks_in_place(z, q.transpose());
  CHECK((z - expected).cwiseAbs().maxCoeff() <= 1e-12);
  // No rows: nothing to do. A block size that does not divide the columns,
  // or a non-square r: refused, y untouched.
  oq::transform::RowMajorMatrix<double> empty(0, cols);
  oq::transform::rotate_blocks_in_place(empty, r);
  CHECK(empty.rows() == 0);
  CHECK_THROWS_WITH_AS(oq::transform::rotate_blocks_in_place(z, Eigen::MatrixXd::Identity(3, 3)),
                       doctest::Contains("block size (3) must divide the column count of y (64)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(oq::transform::rotate_blocks_in_place(z, Eigen::MatrixXd::Identity(8, 4)),
                       doctest::Contains("r must be square and non-empty, got 8 x 4"), std::invalid_argument);
  CHECK((z - expected).cwiseAbs().maxCoeff() <= 1e-12);
}

TEST_CASE("greedy_thread_pool: the caller's pool where it has threads, else one started here, else none") {
  std::optional<oq::cpu::ThreadPool> own;
  oq::cpu::ThreadPool two(2), one(1);
  CHECK(oq::transform::greedy_thread_pool(8, &two, own) == &two);
  CHECK(oq::transform::greedy_thread_pool(8, &one, own) == nullptr);  // one thread: the caller's own
  CHECK_FALSE(own.has_value());
  CHECK(oq::transform::greedy_thread_pool(1, nullptr, own) == nullptr);
  oq::cpu::ThreadPool* started = oq::transform::greedy_thread_pool(3, nullptr, own);
  REQUIRE(started != nullptr);
  CHECK(started == &*own);
  CHECK(started->size() == 3);
}

TEST_CASE("DenseMatrix and RowMajorMatrix are oq/detail/eigen_types.hpp's, not a second definition") {
  static_assert(std::is_same_v<DenseMatrix<double>, oq::detail::DenseMatrix<double>>);
  static_assert(std::is_same_v<RowMajorMatrix<float>, oq::detail::RowMajorMatrix<float>>);
  static_assert(std::is_same_v<DenseMatrix<double>, Eigen::MatrixXd>);
  // Row-major: entry (i, j) at i·cols + j, the rows contiguous as files and
  // kernels store them; DenseMatrix column-major.
  RowMajorMatrix<int> m(2, 3);
  m << 0, 1, 2, 3, 4, 5;
  for (int i = 0; i < 6; ++i) CHECK(m.data()[i] == i);
  const DenseMatrix<int> d = m;
  CHECK(d.data()[1] == 3);
}
