#include <oq/quant/lwc.hpp>

#include <oq/quant/clip_search.hpp>
#include <oq/quant/gptq.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

using namespace oq::quant;
using oq::test::MatrixX;

namespace {

double sigmoid_ref(double a) { return 1.0 / (1.0 + std::exp(-a)); }
double levels(int bits) { return std::ldexp(1.0, bits) - 1; }

// Logits spread over [lo, hi] by a fixed pattern (no generator needed).
template <class T>
MatrixX<T> logits(Eigen::Index rows, Eigen::Index cols, double lo, double hi, int salt) {
  MatrixX<T> m(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i)
    for (Eigen::Index j = 0; j < cols; ++j)
      m(i, j) = static_cast<T>(lo + (hi - lo) * double((i * 7 + j * 3 + salt) % 11) / 10.0);
  return m;
}

// ‖X·Wᵀ − X·Ŵᵀ‖²_F / n from the calibration inputs themselves (not from H).
double output_error(const MatrixX<double>& x, const MatrixX<double>& w, const MatrixX<double>& w_hat) {
  return (x * (w - w_hat).transpose()).squaredNorm() / double(x.rows());
}

// One group's LWC state at logits (a, b), written out from OmniQuant eq. 2
// in plain double loops.
struct GroupRef {
  double m, big, gamma, beta, h, z;
};

GroupRef group_ref(const std::vector<double>& w, double a, double b, int bits) {
  GroupRef g{};
  g.m = *std::min_element(w.begin(), w.end());
  g.big = *std::max_element(w.begin(), w.end());
  g.gamma = sigmoid_ref(a);
  g.beta = sigmoid_ref(b);
  g.h = (g.gamma * g.big - g.beta * g.m) / levels(bits);
  g.z = -std::nearbyint(g.beta * g.m / g.h);  // the paper's −rne(β·m/h)
  return g;
}

// The straight-through surrogate of one group at logits (a, b), with the
// rounding residuals ρ = rne(w/h₀) − w/h₀, the clamp branches and (kNone)
// the zero point frozen at (a0, b0): what autograd of the release
// differentiates. Returns Σ g·Ŵ_surrogate.
double surrogate_loss(const std::vector<double>& w, const std::vector<double>& grad, double a0, double b0, double a,
                      double b, int bits, LwcZeroGradient mode) {
  const double big_l = levels(bits);
  const GroupRef p0 = group_ref(w, a0, b0, bits);
  const double rho_z = p0.z + p0.beta * p0.m / p0.h;  // z₀ = −β₀·m/h₀ + ρ_z
  const GroupRef p = group_ref(w, a, b, bits);
  const double z = mode == LwcZeroGradient::kNone ? p0.z : -p.beta * p.m / p.h + rho_z;
  double sum = 0;
  for (std::size_t k = 0; k < w.size(); ++k) {
    const double r0 = std::nearbyint(w[k] / p0.h);
    const double v0 = r0 + p0.z;
    const double rho = r0 - w[k] / p0.h;
    double x_int = w[k] / p.h + rho + z;  // round_ste(w/h) + z
    if (v0 < 0) x_int = 0;                // the branch of the clamp at (a0, b0)
    if (v0 > big_l) x_int = big_l;
    sum += grad[k] * (x_int - z) * p.h;
  }
  return sum;
}

std::vector<double> group_values(const MatrixX<double>& m, Eigen::Index row, Eigen::Index col, Eigen::Index width) {
  std::vector<double> out;
  for (Eigen::Index c = col; c < col + width; ++c) out.push_back(m(row, c));
  return out;
}

// Two trainings gave the same result, bit for bit: factors, weight, codes
// and both losses.
template <class T>
void check_same_result(const LwcResult<T>& a, const LwcResult<T>& b) {
  CHECK(a.upper == b.upper);
  CHECK(a.lower == b.lower);
  CHECK(a.weight == b.weight);
  CHECK(a.codes == b.codes);
  CHECK(a.loss == b.loss);
  CHECK(a.initial_loss == b.initial_loss);
}

}  // namespace

