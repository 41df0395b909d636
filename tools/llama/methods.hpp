// tools/llama/methods.hpp: the W4A4 methods the examples compare, each built
// from oq's parts and run through the same layer forward.
//
// A method is a point of a crossed specification (MethodSpec): smoothing
// {off, on} × rotation {none, block Hadamard, DuQuant, QuaRot, DuQuant-blockwise} × weight quantizer
// {round-to-nearest, clip search, GPTQ, learnable weight clipping}. Every method is one input transform
// per distinct linear input (q/k/v share one, gate/up share one;
// llama::Input) and the weights folded accordingly (docs/design.md §5:
// y = X·Wᵀ = (X·M)·(W·M)ᵀ for orthogonal M; smoothing divides X and
// multiplies W, §4; smoothing with a rotation comes first, X·diag(s)⁻¹·M, the
// DuQuant release's order). Then the transformed activation is fake-quantized
// per token and the folded weight per output channel, both asymmetric, with
// the clip ratios DuQuant uses (0.9 activations, 0.8 weights; docs/design.md
// §6), or with the weights' ratio per channel chosen by clip search, or the
// weights by GPTQ or with clip factors trained by LWC:
//
//   smoothing      s from eq. 4 (docs/design.md §4) with α = 0.5 (SmoothQuant's
//                  default) alone, or α from SmoothQuant's search
//                  (MethodSpec::alpha_search, "smooth-search"), α = 0.6
//                  before a rotation (the DuQuant release's default)
//   rotation       none: M = I
//                  block Hadamard: M = diag(H₁₂₈, …)/√128 (blocks so that the
//                  11008-wide down_proj input is covered too)
//                  DuQuant: M = R₁·P·R₂ calibrated by Algorithm 1 (256 greedy
//                  steps, b = 128), one rotation per stage shared by every
//                  block (the released code)
//                  DuQuant-blockwise: the same with each block's own greedy
//                  rotation (oq/transform/duquant_blockwise.hpp; fused on
//                  the CPU, TokenTransform::duquant_blockwise)
//                  QuaRot: full-width Hadamards, the residual one randomized
//                  (below)
//   weights        RTN: round to nearest at clip 0.8
//                  clip search: per output channel, the ratio in 0.5..1 of
//                  least squared error (oq/quant/clip_search.hpp)
//                  GPTQ: oq/quant/gptq.hpp, act-order, damp 0.01, on the
//                  transformed calibration inputs
//                  LWC: OmniQuant's learnable weight clipping
//                  (oq/quant/lwc.hpp), two clip factors per output channel
//                  trained by AdamW on each linear's output error on the
//                  transformed calibration inputs (OmniQuant trains them
//                  block by block on the block's output; here per linear),
//                  starting at the weight clip 0.8, i.e. at RTN's grid
//                  (QuantOptions::lwc_init_at_weight_clip); DuQuant+LWC is
//                  {on, DuQuant, LWC}. block_lwc.hpp trains the same
//                  factors on the layer's output (OmniQuant's objective)
//                  from the calibration sequences instead
//
// The six named presets (Method) are points of that cross: RTN = {off, none,
// RTN}, SmoothQuant = {on, none, RTN}, Hadamard = {off, block Hadamard, RTN},
// DuQuant = {off, DuQuant, RTN}, DuQuant+smooth = {on, DuQuant, RTN}, QuaRot
// = {off, QuaRot, RTN} (QuaRot-RTN; QuaRot-GPTQ with QuantOptions::gptq);
// QuantOptions::gptq turns a preset's weights to GPTQ.
//
// At deployment the smoothing scales fold away (into the RMSNorm γ before
// q/k/v and gate/up, into v_proj's and up_proj's output rows before o_proj and
// down_proj); block Hadamard and DuQuant on the q/k/v and gate/up inputs fold
// into the preceding norm plus the weights only with a rotation of the whole
// residual stream (QuaRot), otherwise they, like every rotation of the o_proj
// and down_proj inputs (silu(gate)⊙up does not commute with a rotation; DuQuant's
// permutation crosses heads), run online — fused into the quantize kernel
// (oq/cuda/device/quantize_per_token.cuh rotates b×b blocks). The simulation
// here applies every transform explicitly, which is numerically the same up
// to rounding. integer_path.hpp runs the same methods with the transform
// fused into oq::cpu's per-token quantizer and real INT4 products.
//
// QuaRot (Ashkboos et al. 2024, arXiv 2404.00456, §4) rotates the residual
// stream by Q = D·H_n/√n (n = hidden, D = diag(±1) from QuantOptions::seed,
// transform::RandomizedHadamard::from_seed(n, seed): the same for every layer
// of a model), folded into the weights, after folding each RMSNorm's γ into
// the linears that read it; it adds a head-wise Hadamard folded into v_proj
// with an online one across heads (together H_(q_size) on o_proj's input), and
// an online H_f before down_proj. In one layer that is exactly these input
// transforms of the recorded inputs (the norm's output n = RMSNorm(x) =
// (x / rms(x)) ⊙ γ):
//   qkv, gate/up   M = diag(γ)⁻¹·Q. Derivation: the deployed layer sees the
//                  residual x·Q and a norm with γ = 1; Q is orthogonal, so
//                  mean((x·Q)²) = mean(x²) and RMSNorm₁(x·Q) = (x / rms(x))·Q =
//                  n·diag(γ)⁻¹·Q = n·M: the quantizer's input is n·M. Its
//                  weights are W·diag(γ)·Q = W·M⁻ᵀ (M⁻ᵀ = (Qᵀ·diag(γ))ᵀ), so
//                  (n·M)·(W·M⁻ᵀ)ᵀ = n·Wᵀ. γ must be nonzero: n keeps no trace
//                  of x / rms(x) where γ_j = 0.
//   o, down        M = H_(q_size)/√q_size, H_f/√f (plain Hadamards, the online ones).
// and these output rotations R (OutputRotation: the deployed weight is Rᵀ·Ŵ,
// what the weight quantizer sees, and its output y·R is rotated back here,
// y·R·Rᵀ = y, where the deployed model keeps it rotated):
//   o_proj, down_proj   R = Q: they write into the rotated residual stream
//                       (deployed Qᵀ·W_o·H_o and Qᵀ·W_down·H_f);
//   v_proj              R = diag(H_hd, …)/√hd (QuantOptions::head_dim): the
//                       head-wise half of o_proj's H, which attention carries
//                       through (it mixes tokens within a head); the other
//                       half, H_cross ⊗ I_hd, is the online part.
// tests/examples/quarot_test.cpp builds the rotated model from these
// definitions and checks it against this simulation. With smoothing
// (smooth + QuaRot) the scales s replace γ on the residual-fed inputs, M =
// diag(s)⁻¹·D·H/√n (γ/s in the norm, the randomized Hadamard online: a
// rotation after a smoothing cannot fold into the weights), and diag(s)⁻¹·H
// on o/down; the residual stream then stays unrotated and there are no output
// rotations. Not modelled: the KV cache quantization (QuaRot's Hadamard on
// q and k after RoPE), the embeddings and lm_head (the single layer's
// residual enters and leaves unrotated).
#pragma once

