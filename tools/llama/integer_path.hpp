// tools/llama/integer_path.hpp: the W4A4 methods of methods.hpp
// run with real integer products on the CPU (oq/cpu.hpp), and compared with
// fake quantization output by output against a stated bound.
//
// The integer path (IntegerLayer, a linear functor for llama::forward): each
// distinct linear input is quantized per token by cpu::quantize_per_token
// with the method's transform fused into the same pass over each row
//   RTN → none, SmoothQuant → TokenTransform::smoothing(s),
//   Hadamard → TokenTransform::hadamard(b), DuQuant(+smooth) → TokenTransform::duquant(t),
//   DuQuant with one rotation per block → TokenTransform::duquant_blockwise(t),
//   QuaRot → TokenTransform::full_hadamard(s ⊙ d) (the whole width, any order
//   with a construction; bit for bit with the fake path where the width is a
//   power of two, within float rounding of it otherwise, as DuQuant),
// and every linear is cpu::gemm of those INT4 codes with the INT4 weights
// quantize_layer packed from the codes and parameters of the fake path's Ŵ
// (int32 accumulation, then the zero-point epilogue), then QuaRot's output
// rotation undone in float (QuantizedLayer::restore_output, as the fake path
// does; the comparison below is of the outputs before it). Float only, as the
// kernels are; a double layer needs a float copy (LayerWeights::cast<float>).
//
// The bound. For one output y[m, n] of a linear with K inputs, a path's codes
// define E = s_a·s_w·T with T = Σ_k (qa_k − z_a)(qw_k − z_w), an exact
// integer: E is the exact product of that path's dequantized operands. With
// u = 2⁻²⁴ and γ_n = n·u / (1 − n·u):
//   integer path  y_int = fl(fl(s_a·s_w)·fl(T)): three roundings (the
//                 epilogue), so |y_int − E_int| ≤ γ₃·|E_int|;
//   fake path     x̂_k = fl((qa_k − z_a)·s_a) and ŵ_k = fl((qw_k − z_w)·s_w),
//                 one rounding each (q − z is exact in float), then Eigen's
//                 float GEMM sums the K products in some order, FMA or not:
//                 |y_fake − E_fake| ≤ γ_{K+2}·A, A = s_a·s_w·Σ_k |qa_k − z_a|·|qw_k − z_w|;
// hence, per output,
//   y_int − y_fake = (E_int − E_fake) + r,   |r| ≤ γ₃·|E_int| + γ_{K+2}·A,
// and so |y_int − y_fake| ≤ γ₃·|E_int| + γ_{K+2}·A + |E_int − E_fake|.
// E_int = E_fake where both paths hold the same codes and (s_a, z_a): bit for
// bit for RTN, SmoothQuant and a power-of-two Hadamard, whose fused
// transforms compute what the Eigen ones do (oq/cpu/quantize_per_token.hpp).
// DuQuant's fused rotation is an FMA chain in the CUDA kernel's order while
// DuQuantTransform::apply multiplies with Eigen's GEMM: where their summation
// orders differ (Eigen without FMA, or blocked differently), a transformed
// entry can differ in its last bits, and where it sat next to a rounding
// boundary its code differs by one (where it was the row's min or max, s_a
// and z_a move too). The comparison counts those codes and rows, and computes
// E_int − E_fake exactly (both paths' T from cpu::gemm_accumulators), so the
// rounding residual r is checked against its bound for every output, codes
// equal or not. A is bounded from a float GEMM, Â = fl(Σ_k |x̂_k|·|ŵ_k|):
// A ≤ Â / ((1 − u)²·(1 − γ_K)). The terms are evaluated in double;
// 2⁻⁵¹·(|E_int| + |E_fake| + |y_int| + |y_fake|) is added for that
// evaluation's own rounding.
#pragma once

#include "llama_layer.hpp"
#include "methods.hpp"

#include <oq/cpu.hpp>
#include <oq/format/int4_row.hpp>
#include <oq/quant.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace llama {

/// γ_n = n·u / (1 − n·u), u = 2⁻²⁴: the relative bound of n float roundings.
inline double float_gamma(double n) {
  const double u = std::ldexp(1.0, -24);
  return n * u / (1.0 - n * u);
}