TEST_CASE("LWC forward is OmniQuant eq. 2, written out in plain loops") {
  const MatrixX<double> w = oq::test::heavy_tailed<double>(6, 48, 11);
  for (const QuantSpec& spec : {QuantSpec::per_channel(4, false), QuantSpec::per_group(3, false, 16),
                                QuantSpec::per_channel(8, false), QuantSpec::per_group(2, false, 8)}) {
    CAPTURE(spec.bits);
    CAPTURE(spec.group_size);
    const Eigen::Index cols = spec.param_cols(w.cols());
    const Eigen::Index width = spec.block_cols(w.cols());
    const MatrixX<double> a = logits<double>(w.rows(), cols, 0.5, 5.0, 1);
    const MatrixX<double> b = logits<double>(w.rows(), cols, 0.5, 5.0, 4);
    const QuantParams<double> params = lwc_params(w, a, b, spec);
    const MatrixX<double> w_hat = lwc_fake_quantize(w, a, b, spec);
    for (Eigen::Index i = 0; i < w.rows(); ++i) {
      for (Eigen::Index j = 0; j < cols; ++j) {
        const GroupRef g = group_ref(group_values(w, i, j * width, width), a(i, j), b(i, j), spec.bits);
        CHECK(params.scale(i, j) == g.h);
        CHECK(params.zero(i, j) == g.z);
        for (Eigen::Index c = j * width; c < (j + 1) * width; ++c) {
          const double q = std::clamp(std::nearbyint(w(i, c) / g.h) + g.z, 0.0, levels(spec.bits));
          CHECK(w_hat(i, c) == (q - g.z) * g.h);
        }
      }
    }
  }

  // float: the release's arithmetic in float (σ rounded to float, then
  // σ·max, σ·min, range, /L, −min/scale), bit for bit.
  const MatrixX<float> wf = oq::test::heavy_tailed<float>(5, 32, 12);
  const MatrixX<float> af = logits<float>(5, 1, 1.0, 4.0, 2);
  const MatrixX<float> bf = logits<float>(5, 1, 1.0, 4.0, 5);
  const QuantSpec spec = QuantSpec::per_channel(4, false);
  const QuantParams<float> pf = lwc_params(wf, af, bf, spec);
  for (Eigen::Index i = 0; i < wf.rows(); ++i) {
    const float gamma = static_cast<float>(sigmoid_ref(af(i, 0)));
    const float beta = static_cast<float>(sigmoid_ref(bf(i, 0)));
    const float lo = beta * wf.row(i).minCoeff();
    const float hi = gamma * wf.row(i).maxCoeff();
    const float h = (hi - lo) / 15.0f;
    CHECK(pf.scale(i, 0) == h);
    CHECK(pf.zero(i, 0) == std::nearbyint(-lo / h));
  }
}

TEST_CASE("LWC with equal factors is the fixed clip ratio of compute_params") {
  // γ = β = c makes eq. 2 docs/design.md §2's asymmetric quantizer at ratio c,
  // degenerate rows (zero, constant) included.
  const MatrixX<float> w = oq::test::adversarial<float>(8, 24, 13);
  for (double logit : {4.0, 1.2, -0.3}) {
    CAPTURE(logit);
    const MatrixX<float> a = MatrixX<float>::Constant(8, 1, static_cast<float>(logit));
    const float c = static_cast<float>(sigmoid_ref(logit));
    const QuantParams<float> lwc = lwc_params(w, a, a, QuantSpec::per_channel(4, false));
    const QuantParams<float> fixed = compute_params(w, QuantSpec::per_channel(4, false, c));
    CHECK(lwc.scale == fixed.scale);
    CHECK(lwc.zero == fixed.zero);
  }
}

