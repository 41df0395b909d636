// tools/oq/pipeline.hpp: what the oq tool's subcommands do, as functions the
// tests call directly (main.cpp only parses arguments and prints).
//
//   analyze   per layer and linear input: outlier statistics of the
//             full-precision activations (analysis.hpp)
//   quantize  layer by layer, each layer calibrated on the outputs of the
//             already-quantized layers before it, then written as a
//             quantized checkpoint (quantized_model.hpp)
//   eval      perplexity of a model or a quantized checkpoint
//
// Layer-major order everywhere: every sequence's hidden states pass one
// layer before the next layer is read, so each layer's weights are read
// once (a 7B model never needs more than one float layer in memory).
#pragma once

#include "../llama/integer_path.hpp"
#include "../llama/llama_layer.hpp"
#include "../llama/methods.hpp"
#include "data.hpp"
#include "model.hpp"
#include "progress.hpp"
#include "quantized_model.hpp"
#include "staging.hpp"

#include <oq/cpu.hpp>
#include <oq/io.hpp>

#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace oq_tool {

/// The hidden states of every sequence (each tokens × hidden).
using HiddenStates = std::vector<Matrix<float>>;

inline HiddenStates embed_all(const LlamaModel& model, const std::vector<Sequence>& sequences) {
  const Matrix<float> table = model.embeddings();
  HiddenStates x;
  x.reserve(sequences.size());
  for (const Sequence& s : sequences) x.push_back(embed(table, s));
  return x;
}

/// Negative log-likelihood and token count of the final hidden states.
struct Perplexity {
  double nll = 0;
  std::int64_t predictions = 0;
  double value() const { return predictions > 0 ? std::exp(nll / double(predictions)) : 0.0; }
};

/// Each sequence's negative log-likelihood (nats, summed over its
/// predictions) from its final hidden states.
inline std::vector<double> sequence_nlls(const LlamaModel& model, const HiddenStates& x,
                                         const std::vector<Sequence>& sequences) {
  const Vector<float> gamma = model.final_norm();
  const Matrix<float> head = model.lm_head();
  std::vector<double> out;
  out.reserve(x.size());
  for (std::size_t s = 0; s < x.size(); ++s) {
    const Matrix<float> h = llama::rms_norm(x[s], gamma, model.layer_config().rms_norm_eps);
    out.push_back(sequence_nll(h, head, sequences[s]));
  }
  return out;
}

inline Perplexity perplexity_of(const LlamaModel& model, const HiddenStates& x, const std::vector<Sequence>& sequences) {
  Perplexity p;
  for (double nll : sequence_nlls(model, x, sequences)) p.nll += nll;
  for (const auto& xs : x) p.predictions += xs.rows() - 1;
  return p;
}

// ---------------------------------------------------------------- eval

enum class EvalPath { kFullPrecision, kIntegerKernels, kFakeQuantization };

inline std::string_view eval_path_name(EvalPath p) {
  switch (p) {
    case EvalPath::kFullPrecision: return "full precision (float)";
    case EvalPath::kIntegerKernels: return "integer kernels (oq::cpu W4A4/W4A8 GEMM, fused per-token quantization)";
    case EvalPath::kFakeQuantization: return "fake quantization (float)";
  }
  return "";
}

struct EvalResult {
  Perplexity perplexity;
  EvalPath path = EvalPath::kFullPrecision;
  std::int64_t sequences = 0;
  double seconds = 0;
};

/// Whether `model` is a quantized checkpoint (config.json has oq_quantization).
inline bool is_quantized(const LlamaModel& model) { return model.config_json().contains("oq_quantization"); }

inline QuantizationConfig quantization_of(const LlamaModel& model) {
  return QuantizationConfig::from_json(model.config_json()["oq_quantization"],
                                       (model.directory() / "config.json").string());
}

