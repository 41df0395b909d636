// tools/oq/quantized_model.hpp: the quantized checkpoint `oq quantize`
// writes and `oq eval` reads (docs/formats.md, "Quantized checkpoint").
//
// A directory, like the model it came from:
//   config.json        the model's own, plus "oq_quantization" (QuantizationConfig) and
//                      quantization_config {"quant_method": "oq"} (transformers refuses it)
//   model.safetensors  the tensors below
//   tokenizer files    copied unchanged (tokenizer.model, tokenizer.json, ...)
//
// Tensors (i: layer, M: a linear's module path as in the model, e.g.
// self_attn.q_proj; N outputs, K inputs, G = K / group groups, 1 per channel):
//   model.layers.i.M.qweight   U8  [N, K/2]  the INT4 codes of oq::cpu::PackedWeights,
//                                            row n = bytes n·K/2 ..: low nibble input 2j,
//                                            high nibble input 2j+1 (u4 asymmetric)
//   model.layers.i.M.scales    F32 [N, G]    s_w
//   model.layers.i.M.zeros     I32 [N, G]    z_w (integers, may lie outside 0..15)
//   ŵ[n, k] = s_w[n, g(k)] · (q[n, k] − z_w[n, g(k)]), the weight folded with its
//   input's transform (W·M for a rotation M, W·diag(s) for smoothing)
//
//   model.layers.i.oq.X.smoothing     F32 [K]          the smoothing scales of every method
//                                                      that smooths: x ↦ x / s before its
//                                                      rotation; absent where folded
//                                                      (smoothing_folds)
//   model.layers.i.oq.X.rotations     F32 [R, b, b]    DuQuant's block rotations,
//                                                      each row-major; with one
//                                 F32 [R, K/b, b, b]   rotation per block, stage r's
//                                                      block c at [r, c]
//   model.layers.i.oq.X.permutations  I64 [R−1, K]    DuQuant's zigzag permutations
//                                                      (perm[j] = old channel at j)
//   model.layers.i.oq.X.signs         I8  [K]          QuaRot (qkv and gate/up inputs): the
//                                                      residual rotation's D, each ±1, the
//                                                      same in both inputs and every layer
//   model.layers.i.oq.X.divisors      F32 [K]          QuaRot (same inputs): RMSNorm's γ,
//                                                      divided out: x ↦ (x / γ)·D·H/√K
//                                                      (smooth+quarot: .smoothing instead)
//   X is the input: qkv_input, o_proj_input, gate_up_input, down_proj_input.
//   The block Hadamard has no tensors (oq_quantization.block_size says b);
//   QuaRot's o_proj and down_proj inputs take the plain H/√K (no tensors), and
//   (without smoothing, which keeps the residual stream unrotated) its
//   o_proj, down_proj and v_proj weights are stored as the deployed model
//   holds them, Rᵀ·Ŵ (methods.hpp's OutputRotation, rebuilt on loading from
//   the signs and oq_quantization.quarot.head_dim).
// model.embed_tokens.weight, model.norm.weight and lm_head.weight (untied)
// are copied from the model in their own dtype; they stay in full precision,
// as in the papers' W4A4 evaluations.
//
// W4A16 with rtn also writes gptq/: the same model as a GPTQ checkpoint
// (oq/io/gptq_checkpoint.hpp, checkpoint_format "gptq", or "gptq_v2" where a
// zero point is 0, scales in F16),
// config.json with its quantization_config, for transformers and vLLM.
//
// Smoothing is folded into the layer where it can be (fold_smoothing:
// γ / s, v_proj's and up_proj's scales / s) unless --no-fold; rotations are
// stored and run fused into the per-token quantizer.
#pragma once

#include "../llama/methods.hpp"
#include "model.hpp"

#include <oq/cpu.hpp>
#include <oq/format/int4_row.hpp>
#include <oq/io.hpp>
#include <oq/transform/hadamard.hpp>

#include <nlohmann/json.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace oq_tool {

/// 5: DuQuant with one rotation per block (methods "duquant-blockwise",
/// "duquant-blockwise+smooth": .rotations is [R, K/b, b, b]); 4: smoothing
/// before a Hadamard (methods "smooth+hadamard", "smooth+quarot"); 3:
/// QuaRot (method "quarot": the .signs and .divisors tensors, the "quarot"
/// object); 2: smoothing folded into the layers
/// (QuantizationConfig::smoothing_folded). Older files still load; oq writes
/// the lowest version that holds the file's content.
inline constexpr int kQuantizedFormatVersion = 5;

/// Method names on the command line and in oq_quantization.method: the
/// points smoothing × rotation of the cross (llama::MethodSpec) that a file
/// holds; the weight quantizer is oq_quantization.weights. The first six are
/// the presets, in llama::Method's order.
inline constexpr std::array<std::string_view, 10> kMethodKeys{
    "rtn",    "smoothquant",     "hadamard",      "duquant",           "duquant+smooth",
    "quarot", "smooth+hadamard", "smooth+quarot", "duquant-blockwise", "duquant-blockwise+smooth"};
/// kMethodKeys[i]'s smoothing and rotation.
inline constexpr std::array<std::pair<bool, llama::Rotation>, 10> kMethodPoints{{
    {false, llama::Rotation::kNone},
    {true, llama::Rotation::kNone},
    {false, llama::Rotation::kBlockHadamard},
    {false, llama::Rotation::kDuQuant},
    {true, llama::Rotation::kDuQuant},
    {false, llama::Rotation::kQuaRot},
    {true, llama::Rotation::kBlockHadamard},
    {true, llama::Rotation::kQuaRot},
    {false, llama::Rotation::kDuQuantBlockwise},
    {true, llama::Rotation::kDuQuantBlockwise},
}};

static_assert(
    [] {
      for (bool smooth : {false, true}) {
        for (llama::Rotation r : llama::kAllRotations) {
          int found = 0;
          for (const auto& p : kMethodPoints) found += p.first == smooth && p.second == r;
          if (found != 1) return false;
        }
      }
      return kMethodPoints.size() == 2 * llama::kAllRotations.size();
    }(),
    "kMethodPoints must hold every point smoothing × rotation exactly once (method_key relies on it)");

/// Weight quantizer names on the command line and in oq_quantization.weights,
/// in llama::WeightQuant's order.
inline constexpr std::array<std::string_view, 4> kWeightKeys{"rtn", "clip", "gptq", "lwc"};
static_assert(kWeightKeys.size() == llama::kAllWeightQuants.size());