TEST_CASE("LWC gradients equal central differences of the straight-through surrogate") {
  MatrixX<double> w = oq::test::heavy_tailed<double>(5, 48, 21);
  w.row(4) = w.row(4).cwiseAbs().array() + 0.5;  // a row on one side of 0: its zero point is outside [0, L]
  const MatrixX<double> grad_out = oq::test::gaussian<double>(5, 48, 22);
  const double eps = 1e-5;
  for (const QuantSpec& spec : {QuantSpec::per_channel(4, false), QuantSpec::per_group(3, false, 12)}) {
    const Eigen::Index cols = spec.param_cols(w.cols());
    const Eigen::Index width = spec.block_cols(w.cols());
    // Logits from 0.3 (σ = 0.57, heavy clipping) to 3 (σ = 0.95).
    const MatrixX<double> a = logits<double>(w.rows(), cols, 0.3, 3.0, 2);
    const MatrixX<double> b = logits<double>(w.rows(), cols, 0.3, 3.0, 6);
    const QuantParams<double> params = lwc_params(w, a, b, spec);
    const auto codes = quantize(w, params, spec);
    const auto none = lwc_grad(w, a, b, spec, grad_out);
    const auto ste = lwc_grad(w, a, b, spec, grad_out, LwcZeroGradient::kStraightThrough);
    int clamped_groups = 0;
    for (Eigen::Index i = 0; i < w.rows(); ++i) {
      for (Eigen::Index j = 0; j < cols; ++j) {
        CAPTURE(i);
        CAPTURE(j);
        const std::vector<double> wg = group_values(w, i, j * width, width);
        const std::vector<double> gg = group_values(grad_out, i, j * width, width);
        // The surrogate is the forward at the point.
        double forward = 0;
        const MatrixX<double> w_hat = fake_quantize(w, params, spec);
        for (Eigen::Index c = 0; c < width; ++c) forward += gg[std::size_t(c)] * w_hat(i, j * width + c);
        for (LwcZeroGradient mode : {LwcZeroGradient::kNone, LwcZeroGradient::kStraightThrough}) {
          const auto f = [&](double da, double db) {
            return surrogate_loss(wg, gg, a(i, j), b(i, j), a(i, j) + da, b(i, j) + db, spec.bits, mode);
          };
          CHECK(f(0, 0) == doctest::Approx(forward).epsilon(1e-12));
          const double fd_a = (f(eps, 0) - f(-eps, 0)) / (2 * eps);
          const double fd_b = (f(0, eps) - f(0, -eps)) / (2 * eps);
          const auto& g = mode == LwcZeroGradient::kNone ? none : ste;
          // Smooth in (a, b) on fixed branches: O(eps²) truncation, and the
          // rounding of sums of ~50 terms of size ≤ 10 over 2·eps (< 1e−9).
          CHECK(g.upper(i, j) == doctest::Approx(fd_a).epsilon(1e-6).scale(1e-3));
          CHECK(g.lower(i, j) == doctest::Approx(fd_b).epsilon(1e-6).scale(1e-3));
          CHECK(std::abs(fd_a) + std::abs(fd_b) > 1e-4);  // not trivially zero
        }
        // The two readings of z differ exactly where entries are clamped.
        bool any_clamped = false;
        for (Eigen::Index c = j * width; c < (j + 1) * width; ++c)
          any_clamped = any_clamped || codes(i, c) == 0 || codes(i, c) == levels(spec.bits);
        if (std::abs(none.lower(i, j) - ste.lower(i, j)) > 1e-6) {
          CHECK(any_clamped);
          ++clamped_groups;
        }
        CHECK(none.upper(i, j) != 0);
      }
    }
    CHECK(clamped_groups >= w.rows());
  }
}

TEST_CASE("LWC degenerate groups: zero and constant rows, a huge outlier, crossed clips") {
  MatrixX<double> w = oq::test::adversarial<double>(6, 32, 31);
  const QuantSpec spec = QuantSpec::per_channel(4, false);
  MatrixX<double> a = MatrixX<double>::Constant(6, 1, 4.0);
  MatrixX<double> b = MatrixX<double>::Constant(6, 1, 4.0);
  // Row 4 is all positive: with β = σ(6) > γ·M/m it crosses (γ·M < β·m).
  const double ratio = w.row(4).maxCoeff() / w.row(4).minCoeff();
  a(4, 0) = -std::log(ratio * (1 + std::exp(-6.0)) - 1);  // σ(a)·M = σ(6)·m ...
  a(4, 0) -= 0.5;                                         // ... and a bit below
  b(4, 0) = 6.0;
  const MatrixX<double> w_hat = lwc_fake_quantize(w, a, b, spec);
  CHECK(w_hat.row(0).isZero(0));                               // all zero: s = 1, z = 0
  CHECK(w_hat.row(1) == w.row(1));                             // constant rows exactly
  CHECK(w_hat.row(2) == w.row(2));
  CHECK(w_hat.allFinite());
  CHECK(std::abs(w_hat(3, 16) - 1e4) <= 0.1 * 1e4);            // the outlier is (nearly) kept
  // Crossed row 4: the unclipped grid, as plain RTN gives it.
  const MatrixX<double> rtn = fake_quantize(w, spec);
  CHECK(w_hat.row(4) == rtn.row(4));
  const auto g = lwc_grad(w, a, b, spec, oq::test::gaussian<double>(6, 32, 32));
  for (Eigen::Index r : {0, 1, 2, 4}) {
    CAPTURE(r);
    CHECK(g.upper(r, 0) == 0);
    CHECK(g.lower(r, 0) == 0);
  }
  CHECK(std::isfinite(g.upper(3, 0)));
  CHECK(g.upper(3, 0) != 0);
}