/// Perplexity of `model` (full precision, or a quantized checkpoint: by the
/// integer kernels where they exist — 4-bit weights with 4- or 8-bit
/// activations — unless `force_fake`, else by fake quantization).
inline EvalResult evaluate(const LlamaModel& model, const std::vector<Sequence>& sequences,
                           const oq::cpu::KernelOptions& kernels, bool force_fake = false) {
  const auto start = std::chrono::steady_clock::now();
  EvalResult r;
  r.sequences = static_cast<std::int64_t>(sequences.size());
  std::optional<QuantizationConfig> q;
  if (is_quantized(model)) q = quantization_of(model);
  if (q) {
    const bool integer = !force_fake && (q->options.act_bits == 4 || q->options.act_bits == 8);
    r.path = integer ? EvalPath::kIntegerKernels : EvalPath::kFakeQuantization;
  }
  HiddenStates x = embed_all(model, sequences);
  Progress bar("eval", model.num_layers());
  const llama::Config& c = model.layer_config();
  for (int l = 0; l < model.num_layers(); ++l) {
    if (!q) {
      const llama::LayerWeights<float> w = model.layer(l);
      for (auto& xs : x) xs = llama::forward(c, w, xs);
    } else {
      // The integer kernels read only the packed weights: no float copy then.
      const bool integer = r.path == EvalPath::kIntegerKernels;
      const llama::QuantizedLayer<float> ql = load_quantized_layer(model.checkpoint(), c, *q, l, !integer);
      llama::LayerWeights<float> norms;  // the linears hold their own weights (forward checks them there)
      norms.input_norm = model.checkpoint().vector<float>(LlamaModel::layer_prefix(l) + "input_layernorm.weight");
      norms.post_norm = model.checkpoint().vector<float>(LlamaModel::layer_prefix(l) + "post_attention_layernorm.weight");
      if (integer) {
        const llama::IntegerLayer integer_layer(ql, kernels);
        for (auto& xs : x) xs = llama::forward(c, norms, xs, integer_layer);
      } else {
        for (auto& xs : x) xs = llama::forward(c, norms, xs, ql);
      }
    }
    bar.advance("layer " + std::to_string(l));
  }
  bar.finish();
  r.perplexity = perplexity_of(model, x, sequences);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

// ---------------------------------------------------------------- quantize

/// Copies the tokenizer files a text evaluation of the quantized model needs.
inline void copy_tokenizer_files(const std::filesystem::path& from, const std::filesystem::path& to) {
  for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                           "generation_config.json"}) {
    if (std::filesystem::is_regular_file(from / name)) std::filesystem::copy_file(from / name, to / name);
  }
}


