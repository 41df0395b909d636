#include <oq/quant/quantize.hpp>
#include <oq/quant/spec.hpp>
#include <oq/transform/smoothing.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

using namespace oq::transform;
using oq::quant::QuantSpec;
using oq::test::MatrixX;
using oq::test::RowMatrixX;

namespace {

template <class T>
using VectorX = Eigen::Matrix<T, Eigen::Dynamic, 1>;

// Higham's γ_n = n·u / (1 − n·u) (Accuracy and Stability of Numerical
// Algorithms, §3.1): a quantity formed by n roundings of unit roundoff u has
// relative error at most γ_n; a dot product of length n is within
// γ_n · Σ|a_j·b_j| of the exact one, whatever the summation order (FMA only
// removes roundings).
template <class T>
double gamma_n(Eigen::Index n) {
  const double u = std::numeric_limits<T>::epsilon() / 2;
  return static_cast<double>(n) * u / (1 - static_cast<double>(n) * u);
}

// Two computations of the same exact value, each within γ_n · magnitude of
// it, differ by at most 2·γ_n · magnitude, entry by entry. `magnitude` is
// formed in double from `terms` (the Σ of |terms| a dot product reduces over);
// its own rounding (relative γ_k(double), k the number of terms) is divided out.
template <class T>
void check_equal_up_to_rounding(const MatrixX<T>& a, const MatrixX<T>& b, const MatrixX<double>& magnitude,
                                Eigen::Index n, Eigen::Index k) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  const double factor = 2 * gamma_n<T>(n) / (1 - gamma_n<double>(k));
  for (Eigen::Index i = 0; i < a.rows(); ++i) {
    for (Eigen::Index j = 0; j < a.cols(); ++j) {
      const double diff = std::fabs(static_cast<double>(a(i, j)) - static_cast<double>(b(i, j)));
      const double bound = factor * magnitude(i, j);
      CHECK(diff <= bound);
    }
  }
}

// Gaussian activations with a few planted outlier channels, as in LLMs.
template <class T>
MatrixX<T> activations_with_outliers(Eigen::Index tokens, Eigen::Index channels, std::uint64_t seed,
                                     double outlier_factor = 50.0) {
  MatrixX<T> x = oq::test::gaussian<T>(tokens, channels, seed);
  for (Eigen::Index c : {Eigen::Index{3}, channels / 3, channels / 2 + 1, channels - 5}) {
    x.col(c) *= static_cast<T>(outlier_factor);
  }
  return x;
}

// y = x / sqrt(mean(x²) + eps) ∘ γ, row by row (a token per row).
template <class T>
MatrixX<T> rms_norm(const MatrixX<T>& x, const VectorX<T>& gamma, T eps = T(1e-6)) {
  MatrixX<T> y(x.rows(), x.cols());
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    T sum = 0;
    for (Eigen::Index j = 0; j < x.cols(); ++j) sum += x(i, j) * x(i, j);
    const T inv_rms = T(1) / std::sqrt(sum / static_cast<T>(x.cols()) + eps);
    for (Eigen::Index j = 0; j < x.cols(); ++j) y(i, j) = (x(i, j) * inv_rms) * gamma(j);
  }
  return y;
}

// (x − μ)/sqrt(var + eps) per row, the part of LayerNorm before γ and β.
template <class T>
MatrixX<T> standardize(const MatrixX<T>& x, T eps = T(1e-5)) {
  MatrixX<T> n(x.rows(), x.cols());
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    T mean = 0;
    for (Eigen::Index j = 0; j < x.cols(); ++j) mean += x(i, j);
    mean /= static_cast<T>(x.cols());
    T var = 0;
    for (Eigen::Index j = 0; j < x.cols(); ++j) var += (x(i, j) - mean) * (x(i, j) - mean);
    const T inv_std = T(1) / std::sqrt(var / static_cast<T>(x.cols()) + eps);
    for (Eigen::Index j = 0; j < x.cols(); ++j) n(i, j) = (x(i, j) - mean) * inv_std;
  }
  return n;
}

// y = n ∘ γ + β.
template <class T>
MatrixX<T> scale_shift(const MatrixX<T>& n, const VectorX<T>& gamma, const VectorX<T>& beta) {
  MatrixX<T> y(n.rows(), n.cols());
  for (Eigen::Index i = 0; i < n.rows(); ++i) {
    for (Eigen::Index j = 0; j < n.cols(); ++j) y(i, j) = n(i, j) * gamma(j) + beta(j);
  }
  return y;
}

// |a|·|b|ᵀ in double: the magnitude a product a·bᵀ's rounding is bounded by.
template <class A, class B>
MatrixX<double> abs_product(const A& a, const B& b) {
  return a.template cast<double>().cwiseAbs() * b.template cast<double>().cwiseAbs().transpose();
}

// Eq. 4 with smooth.py's floors, written out plainly.
template <class T>
VectorX<T> smoothing_scales_ref(const VectorX<T>& act_max, const VectorX<T>& weight_max, double alpha,
                                double weight_floor = 1e-5, double scale_floor = 1e-5) {
  VectorX<T> s(act_max.size());
  for (Eigen::Index j = 0; j < s.size(); ++j) {
    double w = static_cast<double>(weight_max(j));
    if (w < weight_floor) w = weight_floor;
    double v = std::pow(static_cast<double>(act_max(j)), alpha) / std::pow(w, 1.0 - alpha);
    if (v < scale_floor) v = scale_floor;
    s(j) = static_cast<T>(v);
  }
  return s;
}

// Σ_k ‖Q_a(X̂)·Q_w(Ŵ_k)ᵀ − X·W_kᵀ‖_F², recomputed from the public pieces.
double quantized_error(const MatrixX<double>& x, const std::vector<MatrixX<double>>& weights, double alpha,
                       const QuantSpec& act_spec, const QuantSpec& weight_spec) {
  const VectorX<double> s =
      smoothing_scales(activation_channel_absmax(x), weight_channel_absmax(weights), {.alpha = alpha});
  MatrixX<double> x_hat = x;
  smooth_activations_in_place(x_hat, s);
  const MatrixX<double> x_quant = oq::quant::fake_quantize(x_hat, act_spec);
  double error = 0;
  for (const MatrixX<double>& w : weights) {
    MatrixX<double> w_hat = w;
    smooth_weights_in_place(w_hat, s);
    error += (x_quant * oq::quant::fake_quantize(w_hat, weight_spec).transpose() - x * w.transpose()).squaredNorm();
  }
  return error;
}

}  // namespace