TEST_CASE("train_lwc: lower output error than at init and than RTN on heavy-tailed weights") {
  // Heavy-tailed rows (Student t, 3 dof) where clipping pays; correlated
  // inputs of unequal energy.
  const MatrixX<double> w = oq::test::heavy_tailed<double>(24, 64, 41) * 0.05;
  const MatrixX<double> x = oq::test::correlated_inputs(256, 64, 42);
  GptqHessian acc(64);
  acc.add(x);
  const Eigen::MatrixXd h = acc.matrix();
  for (const QuantSpec& spec : {QuantSpec::per_channel(4, false), QuantSpec::per_group(3, false, 16)}) {
    CAPTURE(spec.bits);
    LwcOptions options;
    options.steps = 300;
    const LwcResult<double> r = train_lwc(w, h, spec, options);
    const Eigen::Index cols = spec.param_cols(w.cols());
    const MatrixX<double> init = MatrixX<double>::Constant(w.rows(), cols, 4.0);
    // The losses it reports are the output errors of its weights, from X.
    CHECK(r.initial_loss == doctest::Approx(output_error(x, w, lwc_fake_quantize(w, init, init, spec))).epsilon(1e-9));
    CHECK(r.loss == doctest::Approx(output_error(x, w, r.weight)).epsilon(1e-9));
    const double rtn = output_error(x, w, fake_quantize(w, spec));
    const double search = output_error(x, w, fake_quantize(w, search_clip_mse(w, spec).params, spec));
    MESSAGE("bits ", spec.bits, ": RTN ", rtn, ", clip search ", search, ", LWC init ", r.initial_loss, ", trained ",
            r.loss);
    CHECK(r.loss <= r.initial_loss);
    CHECK(r.loss < 0.9 * rtn);
    CHECK(r.loss < search);
    // What it returns is one consistent quantization, ready to pack.
    CHECK(r.params.scale == lwc_params(w, r.upper, r.lower, spec).scale);
    CHECK(r.params.zero == lwc_params(w, r.upper, r.lower, spec).zero);
    CHECK(r.weight == fake_quantize(w, r.params, spec));
    CHECK(r.codes == quantize(w, r.params, spec));
    CHECK(dequantize(r.codes, r.params, spec) == r.weight);
    CHECK(r.upper_clip.minCoeff() > 0);
    CHECK(r.upper_clip.maxCoeff() < 1);
    CHECK(r.lower_clip.minCoeff() > 0);
    CHECK(r.lower_clip.maxCoeff() < 1);
    for (Eigen::Index i = 0; i < r.upper.rows(); ++i)
      CHECK(r.upper_clip(i, 0) == doctest::Approx(sigmoid_ref(r.upper(i, 0))).epsilon(1e-15));
    // The factors moved: some channel clips well below σ(4).
    CHECK(r.upper_clip.minCoeff() < 0.9);
  }
}

namespace {

// A plain reference of train_lwc's loop, from the tokens X instead of H
// (and without the code products): loss_r = ‖X·(w_r − ŵ_r)ᵀ‖²/n over
// ‖X·w_rᵀ‖²/n, its gradient −(2/n)·(X·e_rᵀ)ᵀ·X through lwc_grad, AdamW
// written out, each row's best step kept.
struct Reference {
  MatrixX<double> upper, lower;
  double loss = 0;
};

Reference train_reference(const MatrixX<double>& w, const MatrixX<double>& x, const QuantSpec& spec,
                          const LwcOptions& o) {
  const double n = double(x.rows());
  const Eigen::Index cols = spec.param_cols(w.cols());
  MatrixX<double> a = MatrixX<double>::Constant(w.rows(), cols, o.init), b = a;
  MatrixX<double> ma = MatrixX<double>::Zero(w.rows(), cols), va = ma, mb = ma, vb = ma;
  Reference best{a, b, 0};
  std::vector<double> best_loss(std::size_t(w.rows()), std::numeric_limits<double>::infinity());
  for (int t = 0; t <= o.steps; ++t) {
    const MatrixX<double> e = w - lwc_fake_quantize(w, a, b, spec);
    const MatrixX<double> xe = x * e.transpose();  // n × out
    for (Eigen::Index r = 0; r < w.rows(); ++r) {
      const double loss = xe.col(r).squaredNorm() / n;
      if (loss < best_loss[std::size_t(r)]) {
        best_loss[std::size_t(r)] = loss;
        best.upper.row(r) = a.row(r);
        best.lower.row(r) = b.row(r);
      }
    }
    if (t == o.steps) break;
    const MatrixX<double> grad_out = -(2.0 / n) * xe.transpose() * x;
    auto g = lwc_grad(w, a, b, spec, grad_out, o.zero_gradient);
    for (Eigen::Index r = 0; r < w.rows(); ++r) {
      const double energy = (x * w.row(r).transpose()).squaredNorm() / n;
      g.upper.row(r) /= energy;
      g.lower.row(r) /= energy;
    }
    const double c1 = 1 - std::pow(o.beta1, t + 1), c2 = 1 - std::pow(o.beta2, t + 1);
    const auto adam = [&](MatrixX<double>& p, MatrixX<double>& m, MatrixX<double>& v, const MatrixX<double>& gr) {
      for (Eigen::Index i = 0; i < p.size(); ++i) {
        m.data()[i] = o.beta1 * m.data()[i] + (1 - o.beta1) * gr.data()[i];
        v.data()[i] = o.beta2 * v.data()[i] + (1 - o.beta2) * gr.data()[i] * gr.data()[i];
        p.data()[i] *= 1 - o.learning_rate * o.weight_decay;
        p.data()[i] -= o.learning_rate * (m.data()[i] / c1) / (std::sqrt(v.data()[i] / c2) + o.epsilon);
      }
    };
    adam(a, ma, va, g.upper);
    adam(b, mb, vb, g.lower);
  }
  best.loss = output_error(x, w, lwc_fake_quantize(w, best.upper, best.lower, spec));
  return best;
}

}  // namespace