/// Throws std::invalid_argument naming the option when `options` cannot
/// quantize a model of shape `c` with `spec`: checked before any work.
inline void validate_quantize_options(const llama::Config& c, const llama::MethodSpec& spec,
                                      const llama::QuantOptions& options) {
  const std::string method(method_key(spec));
  if (options.gptq || options.smoothquant_alpha_search) {
    throw std::invalid_argument("quantize: the method spec chooses the weight quantizer and SmoothQuant's α search "
                                "(weights = gptq, alpha_search); options.gptq and options.smoothquant_alpha_search "
                                "must stay false");
  }
  if (options.weight_bits != 4) {
    throw std::invalid_argument("--w-bits must be 4 (the packed INT4 checkpoint), got " +
                                std::to_string(options.weight_bits));
  }
  if (options.act_bits != 0 && options.act_bits != 4 && options.act_bits != 8) {
    throw std::invalid_argument("--a-bits must be 4, 8 or 16, got " + std::to_string(options.act_bits));
  }
  const std::array<Eigen::Index, 3> widths{c.hidden_size, c.q_size(), c.intermediate_size};
  auto divides_all = [&](Eigen::Index v) {
    for (Eigen::Index w : widths) {
      if (w % v != 0) return false;
    }
    return true;
  };
  const std::string shape = "the linear inputs' widths (" + std::to_string(widths[0]) + ", " + std::to_string(widths[1]) +
                            ", " + std::to_string(widths[2]) + ")";
  if (options.weight_group != 0 && (options.weight_group < 0 || options.weight_group % 2 != 0 ||
                                    !divides_all(options.weight_group))) {
    throw std::invalid_argument("--group must be 0 or an even number dividing " + shape + ", got " +
                                std::to_string(options.weight_group));
  }
  const bool duquant = spec.rotation == llama::Rotation::kDuQuant || spec.rotation == llama::Rotation::kDuQuantBlockwise;
  const bool blocks = spec.rotation == llama::Rotation::kBlockHadamard || duquant;
  if (blocks && (options.block_size < 2 || !divides_all(options.block_size))) {
    throw std::invalid_argument("--block-size must be >= 2 and divide " + shape + ", got " +
                                std::to_string(options.block_size));
  }
  if (duquant && options.greedy_steps < 1) {
    throw std::invalid_argument("--greedy-steps must be >= 1, got " + std::to_string(options.greedy_steps));
  }
  if (spec.rotation == llama::Rotation::kQuaRot) {  // full-width Hadamards of every linear input
    for (const auto& [name, width] : {std::pair{"hidden_size", c.hidden_size}, std::pair{"the o_proj input", c.q_size()},
                                      std::pair{"intermediate_size", c.intermediate_size}}) {
      if (!oq::transform::find_hadamard_construction(width)) {
        throw std::invalid_argument("--method " + method + " needs a Hadamard matrix of every linear input's width; " +
                                    name + " = " + std::to_string(width) + " has no construction in oq");
      }
    }
  }
  if (!(options.act_clip > 0 && options.act_clip <= 1) || !(options.weight_clip > 0 && options.weight_clip <= 1)) {
    throw std::invalid_argument("--act-clip and --weight-clip must be in (0, 1]");
  }
  for (const auto& [name, alpha] : {std::pair{"smoothquant_alpha", options.smoothquant_alpha},
                                     std::pair{"duquant_alpha", options.duquant_alpha}}) {
    if (!(alpha >= 0 && alpha <= 1)) {
      throw std::invalid_argument(std::string("--smooth-alpha (") + name + ") must be in [0, 1] or 'search', got " +
                                  std::to_string(alpha));
    }
  }
  if (spec.weights == llama::WeightQuant::kLwc) {
    options.lwc.validate("--weights lwc");
    // train_lwc's own limit on per-group training, checked here for every
    // linear before any layer is calibrated instead of at the first one too
    // costly (LwcOptions::max_group_work).
    if (options.weight_group > 0) {
      for (llama::Linear l : llama::kAllLinears) {
        const auto out_in = llama::linear_shape(c, l);
        const double work = options.lwc.group_work(out_in[0], out_in[1]);
        if (!options.lwc.admits_group_work(work)) {
          throw std::invalid_argument(
              "--weights lwc with --group " + std::to_string(options.weight_group) + ": per-group LWC of " +
              std::string(llama::linear_name(l)) + " (" + std::to_string(out_in[0]) + " x " +
              std::to_string(out_in[1]) + ") costs --lwc-steps · out · in² = " + std::to_string(work) +
              " multiply-adds, above the limit of " + std::to_string(options.lwc.max_group_work) +
              ": fewer --lwc-steps, or per-channel weights (--group 0)");
        }
      }
    }
  }
  if (spec.alpha_search) {
    if (!spec.smooth || spec.rotation != llama::Rotation::kNone) {
      throw std::invalid_argument("--smooth-alpha search applies to --method smoothquant only, got " + method +
                                  " (give a number)");
    }
    if (options.act_bits == 0) {
      throw std::invalid_argument("--smooth-alpha search needs quantized activations (--a-bits 4 or 8): it "
                                  "minimises the quantized linears' error");
    }
    // Any weight quantizer: the search scores round-to-nearest weights (its
    // paper's), and the α it picks is then used with the one chosen, as the
    // examples' studies run smooth-search+GPTQ.
    if (options.alpha_search_tokens <= 0) {
      throw std::invalid_argument("alpha_search_tokens must be > 0, got " + std::to_string(options.alpha_search_tokens));
    }
  }
}

