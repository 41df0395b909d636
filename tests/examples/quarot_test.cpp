// Tests of QuaRot in tools/llama/methods.hpp (Rotation::kQuaRot; Ashkboos et
// al. 2024): exact without rounding; the derivation that its input
// transforms diag(γ)⁻¹·Q (residual-fed inputs) and H (o_proj, down_proj
// inputs), with the output rotations of v_proj, o_proj and down_proj, are the
// model with γ folded and the residual stream rotated, computed both ways;
// the rotated activations' kurtosis against the value a randomized Hadamard
// predicts; seeds; the integer path against fake quantization.
#include "support/llama_configs.hpp"
#include "../../tools/llama/integer_path.hpp"
#include "../../tools/llama/llama_layer.hpp"
#include "../../tools/llama/methods.hpp"

#include <oq/analysis.hpp>
#include <oq/hadamard.hpp>
#include <oq/quant.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <iostream>
#include <random>
#include <stdexcept>
#include <vector>

namespace {

using llama::Config;
using llama::Input;
using llama::LayerWeights;
using llama::Linear;
using Md = llama::Matrix<double>;
using oq::test::tiny_llama_config;  // its MLP width 24 = 12·2 is not a power of two (Paley I, q = 11)

constexpr llama::MethodSpec kQuaRot{false, llama::Rotation::kQuaRot, llama::WeightQuant::kRtn};
constexpr llama::MethodSpec kSmoothQuaRot{true, llama::Rotation::kQuaRot, llama::WeightQuant::kRtn};

// Random weights; γ of both signs and unequal sizes (|γ| in 0.2 … 1.8).
template <class Scalar>
LayerWeights<Scalar> random_weights(const Config& c, std::uint64_t seed, double sigma = 0.3) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0.0, sigma);
  std::uniform_real_distribution<double> g(0.2, 1.8);
  auto random = [&](Eigen::Index r, Eigen::Index k) {
    llama::Matrix<Scalar> m(r, k);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<Scalar>(n(rng));
    return m;
  };
  auto gamma = [&] {
    llama::Vector<Scalar> v(c.hidden_size);
    for (Eigen::Index i = 0; i < v.size(); ++i) v(i) = static_cast<Scalar>(g(rng) * (i % 5 == 3 ? -1.0 : 1.0));
    return v;
  };
  LayerWeights<Scalar> w;
  w.input_norm = gamma();
  w.post_norm = gamma();
  w[Linear::kQ] = random(c.q_size(), c.hidden_size);
  w[Linear::kK] = random(c.kv_size(), c.hidden_size);
  w[Linear::kV] = random(c.kv_size(), c.hidden_size);
  w[Linear::kO] = random(c.hidden_size, c.q_size());
  w[Linear::kGate] = random(c.intermediate_size, c.hidden_size);
  w[Linear::kUp] = random(c.intermediate_size, c.hidden_size);
  w[Linear::kDown] = random(c.hidden_size, c.intermediate_size);
  return w;
}

// Tokens × hidden with heavy tails (Student t, ν degrees of freedom) and,
// where asked, a massive channel on token 0.
template <class Scalar>
llama::Matrix<Scalar> heavy_input(Eigen::Index tokens, Eigen::Index hidden, std::uint64_t seed, double nu,
                                  double massive = 0.0) {
  std::mt19937_64 rng(seed);
  std::student_t_distribution<double> t(nu);
  llama::Matrix<Scalar> x(tokens, hidden);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<Scalar>(t(rng));
  if (massive != 0.0) x(0, hidden / 3) = static_cast<Scalar>(massive);
  return x;
}

llama::QuantOptions quarot_options(const Config& c, std::uint64_t seed) {
  llama::QuantOptions o;
  o.seed = seed;
  o.head_dim = c.head_dim;
  return o;
}