TEST_CASE("train_lwc follows a plain reference loop on the tokens, per channel (code products) and per group") {
  const MatrixX<double> w = oq::test::heavy_tailed<double>(12, 48, 81) * 0.1;
  const MatrixX<double> x = oq::test::correlated_inputs(160, 48, 82);
  const MatrixX<double> h = oq::test::gptq_hessian_of(x);
  for (const QuantSpec& spec : {QuantSpec::per_channel(4, false), QuantSpec::per_group(3, false, 12)}) {
    for (LwcZeroGradient mode : {LwcZeroGradient::kNone, LwcZeroGradient::kStraightThrough}) {
      CAPTURE(spec.group_size);
      LwcOptions o;
      o.steps = 120;
      o.zero_gradient = mode;
      const LwcResult<double> r = train_lwc(w, h, spec, o);
      const Reference ref = train_reference(w, x, spec, o);
      // The same trajectory up to rounding (the two compute E·H in different
      // orders); every Adam step is ±lr at most, so a differing sign would
      // show as a difference of order lr.
      CHECK((r.upper - ref.upper).cwiseAbs().maxCoeff() < 1e-8);
      CHECK((r.lower - ref.lower).cwiseAbs().maxCoeff() < 1e-8);
      CHECK(r.loss == doctest::Approx(ref.loss).epsilon(1e-9));
      CHECK(r.loss < r.initial_loss);
    }
  }
}

TEST_CASE("train_lwc: keep_best, determinism, zero steps, the first AdamW step, float") {
  const MatrixX<double> w = oq::test::heavy_tailed<double>(10, 32, 51);
  const MatrixX<double> x = oq::test::correlated_inputs(128, 32, 52);
  const MatrixX<double> h = oq::test::gptq_hessian_of(x);
  const QuantSpec spec = QuantSpec::per_channel(4, false);
  LwcOptions options;
  options.steps = 80;
  const LwcResult<double> best = train_lwc(w, h, spec, options);
  const LwcResult<double> again = train_lwc(w, h, spec, options);
  check_same_result(best, again);
  options.keep_best = false;
  const LwcResult<double> last = train_lwc(w, h, spec, options);
  // The same trajectory; each row keeps its best step, the last among them.
  CHECK(best.loss <= last.loss);
  CHECK(best.initial_loss == last.initial_loss);

  options.steps = 0;
  const LwcResult<double> none = train_lwc(w, h, spec, options);
  CHECK((none.upper.array() == 4.0).all());
  CHECK((none.lower.array() == 4.0).all());
  CHECK(none.loss == none.initial_loss);

  // One AdamW step: m̂ = g, v̂ = g², so a₁ = a₀ − lr·g/(|g| + ε) with g the
  // gradient of row r's loss over its full-precision output energy.
  options.steps = 1;
  options.learning_rate = 0.03;
  options.weight_decay = 0.1;
  const LwcResult<double> one = train_lwc(w, h, spec, options);
  const MatrixX<double> init = MatrixX<double>::Constant(10, 1, 4.0);
  const MatrixX<double> e = w - lwc_fake_quantize(w, init, init, spec);
  const auto g = lwc_grad(w, init, init, spec, MatrixX<double>(-e * h));
  for (Eigen::Index r = 0; r < w.rows(); ++r) {
    CAPTURE(r);
    const double energy = 0.5 * w.row(r).dot(h * w.row(r).transpose());
    const auto step = [&](double grad) {
      const double gn = grad / energy;
      return 4.0 * (1 - 0.03 * 0.1) - 0.03 * gn / (std::abs(gn) + 1e-8);
    };
    CHECK(one.upper(r, 0) == doctest::Approx(step(g.upper(r, 0))).epsilon(1e-12));
    CHECK(one.lower(r, 0) == doctest::Approx(step(g.lower(r, 0))).epsilon(1e-12));
  }

  // float weights: the same training in the weight's type.
  const MatrixX<float> wf = w.cast<float>();
  LwcOptions fo;
  fo.steps = 80;
  const LwcResult<float> rf = train_lwc(wf, h, spec, fo);
  CHECK(rf.loss <= rf.initial_loss);
  CHECK(rf.loss < 0.95 * output_error(x, w, fake_quantize(wf, spec).cast<double>()));
  CHECK(rf.loss == doctest::Approx(output_error(x, w, rf.weight.cast<double>())).epsilon(1e-6));
  CHECK(rf.weight == lwc_fake_quantize(wf, rf.upper, rf.lower, spec));
}