/// Whether `oq quantize` also writes the GPTQ layout (gptq/): W4A16 without a
/// transform is what GPTQ checkpoints hold, which transformers and vLLM load.
/// A transform (smoothing, rotation) would have to run online before each
/// linear, which those engines do not do; LWC learns ranges that the
/// layout's zero points in 0..15 cannot hold.
inline bool writes_gptq_layout(const llama::MethodSpec& spec, const llama::QuantOptions& options) {
  return options.act_bits == 0 && !spec.smooth && spec.rotation == llama::Rotation::kNone &&
         spec.weights != llama::WeightQuant::kLwc;
}

/// The options every layer of `spec` is quantized with, as `oq quantize`
/// writes them (and `oq study` runs them): every group's range widened to
/// hold 0 where the GPTQ layout is written (its zero points must lie in
/// 0..15); QuaRot's head-wise half of o_proj's Hadamard folded into v_proj.
inline llama::QuantOptions layer_options_for(const llama::Config& c, const llama::MethodSpec& spec,
                                             llama::QuantOptions options) {
  if (writes_gptq_layout(spec, options)) options.weight_range_includes_zero = true;
  if (spec.rotation == llama::Rotation::kQuaRot) options.head_dim = c.head_dim;
  return options;
}

/// Layer by layer, as `oq quantize` and `oq study` calibrate: layer l of
/// `model` quantized as `spec` (llama::quantize_layer) on the states of
/// `calibration` entering it, each layer on the outputs of the quantized
/// layers before it (as the DuQuant release does, block by block); then
/// `use(l, w, q)` with the layer's weights w and its QuantizedLayer q returns
/// the layer the states go on through (q itself, or q folded, w's norms then
/// updated by `use`). Per-layer seeds: options.seed + l (a different Haar
/// draw per layer, reproducible), but QuaRot's one residual rotation for the
/// whole model (every layer reads and writes the same rotated stream) takes
/// options.seed in every layer. `options` as layer_options_for gives them.
/// Checks for Ctrl-C after each layer.
template <class Use>
void for_each_quantized_layer(const LlamaModel& model, HiddenStates& calibration, const llama::MethodSpec& spec,
                              const llama::QuantOptions& options, Use&& use) {
  const llama::Config& c = model.layer_config();
  const bool quarot = spec.rotation == llama::Rotation::kQuaRot;
  for (int l = 0; l < model.num_layers(); ++l) {
    llama::LayerWeights<float> w = model.layer(l);
    const llama::LinearInputs<float> inputs = llama::record_inputs(c, w, calibration);
    llama::QuantOptions o = options;
    if (!quarot) o.seed = options.seed + static_cast<std::uint64_t>(l);
    const llama::QuantizedLayer<float> q = use(l, w, llama::quantize_layer(spec, w, inputs, o));
    for (auto& xs : calibration) xs = llama::forward(c, w, xs, q);
    throw_if_interrupted();
  }
}

/// How `quantize` writes the checkpoint (beyond what the method computes).
struct ExportOptions {
  /// Fold the smoothing scales into the RMSNorm weights and v_proj's /
  /// up_proj's output rows where they can be (smoothing_folds), as a
  /// deployment does; off: every transform is stored explicitly and the
  /// checkpoint computes exactly the activations of the calibration run.
  bool fold_smoothing = true;
};

struct QuantizeResult {
  double seconds = 0;
  double calibration_seconds = 0;  ///< in quantize_layer (transforms, folding, weight quantization)
};