inline std::string_view weights_key(llama::WeightQuant q) { return kWeightKeys[static_cast<std::size_t>(q)]; }

inline llama::WeightQuant weights_from_key(std::string_view key) {
  for (llama::WeightQuant q : llama::kAllWeightQuants) {
    if (weights_key(q) == key) return q;
  }
  throw std::invalid_argument("weights must be one of rtn, clip, gptq, lwc, got '" + std::string(key) + "'");
}

inline std::string_view method_key(llama::Method m) { return kMethodKeys[static_cast<std::size_t>(m)]; }

/// The key of spec's smoothing and rotation (every point of the cross has one).
inline std::string_view method_key(const llama::MethodSpec& spec) {
  for (std::size_t i = 0; i < kMethodPoints.size(); ++i) {
    if (kMethodPoints[i] == std::pair{spec.smooth, spec.rotation}) return kMethodKeys[i];
  }
  throw std::logic_error("method_key: a point of the cross without a key");  // kMethodPoints lists every one
}

/// The point of the cross that method `key` and `weights` name (alpha_search
/// false).
inline llama::MethodSpec spec_from_key(std::string_view key, llama::WeightQuant weights = llama::WeightQuant::kRtn) {
  for (std::size_t i = 0; i < kMethodKeys.size(); ++i) {
    if (kMethodKeys[i] == key) return llama::MethodSpec{kMethodPoints[i].first, kMethodPoints[i].second, weights};
  }
  std::string all;
  for (std::string_view k : kMethodKeys) all += (all.empty() ? "" : ", ") + std::string(k);
  throw std::invalid_argument("method must be one of " + all + ", got '" + std::string(key) + "'");
}

inline constexpr std::array<std::string_view, 4> kInputKeys{"qkv_input", "o_proj_input", "gate_up_input",
                                                            "down_proj_input"};

inline std::string input_key(llama::Input i) { return std::string(kInputKeys[static_cast<std::size_t>(i)]); }

struct QuantizationConfig;

/// The construction of H_b for a hadamard checkpoint whose block size b is
/// not a power of two (Sylvester's H_b, the only one for 2^m, never changes);
/// std::nullopt otherwise, or where oq has none for b (quantize refuses it).
inline std::optional<oq::transform::HadamardConstruction> block_hadamard_construction(const QuantizationConfig& c);

inline nlohmann::json construction_json(const oq::transform::HadamardConstruction& h) {
  return {{"kind", std::string(oq::transform::to_string(h.kind))}, {"base", h.base}, {"power", h.power},
          {"prime", h.prime}, {"degree", h.degree}};
}

/// What `oq quantize` did, stored as config.json's "oq_quantization".
struct QuantizationConfig {
  /// The point of the cross: "method" (smoothing × rotation), "weights",
  /// and "smoothquant_alpha_search" (spec.alpha_search).
  llama::MethodSpec spec;
  /// Bits, clips, alphas, block size, group, seed (gptq and
  /// smoothquant_alpha_search stay false: spec says both).
  llama::QuantOptions options;
  std::int64_t calibration_sequences = 0;
  std::int64_t calibration_seq_len = 0;
  /// The smoothing scales were folded into the layers where smoothing_folds()
  /// says they can be (their .smoothing tensors are absent), format version 2.
  bool smoothing_folded = false;
  /// With spec.alpha_search: the α the search chose, per layer, in
  /// kInputKeys order (written as "searched_alphas", one list per input; the
  /// scales themselves are in the layers, so loading needs none of this).
  std::vector<std::array<double, 4>> searched_alphas;
  /// QuaRot: how the writer built H_n of each input width n that is not a
  /// power of two (kInputKeys order; std::nullopt for a power of two, whose
  /// Sylvester H_n never changes): the weights were folded with those
  /// matrices, so a reader whose oq builds another H_n refuses the file.
  /// options.head_dim is QuaRot's head-wise fold into v_proj (0: none).
  std::array<std::optional<oq::transform::HadamardConstruction>, 4> quarot_hadamard;

  nlohmann::json to_json() const {
    nlohmann::json j;
    // Version 1 where nothing was folded: that content is version 1's, which
    // readers of version 1 then still accept. "weights" is new in version 4
    // but only informational (the tensors are the same whatever quantized
    // them), so it does not raise the version.
    const bool quarot = spec.rotation == llama::Rotation::kQuaRot;
    const bool smoothed_hadamard =
        spec.smooth && (quarot || spec.rotation == llama::Rotation::kBlockHadamard);
    const bool blockwise = spec.rotation == llama::Rotation::kDuQuantBlockwise;
    const int version = blockwise ? 5 : smoothed_hadamard ? 4 : quarot ? 3 : smoothing_folded ? 2 : 1;
    j["format_version"] = version;
    j["method"] = std::string(method_key(spec));
    j["weights"] = std::string(weights_key(spec.weights));
    j["weight_bits"] = options.weight_bits;
    j["act_bits"] = options.act_bits == 0 ? 16 : options.act_bits;
    j["weight_group"] = options.weight_group;
    j["weight_range_includes_zero"] = options.weight_range_includes_zero;
    j["weight_clip"] = options.weight_clip;
    j["act_clip"] = options.act_clip;
    j["smoothquant_alpha"] = options.smoothquant_alpha;
    j["smoothquant_alpha_search"] = spec.alpha_search;
    j["duquant_alpha"] = options.duquant_alpha;
    j["block_size"] = options.block_size;
    j["greedy_steps"] = options.greedy_steps;
    j["gptq"] = spec.weights == llama::WeightQuant::kGptq;  // what readers before "weights" read
    j["seed"] = options.seed;
    j["calibration_sequences"] = calibration_sequences;
    j["calibration_seq_len"] = calibration_seq_len;
    if (version >= 2) j["smoothing_folded"] = smoothing_folded;  // required from version 2 on
    if (auto h = block_hadamard_construction(*this)) j["hadamard_construction"] = construction_json(*h);
    if (quarot) {
      nlohmann::json hadamard = nlohmann::json::object();
      for (std::size_t i = 0; i < kInputKeys.size(); ++i) {
        if (quarot_hadamard[i]) hadamard[std::string(kInputKeys[i])] = construction_json(*quarot_hadamard[i]);
      }
      j["quarot"] = {{"head_dim", options.head_dim}, {"hadamard", std::move(hadamard)}};
    }
    if (!searched_alphas.empty()) {
      nlohmann::json per_input = nlohmann::json::object();
      for (std::size_t i = 0; i < kInputKeys.size(); ++i) {
        nlohmann::json list = nlohmann::json::array();
        for (const auto& layer : searched_alphas) list.push_back(layer[i]);
        per_input[std::string(kInputKeys[i])] = std::move(list);
      }
      j["searched_alphas"] = std::move(per_input);
    }
    return j;
  }