TEST_CASE("train_lwc on adversarial rows and with the straight-through zero point") {
  MatrixX<float> w = oq::test::adversarial<float>(8, 32, 61);
  const MatrixX<double> x = oq::test::correlated_inputs(96, 32, 62);
  const MatrixX<double> h = oq::test::gptq_hessian_of(x);
  for (LwcZeroGradient mode : {LwcZeroGradient::kNone, LwcZeroGradient::kStraightThrough}) {
    for (const QuantSpec& spec : {QuantSpec::per_channel(4, false), QuantSpec::per_group(4, false, 8)}) {
      LwcOptions options;
      options.steps = 40;
      options.zero_gradient = mode;
      const LwcResult<float> r = train_lwc(w, h, spec, options);
      CHECK(std::isfinite(r.loss));
      CHECK(r.loss <= r.initial_loss);
      CHECK(r.weight.allFinite());
      CHECK(r.weight.row(0).isZero(0));
      CHECK(r.weight.row(1) == w.row(1));
      CHECK(r.weight.row(2) == w.row(2));
      // Degenerate rows pass no gradient: their logits stay at init.
      CHECK((r.upper.row(0).array() == 4.0f).all());
      CHECK((r.lower.row(1).array() == 4.0f).all());
    }
  }
  // A Hessian of zeros (inputs never excited): nothing to fit, nothing moves.
  const LwcResult<float> idle = train_lwc(w, MatrixX<double>::Zero(32, 32), QuantSpec::per_channel(4, false));
  CHECK(idle.loss == 0);
  CHECK((idle.upper.array() == 4.0f).all());
}

TEST_CASE("train_lwc: loss <= initial_loss exactly, even where large steps make most steps worse than init") {
  // Both losses are computed afresh (not from the incrementally updated code
  // products) and a row the fresh count finds worse than init is reset to
  // it, so the bound is exact: no tolerance for the rounding of the updates.
  // Large learning rates make the trajectory jump, so that many rows keep an
  // early step or init itself.
  const MatrixX<double> w = oq::test::heavy_tailed<double>(16, 48, 91) * 0.2;
  const MatrixX<double> x = oq::test::correlated_inputs(128, 48, 92);
  const MatrixX<double> h = oq::test::gptq_hessian_of(x);
  for (const QuantSpec& spec : {QuantSpec::per_channel(4, false), QuantSpec::per_group(3, false, 16)}) {
    for (double lr : {0.05, 0.3, 1.0}) {
      for (LwcZeroGradient mode : {LwcZeroGradient::kNone, LwcZeroGradient::kStraightThrough}) {
        CAPTURE(spec.group_size);
        CAPTURE(lr);
        LwcOptions o;
        o.steps = 150;
        o.learning_rate = lr;
        o.zero_gradient = mode;
        const LwcResult<double> r = train_lwc(w, h, spec, o);
        CHECK(r.loss <= r.initial_loss);
        // The reported loss is that of the returned weights, from the tokens.
        CHECK(r.loss == doctest::Approx(output_error(x, w, r.weight)).epsilon(1e-9));
        CHECK(r.weight == lwc_fake_quantize(w, r.upper, r.lower, spec));
      }
    }
  }
}