/// How the integer path and fake quantization agreed, over every output of
/// the linears compared (merge() adds up several).
struct PathAgreement {
  std::int64_t outputs = 0;        ///< linear outputs compared
  double max_difference = 0;       ///< max |y_int − y_fake|
  double max_output = 0;           ///< max |y_fake|, for scale
  /// max |r| / (γ₃·|E_int| + γ_{K+2}·A), r = y_int − y_fake − (E_int − E_fake): the claim is ≤ 1
  double max_bound_ratio = 0;
  double max_epilogue_ratio = 0;   ///< max |y_int − E_int| / (γ₃·|E_int|): the claim is ≤ 1
  std::int64_t codes = 0;          ///< activation codes compared (each distinct input once)
  std::int64_t differing_codes = 0;  ///< of those, codes where the paths differ
  std::int64_t rows = 0;             ///< token rows compared
  std::int64_t differing_rows = 0;   ///< of those, rows whose s_a or z_a differ

  void merge(const PathAgreement& o) {
    outputs += o.outputs;
    max_difference = std::max(max_difference, o.max_difference);
    max_output = std::max(max_output, o.max_output);
    max_bound_ratio = std::max(max_bound_ratio, o.max_bound_ratio);
    max_epilogue_ratio = std::max(max_epilogue_ratio, o.max_epilogue_ratio);
    codes += o.codes;
    differing_codes += o.differing_codes;
    rows += o.rows;
    differing_rows += o.differing_rows;
  }
};

/// oq::quant's per-token codes and parameters as cpu::gemm reads them (the
/// layout of oq/cpu/packed_activations.hpp). oq::cpu packs weights from
/// QuantParams (pack_weights) but has no such function for activations.
inline oq::cpu::PackedActivations pack_activations(const oq::quant::CodesOf<Matrix<float>>& codes,
                                                   const oq::quant::QuantParams<float>& params,
                                                   const oq::quant::QuantSpec& spec) {
  oq::cpu::PackedActivations a;
  a.m = codes.rows();
  a.k = codes.cols();
  a.bits = spec.bits;
  a.is_signed = spec.symmetric;
  a.codes.assign(static_cast<std::size_t>(a.m * a.row_bytes()), 0);
  a.scales.resize(static_cast<std::size_t>(a.m));
  a.zeros.resize(static_cast<std::size_t>(a.m));
  a.code_sums.resize(static_cast<std::size_t>(a.m));
  for (Eigen::Index r = 0; r < a.m; ++r) {
    std::uint8_t* out = a.codes.data() + r * a.row_bytes();
    const std::int32_t* q = codes.row(r).data();  // row-major
    if (a.bits == 4) {
      oq::format::pack_int4_row(q, static_cast<std::size_t>(a.k), out);
    } else {
      for (Eigen::Index c = 0; c < a.k; ++c) out[c] = static_cast<std::uint8_t>(q[c] & 0xFF);
    }
    const auto i = static_cast<std::size_t>(r);
    a.scales[i] = params.scale(r, 0);
    a.zeros[i] = static_cast<std::int32_t>(params.zero(r, 0));
    a.code_sums[i] = codes.row(r).sum();
  }
  a.validate("llama::pack_activations");
  return a;
}

/// Codes and rows where two packings of the same input differ.
inline PathAgreement compare_codes(const oq::cpu::PackedActivations& a, const oq::cpu::PackedActivations& b) {
  if (a.m != b.m || a.k != b.k || a.bits != b.bits) throw std::invalid_argument("compare_codes: shapes differ");
  PathAgreement s;
  s.codes = a.m * a.k;
  s.rows = a.m;
  for (std::int64_t r = 0; r < a.m; ++r) {
    const auto i = static_cast<std::size_t>(r);
    if (a.scales[i] != b.scales[i] || a.zeros[i] != b.zeros[i]) ++s.differing_rows;
    if (std::memcmp(a.row(r), b.row(r), static_cast<std::size_t>(a.row_bytes())) == 0) continue;
    for (std::int64_t c = 0; c < a.k; ++c) s.differing_codes += a.code(r, c) != b.code(r, c);
  }
  return s;
}

