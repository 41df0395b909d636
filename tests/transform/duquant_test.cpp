#include <oq/cpu/thread_pool.hpp>
#include <oq/quant/quantize.hpp>
#include <oq/transform/duquant.hpp>
#include <oq/transform/duquant_io.hpp>
#include <oq/transform/hadamard.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <Eigen/QR>

#include <array>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <streambuf>
#include <string>
#include <stdexcept>
#include <utility>
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

// u64 little-endian at `offset` of a saved transform's bytes (duquant_io.hpp's header).
void put_u64(std::string& bytes, std::size_t offset, std::uint64_t value) {
  for (std::size_t i = 0; i < 8; ++i) bytes[offset + i] = static_cast<char>((value >> (8 * i)) & 0xff);
}

// A stream that cannot seek or tell its position, like a pipe: load_duquant
// cannot measure it and must bound its memory by what it reads.
class PipeBuffer : public std::streambuf {
 public:
  explicit PipeBuffer(std::string data) : data_(std::move(data)) {
    setg(data_.data(), data_.data(), data_.data() + data_.size());
  }

 private:
  std::string data_;
};

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
  // The generator overload draws one Haar Q′ per stage, in order, with
  // random_orthogonal (duquant.hpp): the same transform as the q_primes
  // overload given those draws from an identically seeded generator.
  std::mt19937_64 g1(5), g2(5);
  std::vector<Matrix> drawn;
  for (int stage = 0; stage < 2; ++stage) drawn.push_back(random_orthogonal<double>(31, g2));
  const auto from_generator = calibrate_duquant(x, w, options, g1);
  const auto from_q_primes = calibrate_duquant(x, w, options, drawn);
  CHECK(from_generator.matrix() == from_q_primes.matrix());
  CHECK(from_generator.permutations() == from_q_primes.permutations());
  CHECK(g1 == g2);  // and it drew exactly those, no more
  // The activation-only generator overload likewise.
  std::mt19937_64 g3(6), g4(6);
  drawn.clear();
  for (int stage = 0; stage < 2; ++stage) drawn.push_back(random_orthogonal<double>(31, g4));
  CHECK(calibrate_duquant(x, range, g3).matrix() == calibrate_duquant(x, range, drawn).matrix());
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
  // The progress callback: after every greedy step of every rotation, both
  // counted from 1 (rotation 1..rounds + 1, step 1..greedy_steps), in order.
  std::vector<std::array<int, 3>> calls;
  options.progress = [&](int rotation, int done, int total) { calls.push_back({rotation, done, total}); };
  calibrate_duquant(x, options, q_primes(3, 16, 5));
  std::vector<std::array<int, 3>> expected;
  for (int rotation = 1; rotation <= 3; ++rotation)
    for (int step = 1; step <= 10; ++step) expected.push_back({rotation, step, 10});
  CHECK(calls == expected);

  // With 2 and 3 permutation rounds (3 and 4 rotations), apply() is still
  // X·M for the dense M = R₁·P₁·R₂·P₂·… and invert() undoes it (docs/design.md §6):
  // every stage, not only the first permutation, is composed in order.
  for (int rounds : {2, 3}) {
    CAPTURE(rounds);
    DuQuantOptions more = options;
    more.progress = {};
    more.permutation_rounds = rounds;
    const auto t = calibrate_duquant(x, more, q_primes(rounds + 1, 16, 40));
    REQUIRE(t.rotations().size() == static_cast<std::size_t>(rounds + 1));
    const Matrix m = t.matrix();
    CHECK((m * m.transpose() - Matrix::Identity(64, 64)).cwiseAbs().maxCoeff() < 1e-12);
    CHECK((Matrix(t.apply(x)) - x * m).norm() / x.norm() < 1e-13);
    CHECK((t.invert(t.apply(x)) - x).norm() / x.norm() < 1e-13);
    // The last permutation is not the identity, so its place in M is tested.
    Permutation identity(64);
    std::iota(identity.begin(), identity.end(), Eigen::Index(0));
    CHECK(t.permutations().back() != identity);
  }
}