TEST_CASE_TEMPLATE("smoothing leaves X·Wᵀ unchanged up to rounding", T, float, double) {
  constexpr Eigen::Index kChannels = 96;
  const MatrixX<T> x = activations_with_outliers<T>(64, kChannels, 11);
  const MatrixX<T> w = oq::test::gaussian<T>(40, kChannels, 12, 0.05);
  const MatrixX<T> y = x * w.transpose();
  const MatrixX<double> magnitude = abs_product(x, w);
  for (double alpha : {0.0, 0.25, 0.5, 0.8, 1.0}) {
    CAPTURE(alpha);
    const VectorX<T> s = smoothing_scales(activation_channel_absmax(x), weight_channel_absmax(w), {.alpha = alpha});
    MatrixX<T> x_hat = x;
    MatrixX<T> w_hat = w;
    smooth_activations_in_place(x_hat, s);
    smooth_weights_in_place(w_hat, s);
    // The outlier channels shrink unless α = 0 (then s only evens out W's columns).
    if (alpha > 0) CHECK(x_hat.cwiseAbs().maxCoeff() < x.cwiseAbs().maxCoeff() / 2);
    // Each term x̂_ij·ŵ_kj = x_ij·w_kj·(1+δ)(1+δ′): two roundings more than the
    // plain product, so each side is within γ_(C+2)·(|X||W|ᵀ) of the exact y.
    const MatrixX<T> y_hat = x_hat * w_hat.transpose();
    check_equal_up_to_rounding<T>(y_hat, y, magnitude, kChannels + 2, kChannels);

    // The same through a block of a bigger matrix and a row-major copy (the
    // const-reference-written-through idiom of oq::quant::fake_quantize_into).
    MatrixX<T> big = MatrixX<T>::Zero(x.rows() + 4, kChannels);
    big.middleRows(2, x.rows()) = x;
    smooth_activations_in_place(big.middleRows(2, x.rows()), s);
    CHECK(big.middleRows(2, x.rows()) == x_hat);
    CHECK(big.topRows(2).isZero(0));
    RowMatrixX<T> w_row = w;
    smooth_weights_in_place(w_row, s.transpose());  // a row vector of scales works too
    CHECK(MatrixX<T>(w_row) == w_hat);
  }
}

TEST_CASE_TEMPLATE("folding into RMSNorm, LayerNorm or a previous linear gives the smoothed layer's output", T, float,
                   double) {
  constexpr Eigen::Index kChannels = 64;
  constexpr Eigen::Index kOut = 24;
  const MatrixX<T> x = activations_with_outliers<T>(32, kChannels, 21);
  const MatrixX<T> w = oq::test::gaussian<T>(kOut, kChannels, 22, 0.05);

  SUBCASE("RMSNorm: γ ← γ/s") {
    // γ carries outliers of its own, as in LLaMA's norms.
    VectorX<T> gamma = (oq::test::gaussian<T>(kChannels, 1, 23, 0.1).array() + T(1)).matrix();
    gamma(7) *= T(20);
    const MatrixX<T> h = rms_norm(x, gamma);
    const MatrixX<T> y = h * w.transpose();
    for (double alpha : {0.2, 0.5, 0.85}) {
      CAPTURE(alpha);
      const VectorX<T> s = smoothing_scales(activation_channel_absmax(h), weight_channel_absmax(w), {.alpha = alpha});
      MatrixX<T> params(kChannels, 2);  // γ as a column of a bigger matrix: a block
      params.col(0) = gamma;
      params.col(1).setZero();
      fold_into_rms_norm(params.col(0), s);
      CHECK(params.col(1).isZero(0));
      MatrixX<T> w_hat = w;
      smooth_weights_in_place(w_hat, s);
      const MatrixX<T> y_folded = rms_norm(x, VectorX<T>(params.col(0))) * w_hat.transpose();
      // Per term: x·ρ (shared), ·γ or ·fl(γ/s) (1 or 2 roundings), ·ŵ (0 or 1),
      // then a dot product of C terms: at most C + 3 roundings on either side,
      // and one more for forming the magnitude |h|·|W|ᵀ from the rounded h.
      check_equal_up_to_rounding<T>(y_folded, y, abs_product(h, w), kChannels + 4, kChannels);
    }
  }

  SUBCASE("LayerNorm: γ ← γ/s and β ← β/s") {
    const VectorX<T> gamma = (oq::test::gaussian<T>(kChannels, 1, 24, 0.1).array() + T(1)).matrix();
    const VectorX<T> beta = oq::test::gaussian<T>(kChannels, 1, 25, 0.5);
    const MatrixX<T> n = standardize(x);
    const MatrixX<T> h = scale_shift(n, gamma, beta);
    const MatrixX<T> y = h * w.transpose();
    // Σ_j (|n_ij·γ_j| + |β_j|)·|W_kj|: the sum n·γ + β is bounded by its terms' sizes.
    const MatrixX<double> terms =
        ((n.template cast<double>().array().rowwise() * gamma.template cast<double>().transpose().array().abs())
             .abs()
             .rowwise() +
         beta.template cast<double>().transpose().array().abs())
            .matrix();
    const MatrixX<double> magnitude = terms * w.template cast<double>().cwiseAbs().transpose();
    for (double alpha : {0.2, 0.5, 0.85}) {
      CAPTURE(alpha);
      const VectorX<T> s = smoothing_scales(activation_channel_absmax(h), weight_channel_absmax(w), {.alpha = alpha});
      VectorX<T> gamma_folded = gamma;
      Eigen::Matrix<T, 1, Eigen::Dynamic> beta_folded = beta.transpose();  // a row vector works too
      fold_into_layer_norm(gamma_folded, beta_folded, s);
      MatrixX<T> w_hat = w;
      smooth_weights_in_place(w_hat, s);
      const MatrixX<T> y_folded = scale_shift(n, gamma_folded, VectorX<T>(beta_folded.transpose())) * w_hat.transpose();
      // n·fl(γ/s) (2 roundings) + fl(β/s) (1), the sum (1), ·ŵ (1), then the
      // dot product: C + 4 on the folded side (C + 2 on the plain one), + 1 for
      // the magnitude.
      check_equal_up_to_rounding<T>(y_folded, y, magnitude, kChannels + 5, kChannels);
    }
  }

  SUBCASE("previous linear: row j of W_prev and bias_j divided by s_j") {
    constexpr Eigen::Index kPrevIn = 48;
    const MatrixX<T> u = oq::test::gaussian<T>(32, kPrevIn, 26);
    MatrixX<T> w_prev = oq::test::gaussian<T>(kChannels, kPrevIn, 27, 0.2);
    w_prev.row(5) *= T(40);  // an outlier output channel of the previous linear
    const VectorX<T> bias = oq::test::gaussian<T>(kChannels, 1, 28, 0.3);
    const MatrixX<T> h = (u * w_prev.transpose()).rowwise() + bias.transpose();
    const MatrixX<T> y = h * w.transpose();
    // Σ_j (Σ_m |u_im·W_prev,jm| + |b_j|)·|W_kj|.
    const MatrixX<double> terms =
        (abs_product(u, w_prev).array().rowwise() + bias.template cast<double>().transpose().array().abs()).matrix();
    const MatrixX<double> magnitude = terms * w.template cast<double>().cwiseAbs().transpose();
    for (double alpha : {0.2, 0.5, 0.85}) {
      CAPTURE(alpha);
      const VectorX<T> s = smoothing_scales(activation_channel_absmax(h), weight_channel_absmax(w), {.alpha = alpha});
      MatrixX<T> w_prev_folded = w_prev;
      VectorX<T> bias_folded = bias;
      fold_into_previous_linear(w_prev_folded, bias_folded, s);
      MatrixX<T> w_hat = w;
      smooth_weights_in_place(w_hat, s);
      const MatrixX<T> h_folded = (u * w_prev_folded.transpose()).rowwise() + bias_folded.transpose();
      const MatrixX<T> y_folded = h_folded * w_hat.transpose();
      // fl(W_prev/s) (1), the inner dot product (kPrevIn), + bias (1), ·ŵ (1),
      // the outer dot product (C): kPrevIn + C + 3, + 1 for the magnitude.
      check_equal_up_to_rounding<T>(y_folded, y, magnitude, kPrevIn + kChannels + 4, kPrevIn + kChannels);

      // The bias-free overload touches W_prev alone, identically.
      MatrixX<T> w_prev_only = w_prev;
      fold_into_previous_linear(w_prev_only, s);
      CHECK(w_prev_only == w_prev_folded);
    }
  }
}