/// Quantizes `model` with the point `spec` of the cross calibrated on `calibration` and writes the
/// quantized checkpoint to `out` (which must not exist).
inline QuantizeResult quantize_model(const LlamaModel& model, const std::vector<Sequence>& calibration,
                                     const llama::MethodSpec& spec, const llama::QuantOptions& options,
                                     const std::filesystem::path& out, const ExportOptions& export_options = {}) {
  if (is_quantized(model)) {
    throw std::invalid_argument("model '" + model.directory().string() +
                                "' is already quantized (its config.json has oq_quantization); give the "
                                "full-precision model");
  }
  validate_quantize_options(model.layer_config(), spec, options);
  if (calibration.empty()) throw std::invalid_argument("quantize: no calibration sequences");
  const auto start = std::chrono::steady_clock::now();
  StagingDirectory staging(out);
  const bool quarot = spec.rotation == llama::Rotation::kQuaRot;
  const bool write_gptq = writes_gptq_layout(spec, options);
  const bool fold = export_options.fold_smoothing && spec.smooth;
  const llama::QuantOptions layer_options = layer_options_for(model.layer_config(), spec, options);
  oq::io::SafetensorsWriter gptq_writer;
  std::vector<std::pair<std::string, oq::cpu::PackedWeights>> gptq_linears;  // converted once the zeros are known
  QuantizeResult result;
  const llama::Config& c = model.layer_config();
  HiddenStates x = embed_all(model, calibration);
  oq::io::SafetensorsWriter writer;
  Progress bar("quantize " + std::string(method_key(spec)), model.num_layers());
  std::vector<std::array<double, 4>> searched_alphas;
  // The checkpoint computes each layer as `q` below (folded where it folds):
  // the next layer calibrates on those outputs.
  for_each_quantized_layer(model, x, spec, layer_options, [&](int l, llama::LayerWeights<float>& w,
                                                               llama::QuantizedLayer<float> unfolded) {
    std::optional<FoldedLayer> folded;
    if (fold) {
      folded.emplace(fold_smoothing(c, unfolded, w.input_norm, w.post_norm));
      w.input_norm = folded->input_norm;
      w.post_norm = folded->post_norm;
    }
    llama::QuantizedLayer<float> q = folded ? std::move(folded->layer) : std::move(unfolded);
    if (spec.alpha_search) searched_alphas.push_back(q.smoothing_alphas());
    result.calibration_seconds += q.calibration_seconds();
    add_quantized_layer(writer, l, q);
    if (write_gptq) {
      for (llama::Linear lin : llama::kAllLinears) {
        gptq_linears.emplace_back(LlamaModel::layer_prefix(l) + llama::linear_module(lin), *q.packed_weight(lin));
      }
    }
    const std::string prefix = LlamaModel::layer_prefix(l);
    for (const char* norm : {"input_layernorm.weight", "post_attention_layernorm.weight"}) {
      const std::string name = prefix + norm;
      const auto& info = model.checkpoint().info(name);
      if (fold) {  // γ / s in F32: a BF16 or F16 γ / s would round away what the fold keeps
        writer.add(name, std::string_view(norm) == "input_layernorm.weight" ? w.input_norm : w.post_norm,
                   oq::io::DType::kF32);
      } else {
        writer.add(name, info.dtype, info.shape, model.checkpoint().bytes(name));
      }
      if (write_gptq) gptq_writer.add(name, info.dtype, info.shape, model.checkpoint().bytes(name));
    }
    bar.advance("layer " + std::to_string(l));
    return q;
  });
  bar.finish();
  for (const char* name : {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}) {
    if (std::string_view(name) == "lm_head.weight" && model.tied_embeddings()) continue;
    const auto& info = model.checkpoint().info(name);
    writer.add(name, info.dtype, info.shape, model.checkpoint().bytes(name));
    if (write_gptq) gptq_writer.add(name, info.dtype, info.shape, model.checkpoint().bytes(name));
  }
  throw_if_interrupted();  // before the largest write (a 7B model: gigabytes)
  writer.add_metadata("format", "pt");
  writer.write(staging.path() / "model.safetensors");
  QuantizationConfig qc;
  qc.spec = spec;
  qc.options = layer_options;  // as the layers were quantized (weight_range_includes_zero for the GPTQ layout)
  qc.smoothing_folded = fold;
  qc.searched_alphas = std::move(searched_alphas);
  if (quarot) {
    for (llama::Input input : llama::kAllInputs) {
      const Eigen::Index width = llama::input_width(c, input);
      if ((width & (width - 1)) != 0) {
        qc.quarot_hadamard[static_cast<std::size_t>(input)] = oq::transform::find_hadamard_construction(width);
      }
    }
  }
  qc.calibration_sequences = static_cast<std::int64_t>(calibration.size());
  qc.calibration_seq_len = calibration.empty() ? 0 : static_cast<std::int64_t>(calibration.front().size());
  nlohmann::json config = model.config_json();
  config["oq_quantization"] = qc.to_json();
  // transformers refuses an unknown quant_method instead of loading the
  // LLaMA with its linears missing (randomly initialised).
  config["quantization_config"] = {{"quant_method", "oq"}, {"format", "docs/formats.md section 7 of oq"}};
  config["tie_word_embeddings"] = model.tied_embeddings();
  write_json_file(staging.path() / "config.json", config);
  copy_tokenizer_files(model.directory(), staging.path());
  if (write_gptq) {
    // "gptq" (v1: zero − 1 stored) is what every GPTQ loader reads; it cannot
    // hold a zero of 0 (a group with no weight below −s/2, rare once each range
    // holds 0), and only then "gptq_v2" (GPTQModel's), said on stderr.
    bool v1 = true;
    for (const auto& [name, w] : gptq_linears) {
      for (std::int32_t z : w.zeros) v1 &= z >= 1;
    }
    const auto format = v1 ? oq::io::GptqCheckpointFormat::kGptq : oq::io::GptqCheckpointFormat::kGptqV2;
    if (!v1) {
      std::fprintf(stderr, "oq: a weight group has zero point 0, which checkpoint_format \"gptq\" cannot store: "
                           "gptq/ is written as \"gptq_v2\" (GPTQModel reads it; older vLLM / AutoGPTQ do not)\n");
    }
    for (const auto& [name, w] : gptq_linears) oq::io::add_gptq_linear(gptq_writer, name, gptq_layout(w, format));
    const std::filesystem::path dir = staging.path() / "gptq";
    std::filesystem::create_directory(dir);
    gptq_writer.add_metadata("format", "pt");
    gptq_writer.write(dir / "model.safetensors");
    nlohmann::json gptq_config = model.config_json();
    gptq_config["tie_word_embeddings"] = model.tied_embeddings();
    gptq_config["quantization_config"] = oq::io::gptq_quantization_config(
        options.weight_group > 0 ? options.weight_group : -1, /*desc_act=*/false, /*symmetric=*/false, format);
    write_json_file(dir / "config.json", gptq_config);
    // The same object as quantize_config.json, where AutoGPTQ's from_quantized
    // looks first and, for a local directory, only (docs/formats.md §7).
    write_json_file(dir / "quantize_config.json", gptq_config["quantization_config"]);
    copy_tokenizer_files(model.directory(), dir);
  }
  throw_if_interrupted();
  staging.commit();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

/// A preset's point of the cross with `options`: GPTQ weights where
/// options.gptq is set, SmoothQuant's α search where
/// options.smoothquant_alpha_search is; the options returned have both
/// cleared (the spec is the switch, as quantize_model wants it).
inline std::pair<llama::MethodSpec, llama::QuantOptions> preset_point(llama::Method method, llama::QuantOptions options) {
  llama::MethodSpec spec = llama::method_spec(method, options.gptq ? llama::WeightQuant::kGptq : llama::WeightQuant::kRtn);
  spec.alpha_search = options.smoothquant_alpha_search;
  options.gptq = false;
  options.smoothquant_alpha_search = false;
  return {spec, std::move(options)};
}

/// A preset (preset_point).
inline QuantizeResult quantize_model(const LlamaModel& model, const std::vector<Sequence>& calibration,
                                     llama::Method method, const llama::QuantOptions& options,
                                     const std::filesystem::path& out, const ExportOptions& export_options = {}) {
  const auto [spec, o] = preset_point(method, options);
  return quantize_model(model, calibration, spec, o, out, export_options);
}

}  // namespace oq_tool