  static QuantizationConfig from_json(const nlohmann::json& j, const std::string& source) {
    auto fail = [&source](const std::string& what) {
      throw std::invalid_argument(source + ": oq_quantization." + what);
    };
    if (!j.is_object()) fail("must be an object");
    auto field = [&](const char* key) -> const nlohmann::json& {
      if (!j.contains(key)) fail(std::string(key) + " is missing");
      return j[key];
    };
    auto integer = [&](const char* key) -> std::int64_t {
      const auto& v = field(key);
      if (!v.is_number_integer()) fail(std::string(key) + " must be an integer");
      return v.get<std::int64_t>();
    };
    auto number = [&](const char* key) -> double {
      const auto& v = field(key);
      if (!v.is_number()) fail(std::string(key) + " must be a number");
      return v.get<double>();
    };
    const std::int64_t version = integer("format_version");
    if (version < 1 || version > kQuantizedFormatVersion) {
      fail("format_version must be 1 to " + std::to_string(kQuantizedFormatVersion) + ", got " +
           std::to_string(version));
    }
    QuantizationConfig c;
    if (version >= 2) {  // version 1 stored every transform explicitly
      if (!field("smoothing_folded").is_boolean()) fail("smoothing_folded must be true or false");
      c.smoothing_folded = j["smoothing_folded"].get<bool>();
    }
    if (!field("method").is_string()) fail("method must be a string");
    try {
      c.spec = spec_from_key(j["method"].get<std::string>());
    } catch (const std::invalid_argument& e) {
      fail(e.what());
    }
    if (c.spec.rotation == llama::Rotation::kDuQuantBlockwise && version < 5) {
      fail("method " + j["method"].get<std::string>() + " needs format_version 5, got " + std::to_string(version));
    }
    if (c.spec.smooth && (c.spec.rotation == llama::Rotation::kBlockHadamard || c.spec.rotation == llama::Rotation::kQuaRot) &&
        version < 4) {
      fail("method " + j["method"].get<std::string>() + " needs format_version 4, got " + std::to_string(version));
    }
    c.options.weight_bits = static_cast<int>(integer("weight_bits"));
    if (c.options.weight_bits != 4) fail("weight_bits must be 4 (the packed INT4 format)");
    const std::int64_t act = integer("act_bits");
    if (act != 4 && act != 8 && act != 16) fail("act_bits must be 4, 8 or 16");
    c.options.act_bits = act == 16 ? 0 : static_cast<int>(act);
    c.options.weight_group = integer("weight_group");
    if (!field("weight_range_includes_zero").is_boolean()) fail("weight_range_includes_zero must be true or false");
    c.options.weight_range_includes_zero = j["weight_range_includes_zero"].get<bool>();
    c.options.weight_clip = number("weight_clip");
    c.options.act_clip = number("act_clip");
    c.options.smoothquant_alpha = number("smoothquant_alpha");
    if (j.contains("smoothquant_alpha_search")) {  // optional: false when absent (files before the search)
      if (!j["smoothquant_alpha_search"].is_boolean()) fail("smoothquant_alpha_search must be true or false");
      c.spec.alpha_search = j["smoothquant_alpha_search"].get<bool>();
      if (c.spec.alpha_search && !(c.spec.smooth && c.spec.rotation == llama::Rotation::kNone)) {
        fail("smoothquant_alpha_search is true, but method " + j["method"].get<std::string>() +
             " is not smoothing without a rotation");
      }
    }
    c.options.duquant_alpha = number("duquant_alpha");
    c.options.block_size = integer("block_size");
    c.options.greedy_steps = static_cast<int>(integer("greedy_steps"));
    if (!field("gptq").is_boolean()) fail("gptq must be true or false");
    const bool gptq = j["gptq"].get<bool>();
    c.spec.weights = gptq ? llama::WeightQuant::kGptq : llama::WeightQuant::kRtn;
    if (j.contains("weights")) {  // optional: rtn or gptq as "gptq" says when absent (files before it)
      if (!j["weights"].is_string()) fail("weights must be a string");
      try {
        c.spec.weights = weights_from_key(j["weights"].get<std::string>());
      } catch (const std::invalid_argument& e) {
        fail(e.what());
      }
      if (gptq != (c.spec.weights == llama::WeightQuant::kGptq)) {
        fail("gptq is " + std::string(gptq ? "true" : "false") + ", but weights is " + j["weights"].get<std::string>());
      }
    }
    c.options.seed = static_cast<std::uint64_t>(integer("seed"));
    c.calibration_sequences = integer("calibration_sequences");
    c.calibration_seq_len = integer("calibration_seq_len");
    if (c.smoothing_folded && !c.spec.smooth) {
      fail("smoothing_folded is true, but method " + std::string(method_key(c.spec)) + " has no smoothing to fold");
    }
    if (c.spec.rotation == llama::Rotation::kQuaRot) {
      if (version < 3) fail("method quarot needs format_version 3, got " + std::to_string(version));  // 4 with smoothing: above
      const auto& quarot = field("quarot");
      if (!quarot.is_object() || !quarot.contains("head_dim") || !quarot["head_dim"].is_number_integer() ||
          quarot["head_dim"].get<std::int64_t>() < 0) {
        fail("quarot.head_dim must be an integer >= 0");
      }
      c.options.head_dim = quarot["head_dim"].get<std::int64_t>();
      if (!quarot.contains("hadamard") || !quarot["hadamard"].is_object()) fail("quarot.hadamard must be an object");
      for (std::size_t i = 0; i < kInputKeys.size(); ++i) {
        const std::string key(kInputKeys[i]);
        if (!quarot["hadamard"].contains(key)) continue;
        const auto& h = quarot["hadamard"][key];
        auto count = [&](const char* name) -> std::int64_t {
          if (!h.is_object() || !h.contains(name) || !h[name].is_number_integer()) {
            fail("quarot.hadamard." + key + "." + name + " must be an integer");
          }
          return h[name].get<std::int64_t>();
        };
        oq::transform::HadamardConstruction hc;
        hc.base = count("base");
        hc.power = static_cast<int>(count("power"));
        hc.prime = count("prime");
        hc.degree = static_cast<int>(count("degree"));
        if (!h.contains("kind") || !h["kind"].is_string()) fail("quarot.hadamard." + key + ".kind must be a string");
        bool known = false;
        for (auto kind : {oq::transform::HadamardKind::kSylvester, oq::transform::HadamardKind::kPaleyI,
                          oq::transform::HadamardKind::kPaleyII}) {
          if (h["kind"].get<std::string>() == oq::transform::to_string(kind)) {
            hc.kind = kind;
            known = true;
          }
        }
        if (!known || hc.base < 1 || hc.power < 0 || hc.power > 62) fail("quarot.hadamard." + key + " is not a construction");
        hc.size = hc.base << hc.power;
        c.quarot_hadamard[i] = hc;
      }
    } else if (j.contains("quarot")) {
      fail("quarot is present, but method is " + std::string(method_key(c.spec)));
    }
    if (j.contains("searched_alphas")) {  // optional, informational
      const auto& a = j["searched_alphas"];
      if (!a.is_object()) fail("searched_alphas must be an object of lists, one per input");
      std::size_t layers = 0;
      for (std::size_t i = 0; i < kInputKeys.size(); ++i) {
        const std::string key(kInputKeys[i]);
        if (!a.contains(key) || !a[key].is_array()) fail("searched_alphas." + key + " must be a list");
        if (i == 0) {
          layers = a[key].size();
          c.searched_alphas.assign(layers, {});
        }
        if (a[key].size() != layers) fail("searched_alphas: every input's list must have one α per layer");
        for (std::size_t l = 0; l < layers; ++l) {
          const auto& v = a[key][l];
          if (!v.is_number() || !(v.get<double>() >= 0 && v.get<double>() <= 1)) {
            fail("searched_alphas." + key + "[" + std::to_string(l) + "] must be a number in [0, 1]");
          }
          c.searched_alphas[l][i] = v.get<double>();
        }
      }
      if (!c.spec.alpha_search) fail("searched_alphas is present, but smoothquant_alpha_search is false");
    }
    if (c.options.block_size <= 0) fail("block_size must be > 0");
    // Which H_b the online block Hadamard is: oq's choice for a b that is not
    // a power of two changed when Paley over prime powers came (104 = 103 + 1
    // became 52·2), and the weights were folded with the writer's H_b.
    if (auto h = block_hadamard_construction(c)) {
      if (j.contains("hadamard_construction")) {
        if (j["hadamard_construction"] != construction_json(*h)) {
          fail("hadamard_construction is " + j["hadamard_construction"].dump() + ", but this oq builds H_" +
               std::to_string(c.options.block_size) + " as " + construction_json(*h).dump() +
               ": the weights were folded with another matrix; quantize the model again with this oq");
        }
      } else if (h->degree > 1) {
        fail("hadamard_construction is missing for block_size " + std::to_string(c.options.block_size) +
             ": a file from an oq older than Paley over prime powers, whose H_" + std::to_string(c.options.block_size) +
             " differs from this oq's " + construction_json(*h).dump() + "; quantize the model again with this oq");
      }
    }
    if (c.options.weight_group < 0) fail("weight_group must be >= 0");
    if (!(c.options.act_clip > 0 && c.options.act_clip <= 1) || !(c.options.weight_clip > 0 && c.options.weight_clip <= 1)) {
      fail("act_clip and weight_clip must be in (0, 1]");
    }
    return c;
  }
};

