#include <oq/quant/quantize.hpp>
#include <oq/transform/duquant.hpp>
#include <oq/transform/duquant_io.hpp>
#include <oq/transform/hadamard.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <Eigen/QR>

#include <cmath>
#include <random>
#include <sstream>
#include <string>
#include <stdexcept>
#include <vector>

using namespace oq::transform;
using Matrix = Eigen::MatrixXd;

namespace {

template <class Scalar = double>
std::vector<DenseMatrix<Scalar>> q_primes(int count, Eigen::Index b, std::uint64_t seed) {
  std::vector<DenseMatrix<Scalar>> qs;
  for (int i = 0; i < count; ++i) {
    const Matrix q = Eigen::HouseholderQR<Matrix>(oq::test::gaussian<double>(b - 1, b - 1, seed + i)).householderQ();
    qs.push_back(q.cast<Scalar>());
  }
  return qs;
}

// Activations with planted massive outliers and outlier channels, LLM-like.
Matrix planted(Eigen::Index tokens, Eigen::Index channels, std::uint64_t seed) {
  Matrix x = oq::test::gaussian<double>(tokens, channels, seed, 0.5);
  x.col(7) *= 20.0;
  x.col(channels / 2 + 3) *= 15.0;
  x(0, 11) = 1500.0;
  x(5, channels - 9) = -900.0;
  return x;
}

}  // namespace

TEST_CASE("M is orthogonal and X·Wᵀ is preserved, with and without smoothing") {
  const Matrix x = planted(48, 128, 1);
  const Matrix w = oq::test::gaussian<double>(40, 128, 2);
  DuQuantOptions options;
  options.block_size = 32;
  options.greedy_steps = 24;
  for (bool smooth : {false, true}) {
    CAPTURE(smooth);
    Eigen::VectorXd s;
    if (smooth) s = (x.cwiseAbs().colwise().maxCoeff().transpose().array().sqrt() + 0.5).matrix();
    const auto t = calibrate_duquant(x, options, q_primes(2, 32, 10), s);
    CHECK(t.rotations().size() == 2);
    CHECK(t.permutations().size() == 1);
    const Matrix m = t.matrix();
    CHECK((m * m.transpose() - Matrix::Identity(128, 128)).cwiseAbs().maxCoeff() < 1e-12);
    const Matrix y = x * w.transpose();
    const Matrix y_hat = t.apply(x) * t.fold_into_weight(w).transpose();
    CHECK((y_hat - y).norm() / y.norm() < 1e-12);
    CHECK((t.invert(t.apply(x)) - x).norm() / x.norm() < 1e-13);
    // apply() is X·diag(s)⁻¹·M.
    Matrix xs = x;
    if (smooth) xs = x * s.cwiseInverse().asDiagonal();
    CHECK((Matrix(t.apply(x)) - xs * m).norm() / x.norm() < 1e-13);
  }
}

TEST_CASE("weight-aware calibration: the weights follow the activations through every stage") {
  const Matrix x = planted(40, 96, 21);
  Matrix w = oq::test::gaussian<double>(24, 96, 22, 0.1);
  w.col(40) *= 50.0;  // a weight outlier channel where the activations are ordinary
  DuQuantOptions options;
  options.block_size = 32;
  options.greedy_steps = 16;
  options.score = GreedyScore::kActivationTimesWeight;
  for (bool smooth : {false, true}) {
    CAPTURE(smooth);
    Eigen::VectorXd s;
    if (smooth) s = (x.cwiseAbs().colwise().maxCoeff().transpose().array().sqrt() + 0.5).matrix();
    const auto qs = q_primes(2, 32, 30);
    const auto t = calibrate_duquant(x, w, options, qs, s);
    const Matrix m = t.matrix();
    CHECK((m * m.transpose() - Matrix::Identity(96, 96)).cwiseAbs().maxCoeff() < 1e-12);
    const Matrix y = x * w.transpose();
    CHECK((t.apply(x) * t.fold_into_weight(w).transpose() - y).norm() / y.norm() < 1e-12);
    // Stage 2 must be the greedy rotation of what stage 1 made of x AND of w:
    // smoothed, rotated by R₁ block by block, permuted by P.
    using RowMatrix = Eigen::Matrix<double, -1, -1, Eigen::RowMajor>;
    RowMatrix xs = x, ws = w;
    if (smooth) {
      xs = xs * s.cwiseInverse().asDiagonal();
      ws = ws * s.asDiagonal();
    }
    auto rotate_blocks = [](RowMatrix& a, const Matrix& r) {
      Eigen::Map<RowMatrix> blocks(a.data(), a.rows() * (a.cols() / r.rows()), r.rows());
      blocks = (blocks * r).eval();
    };
    rotate_blocks(xs, t.rotations()[0]);
    rotate_blocks(ws, t.rotations()[0]);
    const RowMatrix x1 = xs(Eigen::all, t.permutations()[0]);
    const RowMatrix w1 = ws(Eigen::all, t.permutations()[0]);
    const GreedyRotationOptions greedy{16, GreedyScore::kActivationTimesWeight, {}};
    const auto stage2 = greedy_block_rotation(x1, w1, duquant_base_block(qs[1]), greedy);
    CHECK((stage2.rotation - t.rotations()[1]).cwiseAbs().maxCoeff() < 1e-12);
  }
  // The weights change the result: the activation-only calibration differs.
  DuQuantOptions range = options;
  range.score = GreedyScore::kRange;
  CHECK(calibrate_duquant(x, w, options, q_primes(2, 32, 30)).matrix() !=
        calibrate_duquant(x, range, q_primes(2, 32, 30)).matrix());
  // The generator overload draws the same Q′ as q_primes from the same seed would.
  std::mt19937_64 g1(5), g2(5);
  CHECK(calibrate_duquant(x, w, options, g1).matrix() == calibrate_duquant(x, w, options, g2).matrix());
}