/// Compares one linear's two outputs on the same input (the file comment's
/// bound): y_int = cpu::gemm(a_int, w), y_fake = x̂·Ŵᵀ, where a_fake holds
/// x̂'s codes (oq::quant on the Eigen-transformed input) and Ŵ dequantizes w.
inline PathAgreement compare_outputs(const oq::cpu::PackedActivations& a_int, const oq::cpu::PackedActivations& a_fake,
                                     const Matrix<float>& x_hat, const oq::cpu::PackedWeights& w,
                                     const Matrix<float>& w_hat, const Matrix<float>& y_int,
                                     const Matrix<float>& y_fake, const oq::cpu::KernelOptions& options = {}) {
  if (w.groups() != 1) throw std::invalid_argument("compare_outputs: per-channel weights only");
  const std::int64_t m = a_int.m, n = w.n, k = w.k;
  if (y_int.rows() != m || y_int.cols() != n || y_fake.rows() != m || y_fake.cols() != n || x_hat.rows() != m ||
      x_hat.cols() != k || w_hat.rows() != n || w_hat.cols() != k || a_fake.m != m || a_fake.k != k) {
    throw std::invalid_argument("compare_outputs: shapes disagree");
  }
  const oq::cpu::RowMajorMatrixXi32 acc_int = oq::cpu::gemm_accumulators(a_int, w, options);
  const bool same_codes = a_int.codes == a_fake.codes && a_int.scales == a_fake.scales && a_int.zeros == a_fake.zeros;
  const oq::cpu::RowMajorMatrixXi32 acc_fake = same_codes ? acc_int : oq::cpu::gemm_accumulators(a_fake, w, options);
  Matrix<float> a_hat(m, n);
  a_hat.noalias() = x_hat.cwiseAbs() * w_hat.cwiseAbs().transpose();

  const double u = std::ldexp(1.0, -24);
  const double g3 = float_gamma(3.0);
  const double gk2 = float_gamma(static_cast<double>(k + 2));
  const double a_factor = 1.0 / ((1.0 - u) * (1.0 - u) * (1.0 - float_gamma(static_cast<double>(k))));
  const double eval = std::ldexp(1.0, -51);
  // E = s_a·s_w·T: s_a·s_w is exact in double (24 + 24 bits), one rounding after.
  auto exact_product = [&](const oq::cpu::PackedActivations& a, const oq::cpu::RowMajorMatrixXi32& acc,
                           std::int64_t r, std::int64_t c) {
    const auto ri = static_cast<std::size_t>(r), ci = static_cast<std::size_t>(c);
    const std::int64_t za = a.zeros[ri], zw = w.is_signed ? 0 : w.zeros[ci];
    const std::int64_t t = std::int64_t{acc(r, c)} - zw * a.code_sums[ri] - za * w.code_sums[ci] + k * za * zw;
    return (double(a.scales[ri]) * double(w.scales[ci])) * double(t);
  };
  PathAgreement s;
  s.outputs = m * n;
  for (std::int64_t r = 0; r < m; ++r) {
    for (std::int64_t c = 0; c < n; ++c) {
      const double yi = y_int(r, c), yf = y_fake(r, c);
      const double e_int = exact_product(a_int, acc_int, r, c);
      const double e_fake = same_codes ? e_int : exact_product(a_fake, acc_fake, r, c);
      const double bound = g3 * std::abs(e_int) + gk2 * a_factor * double(a_hat(r, c)) +
                           eval * (std::abs(e_int) + std::abs(e_fake) + std::abs(yi) + std::abs(yf));
      const double difference = std::abs(yi - yf);
      const double residual = std::abs((yi - yf) - (e_int - e_fake));
      const double epilogue_bound = (g3 + eval) * std::abs(e_int);
      const double epilogue = std::abs(yi - e_int);
      auto ratio = [](double v, double b) {
        return b > 0 ? v / b : (v == 0 ? 0.0 : std::numeric_limits<double>::infinity());
      };
      s.max_difference = std::max(s.max_difference, difference);
      s.max_output = std::max(s.max_output, std::abs(yf));
      s.max_bound_ratio = std::max(s.max_bound_ratio, ratio(residual, bound));
      s.max_epilogue_ratio = std::max(s.max_epilogue_ratio, ratio(epilogue, epilogue_bound));
    }
  }
  return s;
}