inline std::optional<oq::transform::HadamardConstruction> block_hadamard_construction(const QuantizationConfig& c) {
  const Eigen::Index b = c.options.block_size;
  if (c.spec.rotation != llama::Rotation::kBlockHadamard || b <= 0 || (b & (b - 1)) == 0) return std::nullopt;
  return oq::transform::find_hadamard_construction(b);
}

namespace detail_qmodel {

template <class T>
std::span<const std::byte> as_bytes(const std::vector<T>& v) {
  return std::as_bytes(std::span<const T>(v.data(), v.size()));
}

template <class T>
std::vector<T> read_elements(const oq::io::Checkpoint& c, const std::string& name, oq::io::DType dtype,
                             const std::vector<std::size_t>& shape) {
  if (!c.contains(name)) throw std::invalid_argument("quantized model: tensor '" + name + "' is missing");
  const auto& info = c.info(name);
  if (info.dtype != dtype || info.shape != shape) {
    std::string want = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
    throw std::invalid_argument("quantized model: tensor '" + name + "' must be " +
                                std::string(oq::io::dtype_name(dtype)) + " " + want + "]");
  }
  const auto bytes = c.bytes(name);
  std::vector<T> out(bytes.size() / sizeof(T));
  if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));  // little-endian host
  return out;
}

template <class Derived>
void append_row_major(std::vector<float>& out, const Eigen::MatrixBase<Derived>& r) {
  for (Eigen::Index i = 0; i < r.rows(); ++i) {
    for (Eigen::Index j = 0; j < r.cols(); ++j) out.push_back(r(i, j));
  }
}

// A DuQuant transform's permutations and smoothing (shared or per-block rotations alike).
template <class DuQuant>
void add_duquant_rest(oq::io::SafetensorsWriter& writer, const std::string& name, const DuQuant& d) {
  std::vector<std::int64_t> permutations;
  for (const auto& p : d.permutations()) permutations.insert(permutations.end(), p.begin(), p.end());
  writer.add(name + ".permutations", oq::io::DType::kI64,
             {d.permutations().size(), static_cast<std::size_t>(d.channels())}, as_bytes(permutations));
  if (d.smoothing().size() != 0) writer.add(name + ".smoothing", d.smoothing(), oq::io::DType::kF32);
}

}  // namespace detail_qmodel