// The linears of the model QuaRot deploys, written out: the residual stream
// x·Q, RMSNorm with γ = 1, q/k/v/gate/up reading it directly; the o_proj input
// after the online cross-head Hadamard C (v_proj's rows carry the head-wise
// part), the down_proj input after the online H_f; every input fake-quantized
// per token, the weights already rotated and quantized.
struct RotatedModelLinears {
  Md cross_head;  // C, q_size × q_size
  Md h_down;      // H_f/√f
  oq::quant::QuantSpec act;
  Md prepare(Input input, const Md& x) const {
    Md in = x;
    if (input == Input::kO) in = x * cross_head;
    if (input == Input::kDown) in = x * h_down;
    return oq::quant::fake_quantize(in, act);
  }
  Md operator()(Linear, const Md& prepared, const Md& weight) const { return prepared * weight.transpose(); }
};

}  // namespace

TEST_CASE("QuaRot with nothing rounded is the full-precision layer, with and without smoothing, any weights") {
  const Config c = tiny_llama_config();
  const auto w = random_weights<double>(c, 1);
  const Md x = heavy_input<double>(12, c.hidden_size, 2, 4.0, 40.0);
  const auto calibration = llama::record_inputs(c, w, heavy_input<double>(12, c.hidden_size, 3, 4.0, 40.0));
  const Md y = llama::forward(c, w, x);
  llama::QuantOptions o = quarot_options(c, 7);
  o.act_bits = 0;
  o.weight_bits = 0;
  for (const llama::MethodSpec& spec : {kQuaRot, kSmoothQuaRot}) {
    for (const Eigen::Index head_dim : {c.head_dim, Eigen::Index{0}}) {
      INFO(spec.name(), ", head_dim ", head_dim);
      o.head_dim = head_dim;
      const auto layer = llama::quantize_layer(spec, w, calibration, o);
      CHECK(llama::relative_error(llama::forward(c, w, x, layer), y) < 1e-13);
    }
  }
  CHECK(kQuaRot.name() == "QuaRot+RTN");
  CHECK(llama::rotation_name(llama::Rotation::kQuaRot) == "QuaRot");
}

TEST_CASE("QuaRot's input transforms: (x/γ)·D·H/√n on the residual-fed inputs, H/√n on o_proj's and down_proj's") {
  const Config c = tiny_llama_config();
  const auto w = random_weights<double>(c, 4);
  const auto calibration = llama::record_inputs(c, w, heavy_input<double>(10, c.hidden_size, 5, 4.0));
  const auto layer = llama::quantize_layer(kQuaRot, w, calibration, quarot_options(c, 11));
  const auto q = oq::transform::RandomizedHadamard::from_seed(c.hidden_size, 11);  // the documented seed rule
  const Md x = heavy_input<double>(6, c.hidden_size, 6, 4.0);
  // Plain products with the explicit matrices.
  const Md m = q.matrix<double>();
  const Md attention = x * w.input_norm.cwiseInverse().asDiagonal() * m;
  const Md mlp = x * w.post_norm.cwiseInverse().asDiagonal() * m;
  CHECK((layer.transform(Input::kAttention).apply(x) - attention).norm() <= 1e-13 * attention.norm());
  CHECK((layer.transform(Input::kMlp).apply(x) - mlp).norm() <= 1e-13 * mlp.norm());
  const Md xo = heavy_input<double>(6, c.q_size(), 7, 4.0);
  const Md o_ref = xo * oq::transform::hadamard_orthogonal<double>(c.q_size());
  CHECK((layer.transform(Input::kO).apply(xo) - o_ref).norm() <= 1e-13 * o_ref.norm());
  const Md xd = heavy_input<double>(6, c.intermediate_size, 8, 4.0);
  const Md d_ref = xd * oq::transform::hadamard_orthogonal<double>(c.intermediate_size);
  CHECK((layer.transform(Input::kDown).apply(xd) - d_ref).norm() <= 1e-13 * d_ref.norm());
}