#include "llama_layer.hpp"

#include <oq/analysis.hpp>
#include <oq/cpu.hpp>
#include <oq/kurtosis.hpp>
#include <oq/duquant.hpp>
#include <oq/hadamard.hpp>
#include <oq/quant.hpp>
#include <oq/smoothquant.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

namespace llama {

/// The rotation of each linear input (after smoothing, where it smooths).
/// kDuQuant is the released code's transform (one rotation per stage shared
/// by every block); kDuQuantBlockwise rotates each block by its own greedy
/// rotation (oq/transform/duquant_blockwise.hpp).
enum class Rotation { kNone, kBlockHadamard, kDuQuant, kQuaRot, kDuQuantBlockwise };
inline constexpr std::array kAllRotations{Rotation::kNone, Rotation::kBlockHadamard, Rotation::kDuQuant,
                                          Rotation::kQuaRot, Rotation::kDuQuantBlockwise};

inline constexpr std::string_view rotation_name(Rotation r) {
  switch (r) {
    case Rotation::kNone: return "none";
    case Rotation::kBlockHadamard: return "Hadamard";
    case Rotation::kDuQuant: return "DuQuant";
    case Rotation::kQuaRot: return "QuaRot";
    case Rotation::kDuQuantBlockwise: return "DuQuant-blockwise";
  }
  return "?";
}

/// Whether the rotation draws random numbers (QuantOptions::seed): a study
/// repeats such methods over seeds.
inline constexpr bool is_random(Rotation r) {
  switch (r) {
    case Rotation::kNone:
    case Rotation::kBlockHadamard: return false;
    case Rotation::kDuQuant: return true;  // the Haar Q′ of the base blocks
    case Rotation::kQuaRot: return true;   // the signs D of Q = D·H_n/√n
    case Rotation::kDuQuantBlockwise: return true;  // a Haar Q′ per block
  }
  return true;
}

/// How the folded weights are quantized.
enum class WeightQuant { kRtn, kClipSearch, kGptq, kLwc };
inline constexpr std::array kAllWeightQuants{WeightQuant::kRtn, WeightQuant::kClipSearch, WeightQuant::kGptq,
                                             WeightQuant::kLwc};

inline constexpr std::string_view weight_quant_name(WeightQuant q) {
  switch (q) {
    case WeightQuant::kRtn: return "RTN";
    case WeightQuant::kClipSearch: return "clip";
    case WeightQuant::kGptq: return "GPTQ";
    case WeightQuant::kLwc: return "LWC";
  }
  return "?";
}

/// One point of the crossed specification: smoothing × rotation × weights.
struct MethodSpec {
  bool smooth = false;
  Rotation rotation = Rotation::kNone;
  WeightQuant weights = WeightQuant::kRtn;
  /// SmoothQuant's α chosen per input by its search (Xiao et al. 2023, §4:
  /// the α of least quantized-output error on calibration data) instead of
  /// QuantOptions::smoothquant_alpha; only with smoothing and no rotation
  /// (quantize_layer refuses it elsewhere). The same as setting
  /// QuantOptions::smoothquant_alpha_search for this one point, so that a
  /// study runs the searched and the fixed α side by side.
  bool alpha_search = false;

  constexpr bool operator==(const MethodSpec&) const = default;