/// Adds layer `index` of `q` (every weight packed INT4) to `writer`.
inline void add_quantized_layer(oq::io::SafetensorsWriter& writer, int index, const llama::QuantizedLayer<float>& q) {
  const bool smooth = q.spec().smooth;
  const std::string prefix = LlamaModel::layer_prefix(index);
  for (llama::Linear l : llama::kAllLinears) {
    const oq::cpu::PackedWeights* w = q.packed_weight(l);
    if (w == nullptr) throw std::invalid_argument("add_quantized_layer: no packed INT4 weight for a linear");
    const std::string name = prefix + llama::linear_module(l);
    const auto n = static_cast<std::size_t>(w->n), g = static_cast<std::size_t>(w->groups());
    writer.add(name + ".qweight", oq::io::DType::kU8, {n, static_cast<std::size_t>(w->row_bytes())},
               detail_qmodel::as_bytes(w->codes));
    writer.add(name + ".scales", oq::io::DType::kF32, {n, g}, detail_qmodel::as_bytes(w->scales));
    if (!w->is_signed) writer.add(name + ".zeros", oq::io::DType::kI32, {n, g}, detail_qmodel::as_bytes(w->zeros));
  }
  using T = llama::InputTransform<float>;
  for (llama::Input input : llama::kAllInputs) {
    const std::string name = prefix + "oq." + input_key(input);
    const auto& kind = q.transform(input).kind();
    if (const auto* s = std::get_if<T::Smoothing>(&kind)) {
      writer.add(name + ".smoothing", s->scales, oq::io::DType::kF32);
    } else if (const auto* h = std::get_if<T::BlockHadamard>(&kind)) {
      if (h->scales.size() != 0) writer.add(name + ".smoothing", h->scales, oq::io::DType::kF32);
    } else if (const auto* d = std::get_if<T::DuQuant>(&kind)) {
      const auto b = static_cast<std::size_t>(d->block_size());
      std::vector<float> rotations;
      for (const auto& r : d->rotations()) detail_qmodel::append_row_major(rotations, r);
      writer.add(name + ".rotations", oq::io::DType::kF32, {d->rotations().size(), b, b},
                 detail_qmodel::as_bytes(rotations));
      detail_qmodel::add_duquant_rest(writer, name, *d);
    } else if (const auto* pb = std::get_if<T::DuQuantBlockwise>(&kind)) {
      // Stage r's rotation of block c at (r·K + c)·b² (format version 5).
      const auto b = static_cast<std::size_t>(pb->block_size());
      std::vector<float> rotations;
      for (const auto& stage : pb->rotations()) {
        for (const auto& r : stage) detail_qmodel::append_row_major(rotations, r);
      }
      writer.add(name + ".rotations", oq::io::DType::kF32,
                 {pb->rotations().size(), static_cast<std::size_t>(pb->blocks()), b, b}, detail_qmodel::as_bytes(rotations));
      detail_qmodel::add_duquant_rest(writer, name, *pb);
    } else if (const auto* f = std::get_if<T::FullHadamard>(&kind)) {
      // QuaRot: x / divisors (RMSNorm's γ, or the smoothing scales where it
      // smooths: then stored as .smoothing), then ·D·H/√n; D's signs as I8.
      if (f->signs.size() != 0) writer.add(name + ".signs", f->signs, oq::io::DType::kI8);
      if (f->divisors.size() != 0) {
        writer.add(name + (smooth ? ".smoothing" : ".divisors"), f->divisors, oq::io::DType::kF32);
      }
    }
  }
}

/// Row r of w's codes into out[0 .. k): s4 or u4 as w holds them.
inline void unpack_codes(const oq::cpu::PackedWeights& w, std::int64_t r, std::int32_t* out) {
  if (w.is_signed) {
    oq::format::unpack_s4_row(w.row(r), static_cast<std::size_t>(w.k), out);
  } else {
    oq::format::unpack_u4_row(w.row(r), static_cast<std::size_t>(w.k), out);
  }
}

/// One linear's packed INT4 weight as a GPTQ checkpoint stores it
/// (oq/io/gptq_checkpoint.hpp: g_idx = k / group, scales rounded to binary16;
/// "gptq" stores zero − 1, "gptq_v2" the zero). Throws naming the entry where
/// a zero does not fit the format (quantize with weight_range_includes_zero).
inline oq::io::GptqPackedLinear gptq_layout(const oq::cpu::PackedWeights& w, oq::io::GptqCheckpointFormat format) {
  if (w.is_signed) throw std::invalid_argument("gptq_layout: asymmetric (u4) weights only");
  oq::io::GptqLinearCodes c;
  c.codes.resize(w.n, w.k);
  c.params.scale.resize(w.n, w.groups());
  c.params.zero.resize(w.n, w.groups());
  std::vector<std::int32_t> row(static_cast<std::size_t>(w.k));
  for (std::int64_t r = 0; r < w.n; ++r) {
    unpack_codes(w, r, row.data());
    for (std::int64_t j = 0; j < w.k; ++j) c.codes(r, j) = row[static_cast<std::size_t>(j)];
    for (std::int64_t g = 0; g < w.groups(); ++g) {
      c.params.scale(r, g) = w.scales[static_cast<std::size_t>(r * w.groups() + g)];
      c.params.zero(r, g) = static_cast<float>(w.zeros[static_cast<std::size_t>(r * w.groups() + g)]);
    }
  }
  c.group_index.resize(static_cast<std::size_t>(w.k));
  for (std::int64_t j = 0; j < w.k; ++j) c.group_index[static_cast<std::size_t>(j)] = static_cast<std::int32_t>(j / w.group_size);
  return oq::io::pack_gptq_linear(c, format);
}

/// The packed weight of one linear from a quantized checkpoint, with its
/// code sums recomputed (and so checked against nothing: they are derived).
inline oq::cpu::PackedWeights load_packed_linear(const oq::io::Checkpoint& c, const std::string& name, std::int64_t n,
                                                 std::int64_t k, std::int64_t group) {
  oq::cpu::PackedWeights w;
  w.n = n;
  w.k = k;
  w.group_size = group > 0 ? group : k;
  w.is_signed = false;
  if (k % 2 != 0 || k % w.group_size != 0) {
    throw std::invalid_argument("quantized model: '" + name + "' has " + std::to_string(k) +
                                " inputs, which the group size " + std::to_string(w.group_size) + " must divide");
  }
  const auto un = static_cast<std::size_t>(n), ug = static_cast<std::size_t>(w.groups());
  w.codes = detail_qmodel::read_elements<std::uint8_t>(c, name + ".qweight", oq::io::DType::kU8,
                                                        {un, static_cast<std::size_t>(k / 2)});
  w.scales = detail_qmodel::read_elements<float>(c, name + ".scales", oq::io::DType::kF32, {un, ug});
  w.zeros = detail_qmodel::read_elements<std::int32_t>(c, name + ".zeros", oq::io::DType::kI32, {un, ug});
  w.code_sums.assign(un * ug, 0);
  std::vector<std::int32_t> row(static_cast<std::size_t>(k));
  for (std::int64_t r = 0; r < n; ++r) {
    unpack_codes(w, r, row.data());
    for (std::int64_t j = 0; j < k; ++j) w.code_sums[static_cast<std::size_t>(r * w.groups() + j / w.group_size)] += row[static_cast<std::size_t>(j)];
  }
  w.validate("quantized model '" + name + "'");
  return w;
}