TEST_CASE("derivation: the input transforms diag(γ)⁻¹·Q, H and the output rotations are the rotated model, computed both ways") {
  // Way A: the simulation (quantize_layer's transforms on the recorded
  // inputs, weights quantized in the rotated output basis, outputs rotated
  // back). Way B: the model QuaRot deploys, built here from the definitions:
  //   W_q,k,gate,up ← W·diag(γ)·Q      (γ folded, residual rotated; norms γ = 1)
  //   W_v          ← H_hdᵀ·W_v·diag(γ₁)·Q   (the head-wise Hadamard on v's outputs)
  //   W_o          ← Qᵀ·W_o·H_o        (H_o = H_(q_size)/√q_size; output into the rotated stream)
  //   W_down       ← Qᵀ·W_down·H_f
  // run on x·Q, with the online cross-head Hadamard C = (I ⊗ H_hd)ᵀ·H_o before
  // o_proj and H_f before down_proj; its output times Qᵀ. Both W4A4 RTN in
  // double: the same codes up to the rounding of the two evaluation orders.
  const Config c = tiny_llama_config();
  const auto w = random_weights<double>(c, 21);
  const Md x = heavy_input<double>(10, c.hidden_size, 22, 4.0, 30.0);
  const auto calibration = llama::record_inputs(c, w, heavy_input<double>(16, c.hidden_size, 23, 4.0, 30.0));
  llama::QuantOptions o = quarot_options(c, 5);
  const auto layer = llama::quantize_layer(kQuaRot, w, calibration, o);
  const Md y_simulated = llama::forward(c, w, x, layer);

  const Md q = oq::transform::RandomizedHadamard::from_seed(c.hidden_size, 5).matrix<double>();
  const Md h_o = oq::transform::hadamard_orthogonal<double>(c.q_size());
  const Md h_f = oq::transform::hadamard_orthogonal<double>(c.intermediate_size);
  const Md h_v = oq::transform::block_hadamard_orthogonal<double>(c.kv_size(), c.head_dim);
  const Md per_head = oq::transform::block_hadamard_orthogonal<double>(c.q_size(), c.head_dim);
  const Md cross = per_head.transpose() * h_o;
  // C acts across heads only: C(i, j) = 0 unless i and j are the same
  // channel of their heads (C = H_heads ⊗ I_hd), which is what makes the
  // split deployable (attention mixes tokens within each head).
  bool across_heads_only = true;
  for (Eigen::Index i = 0; i < cross.rows(); ++i)
    for (Eigen::Index j = 0; j < cross.cols(); ++j)
      if (i % c.head_dim != j % c.head_dim) across_heads_only = across_heads_only && std::abs(cross(i, j)) < 1e-14;
  CHECK(across_heads_only);

  LayerWeights<double> r;
  r.input_norm = llama::Vector<double>::Ones(c.hidden_size);
  r.post_norm = llama::Vector<double>::Ones(c.hidden_size);
  const auto g1 = w.input_norm.asDiagonal();
  const auto g2 = w.post_norm.asDiagonal();
  r[Linear::kQ] = w[Linear::kQ] * g1 * q;
  r[Linear::kK] = w[Linear::kK] * g1 * q;
  r[Linear::kV] = h_v.transpose() * w[Linear::kV] * g1 * q;
  r[Linear::kO] = q.transpose() * w[Linear::kO] * h_o;
  r[Linear::kGate] = w[Linear::kGate] * g2 * q;
  r[Linear::kUp] = w[Linear::kUp] * g2 * q;
  r[Linear::kDown] = q.transpose() * w[Linear::kDown] * h_f;
  for (Linear l : llama::kAllLinears) r[l] = oq::quant::fake_quantize(r[l], o.weight_spec());
  const RotatedModelLinears deployed{cross, h_f, o.act_spec()};
  const Md y_rotated = llama::forward(c, r, Md(x * q), deployed) * q.transpose();
  CHECK(llama::relative_error(y_simulated, y_rotated) < 1e-12);
  // And the quantization did something (this is not the exact-arithmetic case).
  CHECK(llama::relative_error(y_simulated, llama::forward(c, w, x)) > 1e-3);
  // The weights the simulation quantized are way B's, rows and all.
  for (Linear l : llama::kAllLinears) {
    INFO(llama::linear_name(l));
    CHECK((layer.quantized_weight(l) - r[l]).norm() <= 1e-12 * r[l].norm());
  }
}