TEST_CASE_TEMPLATE("scales follow eq. 4 with smooth.py's floors", T, float, double) {
  constexpr Eigen::Index kChannels = 32;
  MatrixX<T> x = activations_with_outliers<T>(50, kChannels, 31);
  MatrixX<T> w = oq::test::gaussian<T>(20, kChannels, 32, 0.05);
  x.col(9).setZero();    // a dead channel: max|X_j| = 0
  w.col(12).setZero();   // an all-zero weight column: floored at 1e-5
  w.col(13) *= T(1e-5);  // a column below the weight floor
  const VectorX<T> act_max = activation_channel_absmax(x);
  const VectorX<T> weight_max = weight_channel_absmax(w);

  // The reductions, against plain loops.
  for (Eigen::Index j = 0; j < kChannels; ++j) {
    T a = 0, b = 0;
    for (Eigen::Index i = 0; i < x.rows(); ++i) a = std::max(a, std::fabs(x(i, j)));
    for (Eigen::Index i = 0; i < w.rows(); ++i) b = std::max(b, std::fabs(w(i, j)));
    CHECK(act_max(j) == a);
    CHECK(weight_max(j) == b);
  }

  // Both sides compute eq. 4 in double: two pows and a division (each within
  // about an ulp, glibc's pow is < 1 ulp) and the cast to T (half an ulp of
  // T), so they agree to within 6 ulps of T.
  const double tolerance = 6 * std::numeric_limits<T>::epsilon();
  for (double alpha : {0.0, 0.3, 0.5, 0.75, 1.0}) {
    CAPTURE(alpha);
    const VectorX<T> s = smoothing_scales(act_max, weight_max, {.alpha = alpha});
    const VectorX<T> s_ref = smoothing_scales_ref(act_max, weight_max, alpha);
    for (Eigen::Index j = 0; j < kChannels; ++j) {
      CAPTURE(j);
      CHECK(s(j) == doctest::Approx(s_ref(j)).epsilon(tolerance));
    }
    // A dead channel has s_j = 0^α / …: 0 floored to 1e-5 for α > 0, and
    // 1 / max|W_j| for α = 0 because 0^0 = 1 (as in PyTorch).
    if (alpha > 0) {
      CHECK(s(9) == static_cast<T>(1e-5));
    } else {
      CHECK(s(9) == doctest::Approx(1.0 / static_cast<double>(weight_max(9))).epsilon(tolerance));
    }
  }
  // The floors are parameters.
  const VectorX<T> s_custom =
      smoothing_scales(act_max, weight_max, {.alpha = 0.4, .weight_floor = 1e-2, .scale_floor = 0.5});
  const VectorX<T> s_custom_ref = smoothing_scales_ref(act_max, weight_max, 0.4, 1e-2, 0.5);
  for (Eigen::Index j = 0; j < kChannels; ++j)
    CHECK(s_custom(j) == doctest::Approx(s_custom_ref(j)).epsilon(tolerance));
  CHECK(s_custom.minCoeff() >= T(0.5));

  SUBCASE("α = 0: s_j = 1 / max|W_j|, so every column of Ŵ peaks at 1") {
    const VectorX<T> s = smoothing_scales(act_max, weight_max, {.alpha = 0.0});
    for (Eigen::Index j = 0; j < kChannels; ++j) {
      CAPTURE(j);
      const double expected = 1.0 / std::max(static_cast<double>(weight_max(j)), 1e-5);
      CHECK(s(j) == doctest::Approx(expected).epsilon(tolerance));
    }
    CHECK(s(12) == doctest::Approx(1e5).epsilon(tolerance));  // the zero column: 1 / the weight floor
    CHECK(s(13) == doctest::Approx(1e5).epsilon(tolerance));  // below the floor: the same
    MatrixX<T> w_hat = w;
    smooth_weights_in_place(w_hat, s);
    for (Eigen::Index j = 0; j < kChannels; ++j) {
      CAPTURE(j);
      if (j == 12) {
        CHECK(w_hat.col(j).isZero(0));
      } else if (j == 13) {  // the floor keeps s finite, so this column peaks below 1
        CHECK(w_hat.col(j).cwiseAbs().maxCoeff() ==
              doctest::Approx(static_cast<double>(weight_max(j)) / 1e-5).epsilon(tolerance));
        CHECK(w_hat.col(j).cwiseAbs().maxCoeff() < T(0.5));
      } else {
        CHECK(w_hat.col(j).cwiseAbs().maxCoeff() == doctest::Approx(1.0).epsilon(tolerance));
      }
    }
  }

  SUBCASE("α = 1: s_j = max|X_j|, so every live column of X̂ peaks at 1") {
    const VectorX<T> s = smoothing_scales(act_max, weight_max, {.alpha = 1.0});
    for (Eigen::Index j = 0; j < kChannels; ++j) {
      CAPTURE(j);
      CHECK(s(j) == doctest::Approx(std::max(static_cast<double>(act_max(j)), 1e-5)).epsilon(tolerance));
    }
    MatrixX<T> x_hat = x;
    smooth_activations_in_place(x_hat, s);
    for (Eigen::Index j = 0; j < kChannels; ++j) {
      if (j == 9) continue;  // dead
      CHECK(x_hat.col(j).cwiseAbs().maxCoeff() == doctest::Approx(1.0).epsilon(tolerance));
    }
  }
}