/// ŵ = s_w·(q − z_w) per entry in float: the bits oq::quant::fake_quantize
/// gave the weight that was packed (core/quant_math.hpp, dequantize_value).
inline Matrix<float> dequantize_packed(const oq::cpu::PackedWeights& w) {
  Matrix<float> out(w.n, w.k);
  std::vector<std::int32_t> row(static_cast<std::size_t>(w.k));
  for (std::int64_t r = 0; r < w.n; ++r) {
    unpack_codes(w, r, row.data());
    for (std::int64_t j = 0; j < w.k; ++j) {
      const auto cell = static_cast<std::size_t>(r * w.groups() + j / w.group_size);
      const float z = w.is_signed ? 0.0f : static_cast<float>(w.zeros[cell]);
      out(r, j) = (static_cast<float>(row[static_cast<std::size_t>(j)]) - z) * w.scales[cell];
    }
  }
  return out;
}

/// Whether the smoothing of `input` (x ↦ x / s) folds into the layer at
/// export, so that no kernel divides by s at inference (SmoothQuant §4,
/// "migrate the difficulty offline"; docs/design.md §6):
///   qkv and gate/up inputs  into the RMSNorm γ that produces them: γ ← γ / s;
///   down_proj's input       into up_proj's output rows, as silu(g) ⊙ (u / s)
///                           = (silu(g) ⊙ u) / s;
///   o_proj's input          into v_proj's output rows, as attention mixes
///                           tokens, not channels: only without grouped-query
///                           attention, since with it one value channel feeds
///                           the same channel of several query heads, whose
///                           scales differ: then s stays an online transform.
inline bool smoothing_folds(const llama::Config& c, llama::Input input) {
  return input != llama::Input::kO || c.num_key_value_heads == c.num_attention_heads;
}

/// The smoothing scales of a transform, or nullptr where it has none.
/// `smooth`: the layer's point smooths (MethodSpec::smooth), so that a full
/// Hadamard's divisors are its smoothing scales, not QuaRot's γ.
inline const Vector<float>* smoothing_scales_of(const llama::InputTransform<float>& t, bool smooth) {
  using T = llama::InputTransform<float>;
  auto nonempty = [](const Vector<float>& v) { return v.size() != 0 ? &v : nullptr; };
  if (const auto* s = std::get_if<T::Smoothing>(&t.kind())) return &s->scales;
  if (const auto* d = std::get_if<T::DuQuant>(&t.kind())) return nonempty(d->smoothing());
  if (const auto* d = std::get_if<T::DuQuantBlockwise>(&t.kind())) return nonempty(d->smoothing());
  if (const auto* h = std::get_if<T::BlockHadamard>(&t.kind())) return nonempty(h->scales);
  if (const auto* f = std::get_if<T::FullHadamard>(&t.kind())) return smooth ? nonempty(f->divisors) : nullptr;
  return nullptr;
}

/// `t` without its smoothing (what is left once the scales are folded away).
inline llama::InputTransform<float> without_smoothing(const llama::InputTransform<float>& t) {
  using T = llama::InputTransform<float>;
  if (const auto* d = std::get_if<T::DuQuant>(&t.kind())) {
    return T(T::DuQuant(d->channels(), d->rotations(), d->permutations()));
  }
  if (const auto* d = std::get_if<T::DuQuantBlockwise>(&t.kind())) {
    return T(T::DuQuantBlockwise(d->channels(), d->rotations(), d->permutations()));
  }
  if (const auto* h = std::get_if<T::BlockHadamard>(&t.kind())) return T(T::BlockHadamard(h->block_size));
  if (const auto* f = std::get_if<T::FullHadamard>(&t.kind())) {
    T::FullHadamard rest = *f;
    rest.divisors = Vector<float>();
    return T(std::move(rest));
  }
  return T();  // SmoothQuant: nothing left, the identity
}

/// A layer with its smoothing folded away (fold_smoothing), and the RMSNorm
/// weights it now runs with.
struct FoldedLayer {
  llama::QuantizedLayer<float> layer;
  Vector<float> input_norm;  ///< γ / s of the qkv input where it smooths, else γ
  Vector<float> post_norm;   ///< γ / s of the gate/up input where it smooths, else γ
};

/// `q` with every smoothing that smoothing_folds() allows moved out of its
/// input transform and into the layer (γ / s in float; a previous linear's
/// output row j divided by s_j through its packed scales, s_w ← s_w / s_j, the
/// INT4 codes and zero points unchanged, since ŵ = s_w·(q − z) is linear in
/// s_w). The dequantized weights are recomputed from the packed ones, as a
/// reload computes them. The layer computes the same function up to float
/// rounding: the norm rounds γ/s once instead of rounding its product and
/// then the quotient, so the activations the quantizer sees can differ in the
/// last bit from the calibration run's (a 4-bit code flips only where the
/// scaled value lies within that of a rounding boundary). Throws
/// std::invalid_argument without packed INT4 weights, std::domain_error where
/// a quotient overflows.
inline FoldedLayer fold_smoothing(const llama::Config& config, const llama::QuantizedLayer<float>& q,
                                  Vector<float> input_norm, Vector<float> post_norm) {
  using T = llama::InputTransform<float>;
  std::array<T, 4> transforms;
  std::array<std::optional<oq::cpu::PackedWeights>, 7> packed;
  for (llama::Linear l : llama::kAllLinears) {
    const oq::cpu::PackedWeights* w = q.packed_weight(l);
    if (w == nullptr) throw std::invalid_argument("fold_smoothing: every linear needs its packed INT4 weight");
    packed[static_cast<std::size_t>(l)] = *w;
  }
  for (llama::Input input : llama::kAllInputs) {
    const auto i = static_cast<std::size_t>(input);
    const T& t = q.transform(input);
    const Vector<float>* s = smoothing_scales_of(t, q.spec().smooth);
    if (s == nullptr || !smoothing_folds(config, input)) {
      transforms[i] = t;
      continue;
    }
    switch (input) {
      case llama::Input::kAttention: oq::transform::fold_into_rms_norm(input_norm, *s); break;
      case llama::Input::kMlp: oq::transform::fold_into_rms_norm(post_norm, *s); break;
      case llama::Input::kO:
      case llama::Input::kDown: {
        auto& w = *packed[static_cast<std::size_t>(input == llama::Input::kO ? llama::Linear::kV : llama::Linear::kUp)];
        Eigen::Map<Matrix<float>> scales(w.scales.data(), static_cast<Eigen::Index>(w.n), static_cast<Eigen::Index>(w.groups()));
        oq::transform::fold_into_previous_linear(scales, *s);
        break;
      }
    }
    transforms[i] = without_smoothing(t);
  }
  std::array<Matrix<float>, 7> weights;
  for (llama::Linear l : llama::kAllLinears) {
    const auto li = static_cast<std::size_t>(l);
    weights[li] = dequantize_packed(*packed[li]);
  }
  llama::QuantizedLayer<float> layer(q.spec(), std::move(transforms), std::move(weights), q.options(),
                                     q.calibration_seconds(), std::move(packed), q.output_rotations());
  layer.set_smoothing_alphas(q.smoothing_alphas());
  return FoldedLayer{std::move(layer), std::move(input_norm), std::move(post_norm)};
}