TEST_CASE("QuaRot's rotated activations: kurtosis 3 − 2·Σx⁴/(Σx²)² per token, near 3 for a heavy-tailed bulk") {
  // For a fixed token x and random signs d, every entry of x·D·H/√n is a
  // Rademacher sum Σ_i ±x_i/√n, whose kurtosis is 3 − 2·Σx⁴/(Σx²)²: near 3
  // where no entry dominates, near 1 where one massive entry does (the
  // rotated token is then flat, ±x_big/√n). The sample kurtosis over n = 1024
  // entries scatters by about √(24/n) ≈ 0.15 around it: within 0.75 (5 sd).
  Config c;
  c.hidden_size = 1024;
  c.intermediate_size = 1376;  // 344·4: Paley I over GF(7³)
  c.num_attention_heads = 8;
  c.num_key_value_heads = 8;
  c.head_dim = 128;
  const auto w = random_weights<float>(c, 31, 0.02);
  const auto x = heavy_input<float>(32, c.hidden_size, 32, 4.0, 800.0);  // t₄ bulk, one massive token
  const auto calibration = llama::record_inputs(c, w, heavy_input<float>(32, c.hidden_size, 33, 4.0, 800.0));
  const auto layer = llama::quantize_layer(kQuaRot, w, calibration, quarot_options(c, 1));
  const llama::Matrix<float> n1 = llama::rms_norm(x, w.input_norm, c.rms_norm_eps);
  const llama::Matrix<float> rotated = layer.transform(Input::kAttention).apply(n1);
  const Eigen::VectorXf before = oq::analysis::row_kurtosis(n1);
  const Eigen::VectorXf after = oq::analysis::row_kurtosis(rotated);
  double worst = 0.0, bulk_mean = 0.0;
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    // The prediction from the token as QuaRot rotates it: RMSNorm without γ.
    const Eigen::ArrayXd u = n1.row(t).cast<double>().transpose().array() / w.input_norm.cast<double>().array();
    const double predicted = 3.0 - 2.0 * u.pow(4).sum() / (u.square().sum() * u.square().sum());
    worst = std::max(worst, std::abs(after(t) - predicted));
    if (t > 0) bulk_mean += after(t) / static_cast<double>(x.rows() - 1);
  }
  std::cout << "QuaRot, t4 tokens (hidden 1024): kurtosis before " << before.tail(x.rows() - 1).mean()
            << " (massive token " << before(0) << "), after " << bulk_mean << " (massive token " << after(0)
            << "), max |after - predicted| " << worst << "\n";
  CHECK(worst <= 0.75);
  CHECK(std::abs(bulk_mean - 3.0) <= 0.3);
  CHECK(before.tail(x.rows() - 1).mean() > 4.0);  // heavy-tailed before (and uneven γ)
  CHECK(after(0) < 1.5);                           // the massive token is flattened
}

TEST_CASE("QuaRot reproduces on the same seed and changes with it") {
  const Config c = tiny_llama_config();
  const auto w = random_weights<float>(c, 41);
  const auto x = heavy_input<float>(8, c.hidden_size, 42, 4.0, 20.0);
  const auto calibration = llama::record_inputs(c, w, heavy_input<float>(12, c.hidden_size, 43, 4.0, 20.0));
  const auto a = llama::quantize_layer(kQuaRot, w, calibration, quarot_options(c, 9));
  const auto b = llama::quantize_layer(kQuaRot, w, calibration, quarot_options(c, 9));
  const auto other = llama::quantize_layer(kQuaRot, w, calibration, quarot_options(c, 10));
  for (Linear l : llama::kAllLinears) CHECK(a.quantized_weight(l) == b.quantized_weight(l));
  const llama::Matrix<float> ya = llama::forward(c, w, x, a);
  CHECK(ya == llama::forward(c, w, x, b));
  CHECK(ya != llama::forward(c, w, x, other));
  CHECK(a.transform(Input::kAttention).apply(x) != other.transform(Input::kAttention).apply(x));
}