TEST_CASE("linears sharing an input share s, with max|W_j| over all of them") {
  constexpr Eigen::Index kChannels = 24;
  MatrixX<double> q = oq::test::gaussian<double>(16, kChannels, 41, 0.05);
  MatrixX<double> k = oq::test::gaussian<double>(8, kChannels, 42, 0.05);
  MatrixX<double> v = oq::test::gaussian<double>(8, kChannels, 43, 0.05);
  k(3, 5) = 2.0;    // the maximum of channel 5 is in k
  v(7, 11) = -3.0;  // of channel 11 in v (by absolute value)
  q(0, 2) = 1.5;

  const VectorX<double> shared = weight_channel_absmax(q, k, v);
  VectorX<double> expected(kChannels);
  for (Eigen::Index j = 0; j < kChannels; ++j) {
    expected(j) =
        std::max({q.col(j).cwiseAbs().maxCoeff(), k.col(j).cwiseAbs().maxCoeff(), v.col(j).cwiseAbs().maxCoeff()});
  }
  CHECK(shared == expected);
  CHECK(shared(5) == 2.0);
  CHECK(shared(11) == 3.0);
  CHECK(shared(2) == 1.5);
  CHECK(weight_channel_absmax(std::vector<MatrixX<double>>{q, k, v}) == expected);
  // Any Eigen expressions, in any mix (a row-major copy, a block).
  const RowMatrixX<double> k_row = k;
  CHECK(weight_channel_absmax(q.topRows(16), k_row, v) == expected);
  CHECK(weight_channel_absmax(q) == q.cwiseAbs().colwise().maxCoeff().transpose());
}