  /// "smooth+DuQuant+GPTQ", "Hadamard+RTN", "RTN", "smooth-search+RTN": the
  /// parts that are on, joined by '+', the weight quantizer last.
  std::string name() const {
    std::string out;
    if (smooth) out += alpha_search ? "smooth-search+" : "smooth+";
    if (rotation != Rotation::kNone) out += std::string(rotation_name(rotation)) + "+";
    return out + std::string(weight_quant_name(weights));
  }
};

/// The smoothing level of `spec` as the studies' CSV files write it: "off",
/// "on" (a fixed α) or "search" (SmoothQuant's α search).
inline std::string_view smoothing_name(const MethodSpec& spec) {
  return !spec.smooth ? "off" : spec.alpha_search ? "search" : "on";
}

/// Every point of the cross, smoothing outermost, then rotation, then weights.
inline std::vector<MethodSpec> all_method_specs() {
  std::vector<MethodSpec> out;
  for (bool smooth : {false, true}) {
    for (Rotation r : kAllRotations) {
      for (WeightQuant q : kAllWeightQuants) out.push_back(MethodSpec{smooth, r, q});
    }
  }
  return out;
}

/// "RTN, clip, ...": the names of `specs`, in order.
inline std::string spec_names(const std::vector<MethodSpec>& specs) {
  std::string out;
  for (const auto& spec : specs) out += (out.empty() ? "" : ", ") + spec.name();
  return out;
}

/// The points of `points` that `names` names (MethodSpec::name), in the
/// order of `names`. std::invalid_argument for a name that is not among the
/// points (the message lists those it could be) or a name given twice.
inline std::vector<MethodSpec> select_specs(const std::vector<std::string>& names,
                                            const std::vector<MethodSpec>& points) {
  std::vector<MethodSpec> out;
  for (const std::string& name : names) {
    const auto it =
        std::find_if(points.begin(), points.end(), [&name](const MethodSpec& spec) { return spec.name() == name; });
    if (it == points.end()) {
      throw std::invalid_argument("llama::select_specs: each name must be one of " + spec_names(points) + ", got '" +
                                  name + "'");
    }
    if (std::find(out.begin(), out.end(), *it) != out.end()) {
      throw std::invalid_argument("llama::select_specs: names holds '" + name + "' twice");
    }
    out.push_back(*it);
  }
  return out;
}

/// The studies' default points: the cross (all_method_specs), then
/// SmoothQuant with its α search (smoothing without a rotation) with each
/// weight quantizer, the method as its paper runs it beside the cross's
/// fixed α = 0.5.
inline std::vector<MethodSpec> study_method_specs() {
  std::vector<MethodSpec> out = all_method_specs();
  for (WeightQuant q : kAllWeightQuants) out.push_back(MethodSpec{true, Rotation::kNone, q, true});
  return out;
}

/// The named presets (the oq tool's files store their names).
enum class Method { kRtn, kSmoothQuant, kHadamard, kDuQuant, kDuQuantSmooth, kQuaRot };
inline constexpr std::array<Method, 6> kAllMethods{Method::kRtn,     Method::kSmoothQuant,    Method::kHadamard,
                                                   Method::kDuQuant, Method::kDuQuantSmooth, Method::kQuaRot};

inline constexpr std::string_view method_name(Method m) {
  constexpr std::array<std::string_view, 6> names{"RTN",     "SmoothQuant",    "Hadamard",
                                                  "DuQuant", "DuQuant+smooth", "QuaRot"};
  return names[static_cast<std::size_t>(m)];
}

/// The preset's point of the cross, with `weights` as its weight quantizer.
inline constexpr MethodSpec method_spec(Method m, WeightQuant weights = WeightQuant::kRtn) {
  switch (m) {
    case Method::kRtn: return {false, Rotation::kNone, weights};
    case Method::kSmoothQuant: return {true, Rotation::kNone, weights};
    case Method::kHadamard: return {false, Rotation::kBlockHadamard, weights};
    case Method::kDuQuant: return {false, Rotation::kDuQuant, weights};
    case Method::kDuQuantSmooth: return {true, Rotation::kDuQuant, weights};
    case Method::kQuaRot: return {false, Rotation::kQuaRot, weights};
  }
  return {};
}

/// The preset whose point `spec` is (with RTN or GPTQ weights, which
/// QuantOptions::gptq chooses), or none.
inline std::optional<Method> preset_of(const MethodSpec& spec) {
  if (spec.weights != WeightQuant::kRtn && spec.weights != WeightQuant::kGptq) return std::nullopt;
  for (Method m : kAllMethods) {
    if (method_spec(m, spec.weights) == spec) return m;
  }
  return std::nullopt;
}

struct QuantOptions {
  /// Bits of activations and weights; 0 turns the quantizer off, which keeps
  /// the transforms and folding (the test that every method is exact without
  /// rounding uses it). oq's quantizers take 2..8 bits.
  int act_bits = 4;
  int weight_bits = 4;
  double act_clip = 0.9;
  double weight_clip = 0.8;
  double smoothquant_alpha = 0.5;  ///< smoothing without a rotation: SmoothQuant's default
  /// SmoothQuant's α (smoothing without a rotation) chosen per input instead,
  /// by oq::transform::search_smoothing_alpha
  /// (grid 0, 0.05, …, 1; the error of the input's quantized linears), on
  /// alpha_search_tokens evenly spaced calibration tokens (alpha_search_rows);
  /// s then comes from the whole calibration input at that α.
  bool smoothquant_alpha_search = false;
  Eigen::Index alpha_search_tokens = 512;  ///< each α costs a fake quantization and product per linear
  double duquant_alpha = 0.6;      ///< smoothing before a rotation: the DuQuant release's default
  Eigen::Index block_size = 128;   ///< DuQuant and Hadamard blocks
  int greedy_steps = 256;
  /// Weights per group of this many inputs (W4A16-style) instead of per
  /// output channel; 0: per channel.
  Eigen::Index weight_group = 0;
  std::uint64_t seed = 0;          ///< the Haar Q′ of DuQuant's base blocks; QuaRot's signs D
  /// QuaRot: the attention heads' width, for the head-wise Hadamard folded
  /// into v_proj's output rows (the o_proj input's full Hadamard is then that
  /// head-wise part times an online one across heads). 0, or a width that is
  /// not a power of two dividing the 2^m of H_(q_size): not folded, the o_proj
  /// input's whole Hadamard runs online (the same function; v_proj's weights
  /// quantized unrotated).
  Eigen::Index head_dim = 0;
  /// The presets' weight quantizer: quantize_layer(Method, …) and
  /// QuantizedLayer's Method constructor take GPTQ weights (oq/quant/gptq.hpp,
  /// act-order, damp 0.01, on the method's transformed calibration inputs)
  /// where this is set, round-to-nearest otherwise (method_spec). A MethodSpec
  /// names its own (MethodSpec::weights; with one, this must be false unless
  /// it says WeightQuant::kGptq).
  bool gptq = false;
  /// WeightQuant::kLwc's training (oq/quant/lwc.hpp): AdamW steps, learning
  /// rate, zero-point gradient (the releases' defaults but for the steps).
  oq::quant::LwcOptions lwc{};
  /// Start LWC's factors at σ(a) = σ(b) = weight_clip (RTN's grid at that
  /// clip, so that each linear's trained output error is at most RTN's)
  /// instead of at lwc.init (the releases' 4, σ = 0.982, where DuQuant+LWC
  /// drops the fixed 0.8 clip). A weight_clip of 1 starts at lwc.init.
  bool lwc_init_at_weight_clip = true;
  /// Threads of DuQuant's greedy steps: a pool the caller owns (nullptr: all
  /// hardware threads, started per calibration).
  oq::cpu::ThreadPool* pool = nullptr;
  /// Called with a line of text before each long step (may be empty).
  std::function<void(const std::string&)> progress{};

  oq::quant::QuantSpec act_spec() const { return oq::quant::QuantSpec::per_token(act_bits, false, act_clip); }
  /// Widen each weight group's range to hold 0 (QuantSpec::range_includes_zero),
  /// so that every zero point lies in 0..15, as GPTQ checkpoints store them.
  bool weight_range_includes_zero = false;

  oq::quant::QuantSpec weight_spec() const {
    auto spec = weight_group > 0 ? oq::quant::QuantSpec::per_group(weight_bits, false, weight_group, weight_clip)
                                 : oq::quant::QuantSpec::per_channel(weight_bits, false, weight_clip);
    spec.range_includes_zero = weight_range_includes_zero;
    return spec;
  }
};

/// The full-precision inputs of the four distinct linear inputs, recorded on
/// a forward pass (the calibration data of every method).
template <class Scalar>
using LinearInputs = std::array<Matrix<Scalar>, 4>;

template <class Scalar>
LinearInputs<Scalar> record_inputs(const Config& c, const LayerWeights<Scalar>& w, const Matrix<Scalar>& x) {
  LinearInputs<Scalar> inputs;
  forward(c, w, x, [&inputs](Linear which, const Matrix<Scalar>& in, const Matrix<Scalar>& weight) {
    inputs[static_cast<std::size_t>(input_of(which))] = in;
    return PlainLinear{}(which, in, weight);
  });
  return inputs;
}

/// The same over several sequences (each tokens × hidden, run separately
/// through the layer: attention does not cross them), each input's rows
/// stacked in sequence order.
template <class Scalar>
LinearInputs<Scalar> record_inputs(const Config& c, const LayerWeights<Scalar>& w,
                                   const std::vector<Matrix<Scalar>>& sequences) {
  std::array<std::vector<Matrix<Scalar>>, 4> parts;
  for (const Matrix<Scalar>& xs : sequences) {
    auto inputs = record_inputs(c, w, xs);
    for (std::size_t i = 0; i < 4; ++i) parts[i].push_back(std::move(inputs[i]));
  }
  LinearInputs<Scalar> out;
  for (std::size_t i = 0; i < 4; ++i) {
    Eigen::Index rows = 0;
    for (const auto& p : parts[i]) rows += p.rows();
    out[i].resize(rows, parts[i].empty() ? 0 : parts[i].front().cols());
    Eigen::Index at = 0;
    for (const auto& p : parts[i]) {
      out[i].middleRows(at, p.rows()) = p;
      at += p.rows();
    }
  }
  return out;
}

/// One linear input's transform: X ↦ X̂ and W ↦ Ŵ with X̂·Ŵᵀ = X·Wᵀ.
template <class Scalar>
class InputTransform {
 public:
  struct Identity {};
  struct Smoothing {
    Vector<Scalar> scales;
  };
  /// X·diag(s)⁻¹·diag(H_b, …)/√b: smoothing (scales; empty: none), then
  /// the block Hadamard.
  struct BlockHadamard {
    explicit BlockHadamard(Eigen::Index b, Vector<Scalar> s = Vector<Scalar>()) : block_size(b), scales(std::move(s)) {}
    Eigen::Index block_size;
    Vector<Scalar> scales;
  };
  using DuQuant = oq::transform::DuQuantTransform<Scalar>;
  /// DuQuant with one rotation per block (oq::cpu fuses it,
  /// TokenTransform::duquant_blockwise; the CUDA quantizer takes the shared
  /// form only).
  using DuQuantBlockwise = oq::transform::DuQuantBlockwiseTransform<Scalar>;
  /// X·diag(s)⁻¹·D·H_n/√n over the whole width n (QuaRot): a division by
  /// `divisors` (empty: none; nonzero, any sign — RMSNorm's γ where QuaRot
  /// folds it, or smoothing scales), the signs d of a randomized Hadamard
  /// (empty: D = I), then transform::hadamard_rows. The weights get
  /// W·diag(s)·D·H_n/√n.
  struct FullHadamard {
    Eigen::Index width = 0;
    Vector<Scalar> divisors;
    Eigen::VectorXi signs;
  };