TEST_CASE("train_lwc: the Hessian must be symmetric to rounding with a diagonal >= 0; it is used as (H + Hᵀ)/2") {
  const MatrixX<double> w = oq::test::heavy_tailed<double>(6, 16, 93) * 0.1;
  const MatrixX<double> x = oq::test::correlated_inputs(64, 16, 94);
  const MatrixX<double> h = oq::test::gptq_hessian_of(x);  // a GEMM: symmetric only to rounding
  const QuantSpec spec = QuantSpec::per_channel(4, false);
  LwcOptions o;
  o.steps = 30;
  const double top = h.cwiseAbs().maxCoeff();
  // Within the tolerance (1e−5·max |H|): accepted, and trained on exactly
  // the symmetric part, (H + Hᵀ)/2.
  MatrixX<double> skewed = h;
  skewed(2, 5) += 0.5e-5 * top;
  const MatrixX<double> symmetric = 0.5 * (skewed + skewed.transpose());
  const LwcResult<double> a = train_lwc(w, skewed, spec, o);
  const LwcResult<double> b = train_lwc(w, symmetric, spec, o);
  check_same_result(a, b);
  // Beyond it, or a triangle only, or a negative diagonal: refused, naming it.
  skewed(2, 5) = h(2, 5) + 2e-5 * top;
  CHECK_THROWS_WITH_AS(train_lwc(w, skewed, spec, o), doctest::Contains("hessian must be symmetric"),
                       std::invalid_argument);
  const MatrixX<double> lower = h.triangularView<Eigen::Lower>();
  CHECK_THROWS_WITH_AS(train_lwc(w, lower, spec, o), doctest::Contains("hessian must be symmetric"),
                       std::invalid_argument);
  MatrixX<double> negative = h;
  negative(3, 3) = -1.0;
  CHECK_THROWS_WITH_AS(train_lwc(w, negative, spec, o), doctest::Contains("hessian's diagonal must be >= 0"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(train_lwc(w, MatrixX<double>::Identity(16, 15), spec, o),
                       doctest::Contains("hessian must be 16 x 16"), std::invalid_argument);
  // A float Hessian is checked the same way.
  MatrixX<float> hf = h.cast<float>();
  hf(0, 1) += static_cast<float>(1e-3 * top);
  CHECK_THROWS_WITH_AS(train_lwc(w.cast<float>().eval(), hf, spec, o), doctest::Contains("hessian must be symmetric"),
                       std::invalid_argument);
}

TEST_CASE("train_lwc: per-group training is refused above options.max_group_work = steps · out · in²") {
  const MatrixX<double> w = oq::test::heavy_tailed<double>(4, 16, 95);
  const MatrixX<double> h = oq::test::gptq_hessian_of(oq::test::correlated_inputs(32, 16, 96));
  const QuantSpec group = QuantSpec::per_group(4, false, 8);
  LwcOptions o;
  o.steps = 10;
  const double work = 10.0 * 4 * 16 * 16;  // 10240
  o.max_group_work = work;                  // exactly the cost: accepted
  const LwcResult<double> at_limit = train_lwc(w, h, group, o);
  o.max_group_work = 0;                     // no limit: the same training
  CHECK(train_lwc(w, h, group, o).upper == at_limit.upper);
  o.max_group_work = work - 1;
  CHECK_THROWS_WITH_AS(train_lwc(w, h, group, o),
                       doctest::Contains("per-group LWC costs steps · out · in² = 10 · 4 · 16² = 10240 multiply-adds, "
                                         "above options.max_group_work = 10239"),
                       std::invalid_argument);
  // Per channel the steps do not cost out · in²: the limit does not apply.
  CHECK_NOTHROW(train_lwc(w, h, QuantSpec::per_channel(4, false), o));
  // The default admits a 1024 × 1024 linear at the default 500 steps, not a 4096 × 4096 one.
  const LwcOptions defaults;
  CHECK(defaults.max_group_work >= 500.0 * 1024 * 1024 * 1024);
  CHECK(defaults.max_group_work < 500.0 * 4096 * 4096 * 4096);
  o.max_group_work = -1;
  CHECK_THROWS_WITH_AS(train_lwc(w, h, group, o), doctest::Contains("options.max_group_work must be >= 0"),
                       std::invalid_argument);
}

TEST_CASE("LWC rejects bad input, naming it") {
  const MatrixX<double> w = oq::test::gaussian<double>(4, 16, 71);
  const MatrixX<double> h = MatrixX<double>::Identity(16, 16);
  const MatrixX<double> a = MatrixX<double>::Constant(4, 1, 4.0);
  const QuantSpec spec = QuantSpec::per_channel(4, false);
  for (int bits : {1, 9, 0}) {
    CAPTURE(bits);
    QuantSpec bad = spec;
    bad.bits = bits;
    CHECK_THROWS_WITH_AS(train_lwc(w, h, bad), doctest::Contains("spec.bits must be in [2, 8]"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(lwc_params(w, a, a, bad), doctest::Contains("spec.bits must be in [2, 8]"),
                         std::invalid_argument);
  }
  CHECK_THROWS_WITH_AS(train_lwc(w, h, QuantSpec::per_channel(4, true)), doctest::Contains("spec.symmetric must be false"),
                       std::invalid_argument);
  QuantSpec widened = spec;
  widened.range_includes_zero = true;
  CHECK_THROWS_WITH_AS(lwc_params(w, a, a, widened), doctest::Contains("spec.range_includes_zero"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(train_lwc(w, h, QuantSpec::per_tensor(4, false)), doctest::Contains("spec.granularity"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(train_lwc(w, h, QuantSpec::per_group(4, false, 5)), doctest::Contains("spec.group_size (5)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(train_lwc(MatrixX<double>(0, 16), h, spec), doctest::Contains("non-empty"),
                       std::invalid_argument);
  // Shapes.
  CHECK_THROWS_WITH_AS(train_lwc(w, MatrixX<double>::Identity(15, 15), spec),
                       doctest::Contains("hessian must be 16 x 16"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(lwc_params(w, MatrixX<double>::Constant(3, 1, 4.0), a, spec),
                       doctest::Contains("upper must be 4 x 1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(lwc_params(w, a, a, QuantSpec::per_group(4, false, 8)),
                       doctest::Contains("upper must be 4 x 2 (one logit per group"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(lwc_grad(w, a, a, spec, MatrixX<double>::Zero(4, 15)), doctest::Contains("grad_out must be 4 x 16"),
                       std::invalid_argument);
  // Non-finite values.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  MatrixX<double> w_nan = w;
  w_nan(2, 7) = nan;
  CHECK_THROWS_WITH_AS(train_lwc(w_nan, h, spec), doctest::Contains("w(2, 7) is nan"), std::domain_error);
  CHECK_THROWS_WITH_AS(lwc_fake_quantize(w_nan, a, a, spec), doctest::Contains("w(2, 7)"), std::domain_error);
  MatrixX<double> h_inf = h;
  h_inf(3, 3) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH_AS(train_lwc(w, h_inf, spec), doctest::Contains("hessian(3, 3) is inf"), std::domain_error);
  MatrixX<double> g_nan = MatrixX<double>::Zero(4, 16);
  g_nan(0, 1) = nan;
  CHECK_THROWS_WITH_AS(lwc_grad(w, a, a, spec, g_nan), doctest::Contains("grad_out(0, 1) is nan"), std::domain_error);
  MatrixX<double> a_nan = a;
  a_nan(1, 0) = nan;
  CHECK_THROWS_WITH_AS(lwc_grad(w, a, a_nan, spec, g_nan), doctest::Contains("lower(1, 0) must be finite"),
                       std::invalid_argument);
  // Options.
  const auto with = [](auto set) {
    LwcOptions o;
    set(o);
    return o;
  };
  CHECK_THROWS_WITH_AS(train_lwc(w, h, spec, with([](LwcOptions& o) { o.steps = -1; })),
                       doctest::Contains("options.steps must be >= 0"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(train_lwc(w, h, spec, with([](LwcOptions& o) { o.learning_rate = 0; })),
                       doctest::Contains("options.learning_rate"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(train_lwc(w, h, spec, with([nan](LwcOptions& o) { o.init = nan; })),
                       doctest::Contains("options.init must be finite"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(train_lwc(w, h, spec, with([](LwcOptions& o) { o.beta1 = 1; })),
                       doctest::Contains("options.beta1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(train_lwc(w, h, spec, with([](LwcOptions& o) { o.beta2 = -0.1; })),
                       doctest::Contains("options.beta2"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(train_lwc(w, h, spec, with([](LwcOptions& o) { o.epsilon = 0; })),
                       doctest::Contains("options.epsilon"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(train_lwc(w, h, spec, with([](LwcOptions& o) { o.weight_decay = -1; })),
                       doctest::Contains("options.weight_decay"), std::invalid_argument);
}