TEST_CASE("float transforms are orthogonal to float precision") {
  const Eigen::MatrixXf x = planted(64, 256, 3).cast<float>();
  DuQuantOptions options;
  options.greedy_steps = 64;
  const auto t = calibrate_duquant(x, options, q_primes<float>(2, 128, 20));
  const Eigen::MatrixXf m = t.matrix();
  CHECK((m * m.transpose() - Eigen::MatrixXf::Identity(256, 256)).cwiseAbs().maxCoeff() < 1e-5f);
}

TEST_CASE("calibration is a pure function of its inputs") {
  const Matrix x = planted(32, 64, 4);
  DuQuantOptions options;
  options.block_size = 16;
  options.greedy_steps = 10;
  options.permutation_rounds = 2;
  const auto a = calibrate_duquant(x, options, q_primes(3, 16, 5));
  const auto b = calibrate_duquant(x, options, q_primes(3, 16, 5));
  CHECK(a.matrix() == b.matrix());
  CHECK(a.permutations() == b.permutations());
  CHECK(a.rotations().size() == 3);
  int calls = 0;
  options.progress = [&](int, int, int) { ++calls; };
  calibrate_duquant(x, options, q_primes(3, 16, 5));
  CHECK(calls == 3 * 10);
}

TEST_CASE("on planted outliers DuQuant cuts max|x| and the 4-bit per-token error of ordinary tokens below RTN") {
  const Matrix x = planted(128, 512, 6);
  DuQuantOptions options;  // block 128, 256 steps, one permutation: the paper's defaults
  const auto t = calibrate_duquant(x, options, q_primes(2, 128, 30));
  const Matrix x_hat = t.apply(x);
  // A single massive entry v in a block spreads to about v/√b at best; the
  // random Q′ makes the spread uneven, so ask for half of the √b factor.
  CHECK(x.cwiseAbs().maxCoeff() / x_hat.cwiseAbs().maxCoeff() > 0.5 * std::sqrt(128.0));

  // Errors compared in the rotated domain are errors in the original one too
  // (M is orthogonal), token by token.
  const auto spec = oq::quant::QuantSpec::per_token(4, false);
  const Matrix err_rtn = oq::quant::fake_quantize(x, spec) - x;
  const Matrix err_duquant = oq::quant::fake_quantize(x_hat, spec) - x_hat;
  // Tokens 0 and 5 carry the massive activations.
  std::vector<Eigen::Index> ordinary;
  for (Eigen::Index r = 0; r < x.rows(); ++r)
    if (r != 0 && r != 5) ordinary.push_back(r);
  const double rtn = err_rtn(ordinary, Eigen::all).norm() / x(ordinary, Eigen::all).norm();
  const double duquant = err_duquant(ordinary, Eigen::all).norm() / x(ordinary, Eigen::all).norm();
  const double rtn_massive = err_rtn.row(0).norm() / x.row(0).norm();
  const double duquant_massive = err_duquant.row(0).norm() / x.row(0).norm();
  MESSAGE("4-bit per-token relative error, ordinary tokens: RTN " << rtn << ", DuQuant " << duquant
                                                                  << "; massive token 0: RTN " << rtn_massive
                                                                  << ", DuQuant " << duquant_massive);
  // Channel outliers (x20, x15) set every ordinary token's range under RTN;
  // rotated, they are spread over their blocks and the step shrinks.
  CHECK(duquant < 0.5 * rtn);

  // Block Hadamard of the same block size (QuaRot-style), for the ordering.
  // Here it is ahead of DuQuant on both kinds of token (measured: ordinary
  // .110 vs .118, token 0 .053 vs .101). On an isolated spike v, Hadamard
  // reaches |v|/√b, the least that any one orthogonal block transform can
  // (the block row keeps its norm ≥ |v|). DuQuant stays above it: B's first
  // row is (1, 1ᵀQ′)/√b, not uniform (its largest entry is ≈ 2.5/√b for a
  // Haar Q′ of size 127), and one rotation is shared by all blocks, so the
  // greedy step that spreads token 5's spike (another block position)
  // re-mixes token 0's row. The permutation between the rotations could in
  // principle spread a spike past one block, but the kept greedy steps do
  // not get there. Where DuQuant is ahead is the next test: channel outliers
  // crowding one block.
  Matrix x_had = x;
  block_hadamard_rows(x_had, 128);
  const Matrix err_had = oq::quant::fake_quantize(x_had, spec) - x_had;
  const double hadamard = err_had(ordinary, Eigen::all).norm() / x(ordinary, Eigen::all).norm();
  const double hadamard_massive = err_had.row(0).norm() / x.row(0).norm();
  MESSAGE("block Hadamard: ordinary tokens " << hadamard << ", massive token 0 " << hadamard_massive);
  CHECK(hadamard < 0.5 * rtn);
}