  InputTransform() = default;
  using Kind = std::variant<Identity, Smoothing, BlockHadamard, DuQuant, FullHadamard, DuQuantBlockwise>;

  template <class K>
  explicit InputTransform(K kind) : kind_(std::move(kind)) {}

  /// Which transform this is, with its parameters (for saving it).
  const Kind& kind() const { return kind_; }

  Matrix<Scalar> apply(const Matrix<Scalar>& x) const { return transform(x, /*weight=*/false); }
  Matrix<Scalar> fold_into_weight(const Matrix<Scalar>& w) const { return transform(w, /*weight=*/true); }

  /// The same transform of X for oq::cpu::quantize_per_token to fuse into its
  /// pass over each row (float only, as the CPU kernels are). A block
  /// Hadamard of a size that is not a power of two has no butterfly kernel
  /// there and runs as a general block rotation by the same matrix.
  oq::cpu::TokenTransform token_transform() const
    requires std::is_same_v<Scalar, float>
  {
    if (const auto* s = std::get_if<Smoothing>(&kind_)) return oq::cpu::TokenTransform::smoothing(s->scales);
    if (const auto* h = std::get_if<BlockHadamard>(&kind_)) {
      const Eigen::Index b = h->block_size;
      if (h->scales.size() != 0) {  // smoothing, then one block rotation: a DuQuant transform's stages
        return oq::cpu::TokenTransform::duquant(oq::transform::DuQuantTransform<float>(
            h->scales.size(), {oq::transform::hadamard_orthogonal<float>(b)}, {}, h->scales));
      }
      if (b >= 2 && (b & (b - 1)) == 0) return oq::cpu::TokenTransform::hadamard(b);
      return oq::cpu::TokenTransform::block_rotation(oq::transform::hadamard_orthogonal<float>(b));
    }
    if (const auto* d = std::get_if<DuQuant>(&kind_)) return oq::cpu::TokenTransform::duquant(*d);
    if (const auto* f = std::get_if<FullHadamard>(&kind_)) {
      // x / s then ·d is x / (s·d) exactly (a division by ±|s| differs from
      // the quotient by |s| only in its sign): one fused division.
      if (f->divisors.size() == 0 && f->signs.size() == 0) return oq::cpu::TokenTransform::full_hadamard(f->width);
      Eigen::VectorXf s = f->divisors.size() != 0 ? Eigen::VectorXf(f->divisors) : Eigen::VectorXf::Ones(f->width);
      if (f->signs.size() != 0) s.array() *= f->signs.template cast<float>().array();
      return oq::cpu::TokenTransform::full_hadamard(s);
    }
    if (const auto* d = std::get_if<DuQuantBlockwise>(&kind_)) return oq::cpu::TokenTransform::duquant_blockwise(*d);
    return {};
  }

 private:
  Matrix<Scalar> transform(const Matrix<Scalar>& m, bool weight) const {
    if (std::holds_alternative<Identity>(kind_)) return m;
    if (const auto* s = std::get_if<Smoothing>(&kind_)) {
      Matrix<Scalar> out = m;
      if (weight) {
        oq::transform::smooth_weights_in_place(out, s->scales);
      } else {
        oq::transform::smooth_activations_in_place(out, s->scales);
      }
      return out;
    }
    if (const auto* h = std::get_if<BlockHadamard>(&kind_)) {
      Matrix<Scalar> out = m;
      if (h->scales.size() != 0) {
        if (weight) {
          oq::transform::smooth_weights_in_place(out, h->scales);
        } else {
          oq::transform::smooth_activations_in_place(out, h->scales);
        }
      }
      oq::transform::block_hadamard_rows(out, h->block_size);  // symmetric orthogonal blocks: X·H, W·H
      return out;
    }
    if (const auto* f = std::get_if<FullHadamard>(&kind_)) {
      Matrix<Scalar> out = m;
      if (f->divisors.size() != 0) {
        // Any sign (γ may be negative): not smooth_*_in_place, which takes positive scales.
        if (weight) {
          out.array().rowwise() *= f->divisors.transpose().array();
        } else {
          out.array().rowwise() /= f->divisors.transpose().array();
        }
      }
      if (f->signs.size() != 0) out.array().rowwise() *= f->signs.transpose().template cast<Scalar>().array();
      oq::transform::hadamard_rows(out);  // M = D·H/√n on both: (X·M)·(W·M)ᵀ = X·Wᵀ
      return out;
    }
    if (const auto* d = std::get_if<DuQuantBlockwise>(&kind_)) return weight ? d->fold_into_weight(m) : d->apply(m);
    const auto& d = std::get<DuQuant>(kind_);
    return weight ? d.fold_into_weight(m) : d.apply(m);
  }

  Kind kind_{Identity{}};
};

/// A rotation R of one linear's outputs (QuaRot): the model deploys the
/// weight Rᵀ·W — its output rows mixed, which is what the weight quantizer
/// sees — and computes y·R, which it keeps (the residual stream rotated by
/// Q, v's heads by H_hd); the simulation rotates it back, y·R·Rᵀ = y, so
/// the layer's function is unchanged. R is QuaRot's residual rotation
/// Q = D·H_n/√n or the head-wise diag(H_hd, …)/√hd.
template <class Scalar>
class OutputRotation {
 public:
  OutputRotation() = default;  ///< none