/// Layer `index` of a quantized checkpoint, as the QuantizedLayer that
/// quantize_layer made (transforms, dequantized and packed weights; without
/// `dequantize`, the packed weights only: what the integer kernels read, no
/// float copy of the layer).
inline llama::QuantizedLayer<float> load_quantized_layer(const oq::io::Checkpoint& c, const llama::Config& config,
                                                        const QuantizationConfig& q, int index,
                                                        bool dequantize = true) {
  const std::string prefix = LlamaModel::layer_prefix(index);
  std::array<Matrix<float>, 7> weights;
  std::array<std::optional<oq::cpu::PackedWeights>, 7> packed;
  for (llama::Linear l : llama::kAllLinears) {
    const auto i = static_cast<std::size_t>(l);
    const auto shape = llama::linear_shape(config, l);
    packed[i] = load_packed_linear(c, prefix + llama::linear_module(l), shape[0], shape[1], q.options.weight_group);
    if (dequantize) weights[i] = dequantize_packed(*packed[i]);
  }
  using T = llama::InputTransform<float>;
  std::array<T, 4> transforms;
  for (llama::Input input : llama::kAllInputs) {
    const auto i = static_cast<std::size_t>(input);
    const std::string name = prefix + "oq." + input_key(input);
    const Eigen::Index width = llama::input_width(config, input);
    const auto k = static_cast<std::size_t>(width);
    // Smoothing folded at export has no tensor; one that is stored although
    // the config says it was folded would be applied twice (or never): refused.
    const bool folded = q.smoothing_folded && smoothing_folds(config, input);
    if (folded && c.contains(name + ".smoothing")) {
      throw std::invalid_argument("quantized model: '" + name +
                                  ".smoothing' is present although oq_quantization.smoothing_folded is true");
    }
    // Every method divides by s online (or folded it): a scale that is not
    // positive and finite would give inf or NaN activations, refused here.
    auto smoothing = [&] {
      if (folded) return Vector<float>();
      const auto v = detail_qmodel::read_elements<float>(c, name + ".smoothing", oq::io::DType::kF32, {k});
      for (std::size_t j = 0; j < v.size(); ++j) {
        if (!(v[j] > 0.0f && std::isfinite(v[j]))) {
          throw std::invalid_argument("quantized model: '" + name + ".smoothing'[" + std::to_string(j) + "] is " +
                                      std::to_string(v[j]) + ", not positive and finite");
        }
      }
      return Vector<float>(Eigen::Map<const Vector<float>>(v.data(), static_cast<Eigen::Index>(v.size())));
    };
    const bool smooth = q.spec.smooth;
    switch (q.spec.rotation) {
      case llama::Rotation::kNone:
        if (smooth && !folded) transforms[i] = T(T::Smoothing{smoothing()});
        break;
      case llama::Rotation::kBlockHadamard:
        // Checked before the integer path builds a b×b matrix for a b that is no power of two.
        if (q.options.block_size < 2 || width % q.options.block_size != 0) {
          throw std::invalid_argument("quantized model: oq_quantization.block_size = " +
                                      std::to_string(q.options.block_size) + " must be >= 2 and divide the input width " +
                                      std::to_string(width));
        }
        transforms[i] = T(T::BlockHadamard(q.options.block_size, smooth ? smoothing() : Vector<float>()));
        break;
      case llama::Rotation::kDuQuant:
      case llama::Rotation::kDuQuantBlockwise: {
        // Shared: [R, b, b]; one rotation per block: [R, width / b, b, b].
        const bool blockwise = q.spec.rotation == llama::Rotation::kDuQuantBlockwise;
        if (!c.contains(name + ".rotations")) {
          throw std::invalid_argument("quantized model: tensor '" + name + ".rotations' is missing");
        }
        const auto& shape = c.info(name + ".rotations").shape;
        const std::size_t rank = blockwise ? 4 : 3;
        const std::size_t b = shape.size() == rank ? shape[rank - 1] : 0;
        if (shape.size() != rank || shape[0] == 0 || shape[0] > 64 || b == 0 || shape[rank - 2] != b ||
            k % b != 0 || (blockwise && shape[1] != k / b)) {
          throw std::invalid_argument(
              "quantized model: '" + name + ".rotations' must be " +
              (blockwise ? "[R, " + std::to_string(k) + " / b, b, b] (one rotation per block, method " +
                               std::string(method_key(q.spec)) + ")"
                         : "[R, b, b] (one rotation shared by the blocks, method " + std::string(method_key(q.spec)) + ")") +
              ", 1 <= R <= 64 and b dividing the input width " + std::to_string(k));
        }
        const std::size_t r = shape[0], per_stage = blockwise ? k / b : 1;
        const auto rot = detail_qmodel::read_elements<float>(c, name + ".rotations", oq::io::DType::kF32, shape);
        auto matrix = [&](std::size_t at) -> typename T::DuQuant::Matrix {
          return Eigen::Map<const Matrix<float>>(rot.data() + at * b * b, static_cast<Eigen::Index>(b),
                                                 static_cast<Eigen::Index>(b));
        };
        const auto perm = detail_qmodel::read_elements<std::int64_t>(c, name + ".permutations", oq::io::DType::kI64,
                                                                     {r - 1, k});
        std::vector<oq::transform::Permutation> permutations;
        for (std::size_t n = 0; n + 1 < r; ++n) {
          permutations.emplace_back(perm.begin() + static_cast<std::ptrdiff_t>(n * k),
                                    perm.begin() + static_cast<std::ptrdiff_t>((n + 1) * k));
        }
        Vector<float> s;
        if (smooth) s = smoothing();
        // The transform checks each rotation (orthogonal) and permutation; its
        // message gains the tensor's name.
        try {
          if (blockwise) {
            std::vector<std::vector<typename T::DuQuantBlockwise::Matrix>> rotations(r);
            for (std::size_t n = 0; n < r; ++n) {
              for (std::size_t blk = 0; blk < per_stage; ++blk) rotations[n].push_back(matrix(n * per_stage + blk));
            }
            transforms[i] = T(typename T::DuQuantBlockwise(static_cast<Eigen::Index>(k), std::move(rotations),
                                                           std::move(permutations), std::move(s)));
          } else {
            std::vector<typename T::DuQuant::Matrix> rotations;
            for (std::size_t n = 0; n < r; ++n) rotations.push_back(matrix(n));
            transforms[i] = T(typename T::DuQuant(static_cast<Eigen::Index>(k), std::move(rotations),
                                                  std::move(permutations), std::move(s)));
          }
        } catch (const std::invalid_argument& e) {
          throw std::invalid_argument("quantized model: " + name + ".{rotations,permutations}: " + e.what());
        }
        break;
      }
      case llama::Rotation::kQuaRot: {
        // H_n as the writer built it (the weights were folded with it).
        const std::optional<oq::transform::HadamardConstruction> h = oq::transform::find_hadamard_construction(width);
        if (!h) {
          throw std::invalid_argument("quantized model: the " + std::string(llama::input_name(input)) + " is " +
                                      std::to_string(width) + " wide, which has no Hadamard construction in this oq");
        }
        const bool power_of_two = (width & (width - 1)) == 0;
        const auto& stored = q.quarot_hadamard[i];
        if (!power_of_two && (!stored || construction_json(*stored) != construction_json(*h))) {
          throw std::invalid_argument(
              "quantized model: oq_quantization.quarot.hadamard." + input_key(input) + " is " +
              (stored ? construction_json(*stored).dump() : std::string("missing")) + ", but this oq builds H_" +
              std::to_string(width) + " as " + construction_json(*h).dump() +
              ": the weights were folded with another matrix; quantize the model again with this oq");
        }
        typename T::FullHadamard f;
        f.width = width;
        const bool residual = input == llama::Input::kAttention || input == llama::Input::kMlp;
        // Where it smooths, the scales (.smoothing) divide every input and
        // replace γ's division (RMSNorm keeps its γ): no .divisors.
        if (smooth) {
          if (c.contains(name + ".divisors")) {
            throw std::invalid_argument("quantized model: '" + name + ".divisors' is present, but method " +
                                        std::string(method_key(q.spec)) + " divides by its smoothing scales");
          }
          f.divisors = smoothing();
        }
        if (residual) {
          const auto signs = detail_qmodel::read_elements<std::int8_t>(c, name + ".signs", oq::io::DType::kI8, {k});
          f.signs.resize(width);
          for (std::size_t j = 0; j < k; ++j) {
            if (signs[j] != 1 && signs[j] != -1) {
              throw std::invalid_argument("quantized model: '" + name + ".signs'[" + std::to_string(j) + "] is " +
                                          std::to_string(int{signs[j]}) + ", not +1 or -1");
            }
            f.signs(static_cast<Eigen::Index>(j)) = signs[j];
          }
          if (!smooth) {  // RMSNorm's γ (a smoothing's scales are checked as read)
            const auto d = detail_qmodel::read_elements<float>(c, name + ".divisors", oq::io::DType::kF32, {k});
            f.divisors = Eigen::Map<const Vector<float>>(d.data(), width);
          }
          for (Eigen::Index j = 0; !smooth && j < f.divisors.size(); ++j) {
            if (!(f.divisors(j) != 0.0f && std::isfinite(f.divisors(j)))) {
              throw std::invalid_argument("quantized model: '" + name + ".divisors'[" + std::to_string(j) +
                                          "] must be nonzero and finite");
            }
          }
        } else {
          for (const char* extra : {".signs", ".divisors"}) {
            if (c.contains(name + extra)) {
              throw std::invalid_argument("quantized model: '" + name + extra + "' is present, but QuaRot's " +
                                          std::string(llama::input_name(input)) + " takes a plain Hadamard");
            }
          }
        }
        transforms[i] = T(std::move(f));
        break;
      }
    }
  }
  std::array<llama::OutputRotation<float>, 7> output_rotations;
  if (q.spec.rotation == llama::Rotation::kQuaRot) {
    // One residual rotation Q for both residual-fed inputs and the outputs of
    // o_proj and down_proj: the two stored sign vectors must agree.
    const auto& a = std::get<T::FullHadamard>(transforms[static_cast<std::size_t>(llama::Input::kAttention)].kind());
    const auto& m = std::get<T::FullHadamard>(transforms[static_cast<std::size_t>(llama::Input::kMlp)].kind());
    if (a.signs != m.signs) {
      throw std::invalid_argument("quantized model: layer " + std::to_string(index) +
                                  ": qkv_input.signs and gate_up_input.signs differ (QuaRot's residual rotation is one)");
    }
    if (q.options.head_dim != 0 && q.options.head_dim != config.head_dim) {
      throw std::invalid_argument("quantized model: oq_quantization.quarot.head_dim = " +
                                  std::to_string(q.options.head_dim) + ", but the model's head_dim is " +
                                  std::to_string(config.head_dim));
    }
    output_rotations = llama::quarot_output_rotations<float>(q.spec.smooth, oq::transform::RandomizedHadamard(a.signs),
                                                             config.q_size(), q.options.head_dim);
  }
  return llama::QuantizedLayer<float>(q.spec, std::move(transforms), std::move(weights), q.options, 0.0,
                                      std::move(packed), std::move(output_rotations));
}

}  // namespace oq_tool