TEST_CASE("where channel outliers crowd one block, DuQuant's 4-bit per-token error falls below block Hadamard's") {
  // Eight channels of block 0 (of 4) are 20x the others (σ = 0.5), for every
  // token: the case the zigzag permutation exists for (paper §3.2).
  Matrix x = oq::test::gaussian<double>(128, 512, 6, 0.5);
  for (Eigen::Index c = 3; c < 128; c += 16) x.col(c) *= 20.0;
  const auto t = calibrate_duquant(x, DuQuantOptions{}, q_primes(2, 128, 30));
  const Matrix x_hat = t.apply(x);
  Matrix x_had = x;
  block_hadamard_rows(x_had, 128);

  const auto spec = oq::quant::QuantSpec::per_token(4, false);
  const auto error = [&](const Matrix& y) { return (oq::quant::fake_quantize(y, spec) - y).norm() / x.norm(); };
  const double rtn = error(x);
  const double hadamard = error(x_had);
  const double duquant = error(x_hat);
  MESSAGE("4-bit per-token relative error: RTN " << rtn << ", block Hadamard " << hadamard << ", DuQuant "
                                                 << duquant);
  // Hadamard keeps the eight outliers' energy inside block 0: its entries have
  // std σ·√((8·20² + 120)/128) ≈ 5.1σ there and σ elsewhere, and block 0 sets
  // every token's range. DuQuant's permutation deals the large channels over
  // all four blocks (two each for the zigzag order 0,1,2,3,3,2,1,0) before the
  // second rotation, which gives every block std ≈ σ·√((2·20² + 126)/128) ≈
  // 2.7σ: about half the range, so about half the step and the error. The
  // balance after the first greedy rotation is not perfect (measured .117 vs
  // .154, ratio .76), so the check asks for 0.85.
  CHECK(hadamard < 0.6 * rtn);
  CHECK(duquant < 0.85 * hadamard);
}

TEST_CASE("calibration from a seeded generator is reproducible") {
  const Matrix x = planted(32, 64, 11);
  DuQuantOptions options;
  options.block_size = 16;
  options.greedy_steps = 8;
  std::mt19937_64 a(5), b(5), c(6);
  const auto ta = calibrate_duquant(x, options, a);
  const auto tb = calibrate_duquant(x, options, b);
  const auto tc = calibrate_duquant(x, options, c);
  CHECK(ta.matrix() == tb.matrix());
  CHECK(ta.matrix() != tc.matrix());
  const Matrix m = ta.matrix();
  CHECK((m * m.transpose() - Matrix::Identity(64, 64)).cwiseAbs().maxCoeff() < 1e-12);
}