/// A layer quantized with one method (quantize_layer, float, 4-bit weights)
/// run with oq::cpu's integer kernels: pass it to forward() as the linear.
/// With compare_into(sink), every linear is also computed by the fake path
/// on the same input and the two compared (compare_outputs), and every
/// input's codes against oq::quant's (compare_codes); that costs about three
/// float GEMMs per linear on top of the integer one.
class IntegerLayer {
 public:
  /// What the linears reading one input take.
  struct Prepared {
    oq::cpu::PackedActivations codes;            ///< cpu::quantize_per_token, transform fused
    oq::cpu::PackedActivations reference_codes;  ///< oq::quant on the Eigen-transformed input (comparing only)
    Matrix<float> x_hat;                         ///< the fake path's input (comparing only)
  };

  explicit IntegerLayer(const QuantizedLayer<float>& layer, oq::cpu::KernelOptions options = {})
      : layer_(&layer), options_(options) {
    const QuantOptions& o = layer.options();
    if (o.act_bits != 4 && o.act_bits != 8) {
      throw std::invalid_argument("IntegerLayer: the CPU kernels take 4- or 8-bit activations, got " +
                                  std::to_string(o.act_bits));
    }
    for (Linear l : kAllLinears) {
      if (layer.packed_weight(l) == nullptr) {
        throw std::invalid_argument("IntegerLayer: no packed INT4 weight for " + std::string(linear_name(l)) +
                                    " (the CPU kernels take 4-bit weights)");
      }
    }
    for (Input i : kAllInputs) transforms_[static_cast<std::size_t>(i)] = layer.transform(i).token_transform();
  }

  /// Every later forward adds its comparison to *sink (nullptr: no comparison;
  /// else the layer must hold its dequantized weights, which the fake path reads).
  void compare_into(PathAgreement* sink) {
    if (sink != nullptr && !layer_->has_quantized_weights()) {
      throw std::invalid_argument("IntegerLayer::compare_into: the layer holds no dequantized weights to compare with");
    }
    sink_ = sink;
  }

  /// forward() checks the packed weights' shapes here (LayerWeights then needs only its norms).
  void validate(const Config& c) const {
    for (Linear l : kAllLinears) {
      const oq::cpu::PackedWeights& w = *layer_->packed_weight(l);
      LayerWeights<float>::check_linear_shape(c, l, w.n, w.k, "llama::IntegerLayer");
    }
  }

  Prepared prepare(Input input, const Matrix<float>& x) const {
    const oq::quant::QuantSpec spec = layer_->options().act_spec();
    Prepared p;
    p.codes = oq::cpu::quantize_per_token(x, spec, transforms_[static_cast<std::size_t>(input)], options_);
    if (sink_ != nullptr) {
      // The fake path's input as QuantizedLayer::prepare computes it, with its codes.
      const Matrix<float> xt = layer_->transform(input).apply(x);
      const oq::quant::QuantParams<float> params = oq::quant::compute_params(xt, spec);
      p.x_hat = oq::quant::fake_quantize(xt, params, spec);
      p.reference_codes = pack_activations(oq::quant::quantize(xt, params, spec), params, spec);
      sink_->merge(compare_codes(p.codes, p.reference_codes));
    }
    return p;
  }

  Matrix<float> operator()(Linear which, const Prepared& prepared, const Matrix<float>& /*full_precision*/) const {
    const oq::cpu::PackedWeights& w = *layer_->packed_weight(which);
    Matrix<float> y = oq::cpu::gemm(prepared.codes, w, options_);
    if (sink_ != nullptr) {
      // Both paths before the output rotation (QuaRot's), which they share.
      const Matrix<float> y_fake = layer_->rotated_output(which, prepared.x_hat);
      sink_->merge(compare_outputs(prepared.codes, prepared.reference_codes, prepared.x_hat, w,
                                   layer_->quantized_weight(which), y, y_fake, options_));
    }
    layer_->restore_output(which, y);
    return y;
  }

 private:
  const QuantizedLayer<float>* layer_;
  oq::cpu::KernelOptions options_;
  std::array<oq::cpu::TokenTransform, 4> transforms_;
  PathAgreement* sink_ = nullptr;
};

}  // namespace llama