TEST_CASE("calibration on 1, 2 or 5 threads or a caller's pool gives the same transform, bit for bit") {
  // Float, smoothing first (nothing for the lazy evaluation to prune), a
  // second permutation round, and the weight-aware score; blocked rows not a
  // whole number of the greedy's 64-row chunks (203·256/32 = 1624, 25.4
  // chunks: enough for 3 tasks at 4 chunks a task).
  const Eigen::MatrixXf x = planted(203, 256, 50).cast<float>();
  const Eigen::MatrixXf w = oq::test::heavy_tailed<float>(24, 256, 51);
  const Eigen::VectorXf s = (x.cwiseAbs().colwise().maxCoeff().transpose().array().sqrt() + 0.5f).matrix();
  oq::cpu::ThreadPool pool(3);
  for (const GreedyScore score : {GreedyScore::kRange, GreedyScore::kActivationTimesWeight}) {
    CAPTURE(int(score));
    DuQuantOptions options;
    options.block_size = 32;
    options.greedy_steps = 24;
    options.permutation_rounds = 2;
    options.score = score;
    options.threads = 1;
    const auto qs = q_primes<float>(3, 32, 52);
    const auto one = calibrate_duquant(x, w, options, qs, s);
    for (const int threads : {2, 5, 0}) {
      CAPTURE(threads);
      options.threads = threads;
      options.pool = threads == 0 ? &pool : nullptr;
      const auto t = calibrate_duquant(x, w, options, qs, s);
      CHECK(t.permutations() == one.permutations());
      for (std::size_t i = 0; i < one.rotations().size(); ++i) CHECK(t.rotations()[i] == one.rotations()[i]);
    }
  }
  DuQuantOptions options;
  options.block_size = 32;
  options.threads = 2;
  options.pool = &pool;
  CHECK_THROWS_WITH_AS(calibrate_duquant(x, options, q_primes<float>(2, 32, 1)),
                       doctest::Contains("options.threads must be 0 when options.pool is given"),
                       std::invalid_argument);
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

  // The constructor names the bad part by its index.
  const Permutation identity64 = [] {
    Permutation p(64);
    std::iota(p.begin(), p.end(), Eigen::Index(0));
    return p;
  }();
  CHECK_THROWS_WITH_AS(DuQuantTransform<double>(64, {Matrix::Identity(16, 16), 2.0 * Matrix::Identity(16, 16)},
                                                {identity64}),
                       doctest::Contains("rotations[1] must be orthogonal"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(DuQuantTransform<double>(64, {Matrix::Identity(16, 16), Matrix::Identity(8, 8)}, {identity64}),
                       doctest::Contains("rotations[1] must be 16 x 16, got 8 x 8"), std::invalid_argument);
  Permutation repeated = identity64;
  repeated[5] = 4;
  CHECK_THROWS_WITH_AS(DuQuantTransform<double>(64, {Matrix::Identity(16, 16), Matrix::Identity(16, 16),
                                                     Matrix::Identity(16, 16)},
                                                {identity64, repeated}),
                       doctest::Contains("permutations[1] is not a permutation of 0..63: permutations[1][5] = 4"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(DuQuantTransform<double>(64, {Matrix::Identity(16, 16), Matrix::Identity(16, 16)},
                                                {Permutation{0, 1}}),
                       doctest::Contains("permutations[0] must have 64 entries, got 2"), std::invalid_argument);
}

TEST_CASE("Q′ of the wrong size is refused, not taken as another block size") {
  // duquant_base_block takes b from Q′ (b = rows + 1): 15 x 15 matrices with
  // options.block_size = 32 would give 16-blocks while the zigzag deals
  // channels to 32-blocks.
  const Matrix x = planted(8, 64, 12);
  DuQuantOptions options;
  options.block_size = 32;
  options.greedy_steps = 4;
  CHECK_THROWS_WITH_AS(calibrate_duquant(x, options, q_primes(2, 16, 1)),
                       doctest::Contains("q_primes[0] must be (options.block_size - 1) x (options.block_size - 1) = "
                                         "31 x 31, got 15 x 15"),
                       std::invalid_argument);
  std::vector<Matrix> mixed = q_primes(2, 32, 1);
  mixed[1] = q_primes(1, 24, 2)[0];
  CHECK_THROWS_WITH_AS(calibrate_duquant(x, options, mixed), doctest::Contains("q_primes[1] must be"),
                       std::invalid_argument);
  options.score = GreedyScore::kActivationTimesWeight;
  CHECK_THROWS_WITH_AS(calibrate_duquant(x, Matrix::Ones(3, 64), options, q_primes(2, 16, 1)),
                       doctest::Contains("q_primes[0] must be"), std::invalid_argument);
}

TEST_CASE("the generator overloads check x and the options before drawing any Q′") {
  // A check after the draws would cost a QR of (block_size − 1)² entries
  // first (bad_alloc for 2^40; seconds for 1500) and loop permutation_rounds
  // times. The generator left untouched shows that nothing was drawn.
  const Matrix x = planted(8, 64, 13);
  const Matrix w = Matrix::Ones(3, 64);
  auto refused = [&](const DuQuantOptions& options, const std::string& message, const Matrix& input) {
    std::mt19937_64 g(1);
    const std::mt19937_64 untouched = g;
    CHECK_THROWS_WITH_AS(calibrate_duquant(input, options, g), doctest::Contains(message.c_str()),
                         std::invalid_argument);
    CHECK(g == untouched);
    CHECK_THROWS_WITH_AS(calibrate_duquant(input, w, options, g), doctest::Contains(message.c_str()),
                         std::invalid_argument);
    CHECK(g == untouched);
  };
  DuQuantOptions options;
  options.greedy_steps = 4;
  for (Eigen::Index b : {Eigen::Index(-3), Eigen::Index(0), Eigen::Index(1)}) {
    CAPTURE(b);
    options.block_size = b;
    refused(options, "options.block_size must be >= 2, got " + std::to_string(b), x);
  }
  for (Eigen::Index b : {Eigen::Index(128), Eigen::Index(1500), Eigen::Index(1) << 40}) {
    CAPTURE(b);
    options.block_size = b;
    refused(options, "options.block_size (" + std::to_string(b) + ") must divide the channel count of x (64)", x);
  }
  options.block_size = 16;
  for (int rounds : {-1, INT_MIN, kMaxPermutationRounds + 1, INT_MAX}) {
    CAPTURE(rounds);
    options.permutation_rounds = rounds;
    refused(options, "options.permutation_rounds must be in [0, 63], got " + std::to_string(rounds), x);
  }
  options.permutation_rounds = 1;
  for (int steps : {-1, kMaxGreedySteps + 1, INT_MAX}) {
    CAPTURE(steps);
    options.greedy_steps = steps;
    refused(options, "options.greedy_steps must be in [0, 65536], got " + std::to_string(steps), x);
  }
  options.greedy_steps = 4;
  options.threads = -1;
  refused(options, "options.threads must be >= 0 (0: all hardware threads), got -1", x);
  options.threads = 0;
  refused(options, "x must be non-empty, got 0 x 64", Matrix(0, 64));
  refused(options, "x must be non-empty, got 8 x 0", Matrix(8, 0));
  // The q_primes overloads refuse the same (INT_MAX rounds would overflow
  // permutation_rounds + 1, and an empty x has no channels).
  options.permutation_rounds = INT_MAX;
  CHECK_THROWS_WITH_AS(calibrate_duquant(x, options, q_primes(2, 16, 1)),
                       doctest::Contains("options.permutation_rounds must be in [0, 63]"), std::invalid_argument);
  options.permutation_rounds = 1;
  CHECK_THROWS_WITH_AS(calibrate_duquant(Matrix(0, 64), options, q_primes(2, 16, 1)),
                       doctest::Contains("x must be non-empty"), std::invalid_argument);
  // Data and weights too: NaN in x, a malformed w.
  Matrix nan = x;
  nan(2, 9) = std::nan("");
  std::mt19937_64 g(1);
  const std::mt19937_64 untouched = g;
  CHECK_THROWS_WITH_AS(calibrate_duquant(nan, options, g), doctest::Contains("x(2, 9) is nan"), std::domain_error);
  CHECK_THROWS_WITH_AS(calibrate_duquant(x, Matrix::Ones(3, 60), options, g),
                       doctest::Contains("w must have x's 64 columns"), std::invalid_argument);
  DuQuantOptions weighted = options;
  weighted.score = GreedyScore::kActivationTimesWeight;
  CHECK_THROWS_WITH_AS(calibrate_duquant(x, weighted, g), doctest::Contains("needs the weights"),
                       std::invalid_argument);
  CHECK(g == untouched);
}

TEST_CASE("orthogonality is checked to the scalar type's precision") {
  // The tolerance is 8·√n·ε + n·ε_double (duquant_rotation.hpp): 1.0007·I
  // (max |QᵀQ − I| = 1.4e-3) was accepted in float at n = 128 by the former
  // 100·n·ε (1.5e-3), and (1 + 1e-13)·I (2e-13) in double (2.8e-12).
  const Eigen::MatrixXf scaled_f = 1.0007f * Eigen::MatrixXf::Identity(128, 128);
  CHECK_THROWS_WITH_AS(DuQuantTransform<float>(128, {scaled_f}, {}),
                       doctest::Contains("rotations[0] must be orthogonal"), std::invalid_argument);
  for (double factor : {1.001, 1.0 + 1e-13}) {
    CAPTURE(factor);
    CHECK_THROWS_WITH_AS(DuQuantTransform<double>(128, {factor * Matrix::Identity(128, 128)}, {}),
                         doctest::Contains("rotations[0] must be orthogonal"), std::invalid_argument);
  }
  // What oq itself makes passes: Haar and Hadamard matrices rounded to float,
  // and a float QR of the user's (measured 5.7ε at most for b ≤ 512, against
  // 8·√n·ε).
  for (Eigen::Index n : {2, 12, 64, 128, 256}) {
    CAPTURE(n);
    std::mt19937_64 rng(static_cast<std::uint64_t>(n));
    CHECK_NOTHROW(DuQuantTransform<float>(n, {random_orthogonal<float>(n, rng)}, {}));
    CHECK_NOTHROW(DuQuantTransform<float>(n, {hadamard_orthogonal<float>(n)}, {}));
    CHECK_NOTHROW(DuQuantTransform<double>(n, {hadamard_orthogonal<double>(n)}, {}));
    const Eigen::MatrixXf qr = Eigen::HouseholderQR<Eigen::MatrixXf>(
                                   oq::test::gaussian<float>(n, n, static_cast<std::uint64_t>(n)))
                                   .householderQ();
    CHECK_NOTHROW(DuQuantTransform<float>(n, {qr}, {}));
  }
}

TEST_CASE("an output that overflows the scalar type throws instead of returning Inf") {
  // Valid scales and finite inputs can still leave float's range: 1e10 / 1e-30
  // = 1e40 > FLT_MAX ≈ 3.4e38, and without smoothing the rotation of a row
  // whose norm exceeds FLT_MAX (two entries of 3e38: (3e38 + 3e38)/√2).
  const Eigen::MatrixXf identity = Eigen::MatrixXf::Identity(16, 16);
  const Eigen::MatrixXf x = Eigen::MatrixXf::Constant(2, 16, 1e10f);
  const DuQuantTransform<float> tiny(16, {identity}, {}, Eigen::VectorXf::Constant(16, 1e-30f));
  CHECK_THROWS_WITH_AS(tiny.apply(x),
                       doctest::Contains("DuQuantTransform::apply: the result x·diag(s)⁻¹·M overflowed"),
                       std::domain_error);
  const DuQuantTransform<float> huge(16, {identity}, {}, Eigen::VectorXf::Constant(16, 1e30f));
  CHECK_THROWS_WITH_AS(huge.fold_into_weight(x),
                       doctest::Contains("fold_into_weight: the result w·diag(s)·M overflowed"), std::domain_error);
  CHECK_THROWS_WITH_AS(huge.invert(x), doctest::Contains("invert: the result x_hat·Mᵀ·diag(s) overflowed"),
                       std::domain_error);
  // Within range the same transforms work.
  CHECK(tiny.apply(Eigen::MatrixXf::Constant(1, 16, 1e-10f)).allFinite());

  const DuQuantTransform<float> spread(2, {givens_spread_matrix<float>(2)}, {});
  Eigen::MatrixXf big(1, 2);
  big << 3e38f, 3e38f;
  CHECK_THROWS_WITH_AS(spread.apply(big), doctest::Contains("(0, 1) is inf"), std::domain_error);
  CHECK_THROWS_AS(spread.fold_into_weight(big), std::domain_error);
  // Calibration goes through apply() as well: smoothing that overflows x is an error, not Inf activations.
  DuQuantOptions options;
  options.block_size = 16;
  options.greedy_steps = 2;
  options.permutation_rounds = 0;
  std::vector<Eigen::MatrixXf> one_q;
  for (const Matrix& q : q_primes(1, 16, 3)) one_q.push_back(q.cast<float>());
  CHECK_THROWS_AS(calibrate_duquant(x, options, one_q, Eigen::VectorXf::Constant(16, 1e-30f)), std::domain_error);
}

TEST_CASE("greedy calibration on outliers near FLT_MAX: finite scores, a finite transform that spreads them") {
  // The greedy step scores candidate rotations by max |x·R| over the rows;
  // with entries near FLT_MAX a score computed naively (a squared norm, a sum)
  // would overflow and every candidate would tie at inf. One outlier per row
  // keeps every row's norm inside float's range, so apply() must succeed.
  for (const float magnitude : {1e30f, 1e38f, 3e38f, std::numeric_limits<float>::max()}) {
    CAPTURE(magnitude);
    Eigen::MatrixXf x = oq::test::gaussian<double>(64, 128, 17).cast<float>();
    x(3, 7) = magnitude;
    x(5, 9) = -magnitude;
    x(40, 100) = magnitude / 2;
    DuQuantOptions options;
    options.block_size = 32;
    options.greedy_steps = 8;
    std::mt19937_64 rng(0);
    const auto t = calibrate_duquant(x, options, rng);
    for (const auto& r : t.rotations()) CHECK(r.allFinite());
    const auto y = t.apply(x);
    REQUIRE(y.allFinite());
    // Orthogonal: every row keeps its norm (in double, to float precision),
    // and the outliers are spread: max |y| well below max |x| (a rotation
    // that left them in place would keep it).
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      const double before = x.row(r).cast<double>().norm(), after = y.row(r).cast<double>().norm();
      CHECK(after == doctest::Approx(before).epsilon(1e-5));
    }
    CHECK(double(y.cwiseAbs().maxCoeff()) < 0.5 * double(magnitude));
  }
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

  // Header fields (offsets in the format table of duquant_io.hpp).
  std::string not_dividing = bytes;
  put_u64(not_dividing, 24, 24);  // b = 24 does not divide C = 64
  CHECK_THROWS_WITH_AS(load(not_dividing), doctest::Contains("block size must divide channels (64)"),
                       std::invalid_argument);
  for (std::uint64_t count : {std::uint64_t(0), std::uint64_t(65), ~std::uint64_t(0)}) {
    CAPTURE(count);
    std::string bad_count = bytes;
    put_u64(bad_count, 32, count);
    CHECK_THROWS_WITH_AS(load(bad_count), doctest::Contains("rotation count must be in [1, 64], got"),
                         std::invalid_argument);
  }
  std::string bad_flag = bytes;
  put_u64(bad_flag, 40, 2);
  CHECK_THROWS_WITH_AS(load(bad_flag), doctest::Contains("smoothing flag must be 0 or 1, got 2"),
                       std::invalid_argument);
  // Stored values: scales follow the permutations, 8 bytes each.
  const std::size_t scales_at = perm_at + 64 * 8;
  auto with_scale = [&](double value) {
    std::string changed = bytes;
    std::uint64_t raw = 0;
    std::memcpy(&raw, &value, 8);
    put_u64(changed, scales_at + 5 * 8, raw);
    return changed;
  };
  CHECK_THROWS_WITH_AS(load(with_scale(-1.0)), doctest::Contains("smoothing scales must be > 0"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(load(with_scale(0.0)), doctest::Contains("smoothing scales must be > 0"),
                       std::invalid_argument);
  // NaN/Inf values are data outside the domain: std::domain_error, as the
  // io header says (and everywhere in oq).
  CHECK_THROWS_WITH_AS(load(with_scale(std::nan(""))), doctest::Contains("smoothing(5, 0) is nan"),
                       std::domain_error);
  CHECK_THROWS_WITH_AS(load(with_scale(std::numeric_limits<double>::infinity())),
                       doctest::Contains("smoothing(5, 0) is inf"), std::domain_error);
  std::string nan_rotation = bytes;
  const double nan_value = std::nan("");
  std::uint64_t nan_bits = 0;
  std::memcpy(&nan_bits, &nan_value, 8);
  put_u64(nan_rotation, 48 + 16 * 16 * 8 + 8, nan_bits);  // the second rotation's entry (0, 1)
  CHECK_THROWS_WITH_AS(load(nan_rotation), doctest::Contains("rotations[1] must be finite"), std::domain_error);

  // The same bytes through an unseekable stream load the same transform.
  PipeBuffer pipe(bytes);
  std::istream piped(&pipe);
  CHECK(load_duquant<double>(piped).matrix() == t.matrix());
}

TEST_CASE("a header that promises more than the stream holds fails before allocating it") {
  // C = b = 65536, one double rotation: 32 GiB that the stream does not hold.
  // A seekable stream is measured against the header; an unseekable one is
  // read in chunks, so either way the error is the format's, not bad_alloc.
  std::string header(48, '\0');
  header.replace(0, 8, std::string("OQDUQNT\0", 8));
  header[8] = 1;   // version
  header[12] = 8;  // double
  put_u64(header, 16, 65536);
  put_u64(header, 24, 65536);
  put_u64(header, 32, 1);
  put_u64(header, 40, 0);
  const std::string data = header + std::string(4096, '\0');
  {
    std::istringstream in(data, std::ios::binary);
    CHECK_THROWS_WITH_AS(load_duquant<double>(in),
                         doctest::Contains("the stream ended inside the data: the header promises 34359738368 bytes"),
                         std::invalid_argument);
  }
  {
    PipeBuffer pipe(data);
    std::istream in(&pipe);
    CHECK_THROWS_WITH_AS(load_duquant<double>(in), doctest::Contains("the stream ended inside a rotation block"),
                         std::invalid_argument);
  }
}

TEST_CASE("save_duquant refuses what load_duquant would refuse") {
  // 64 permutation rounds = 65 rotations: constructible, but the format (and
  // calibration) stop at kMaxPermutationRounds = 63. Saving it must fail
  // before writing, not write a file that cannot be loaded.
  const Permutation identity = {0, 1, 2, 3};
  auto transform = [&](int rounds) {
    const auto count = static_cast<std::size_t>(rounds);
    return DuQuantTransform<double>(4, std::vector<Matrix>(count + 1, Matrix::Identity(4, 4)),
                                    std::vector<Permutation>(count, identity));
  };
  std::ostringstream too_many(std::ios::binary);
  CHECK_THROWS_WITH_AS(save_duquant(too_many, transform(kMaxPermutationRounds + 1)),
                       doctest::Contains("t.rotations() must hold at most 64 matrices"), std::invalid_argument);
  CHECK(too_many.str().empty());
  // More channels than the header allows (1 x 1 blocks keep this cheap).
  std::ostringstream wide(std::ios::binary);
  const auto channels = static_cast<Eigen::Index>(kDuQuantMaxChannels) + 1;
  CHECK_THROWS_WITH_AS(save_duquant(wide, DuQuantTransform<double>(channels, {Matrix::Identity(1, 1)}, {})),
                       doctest::Contains("t.channels() must be at most 16777216"), std::invalid_argument);
  CHECK(wide.str().empty());
  // At the bound it saves and loads.
  std::stringstream at_bound(std::ios::in | std::ios::out | std::ios::binary);
  save_duquant(at_bound, transform(kMaxPermutationRounds));
  CHECK(load_duquant<double>(at_bound).rotations().size() == 64);
}

TEST_CASE("a saved rotation slightly off orthogonal (older files) is projected on load; farther off is refused") {
  // Files written before calibration projected its rotations hold float
  // rotations drifted beyond the constructor's 8·√b·ε but within the 100·b·ε
  // accepted then. Entry (0, 0) of an 8×8 identity, stored at byte 48 as a
  // float, is set to 1 + δ: max |QᵀQ − I| ≈ 2δ.
  const auto file_with = [](float entry) {
    std::ostringstream out(std::ios::binary);
    save_duquant(out, DuQuantTransform<float>(8, {Eigen::MatrixXf::Identity(8, 8)}, {}));
    std::string bytes = out.str();
    std::memcpy(bytes.data() + 48, &entry, sizeof entry);
    return bytes;
  };
  const float drifted = 1.0f + 1e-5f;  // 2e-5: above 8·√8·ε = 2.7e-6, below 100·8·ε = 9.5e-5
  Eigen::MatrixXf as_stored = Eigen::MatrixXf::Identity(8, 8);
  as_stored(0, 0) = drifted;
  CHECK_THROWS_WITH_AS(DuQuantTransform<float>(8, {as_stored}, {}), doctest::Contains("must be orthogonal"),
                       std::invalid_argument);
  std::istringstream in(file_with(drifted), std::ios::binary);
  const DuQuantTransform<float> loaded = load_duquant<float>(in);
  // The nearest orthogonal matrix to diag(1 + δ, 1, …) is the identity.
  CHECK(loaded.rotations()[0] == Eigen::MatrixXf::Identity(8, 8));
  // Saved again, it loads unchanged (projected once).
  std::stringstream again(std::ios::in | std::ios::out | std::ios::binary);
  save_duquant(again, loaded);
  CHECK(load_duquant<float>(again).rotations()[0] == loaded.rotations()[0]);
  // 2e-3 is beyond any tolerance oq ever had: a corrupt file.
  std::istringstream corrupt(file_with(1.001f), std::ios::binary);
  CHECK_THROWS_WITH_AS(load_duquant<float>(corrupt), doctest::Contains("must be orthogonal"), std::invalid_argument);
}

TEST_CASE("load_duquant<double> widens a float file exactly, and saving the result writes the float file again") {
  // A float transform with smoothing and two rotations (one permutation).
  const Eigen::MatrixXf x = planted(16, 64, 12).cast<float>();
  DuQuantOptions options;
  options.block_size = 16;
  options.greedy_steps = 6;
  const Eigen::VectorXf s = Eigen::VectorXf::LinSpaced(64, 0.5f, 2.0f);
  const DuQuantTransform<float> f = calibrate_duquant(x, options, q_primes<float>(2, 16, 13), s);
  std::ostringstream out(std::ios::binary);
  save_duquant(out, f);
  const std::string float_file = out.str();
  REQUIRE(float_file.size() == 48 + 2 * 16 * 16 * 4 + 64 * 8 + 64 * 4);

  // Before issue 22 this threw ("the file holds 4-byte scalars").
  std::istringstream in(float_file, std::ios::binary);
  const DuQuantTransform<double> d = load_duquant<double>(in);
  CHECK(d.scalar_bytes() == sizeof(float));
  CHECK(d.channels() == 64);
  REQUIRE(d.rotations().size() == 2);
  // Every entry is the float's value (float → double is exact), compared
  // with the float transform entry by entry and with the file's own bits.
  for (std::size_t k = 0; k < 2; ++k) {
    CHECK(d.rotations()[k] == f.rotations()[k].cast<double>());
    for (Eigen::Index i = 0; i < 16; ++i)
      for (Eigen::Index j = 0; j < 16; ++j) {
        float stored = 0.0f;
        std::memcpy(&stored, float_file.data() + 48 + 4 * (k * 256 + static_cast<std::size_t>(i * 16 + j)), 4);
        REQUIRE(d.rotations()[k](i, j) == static_cast<double>(stored));
      }
  }
  CHECK(d.permutations() == f.permutations());
  CHECK(d.smoothing() == f.smoothing().cast<double>());
  // The converting constructor is the same widening.
  const DuQuantTransform<double> widened(f);
  CHECK(widened.scalar_bytes() == sizeof(float));
  CHECK(widened.rotations() == d.rotations());
  CHECK(widened.smoothing() == d.smoothing());
  // It is the float transform computed in double: X·diag(s)⁻¹·M against the
  // float path, within float rounding of |x|, and invert() undoes it.
  const Matrix xd = x.cast<double>();
  const Matrix y = d.apply(xd);
  CHECK((y - f.apply(x).cast<double>()).cwiseAbs().maxCoeff() < 1e-5 * xd.cwiseAbs().maxCoeff());
  CHECK((Matrix(d.invert(y)) - xd).cwiseAbs().maxCoeff() < 1e-5 * xd.cwiseAbs().maxCoeff());
  // The rotations are orthogonal to float's rounding, not double's: a
  // DuQuantTransform<double> built from them as doubles is refused, which is
  // why the widening keeps scalar_bytes() and saves floats.
  CHECK_THROWS_WITH_AS(DuQuantTransform<double>(64, d.rotations(), d.permutations(), d.smoothing()),
                       doctest::Contains("must be orthogonal"), std::invalid_argument);
  std::ostringstream again(std::ios::binary);
  save_duquant(again, d);
  CHECK(again.str() == float_file);  // byte for byte
  std::istringstream as_float(again.str(), std::ios::binary);
  CHECK(load_duquant<float>(as_float).rotations() == f.rotations());

  // A legacy float file (a rotation drifted within the old tolerance) is
  // projected in float, then widened: the same as loading it as float.
  std::ostringstream id_out(std::ios::binary);
  save_duquant(id_out, DuQuantTransform<float>(8, {Eigen::MatrixXf::Identity(8, 8)}, {}));
  std::string drifted = id_out.str();
  const float entry = 1.0f + 1e-5f;
  std::memcpy(drifted.data() + 48, &entry, sizeof entry);
  std::istringstream drifted_d(drifted, std::ios::binary), drifted_f(drifted, std::ios::binary);
  CHECK(load_duquant<double>(drifted_d).rotations()[0] == load_duquant<float>(drifted_f).rotations()[0].cast<double>());
  // Malformed float files are refused as double as they are as float.
  std::istringstream truncated(float_file.substr(0, float_file.size() - 1), std::ios::binary);
  CHECK_THROWS_WITH_AS(load_duquant<double>(truncated), doctest::Contains("the stream ended inside"),
                       std::invalid_argument);
  std::string bad = float_file;
  bad[48 + 3] ^= 0x40;  // a bit of the first rotation entry's exponent
  std::istringstream bad_in(bad, std::ios::binary);
  CHECK_THROWS_WITH_AS(load_duquant<double>(bad_in), doctest::Contains("must be orthogonal"), std::invalid_argument);
  // Other scalar sizes stay refused.
  std::string two_byte = float_file;
  two_byte[12] = 2;
  std::istringstream two_in(two_byte, std::ios::binary);
  CHECK_THROWS_WITH_AS(load_duquant<double>(two_in), doctest::Contains("the file holds 2-byte scalars"),
                       std::invalid_argument);
}

TEST_CASE("load_duquant refuses bytes after the transform, on seekable and unseekable streams") {
  // Before (issue 23): anything after the data was ignored.
  std::ostringstream out(std::ios::binary);
  save_duquant(out, DuQuantTransform<float>(8, {Eigen::MatrixXf::Identity(8, 8)}, {}));
  const std::string bytes = out.str();
  {
    std::istringstream exact(bytes, std::ios::binary);
    CHECK(load_duquant<float>(exact).channels() == 8);
  }
  for (const std::string& extra : {std::string(1, '\0'), std::string("trailing"), bytes}) {
    INFO("extra bytes: ", extra.size());
    std::istringstream seekable(bytes + extra, std::ios::binary);
    CHECK_THROWS_WITH_AS(load_duquant<float>(seekable),
                         doctest::Contains((std::to_string(extra.size()) + " bytes follow the transform").c_str()),
                         std::invalid_argument);
    PipeBuffer pipe(bytes + extra);
    std::istream piped(&pipe);
    CHECK_THROWS_WITH_AS(load_duquant<float>(piped), doctest::Contains("bytes follow the transform"),
                         std::invalid_argument);
  }
  PipeBuffer pipe(bytes);
  std::istream piped(&pipe);
  CHECK(load_duquant<float>(piped).channels() == 8);
}

TEST_CASE("the legacy projection is bounded: a float rotation far from orthogonal is refused at any block size") {
  // A 1024 × 1024 float identity with Q(0, 1) = Q(1, 0) = δ: max |QᵀQ − I| ≈ 2δ.
  // The old bound 100·b·ε is 0.0122 here: 2δ = 5e-3 was projected onto some
  // rotation and loaded. Now the bound stops at 100·128·ε ≈ 1.5e-3.
  constexpr Eigen::Index b = 1024;
  const auto file_with = [](float delta) {
    std::ostringstream out(std::ios::binary);
    save_duquant(out, DuQuantTransform<float>(b, {Eigen::MatrixXf::Identity(b, b)}, {}));
    std::string bytes = out.str();
    std::memcpy(bytes.data() + 48 + 1 * sizeof(float), &delta, sizeof delta);       // (0, 1)
    std::memcpy(bytes.data() + 48 + (b + 0) * sizeof(float), &delta, sizeof delta);  // (1, 0)
    return bytes;
  };
  std::istringstream far(file_with(2.5e-3f), std::ios::binary);
  CHECK_THROWS_WITH_AS(load_duquant<float>(far), doctest::Contains("must be orthogonal"), std::invalid_argument);
  // A legacy drift (6e-5 = 500ε: above the constructor's 8·√b·ε = 3.1e-5) is
  // still projected, and loads.
  std::istringstream legacy(file_with(3e-5f), std::ios::binary);
  const auto loaded = load_duquant<float>(legacy);
  CHECK(detail_rotation::orthogonality_error(loaded.rotations()[0]) <=
        detail_rotation::orthogonality_tolerance<float>(b));
  CHECK((loaded.rotations()[0] - Eigen::MatrixXf::Identity(b, b)).cwiseAbs().maxCoeff() < 1e-4f);
}