TEST_CASE("QuaRot on the integer path: fused full-width Hadamards, packed weights in the rotated basis, within the bound") {
  const Config c = tiny_llama_config();
  const auto w = random_weights<float>(c, 51);
  const auto x = heavy_input<float>(16, c.hidden_size, 52, 4.0, 30.0);
  const auto calibration = llama::record_inputs(c, w, heavy_input<float>(24, c.hidden_size, 53, 4.0, 30.0));
  const llama::Matrix<float> y = llama::forward(c, w, x);
  for (const llama::MethodSpec& spec : {kQuaRot, kSmoothQuaRot}) {
    INFO(spec.name());
    const auto layer = llama::quantize_layer(spec, w, calibration, quarot_options(c, 3));
    const llama::Matrix<float> y_fake = llama::forward(c, w, x, layer);
    llama::IntegerLayer integer(layer);
    llama::PathAgreement agreement;
    integer.compare_into(&agreement);
    const llama::Matrix<float> y_int = llama::forward(c, w, x, integer);
    CHECK(agreement.max_bound_ratio <= 1.0);
    CHECK(agreement.max_epilogue_ratio <= 1.0);
    CHECK(agreement.codes == 16 * (2 * c.hidden_size + c.q_size() + c.intermediate_size));
    // The power-of-two inputs (hidden 16, q 16) are bit for bit; the 24-wide
    // down_proj input (12·2) mixes its segments in another order than Eigen.
    CHECK(agreement.differing_codes <= 16 * c.intermediate_size / 20);
    const double e_fake = llama::relative_error(y_fake, y);
    CHECK(e_fake > 1e-3);
    CHECK(llama::relative_error(y_int, y_fake) < 0.05 * e_fake + 1e-5);
  }
}

TEST_CASE("QuaRot with GPTQ weights: below round-to-nearest's calibration error, on the rotated weights") {
  // Weights only (activations unrounded): GPTQ's own objective, the layer's
  // output on its calibration tokens. GPTQ quantizes Rᵀ·W (the output
  // rotation mixes rows, which GPTQ treats independently) on the Hessian of
  // the transformed inputs.
  Config c = tiny_llama_config();
  c.hidden_size = 64;
  c.intermediate_size = 96;  // 12·8
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;
  c.head_dim = 16;
  const auto w = random_weights<double>(c, 71, 0.1);
  const Md x = heavy_input<double>(128, c.hidden_size, 72, 4.0, 25.0);
  const auto calibration = llama::record_inputs(c, w, x);
  const Md y = llama::forward(c, w, x);
  llama::QuantOptions o = quarot_options(c, 2);
  o.act_bits = 0;
  const double rtn = llama::relative_error(llama::forward(c, w, x, llama::quantize_layer(kQuaRot, w, calibration, o)), y);
  llama::MethodSpec gptq = kQuaRot;
  gptq.weights = llama::WeightQuant::kGptq;
  const auto layer = llama::quantize_layer(gptq, w, calibration, o);
  const double e = llama::relative_error(llama::forward(c, w, x, layer), y);
  INFO("W4 QuaRot: round-to-nearest ", rtn, ", GPTQ ", e);
  CHECK(e < rtn);
  CHECK(layer.output_rotation(Linear::kDown).active());
  CHECK(layer.output_rotation(Linear::kV).head_dim() == 16);
  CHECK_FALSE(layer.output_rotation(Linear::kQ).active());
}

TEST_CASE("QuaRot refuses what it cannot fold, naming it") {
  const Config c = tiny_llama_config();
  auto w = random_weights<double>(c, 61);
  const auto calibration = llama::record_inputs(c, w, heavy_input<double>(8, c.hidden_size, 62, 4.0));
  w.input_norm(3) = 0.0;  // γ = 0: the recorded input no longer holds that channel of x/rms
  CHECK_THROWS_WITH_AS(llama::quantize_layer(kQuaRot, w, calibration, quarot_options(c, 0)),
                       doctest::Contains("input_layernorm's γ(3) = 0"), std::domain_error);
  Config odd = c;
  odd.intermediate_size = 92;  // 4·23: no Hadamard construction
  const auto w_odd = random_weights<double>(odd, 63);
  const auto calibration_odd = llama::record_inputs(odd, w_odd, heavy_input<double>(8, odd.hidden_size, 64, 4.0));
  CHECK_THROWS_WITH_AS(llama::quantize_layer(kQuaRot, w_odd, calibration_odd, quarot_options(odd, 0)),
                       doctest::Contains("down_proj input"), std::invalid_argument);
}