TEST_CASE("α search: its reported errors are the objective, and it beats α = 0 on outlier channels") {
  // Calibration activations: 4 of 128 channels 50× the rest; q/k/v-like
  // weights sharing that input.
  const MatrixX<double> x = activations_with_outliers<double>(256, 128, 51, 50.0);
  const std::vector<MatrixX<double>> weights{oq::test::gaussian<double>(64, 128, 52, 0.02),
                                             oq::test::gaussian<double>(64, 128, 53, 0.02),
                                             oq::test::gaussian<double>(64, 128, 54, 0.02)};
  const QuantSpec a8 = QuantSpec::per_token(8, true);
  const QuantSpec w8 = QuantSpec::per_channel(8, true);
  const QuantSpec w4 = QuantSpec::per_channel(4, true);

  const auto w8a8 = search_smoothing_alpha(x, weights, a8, w8);
  const auto w4a8 = search_smoothing_alpha(x, weights, a8, w4);
  for (const auto* found : {&w8a8, &w4a8}) {
    REQUIRE(found->alphas == default_alpha_grid());
    REQUIRE(found->errors.size() == found->alphas.size());
    CHECK(found->alphas.front() == 0.0);
    CHECK(found->alphas.back() == 1.0);
    // The chosen α is the first minimiser of the reported errors …
    const auto best = std::min_element(found->errors.begin(), found->errors.end());
    CHECK(found->error == *best);
    CHECK(found->alpha == found->alphas[static_cast<std::size_t>(best - found->errors.begin())]);
    // … so never worse than α = 0 or α = 1, which the grid holds.
    CHECK(found->error <= found->errors.front());
    CHECK(found->error <= found->errors.back());
    // The returned scales are those of the chosen α.
    CHECK(found->scales ==
          smoothing_scales(activation_channel_absmax(x), weight_channel_absmax(weights), {.alpha = found->alpha}));
  }
  // The reported errors are the objective, recomputed from the public pieces
  // (same operations; only the GEMMs' summation order could differ).
  for (std::size_t i : {std::size_t{0}, std::size_t{10}, std::size_t{20}}) {
    CAPTURE(i);
    CHECK(w8a8.errors[i] == doctest::Approx(quantized_error(x, weights, w8a8.alphas[i], a8, w8)).epsilon(1e-12));
    CHECK(w4a8.errors[i] == doctest::Approx(quantized_error(x, weights, w4a8.alphas[i], a8, w4)).epsilon(1e-12));
  }

  // Why smoothing must pay here. Each side's rounding noise is ∝ its step²,
  // step = range / (2^(b−1) − 1). With R = 50 the outlier factor, the channel
  // ranges of X̂ differ by R^(1−α) and the column ranges of Ŵ by R^α. At α = 0
  // (W's columns merely evened out) every token's step is set by its outlier
  // channels, R times the rest: the activation noise is ~R² = 2500× what
  // equal ranges would give. At α = 0.5 both sides carry √R: ~R = 50× each.
  // With 8 bits on both sides the two terms weigh the same, so E(0.5)/E(0)
  // ≈ 2R/(R² + 1) ≈ 0.04 in this model. Measured: 7.37 / 99.1 = 0.074 here
  // (0.08–0.11 with other seeds; the model ignores that the outlier columns
  // of Ŵ also weigh the activation noise). Assert a quarter.
  // By the same symmetry E(α) ≈ E(1 − α), so the optimum sits near 0.5.
  CHECK(w8a8.error < 0.25 * w8a8.errors.front());
  CHECK(w8a8.alpha >= 0.3);
  CHECK(w8a8.alpha <= 0.7);
  // With 4-bit weights the weight step is 127/7 ≈ 18× coarser than at 8 bits,
  // so moving range into W costs (18)² more: the optimum moves below W8A8's,
  // and the gain over α = 0 shrinks but stays large. Measured: α = 0.3,
  // 826 / 2896 = 0.29 (α 0.25–0.35, ratio 0.23–0.30 with other seeds).
  CHECK(w4a8.alpha < w8a8.alpha);
  CHECK(w4a8.error < 0.5 * w4a8.errors.front());

  // One weight: the single-matrix overload is the list of one.
  const auto single = search_smoothing_alpha(x, weights[0], a8, w8, {.alphas = {0.0, 0.5, 1.0}});
  const auto listed =
      search_smoothing_alpha(x, std::vector<MatrixX<double>>{weights[0]}, a8, w8, {.alphas = {0.0, 0.5, 1.0}});
  CHECK(single.errors == listed.errors);
  CHECK(single.alpha == listed.alpha);
  CHECK(single.alphas == std::vector<double>{0.0, 0.5, 1.0});

  // Ties keep the earliest α of the grid. A zero weight makes every error
  // exactly 0: X·Wᵀ = 0, Ŵ = 0 and a zero row quantizes exactly (docs/design.md §2).
  const auto tied = search_smoothing_alpha(x, MatrixX<double>::Zero(8, 128), a8, w8, {.alphas = {0.7, 0.2, 0.9}});
  CHECK(tied.errors == std::vector<double>{0.0, 0.0, 0.0});
  CHECK(tied.alpha == 0.7);
}

TEST_CASE("α search works in float") {
  const MatrixX<float> x = activations_with_outliers<float>(64, 32, 61);
  const MatrixX<float> w = oq::test::gaussian<float>(16, 32, 62, 0.05);
  const auto found = search_smoothing_alpha(x, w, QuantSpec::per_token(8, false), QuantSpec::per_group(4, true, 16),
                                            {.alphas = {0.0, 0.5, 1.0}});
  CHECK(found.scales.size() == 32);
  for (double e : found.errors) CHECK(std::isfinite(e));
  CHECK(found.error <= found.errors.front());
}