TEST_CASE("bad input") {
  const Matrix x = planted(8, 64, 7);
  DuQuantOptions options;
  options.block_size = 48;
  CHECK_THROWS_WITH_AS(calibrate_duquant(x, options, q_primes(2, 48, 1)),
                       doctest::Contains("options.block_size (48) must divide the channel count of x (64)"),
                       std::invalid_argument);
  options.block_size = 16;
  CHECK_THROWS_WITH_AS(calibrate_duquant(x, options, q_primes(1, 16, 1)),
                       doctest::Contains("q_primes must hold permutation_rounds + 1 = 2 matrices"),
                       std::invalid_argument);
  options.greedy_steps = -2;
  CHECK_THROWS_AS(calibrate_duquant(x, options, q_primes(2, 16, 1)), std::invalid_argument);
  options.greedy_steps = 4;
  Matrix nan = x;
  nan(3, 3) = std::nan("");
  CHECK_THROWS_AS(calibrate_duquant(nan, options, q_primes(2, 16, 1)), std::domain_error);
  std::vector<Matrix> bad = q_primes(2, 16, 1);
  bad[1](0, 0) += 0.1;
  CHECK_THROWS_WITH_AS(calibrate_duquant(x, options, bad), doctest::Contains("q_prime must be orthogonal"),
                       std::invalid_argument);
  Eigen::VectorXd s = Eigen::VectorXd::Ones(64);
  s[9] = 0;
  CHECK_THROWS_WITH_AS(calibrate_duquant(x, options, q_primes(2, 16, 1), s),
                       doctest::Contains("smoothing scales must be > 0"), std::invalid_argument);
  const auto t = calibrate_duquant(x, options, q_primes(2, 16, 1));
  CHECK_THROWS_WITH_AS(t.apply(Matrix::Zero(3, 60)), doctest::Contains("x must have 64 columns"),
                       std::invalid_argument);
  CHECK_THROWS_AS(DuQuantTransform<double>(64, {Matrix::Identity(16, 16)}, {Permutation{0, 1}}), std::invalid_argument);
  DuQuantOptions weighted = options;
  weighted.score = GreedyScore::kActivationTimesWeight;
  CHECK_THROWS_WITH_AS(calibrate_duquant(x, weighted, q_primes(2, 16, 1)), doctest::Contains("needs the weights"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(calibrate_duquant(x, Matrix::Ones(4, 60), weighted, q_primes(2, 16, 1)),
                       doctest::Contains("w must have x's 64 columns"), std::invalid_argument);
  Matrix w_nan = Matrix::Ones(4, 64);
  w_nan(1, 2) = std::nan("");
  CHECK_THROWS_AS(calibrate_duquant(x, w_nan, weighted, q_primes(2, 16, 1)), std::domain_error);
}

TEST_CASE("save and load round-trip exactly; malformed streams give clear errors") {
  const Matrix x = planted(16, 64, 8);
  DuQuantOptions options;
  options.block_size = 16;
  options.greedy_steps = 6;
  const Eigen::VectorXd s = Eigen::VectorXd::LinSpaced(64, 0.5, 2.0);
  const auto t = calibrate_duquant(x, options, q_primes(2, 16, 9), s);
  std::ostringstream out(std::ios::binary);
  save_duquant(out, t);
  const std::string bytes = out.str();
  CHECK(bytes.size() == 48 + 2 * 16 * 16 * 8 + 64 * 8 + 64 * 8);
  CHECK(bytes.substr(0, 7) == "OQDUQNT");
  {
    std::istringstream in(bytes, std::ios::binary);
    const auto back = load_duquant<double>(in);
    CHECK(back.matrix() == t.matrix());
    CHECK(back.permutations() == t.permutations());
    CHECK(back.smoothing() == t.smoothing());
  }
  auto load = [](const std::string& data) {
    std::istringstream in(data, std::ios::binary);
    return load_duquant<double>(in);
  };
  CHECK_THROWS_WITH_AS(load(bytes.substr(0, bytes.size() - 3)), doctest::Contains("the stream ended inside"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(load("not a transform at all"), doctest::Contains("magic"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(load(std::string()), doctest::Contains("magic"), std::invalid_argument);
  {
    std::istringstream in(bytes, std::ios::binary);
    CHECK_THROWS_WITH_AS(load_duquant<float>(in), doctest::Contains("8-byte scalars"), std::invalid_argument);
  }
  std::string huge = bytes;
  huge[16 + 7] = '\x7f';  // channels' top byte
  CHECK_THROWS_WITH_AS(load(huge), doctest::Contains("channels must be in"), std::invalid_argument);
  std::string bad_rotation = bytes;
  bad_rotation[48 + 3] ^= 0x40;  // a bit of the first rotation entry
  CHECK_THROWS_WITH_AS(load(bad_rotation), doctest::Contains("must be orthogonal"), std::invalid_argument);
  std::string bad_perm = bytes;
  const std::size_t perm_at = 48 + 2 * 16 * 16 * 8;
  bad_perm.replace(perm_at, 8, bytes.substr(perm_at + 8, 8));  // a repeated channel
  CHECK_THROWS_WITH_AS(load(bad_perm), doctest::Contains("not a permutation"), std::invalid_argument);
}