  static OutputRotation residual(oq::transform::RandomizedHadamard q) {
    OutputRotation r;
    r.residual_ = std::move(q);
    return r;
  }
  static OutputRotation head_wise(Eigen::Index head_dim) {
    OutputRotation r;
    r.head_dim_ = head_dim;
    return r;
  }

  bool active() const { return residual_.has_value() || head_dim_ > 0; }
  const std::optional<oq::transform::RandomizedHadamard>& residual_rotation() const { return residual_; }
  Eigen::Index head_dim() const { return head_dim_; }

  /// Rᵀ·W (W out × in): the rows of Wᵀ times R.
  Matrix<Scalar> rotate_weight(const Matrix<Scalar>& w) const {
    if (!active()) return w;
    Matrix<Scalar> t = w.transpose();
    rotate_rows(t, oq::transform::Direction::kForward);
    return t.transpose();
  }

  /// y ← y·Rᵀ (y tokens × out).
  void restore(Matrix<Scalar>& y) const { rotate_rows(y, oq::transform::Direction::kInverse); }

 private:
  void rotate_rows(Matrix<Scalar>& x, oq::transform::Direction direction) const {
    if (residual_) {
      residual_->apply_rows(x, direction);
    } else if (head_dim_ > 0) {
      oq::transform::block_hadamard_rows(x, head_dim_, direction);  // Sylvester blocks: symmetric
    }
  }

  std::optional<oq::transform::RandomizedHadamard> residual_;
  Eigen::Index head_dim_ = 0;
};

/// A layer quantized with one method: pass it to forward() as the linear.
template <class Scalar>
class QuantizedLayer {
 public:
  /// packed_weights: the same weights as INT4 codes for oq::cpu::gemm, packed
  /// from the codes and parameters that quantized_weights dequantize (empty
  /// where there are none: weight_bits other than 4, or double).
  /// output_rotations: per linear, R where the weights (quantized and
  /// packed alike) are Rᵀ·Ŵ, the deployed model's (QuaRot); every output is
  /// then rotated back (OutputRotation::restore).
  QuantizedLayer(MethodSpec spec, std::array<InputTransform<Scalar>, 4> transforms,
                 std::array<Matrix<Scalar>, 7> quantized_weights, QuantOptions options, double calibration_seconds,
                 std::array<std::optional<oq::cpu::PackedWeights>, 7> packed_weights = {},
                 std::array<OutputRotation<Scalar>, 7> output_rotations = {})
      : spec_(spec),
        transforms_(std::move(transforms)),
        weights_(std::move(quantized_weights)),
        packed_(std::move(packed_weights)),
        output_rotations_(std::move(output_rotations)),
        options_(std::move(options)),
        calibration_seconds_(calibration_seconds) {}

  /// A preset's layer: its point of the cross, with GPTQ weights where options.gptq is set.
  QuantizedLayer(Method method, std::array<InputTransform<Scalar>, 4> transforms,
                 std::array<Matrix<Scalar>, 7> quantized_weights, QuantOptions options, double calibration_seconds,
                 std::array<std::optional<oq::cpu::PackedWeights>, 7> packed_weights = {},
                 std::array<OutputRotation<Scalar>, 7> output_rotations = {})
      : QuantizedLayer(method_spec(method, options.gptq ? WeightQuant::kGptq : WeightQuant::kRtn), std::move(transforms),
                       std::move(quantized_weights), options, calibration_seconds,
                       std::move(packed_weights), std::move(output_rotations)) {}

  const MethodSpec& spec() const { return spec_; }
  double calibration_seconds() const { return calibration_seconds_; }
  const QuantOptions& options() const { return options_; }
  const InputTransform<Scalar>& transform(Input i) const { return transforms_[static_cast<std::size_t>(i)]; }
  /// Ŵ as the deployed model holds it: Rᵀ·Ŵ where `l` has an output rotation.
  const Matrix<Scalar>& quantized_weight(Linear l) const { return weights_[static_cast<std::size_t>(l)]; }
  const OutputRotation<Scalar>& output_rotation(Linear l) const { return output_rotations_[static_cast<std::size_t>(l)]; }
  const std::array<OutputRotation<Scalar>, 7>& output_rotations() const { return output_rotations_; }
  /// The packed INT4 weight of `l`, or nullptr (see the constructor).
  const oq::cpu::PackedWeights* packed_weight(Linear l) const {
    const auto& p = packed_[static_cast<std::size_t>(l)];
    return p ? &*p : nullptr;
  }

  /// The smoothing strength α each input was smoothed with (NaN where it is
  /// not smoothed): with QuantOptions::smoothquant_alpha_search, the α the
  /// search chose for this layer (the oq tool records them).
  const std::array<double, 4>& smoothing_alphas() const { return alphas_; }
  void set_smoothing_alphas(const std::array<double, 4>& alphas) { alphas_ = alphas; }

  /// When set, every forward records each input after its transform and
  /// before quantization (for the statistics table).
  void record_transformed_inputs(LinearInputs<Scalar>* sink) { sink_ = sink; }

  /// The input every linear reading `input` takes: transformed, then
  /// fake-quantized per token (forward() calls it once per distinct input).
  Matrix<Scalar> prepare(Input input, const Matrix<Scalar>& x) const {
    Matrix<Scalar> xt = transform(input).apply(x);
    if (sink_ != nullptr) (*sink_)[static_cast<std::size_t>(input)] = xt;
    if (options_.act_bits != 0) xt = oq::quant::fake_quantize(xt, options_.act_spec());
    return xt;
  }

  /// Whether the dequantized float weights are held (a layer loaded for the
  /// integer kernels only may hold just the packed ones).
  bool has_quantized_weights() const {
    for (const auto& w : weights_) {
      if (w.size() == 0) return false;
    }
    return true;
  }

  /// forward() calls this instead of checking its LayerWeights' linears:
  /// each linear's weight, dequantized or else packed, has its shape in `c`.
  void validate(const Config& c) const {
    for (Linear l : kAllLinears) {
      const auto& w = quantized_weight(l);
      if (w.size() == 0 && packed_weight(l) != nullptr) {
        LayerWeights<Scalar>::check_linear_shape(c, l, packed_weight(l)->n, packed_weight(l)->k, "llama::QuantizedLayer");
      } else {
        LayerWeights<Scalar>::check_linear_shape(c, l, w.rows(), w.cols(), "llama::QuantizedLayer");
      }
    }
  }

  /// One linear on an input that prepare() returned: rotated_output, then
  /// restore_output.
  Matrix<Scalar> operator()(Linear which, const Matrix<Scalar>& prepared, const Matrix<Scalar>& /*full_precision*/) const {
    Matrix<Scalar> y = rotated_output(which, prepared);
    restore_output(which, y);
    return y;
  }