TEST_CASE("bad input gives clear errors") {
  const MatrixX<double> x = oq::test::gaussian<double>(8, 16, 71);
  const MatrixX<double> w = oq::test::gaussian<double>(4, 16, 72);
  const VectorX<double> act_max = activation_channel_absmax(x);
  const VectorX<double> weight_max = weight_channel_absmax(w);
  const VectorX<double> s = smoothing_scales(act_max, weight_max);
  const QuantSpec a8 = QuantSpec::per_token(8, true);
  const QuantSpec w8 = QuantSpec::per_channel(8, true);

  SUBCASE("α and the floors") {
    for (double alpha : {-0.1, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
      CAPTURE(alpha);
      CHECK_THROWS_WITH_AS(smoothing_scales(act_max, weight_max, {.alpha = alpha}),
                           doctest::Contains("oq::transform::smoothing_scales: options.alpha must be in [0, 1]"),
                           std::invalid_argument);
    }
    CHECK_THROWS_WITH_AS(smoothing_scales(act_max, weight_max, {.weight_floor = 0.0}),
                         doctest::Contains("options.weight_floor must be positive"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(smoothing_scales(act_max, weight_max, {.scale_floor = -1.0}),
                         doctest::Contains("options.scale_floor must be positive"), std::invalid_argument);
  }

  SUBCASE("maxima") {
    CHECK_THROWS_WITH_AS(smoothing_scales(act_max, VectorX<double>(weight_max.head(15))),
                         doctest::Contains("weight_max must have 16 entries"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(smoothing_scales(VectorX<double>(), VectorX<double>()),
                         doctest::Contains("act_max must be non-empty"), std::invalid_argument);
    VectorX<double> negative = act_max;
    negative(2) = -1.0;
    CHECK_THROWS_WITH_AS(smoothing_scales(negative, weight_max), doctest::Contains("act_max(2) must be >= 0"),
                         std::invalid_argument);
    VectorX<double> nan = weight_max;
    nan(4) = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_WITH_AS(smoothing_scales(act_max, nan), doctest::Contains("weight_max(4, 0) is nan"),
                         std::domain_error);
  }

  SUBCASE("activations and weights") {
    MatrixX<double> bad = x;
    bad(1, 3) = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_WITH_AS(activation_channel_absmax(bad), doctest::Contains("x must be finite, but x(1, 3) is nan"),
                         std::domain_error);
    CHECK_THROWS_WITH_AS(activation_channel_absmax(MatrixX<double>(0, 16)), doctest::Contains("x must be non-empty"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(weight_channel_absmax(w, MatrixX<double>::Zero(4, 8)),
                         doctest::Contains("weights[1] must have 16 columns"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(weight_channel_absmax(std::vector<MatrixX<double>>{}),
                         doctest::Contains("weights must hold at least one matrix"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(weight_channel_absmax(w, MatrixX<double>(0, 16)),
                         doctest::Contains("weights[1] must be non-empty"), std::invalid_argument);
    MatrixX<double> bad_w = w;
    bad_w(0, 1) = std::numeric_limits<double>::infinity();
    CHECK_THROWS_WITH_AS(weight_channel_absmax(w, w, bad_w), doctest::Contains("weights[2](0, 1) is inf"),
                         std::domain_error);
  }

  SUBCASE("applying and folding") {
    MatrixX<double> x_copy = x;
    CHECK_THROWS_WITH_AS(smooth_activations_in_place(x_copy, VectorX<double>(s.head(8))),
                         doctest::Contains("scales must have 16 entries"), std::invalid_argument);
    VectorX<double> zero_scale = s;
    zero_scale(3) = 0.0;
    CHECK_THROWS_WITH_AS(smooth_activations_in_place(x_copy, zero_scale),
                         doctest::Contains("scales(3) must be positive and finite"), std::invalid_argument);
    CHECK(x_copy == x);  // nothing written on failure
    MatrixX<double> bad = x;
    bad(0, 0) = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(smooth_activations_in_place(bad, s), std::domain_error);
    MatrixX<double> w_copy = w;
    CHECK_THROWS_WITH_AS(smooth_weights_in_place(w_copy, MatrixX<double>::Ones(4, 4)),
                         doctest::Contains("scales must be a vector, got 4 x 4"), std::invalid_argument);

    VectorX<double> gamma = VectorX<double>::Ones(15);
    CHECK_THROWS_WITH_AS(fold_into_rms_norm(gamma, s), doctest::Contains("gamma must have 16 entries"),
                         std::invalid_argument);
    VectorX<double> gamma16 = VectorX<double>::Ones(16);
    VectorX<double> beta = VectorX<double>::Zero(17);
    CHECK_THROWS_WITH_AS(fold_into_layer_norm(gamma16, beta, s), doctest::Contains("beta must have 16 entries"),
                         std::invalid_argument);
    CHECK(gamma16 == VectorX<double>::Ones(16));  // validated before writing
    MatrixX<double> w_prev(12, 5);
    w_prev.setOnes();
    CHECK_THROWS_WITH_AS(fold_into_previous_linear(w_prev, s), doctest::Contains("w_prev must have 16 rows"),
                         std::invalid_argument);
    MatrixX<double> w_prev16 = MatrixX<double>::Ones(16, 5);
    VectorX<double> bias4 = VectorX<double>::Ones(4);
    CHECK_THROWS_WITH_AS(fold_into_previous_linear(w_prev16, bias4, s),
                         doctest::Contains("bias_prev must have 16 entries"), std::invalid_argument);
    CHECK(w_prev16 == MatrixX<double>::Ones(16, 5));
    CHECK_THROWS_WITH_AS(fold_into_rms_norm(gamma, VectorX<double>()), doctest::Contains("scales must be non-empty"),
                         std::invalid_argument);
  }

  SUBCASE("α search") {
    CHECK_THROWS_WITH_AS(search_smoothing_alpha(x, w, a8, w8, {.alphas = {}}),
                         doctest::Contains("options.alphas must be non-empty"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(search_smoothing_alpha(x, w, a8, w8, {.alphas = {0.5, 1.5}}),
                         doctest::Contains("options.alphas[1] must be in [0, 1], got 1.5"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(search_smoothing_alpha(x, MatrixX<double>::Zero(4, 12), a8, w8),
                         doctest::Contains("weights[0] must have 16 columns"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(search_smoothing_alpha(x, std::vector<MatrixX<double>>{}, a8, w8),
                         doctest::Contains("weights must hold at least one matrix"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(search_smoothing_alpha(MatrixX<double>(0, 16), w, a8, w8),
                         doctest::Contains("x must be non-empty"), std::invalid_argument);
    MatrixX<double> bad = x;
    bad(2, 2) = -std::numeric_limits<double>::infinity();
    CHECK_THROWS_WITH_AS(search_smoothing_alpha(bad, w, a8, w8), doctest::Contains("x(2, 2) is -inf"),
                         std::domain_error);
    CHECK_THROWS_WITH_AS(search_smoothing_alpha(x, w, QuantSpec::per_token(9, true), w8),
                         doctest::Contains("(act_spec): spec.bits must be in [2, 8]"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(search_smoothing_alpha(x, w, a8, QuantSpec::per_group(4, true, 6)),
                         doctest::Contains("weight_spec.group_size (6) must divide the channel count C = 16"),
                         std::invalid_argument);
  }
}

TEST_CASE("s must be a finite normal value of its scalar type") {
  // Eq. 4 is evaluated in double and cast (smoothing.hpp). In float, act = 1,
  // w = 0 and α = 0 give s = 1 / weight_floor = 1e40 > FLT_MAX with a weight
  // floor of 1e-40; a dead channel gives s = scale_floor, 0 in float for
  // 1e-50. Either would make X̂ = X·diag(s)⁻¹ Inf or 0 without a word.
  const VectorX<float> one = VectorX<float>::Ones(2), zero = VectorX<float>::Zero(2);
  CHECK_THROWS_WITH_AS(smoothing_scales(one, zero, {.alpha = 0.0, .weight_floor = 1e-40}),
                       doctest::Contains("scales(0) = 1e+40 overflows the scalar type (max 3.40282e+38): raise "
                                         "options.weight_floor (got 1e-40)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(smoothing_scales(zero, one, {.alpha = 0.5, .scale_floor = 1e-50}),
                       doctest::Contains("scales(0) = 1e-50 is below the smallest normal value of the scalar type "
                                         "(1.17549e-38): raise options.scale_floor (got 1e-50)"),
                       std::invalid_argument);
  // A subnormal float is refused too (its reciprocal overflows); the
  // smallest normal is accepted, as is the same floor in double.
  CHECK_THROWS_AS(smoothing_scales(zero, one, {.alpha = 0.5, .scale_floor = 1e-40}), std::invalid_argument);
  const double normal = std::numeric_limits<float>::min();
  CHECK(smoothing_scales(zero, one, {.alpha = 0.5, .scale_floor = normal})(0) == std::numeric_limits<float>::min());
  CHECK(smoothing_scales(VectorX<double>::Zero(1), VectorX<double>::Ones(1), {.alpha = 0.5, .scale_floor = 1e-50})(0) ==
        1e-50);
  // Double has the same limits further out: 1 / 4.9e-324 overflows, and a
  // subnormal floor is below the smallest normal.
  const VectorX<double> one_d = VectorX<double>::Ones(1), zero_d = VectorX<double>::Zero(1);
  CHECK_THROWS_WITH_AS(
      smoothing_scales(one_d, zero_d, {.alpha = 0.0, .weight_floor = std::numeric_limits<double>::denorm_min()}),
      doctest::Contains("raise options.weight_floor"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(smoothing_scales(zero_d, one_d, {.alpha = 0.5, .scale_floor = 1e-310}),
                       doctest::Contains("raise options.scale_floor"), std::invalid_argument);
  // The α search computes the same s.
  const MatrixX<float> x = MatrixX<float>::Ones(4, 2);
  const MatrixX<float> w = MatrixX<float>::Zero(3, 2);
  CHECK_THROWS_WITH_AS(search_smoothing_alpha(x, w, QuantSpec::per_token(8, true), QuantSpec::per_channel(8, true),
                                              {.alphas = {0.0}, .weight_floor = 1e-40}),
                       doctest::Contains("search_smoothing_alpha: scales(0) = 1e+40 overflows"), std::invalid_argument);
}

TEST_CASE("smoothing that would overflow the scalar type throws, and writes nothing") {
  // Valid scales (finite, > 0) and finite data can still leave float's range:
  // 1e10 / 1e-30 = 1e40 > FLT_MAX. The check runs before anything is written
  // (the column's largest |entry| decides, rounding being monotone).
  VectorX<float> s = VectorX<float>::Ones(4);
  s(2) = 1e-30f;
  const MatrixX<float> x = MatrixX<float>::Constant(3, 4, 1e10f);
  MatrixX<float> x_copy = x;
  CHECK_THROWS_WITH_AS(smooth_activations_in_place(x_copy, s),
                       doctest::Contains("smooth_activations_in_place: x column 2 divided by scales(2) = 1e-30 "
                                         "overflows the scalar type (its largest |entry| is 1e+10)"),
                       std::domain_error);
  CHECK(x_copy == x);

  VectorX<float> big = VectorX<float>::Ones(4);
  big(1) = 1e30f;
  MatrixX<float> w_copy = x;
  CHECK_THROWS_WITH_AS(smooth_weights_in_place(w_copy, big), doctest::Contains("w column 1 times scales(1) = 1e+30"),
                       std::domain_error);
  CHECK(w_copy == x);

  VectorX<float> gamma = VectorX<float>::Constant(4, 1e10f);
  const VectorX<float> gamma_before = gamma;
  CHECK_THROWS_WITH_AS(fold_into_rms_norm(gamma, s), doctest::Contains("gamma(2) / scales(2) = 1e+10 / 1e-30"),
                       std::domain_error);
  CHECK(gamma == gamma_before);
  VectorX<float> ones = VectorX<float>::Ones(4);
  VectorX<float> beta = VectorX<float>::Constant(4, 1e10f);
  CHECK_THROWS_WITH_AS(fold_into_layer_norm(ones, beta, s), doctest::Contains("beta(2) / scales(2)"),
                       std::domain_error);
  CHECK(ones == VectorX<float>::Ones(4));  // gamma untouched although its own division is fine
  CHECK(beta == VectorX<float>::Constant(4, 1e10f));

  MatrixX<float> w_prev = MatrixX<float>::Constant(4, 5, 1e10f);
  CHECK_THROWS_WITH_AS(fold_into_previous_linear(w_prev, s), doctest::Contains("w_prev row 2 divided by scales(2)"),
                       std::domain_error);
  CHECK(w_prev == MatrixX<float>::Constant(4, 5, 1e10f));
  MatrixX<float> w_prev_ok = MatrixX<float>::Ones(4, 5);
  VectorX<float> bias = VectorX<float>::Constant(4, 1e10f);
  CHECK_THROWS_WITH_AS(fold_into_previous_linear(w_prev_ok, bias, s), doctest::Contains("bias_prev(2) / scales(2)"),
                       std::domain_error);
  CHECK(w_prev_ok == MatrixX<float>::Ones(4, 5));  // the bias is checked before w_prev is written

  // The α search: α = 0 gives s = 1 / max|W_j| = 0.1, and x / 0.1 = 1e39.
  const MatrixX<float> x_big = MatrixX<float>::Constant(4, 2, 1e38f);
  const MatrixX<float> w_ten = MatrixX<float>::Constant(3, 2, 10.0f);
  CHECK_THROWS_WITH_AS(search_smoothing_alpha(x_big, w_ten, QuantSpec::per_token(8, true),
                                              QuantSpec::per_channel(8, true), {.alphas = {0.0}}),
                       doctest::Contains("search_smoothing_alpha: x column 0 divided by scales(0) = 0.1"),
                       std::domain_error);

  // Within range nothing changes: the largest finite quotient is allowed.
  MatrixX<float> edge = MatrixX<float>::Constant(2, 4, std::numeric_limits<float>::max());
  smooth_activations_in_place(edge, VectorX<float>::Ones(4));
  CHECK(edge.allFinite());
}

namespace {

// Σ_k ‖Q_a(X̂)·Q_w(Ŵ_k)ᵀ − X·W_kᵀ‖_F² in long double (x86-64's 64-bit
// significand and 15-bit exponent: products of doubles near DBL_MAX, their
// squares and sums are finite, and those near 2^−1074 stay normal), by plain
// loops, from the public pieces at the given α.
long double quantized_error_long_double(const MatrixX<double>& x, const std::vector<MatrixX<double>>& weights,
                                        double alpha, const QuantSpec& act_spec, const QuantSpec& weight_spec,
                                        const AlphaSearchOptions& options) {
  const VectorX<double> s =
      smoothing_scales(activation_channel_absmax(x), weight_channel_absmax(weights),
                       {.alpha = alpha, .weight_floor = options.weight_floor, .scale_floor = options.scale_floor});
  MatrixX<double> x_hat = x;
  smooth_activations_in_place(x_hat, s);
  const MatrixX<double> a = oq::quant::fake_quantize(x_hat, act_spec);
  long double error = 0;
  for (const MatrixX<double>& w : weights) {
    MatrixX<double> w_hat = w;
    smooth_weights_in_place(w_hat, s);
    const MatrixX<double> b = oq::quant::fake_quantize(w_hat, weight_spec);
    for (Eigen::Index i = 0; i < x.rows(); ++i) {
      for (Eigen::Index n = 0; n < w.rows(); ++n) {
        long double quantized = 0, exact = 0;
        for (Eigen::Index c = 0; c < x.cols(); ++c) {
          quantized += static_cast<long double>(a(i, c)) * static_cast<long double>(b(n, c));
          exact += static_cast<long double>(x(i, c)) * static_cast<long double>(w(n, c));
        }
        error += (quantized - exact) * (quantized - exact);
      }
    }
  }
  return error;
}

}  // namespace

TEST_CASE("α search on doubles whose products or squared errors leave double's range chooses the true argmin") {
  // Issue 23, item 5: the objective was formed as plain doubles. With X and W
  // near 2^500 each, X·Wᵀ ≈ 2^1000 and its squared error ≈ 2^2000: every α's
  // error was +inf and the first α won; near 2^520, X·Wᵀ itself overflowed,
  // every error was inf − inf = NaN, and the search returned no scales at
  // all. Near 2^−540 every error underflowed to 0, a tie the first α won. The
  // reference: the same objective in long double, by loops.
  if constexpr (std::numeric_limits<long double>::max_exponent < 16384) {
    MESSAGE("skipped: long double has no wider exponent range than double here");
    return;
  }
  const QuantSpec a8 = QuantSpec::per_token(8, true);
  const QuantSpec w4 = QuantSpec::per_channel(4, true);
  // X scaled by 2^p, W by 2^q. At 2^520·2^505 X·Wᵀ overflows, and so do
  // X̂ = X·max|W_j| at α = 0 and Ŵ = W·max|X_j| at α = 1 (refused, as the
  // test above checks): the grid there is 0.2, 0.25, …, 0.8, where X̂ and Ŵ
  // stay near (|X|·|W|)^0.8 ≈ 2^820.
  std::vector<double> middle;
  for (int k = 4; k <= 16; ++k) middle.push_back(k / 20.0);
  struct Case {
    int p, q;
    std::vector<double> alphas;
  };
  for (const Case& c : {Case{0, 0, default_alpha_grid()}, Case{500, 500, default_alpha_grid()},
                        Case{520, 505, middle}, Case{-540, -540, default_alpha_grid()},
                        Case{900, -880, default_alpha_grid()}, Case{-600, 100, default_alpha_grid()}}) {
    const int p = c.p, q = c.q;
    CAPTURE(p);
    CAPTURE(q);
    const MatrixX<double> x = std::ldexp(1.0, p) * activations_with_outliers<double>(24, 16, 71, 50.0);
    const std::vector<MatrixX<double>> weights{std::ldexp(1.0, q) * oq::test::gaussian<double>(6, 16, 72, 0.02),
                                               std::ldexp(1.0, q) * oq::test::gaussian<double>(5, 16, 73, 0.02)};
    // The floors scaled with W (and out of the way for s), so that at every
    // magnitude the search is the same problem up to the rounding of pow.
    const AlphaSearchOptions options{.alphas = c.alphas, .weight_floor = std::ldexp(1e-5, q), .scale_floor = 1e-300};
    const auto found = search_smoothing_alpha(x, weights, a8, w4, options);
    REQUIRE(found.errors.size() == found.alphas.size());
    long double best = std::numeric_limits<long double>::infinity();
    std::size_t best_index = 0;
    for (std::size_t i = 0; i < found.alphas.size(); ++i) {
      CAPTURE(i);
      const long double reference = quantized_error_long_double(x, weights, found.alphas[i], a8, w4, options);
      REQUIRE(std::isfinite(reference));
      REQUIRE(reference > 0);
      if (reference < best) best = reference, best_index = i;
      // The reported error is the reference rounded to double: +inf beyond
      // DBL_MAX, 0 or subnormal below DBL_MIN. The GEMMs in double differ
      // from the loops by γ_C·Σ|a·b| per entry, far below the 4-bit error
      // (relative 1e−9 of it is plenty); subnormal results by a few ulps.
      const double rounded = reference > std::numeric_limits<double>::max() ? std::numeric_limits<double>::infinity()
                                                                             : static_cast<double>(reference);
      if (std::isinf(rounded)) {
        CHECK(std::isinf(found.errors[i]));
      } else {
        CHECK(std::fabs(found.errors[i] - rounded) <=
              1e-9 * rounded + 4 * std::numeric_limits<double>::denorm_min());
      }
    }
    CHECK(found.alpha == found.alphas[best_index]);
    CHECK(found.alpha > found.alphas.front());  // not the first α by default
    CHECK(found.error == found.errors[best_index]);
    CHECK(found.scales == smoothing_scales(activation_channel_absmax(x), weight_channel_absmax(weights),
                                           {.alpha = found.alpha,
                                            .weight_floor = options.weight_floor,
                                            .scale_floor = options.scale_floor}));
  }
}