  /// x̂·Ŵᵀ with the weight as held (the deployed model's output y·R where
  /// `which` has an output rotation R).
  Matrix<Scalar> rotated_output(Linear which, const Matrix<Scalar>& prepared) const {
    const Matrix<Scalar>& w = quantized_weight(which);
    if (w.size() == 0) {
      throw std::invalid_argument("llama::QuantizedLayer: no dequantized weight for " + std::string(linear_name(which)) +
                                  " (loaded for the integer kernels only)");
    }
    Matrix<Scalar> y(prepared.rows(), w.rows());
    y.noalias() = prepared * w.transpose();
    return y;
  }

  /// y ← y·Rᵀ where `which` has an output rotation R (else nothing).
  void restore_output(Linear which, Matrix<Scalar>& y) const {
    const OutputRotation<Scalar>& r = output_rotation(which);
    if (r.active()) r.restore(y);
  }

 private:
  MethodSpec spec_;
  std::array<InputTransform<Scalar>, 4> transforms_;
  std::array<Matrix<Scalar>, 7> weights_;
  std::array<std::optional<oq::cpu::PackedWeights>, 7> packed_;
  std::array<OutputRotation<Scalar>, 7> output_rotations_;
  QuantOptions options_;
  double calibration_seconds_;
  std::array<double, 4> alphas_{kNoAlpha, kNoAlpha, kNoAlpha, kNoAlpha};
  LinearInputs<Scalar>* sink_ = nullptr;
  static constexpr double kNoAlpha = std::numeric_limits<double>::quiet_NaN();
};

namespace detail_methods {

// max|W_j| over every linear that reads `input` (docs/design.md §4: they share s),
// without copying the weights.
template <class Scalar>
Vector<Scalar> shared_weight_absmax(const LayerWeights<Scalar>& w, Input input) {
  switch (input) {
    case Input::kAttention:
      return oq::transform::weight_channel_absmax(w[Linear::kQ], w[Linear::kK], w[Linear::kV]);
    case Input::kMlp: return oq::transform::weight_channel_absmax(w[Linear::kGate], w[Linear::kUp]);
    case Input::kO: return oq::transform::weight_channel_absmax(w[Linear::kO]);
    case Input::kDown: break;
  }
  return oq::transform::weight_channel_absmax(w[Linear::kDown]);
}

// The linears that read `input` (copies: search_smoothing_alpha takes a vector).
template <class Scalar>
std::vector<Matrix<Scalar>> linears_reading(const LayerWeights<Scalar>& w, Input input) {
  std::vector<Matrix<Scalar>> out;
  for (Linear l : kAllLinears) {
    if (input_of(l) == input) out.push_back(w[l]);
  }
  return out;
}

template <class Scalar>
Vector<Scalar> smoothing(const LayerWeights<Scalar>& w, const Matrix<Scalar>& calibration, Input input,
                         double alpha) {
  const Vector<Scalar> act_max = oq::transform::activation_channel_absmax(calibration);
  return oq::transform::smoothing_scales(act_max, shared_weight_absmax(w, input),
                                         oq::transform::SmoothingOptions{.alpha = alpha});
}

}  // namespace detail_methods

/// At most `count` rows of x, evenly spaced: rows 0, d, 2d, … with
/// d = ⌈rows / count⌉ (every row when count ≥ rows).
template <class Scalar>
Matrix<Scalar> alpha_search_rows(const Matrix<Scalar>& x, Eigen::Index count) {
  if (count <= 0) throw std::invalid_argument("alpha_search_rows: count must be > 0, got " + std::to_string(count));
  const Eigen::Index step = (x.rows() + count - 1) / count;
  if (step <= 1) return x;
  Matrix<Scalar> out((x.rows() + step - 1) / step, x.cols());
  for (Eigen::Index r = 0; r < out.rows(); ++r) out.row(r) = x.row(r * step);
  return out;
}

/// SmoothQuant's α for `input` by search (QuantOptions::smoothquant_alpha_search).
template <class Scalar>
double search_smoothquant_alpha(const LayerWeights<Scalar>& w, const Matrix<Scalar>& calibration, Input input,
                                const QuantOptions& options) {
  if (options.act_bits == 0 || options.weight_bits == 0) {
    throw std::invalid_argument("SmoothQuant's α search needs quantized activations and weights (act_bits and "
                                "weight_bits > 0): its error is that of the quantized linears");
  }
  return oq::transform::search_smoothing_alpha(alpha_search_rows(calibration, options.alpha_search_tokens),
                                               detail_methods::linears_reading(w, input), options.act_spec(),
                                               options.weight_spec())
      .alpha;
}

namespace detail_methods {

// QuaRot's transform of one input (the file comment's derivation):
//   qkv, gate/up  X·diag(s)⁻¹·D·H/√n, s = RMSNorm's γ (folded into the
//                 weights: the quantizer sees RMSNorm without γ of the rotated
//                 residual), or the smoothing scales where it smooths;
//   o, down       X·diag(s)⁻¹·H/√n (s: smoothing, else none): the online
//                 Hadamards.
template <class Scalar>
InputTransform<Scalar> quarot_transform(const LayerWeights<Scalar>& w, Input input, Eigen::Index width,
                                        Vector<Scalar> smoothing, const oq::transform::RandomizedHadamard& q) {
  typename InputTransform<Scalar>::FullHadamard f;
  f.width = width;
  f.divisors = std::move(smoothing);
  if (input == Input::kAttention || input == Input::kMlp) {
    f.signs = q.signs();
    if (f.divisors.size() == 0) {
      const bool first = input == Input::kAttention;
      const Vector<Scalar>& gamma = first ? w.input_norm : w.post_norm;
      for (Eigen::Index j = 0; j < gamma.size(); ++j) {
        if (!(gamma(j) != Scalar(0) && std::isfinite(static_cast<double>(gamma(j))))) {
          throw std::domain_error(std::string("quantize_layer: QuaRot folds RMSNorm's γ into the weights and divides "
                                              "the recorded input by it; ") +
                                  (first ? "input_layernorm" : "post_attention_layernorm") + "'s γ(" +
                                  std::to_string(j) + ") = " + std::to_string(static_cast<double>(gamma(j))) +
                                  " must be nonzero and finite (the input no longer holds that channel of x / rms(x))");
        }
      }
      f.divisors = gamma;
    }
  }
  return InputTransform<Scalar>(std::move(f));
}

// QuaRot's output rotations (none where it smooths: the smoothing before the
// rotation keeps the residual stream unrotated, every Hadamard online):
// o_proj and down_proj write into the residual stream rotated by Q; v_proj's
// heads carry the head-wise part of o_proj's input Hadamard where
// options.head_dim splits H_(q_size) = H_cross ⊗ H_hd, i.e. hd is a power of
// two dividing its 2^m (Sylvester's H_(2^a)·… = H_(2^(a−b)) ⊗ H_(2^b) in
// natural order).
template <class Scalar>
std::array<OutputRotation<Scalar>, 7> quarot_output_rotations(bool smooth, const oq::transform::RandomizedHadamard& q,
                                                               Eigen::Index q_size, Eigen::Index head_dim) {
  std::array<OutputRotation<Scalar>, 7> out;
  if (smooth) return out;
  out[static_cast<std::size_t>(Linear::kO)] = OutputRotation<Scalar>::residual(q);
  out[static_cast<std::size_t>(Linear::kDown)] = OutputRotation<Scalar>::residual(q);
  const Eigen::Index hd = head_dim;
  if (hd > 0 && (hd & (hd - 1)) == 0 && oq::transform::hadamard_construction(q_size).sylvester_size() % hd == 0) {
    out[static_cast<std::size_t>(Linear::kV)] = OutputRotation<Scalar>::head_wise(hd);
  }
  return out;
}

// quantize_layer, its progress lines starting with `label`.
template <class Scalar>
QuantizedLayer<Scalar> quantize_layer(const MethodSpec& spec, const std::string& label, const LayerWeights<Scalar>& w,
                                      const LinearInputs<Scalar>& calibration, const QuantOptions& options) {
  if (options.gptq && spec.weights != WeightQuant::kGptq) {
    throw std::invalid_argument("quantize_layer: options.gptq is the presets' switch; with a MethodSpec set weights = "
                                "WeightQuant::kGptq instead, got options.gptq = true with " + spec.name());
  }
  if (spec.weights == WeightQuant::kLwc && options.weight_range_includes_zero) {
    throw std::invalid_argument("quantize_layer: LWC learns each channel's range; options.weight_range_includes_zero "
                                "must be false with " + spec.name());
  }
  if (spec.smooth && spec.rotation != Rotation::kNone && options.smoothquant_alpha_search) {
    throw std::invalid_argument("quantize_layer: options.smoothquant_alpha_search applies to smoothing without a "
                                "rotation (its error is that of the unrotated linears), got " + spec.name());
  }
  if (spec.alpha_search && (!spec.smooth || spec.rotation != Rotation::kNone)) {
    throw std::invalid_argument("quantize_layer: MethodSpec::alpha_search needs smooth = true and rotation = none "
                                "(SmoothQuant's search is over the unrotated linears' error), got smooth = " +
                                std::string(spec.smooth ? "true" : "false") + ", rotation = " +
                                std::string(rotation_name(spec.rotation)));
  }
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  std::array<InputTransform<Scalar>, 4> transforms;
  std::array<double, 4> alphas;
  alphas.fill(std::numeric_limits<double>::quiet_NaN());
  std::array<OutputRotation<Scalar>, 7> output_rotations;
  std::mt19937_64 rng(options.seed);
  // QuaRot's residual rotation Q = D·H/√n: one per model (every layer the
  // same seed), shared by both residual-fed inputs and by the outputs of
  // o_proj and down_proj.
  std::optional<oq::transform::RandomizedHadamard> residual;
  if (spec.rotation == Rotation::kQuaRot) {
    for (Input input : kAllInputs) {
      const Eigen::Index width = calibration[static_cast<std::size_t>(input)].cols();
      if (!oq::transform::find_hadamard_construction(std::max<Eigen::Index>(width, 1))) {
        throw std::invalid_argument("quantize_layer: QuaRot needs a full-width Hadamard of every linear input; the " +
                                    std::string(input_name(input)) + " is " + std::to_string(width) +
                                    " wide, which has no Hadamard construction (oq/transform/hadamard.hpp)");
      }
    }
    residual = oq::transform::RandomizedHadamard::from_seed(w.input_norm.size(), options.seed);
    output_rotations = detail_methods::quarot_output_rotations<Scalar>(
        spec.smooth, *residual, calibration[static_cast<std::size_t>(Input::kO)].cols(), options.head_dim);
  }
  // DuQuant's options (either form), with progress lines for `input`.
  auto duquant_options = [&options, &label](Input input) {
    oq::transform::DuQuantOptions d;
    d.block_size = options.block_size;
    d.greedy_steps = options.greedy_steps;
    d.pool = options.pool;
    if (options.progress) {
      const std::string where = label + ": " + std::string(input_name(input));
      // oq counts the rotation from 1, as the steps (DuQuantOptions::progress).
      d.progress = [&options, where](int rotation, int done, int total) {
        if (done == total || done % 64 == 0) {
          options.progress(where + ", rotation " + std::to_string(rotation) + ", step " + std::to_string(done) +
                           "/" + std::to_string(total));
        }
      };
    }
    return d;
  };
  for (Input input : kAllInputs) {
    const Matrix<Scalar>& x = calibration[static_cast<std::size_t>(input)];
    auto& t = transforms[static_cast<std::size_t>(input)];
    // Smoothing alone takes SmoothQuant's α (or its search); before a
    // rotation, the DuQuant release's.
    Vector<Scalar> s;
    if (spec.smooth && spec.rotation == Rotation::kNone) {
      double alpha = options.smoothquant_alpha;
      if (options.smoothquant_alpha_search || spec.alpha_search) {
        alpha = search_smoothquant_alpha(w, x, input, options);
        if (options.progress) {
          options.progress(label + ": " + std::string(input_name(input)) + ", α = " + std::to_string(alpha) +
                           " (search)");
        }
      }
      s = detail_methods::smoothing(w, x, input, alpha);
      alphas[static_cast<std::size_t>(input)] = alpha;
    } else if (spec.smooth) {
      s = detail_methods::smoothing(w, x, input, options.duquant_alpha);
      alphas[static_cast<std::size_t>(input)] = options.duquant_alpha;
    }
    switch (spec.rotation) {
      case Rotation::kNone:
        if (spec.smooth) t = InputTransform<Scalar>(typename InputTransform<Scalar>::Smoothing{std::move(s)});
        break;
      case Rotation::kBlockHadamard:
        t = InputTransform<Scalar>(typename InputTransform<Scalar>::BlockHadamard(options.block_size, std::move(s)));
        break;
      case Rotation::kDuQuant:
        t = InputTransform<Scalar>(oq::transform::calibrate_duquant(x, duquant_options(input), rng, s));
        break;
      case Rotation::kDuQuantBlockwise:
        t = InputTransform<Scalar>(oq::transform::calibrate_duquant_blockwise(x, duquant_options(input), rng, s));
        break;
      case Rotation::kQuaRot:
        t = detail_methods::quarot_transform(w, input, x.cols(), std::move(s), *residual);
        break;
    }
  }
  // GPTQ and LWC: H = 2·XᵀX/n per input, from the inputs as the transform
  // leaves them, shared by the linears that read it (GPTQ: one factor of it).
  std::array<std::optional<oq::quant::GptqFactor>, 4> gptq;
  std::array<Eigen::MatrixXd, 4> lwc_hessian;
  const bool uses_hessian = spec.weights == WeightQuant::kGptq || spec.weights == WeightQuant::kLwc;
  if (uses_hessian && options.weight_bits != 0) {
    for (Input input : kAllInputs) {
      const auto i = static_cast<std::size_t>(input);
      if (options.progress) {
        options.progress(label + ": " + std::string(weight_quant_name(spec.weights)) + ", " +
                         std::string(input_name(input)));
      }
      oq::quant::GptqHessian hessian(calibration[i].cols());
      hessian.add(transforms[i].apply(calibration[i]));
      if (spec.weights == WeightQuant::kLwc) {
        lwc_hessian[i] = hessian.matrix();
      } else {
        // act-order with groups gives groups that are not contiguous inputs,
        // which the packed layout cannot hold (oq::cpu::pack_weights refuses them).
        gptq[i].emplace(hessian.matrix(), oq::quant::GptqOptions{.act_order = options.weight_group == 0});
      }
    }
  }
  oq::quant::LwcOptions lwc = options.lwc;
  if (options.lwc_init_at_weight_clip && options.weight_clip < 1) {
    lwc.init = std::log(options.weight_clip / (1 - options.weight_clip));  // σ(init) = weight_clip
  }
  // 4-bit float weights are also packed for oq::cpu::gemm (integer_path.hpp),
  // from the very codes and parameters that the fake-quantized copy holds.
  constexpr bool kFloat = std::is_same_v<Scalar, float>;
  const bool pack = kFloat && options.weight_bits == 4;
  const oq::quant::QuantSpec weight_spec = options.weight_spec();
  std::array<Matrix<Scalar>, 7> quantized;
  std::array<std::optional<oq::cpu::PackedWeights>, 7> packed;
  for (Linear l : kAllLinears) {
    const auto i = static_cast<std::size_t>(input_of(l));
    const auto li = static_cast<std::size_t>(l);
    Matrix<Scalar> folded = transforms[i].fold_into_weight(w[l]);
    if (output_rotations[li].active()) folded = output_rotations[li].rotate_weight(folded);  // Rᵀ·W (QuaRot)
    if (options.weight_bits == 0) {
      quantized[li] = std::move(folded);
    } else if (gptq[i]) {
      auto result = oq::quant::gptq_quantize(folded, *gptq[i], weight_spec);
      quantized[li] = result.weight;
      if (pack) packed[li] = oq::cpu::pack_weights(result, weight_spec);
    } else if (spec.weights == WeightQuant::kLwc) {
      if (options.progress) options.progress(label + ": LWC, " + std::string(linear_name(l)));
      auto result = oq::quant::train_lwc(folded, lwc_hessian[i], weight_spec, lwc);
      quantized[li] = result.weight;
      if (pack) packed[li] = oq::cpu::pack_weights(result.codes, result.params, weight_spec);
    } else {
      // Clip search: each output channel's (or group's) ratio in 0.5..1 of
      // least Σ(w − ŵ)², in place of the fixed weight_clip.
      const auto params = spec.weights == WeightQuant::kClipSearch
                              ? oq::quant::search_clip_mse(folded, weight_spec).params
                              : oq::quant::compute_params(folded, weight_spec);
      quantized[li] = oq::quant::fake_quantize(folded, params, weight_spec);
      if (pack) {
        packed[li] = oq::cpu::pack_weights(oq::quant::quantize(folded, params, weight_spec), params, weight_spec);
      }
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  QuantizedLayer<Scalar> layer(spec, std::move(transforms), std::move(quantized), options, seconds, std::move(packed),
                               std::move(output_rotations));
  layer.set_smoothing_alphas(alphas);
  return layer;
}

#if defined(OQ_LLAMA_EXTERN_TEMPLATES)
// tools/llama/instantiate.hpp compiles these once for a program whose files
// define OQ_LLAMA_EXTERN_TEMPLATES (the model-level tests): quantize_layer
// instantiates nearly every method of oq (DuQuant's calibration, GPTQ, LWC,
// the clip and α searches): more than half of such a file's compile time
// (llama_study_test.cpp: 125 s without, 53 s with).
extern template QuantizedLayer<float> quantize_layer<float>(const MethodSpec&, const std::string&,
                                                            const LayerWeights<float>&, const LinearInputs<float>&,
                                                            const QuantOptions&);
extern template QuantizedLayer<double> quantize_layer<double>(const MethodSpec&, const std::string&,
                                                              const LayerWeights<double>&, const LinearInputs<double>&,
                                                              const QuantOptions&);
#endif

}  // namespace detail_methods

/// QuaRot's output rotations for a layer whose residual signs are those of
/// `q`, o_proj input q_size wide (none where it smooths; v_proj's head-wise
/// Hadamard where head_dim splits H_(q_size)): what quantize_layer attached,
/// for a reader of stored layers.
template <class Scalar>
std::array<OutputRotation<Scalar>, 7> quarot_output_rotations(bool smooth, const oq::transform::RandomizedHadamard& q,
                                                               Eigen::Index q_size, Eigen::Index head_dim) {
  return detail_methods::quarot_output_rotations<Scalar>(smooth, q, q_size, head_dim);
}

/// Calibrates `spec` on the recorded full-precision inputs and quantizes
/// the weights. The calibration time covers the transforms' calibration and
/// the weights' folding and quantization. options.seed seeds every random
/// draw (DuQuant's Haar Q′ of its base blocks, input by input).
template <class Scalar>
QuantizedLayer<Scalar> quantize_layer(const MethodSpec& spec, const LayerWeights<Scalar>& w,
                                      const LinearInputs<Scalar>& calibration, const QuantOptions& options) {
  return detail_methods::quantize_layer(spec, spec.name(), w, calibration, options);
}

/// A preset: quantize_layer(method_spec(method, GPTQ where options.gptq is
/// set, else RTN), …), its progress lines named by method_name.
template <class Scalar>
QuantizedLayer<Scalar> quantize_layer(Method method, const LayerWeights<Scalar>& w,
                                      const LinearInputs<Scalar>& calibration, const QuantOptions& options) {
  return detail_methods::quantize_layer(method_spec(method, options.gptq ? WeightQuant::kGptq : WeightQuant::kRtn),
                                        std::string(method_name(method)), w, calibration, options);
}

/// ‖a − b‖_F / ‖b‖_F in double.
template <class A, class B>
double relative_error(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  const double den = b.template cast<double>().norm();
  return (a.template cast<double>() - b.template cast<double>()).norm() / (den > 0 ? den : 1.0);
}

/// Statistics of one (transformed) linear input: what the quantizer sees.
struct InputStats {
  double max_abs = 0;        ///< max |x|
  double mean_kurtosis = 0;  ///< mean over tokens of the row kurtosis (docs/design.md §3)
  std::size_t outlier_channels = 0;  ///< channel-wise outliers (mean |x| > 6× the input's)
};

template <class Scalar>
InputStats input_stats(const Matrix<Scalar>& x) {
  InputStats s;
  s.max_abs = static_cast<double>(x.cwiseAbs().maxCoeff());
  s.mean_kurtosis = oq::analysis::row_kurtosis(x).template cast<double>().mean();
  s.outlier_channels = oq::analysis::find_channel_outliers(x).size();
  return s;
}

}  // namespace llama
