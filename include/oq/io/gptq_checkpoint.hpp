// oq/io/gptq_checkpoint.hpp: 4-bit linear layers in the layout of GPTQ
// checkpoints (AutoGPTQ, GPTQModel, Hugging Face transformers' "gptq"
// quant_method), which vLLM, TGI, exllama and Marlin load.
//
// Why: oq's GPTQ (quant/gptq.hpp) produces codes and parameters; engines read
// GPTQ checkpoints. This header converts between the two, bit for bit, and
// reads and writes the tensors in safetensors files.
//
// Tensors of one linear with K inputs, N outputs and G groups (G = K / group
// size, or 1 for per-channel parameters), named <prefix>.qweight etc.:
//
//   qweight  I32 [K/8, N]  word (i, n), as a uint32: the code of input 8i + j
//                          of output n in bits 4j .. 4j+3, j = 0..7 (packed
//                          along K, eight inputs per word, low nibble first)
//   qzeros   I32 [G, N/8]  word (g, c): the stored zero of group g, output
//                          8c + j, in bits 4j .. 4j+3 (packed along N)
//   scales   F16 [G, N]    scale of group g, output n
//   g_idx    I32 [K]       the group of input k
//
// Codes are unsigned, in [0, 15], and
//     ŵ(n, k) = scales[g, n] · (code(n, k) − zero(g, n)),   g = g_idx[k].
// The stored zero depends on checkpoint_format:
//   - "gptq" (AutoGPTQ and transformers; GptqCheckpointFormat::kGptq) stores
//     zero − 1, and readers add 1 back. Only zeros 1..15 are written: a zero
//     of 0 would wrap to nibble 15, and nibble 15 is where readers disagree
//     (exllama and vLLM's gptq kernels read 16; GPTQModel's v1 → v2
//     conversion, which transformers runs on load, adds 0x11111111 to the
//     whole word, so 15 + 1 carries into the next output's zero; AutoGPTQ's
//     qlinear_cuda_old reads (15 + 1) & 15 = 0, its qlinear_cuda 16).
//     unpack_gptq_linear reads it as 16. GPTQModel introduced for this
//   - "gptq_v2" (kGptqV2), which stores the zero itself: zeros 0..15.
// Which loader reads which (and the config fields each needs): docs/formats.md
// §6, loaders.
// oq's zero points are not clamped (docs/design.md §2): a group that lies entirely
// above 0 has a negative zero, one entirely below 0 a zero above 15. Such
// groups cannot be stored in either format, and pack_gptq_linear says which
// entry. Quantize with QuantSpec::range_includes_zero, as GPTQ's reference
// quantizer does, and every zero lies in 0..15: "gptq_v2" stores them all,
// "gptq" all but the zero 0 of a group with no negative weight.
// Symmetric quantization: oq's signed codes q in [−8, 7] with zero 0 become
// q + 8 with zero 8, as AutoGPTQ's symmetric quantizer stores them (its
// zero point is (maxq + 1)/2 = 8): the same ŵ.
// g_idx is k / group size for contiguous groups; with GPTQ's act order and
// groups formed in that order ("desc_act", GptqOptions::static_groups =
// false) it is GptqResult::group_index.
// Sources: AutoGPTQ, auto_gptq/nn_modules/qlinear/: QuantLinear.pack (the
// nibble order of qweight and qzeros, zeros − 1; qlinear_cuda_old.py) and
// the per-input scales[g_idx[k]] of the g_idx-aware layers (qlinear_cuda.py,
// qlinear_exllama.py).
//
// Example (pinned by tests/io/gptq_checkpoint_test.cpp): output 0 with codes
// 1, 2, ..., 8 on inputs 0..7 gives qweight word (0, 0) = 0x87654321; outputs
// 0..7 of group 0 with zeros 1..8 give the "gptq" qzeros word 0x76543210
// ("gptq_v2": 0x87654321, the same word plus 0x11111111).
//
//   auto r = oq::quant::gptq_quantize(w, factor, QuantSpec::per_group(4, true, 128));
//   auto packed = oq::io::pack_gptq_linear(oq::io::gptq_linear_codes(r, spec), GptqCheckpointFormat::kGptq);
//   oq::io::SafetensorsWriter out;
//   oq::io::add_gptq_linear(out, "model.layers.0.self_attn.q_proj", packed);
//   // An act-order checkpoint's linear for a contiguous per-group kernel:
//   auto sorted = oq::io::sort_inputs_by_group(oq::io::unpack_gptq_linear(packed, GptqCheckpointFormat::kGptq));
//   // y = x(:, sorted.input_order) · Ŵ(sorted.linear)ᵀ
#pragma once

#include <oq/core/float16.hpp>
#include <oq/detail/check.hpp>
#include <oq/detail/eigen_types.hpp>
#include <oq/io/dtype.hpp>
#include <oq/io/format_error.hpp>
#include <oq/io/safetensors.hpp>
#include <oq/quant/gptq.hpp>
#include <oq/quant/pack.hpp>
#include <oq/quant/params.hpp>
#include <oq/quant/spec.hpp>

#include <Eigen/Core>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace oq::io {

/// How qzeros stores a zero point (file comment): "gptq" stores zero − 1,
/// "gptq_v2" the zero itself.
enum class GptqCheckpointFormat { kGptq, kGptqV2 };

/// "gptq" or "gptq_v2", the checkpoint_format value of quantize_config.json.
constexpr std::string_view to_string(GptqCheckpointFormat format) noexcept {
  return format == GptqCheckpointFormat::kGptq ? "gptq" : "gptq_v2";
}

using ::oq::detail::RowMajorMatrix;  // oq/detail/eigen_types.hpp

/// One linear's tensors as a GPTQ checkpoint stores them (file comment).
struct GptqPackedLinear {
  RowMajorMatrix<std::int32_t> qweight;  ///< [K/8, N]
  RowMajorMatrix<std::int32_t> qzeros;   ///< [G, N/8]
  RowMajorMatrix<std::uint16_t> scales;  ///< [G, N], binary16 bits
  std::vector<std::int32_t> g_idx;       ///< [K]
};

/// The same linear unpacked, in oq's orientation (W is out × in).
struct GptqLinearCodes {
  Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic> codes;  ///< N × K, in [0, 15]
  quant::QuantParams<float> params;       ///< N × G scales and integer zeros
  std::vector<std::int32_t> group_index;  ///< [K]: input k's group (g_idx)
};

namespace detail_gptq_checkpoint {

inline constexpr int kCodesPerWord = 8;  // 32-bit words of 4-bit fields

// What qzeros stores is zero − stored_zero_offset(format); the zeros it can
// hold are [stored_zero_offset, kMaxZero] (file comment: "gptq" 1..15).
constexpr int stored_zero_offset(GptqCheckpointFormat f) noexcept { return f == GptqCheckpointFormat::kGptq ? 1 : 0; }
inline constexpr int kMaxZero = 15;

inline std::uint32_t nibble(std::uint32_t word, int j) noexcept { return (word >> (4 * j)) & 0xFu; }

inline void check_group_index(const std::vector<std::int32_t>& group_index, Eigen::Index inputs, Eigen::Index groups,
                              std::string_view where, std::string_view name) {
  detail::require(static_cast<Eigen::Index>(group_index.size()) == inputs, where, name, " must have ", inputs,
                  " entries (one per input), got ", group_index.size());
  for (std::size_t k = 0; k < group_index.size(); ++k) {
    detail::require(group_index[k] >= 0 && group_index[k] < groups, where, name, "[", k, "] must be in [0, ", groups,
                    "), got ", group_index[k]);
  }
}

}  // namespace detail_gptq_checkpoint

/// oq's GPTQ result as the checkpoint's codes: symmetric codes shifted to
/// [0, 15] with zero 8, per-channel parameters as one group, g_idx from
/// r.group_index (or all 0), scales cast to float (for a double result, then
/// rounded once more to binary16 by pack_gptq_linear, as AutoGPTQ rounds its
/// float32 scales). Asymmetric zeros stay as oq computed them; packing
/// refuses those outside the format's range (file comment). Throws
/// std::invalid_argument unless spec is 4-bit and per-channel or per-group,
/// and matches r's shapes.
template <class Scalar>
GptqLinearCodes gptq_linear_codes(const quant::GptqResult<Scalar>& r, const quant::QuantSpec& spec) {
  constexpr std::string_view kWhere = "oq::io::gptq_linear_codes";
  spec.validate(kWhere);
  detail::require(spec.bits == 4, kWhere, "spec.bits must be 4 (this layout packs 4-bit codes), got ", spec.bits);
  const bool grouped = spec.granularity == quant::Granularity::kPerGroup;
  detail::require(grouped || spec.granularity == quant::Granularity::kPerRow, kWhere,
                  "spec.granularity must be per-row (per output channel) or per-group, got ",
                  to_string(spec.granularity));
  const Eigen::Index out = r.codes.rows(), in = r.codes.cols();
  const Eigen::Index groups = grouped ? spec.param_cols(in) : 1;
  detail::require(r.params.scale.rows() == out && r.params.scale.cols() == groups &&
                      r.params.zero.rows() == out && r.params.zero.cols() == groups,
                  kWhere, "r.params must be ", out, " x ", groups, " for ", out, " x ", in, " codes, got ",
                  r.params.scale.rows(), " x ", r.params.scale.cols());
  GptqLinearCodes c;
  const int offset = spec.symmetric ? 8 : 0;
  c.codes = r.codes.array() + offset;
  c.params.scale = r.params.scale.template cast<float>();
  c.params.zero = (r.params.zero.array() + Scalar(offset)).template cast<float>();
  if (grouped) {
    detail_gptq_checkpoint::check_group_index(r.group_index, in, groups, kWhere, "r.group_index");
    c.group_index = r.group_index;
  } else {
    c.group_index.assign(static_cast<std::size_t>(in), 0);
  }
  return c;
}

/// ŵ(n, k) = scale(n, g) · (code(n, k) − zero(n, g)), g = group_index[k], in
/// float (N × K): what an engine computes from the checkpoint.
inline Eigen::MatrixXf dequantize_gptq_linear(const GptqLinearCodes& c) {
  constexpr std::string_view kWhere = "oq::io::dequantize_gptq_linear";
  detail::require(c.params.scale.rows() == c.codes.rows() && c.params.zero.rows() == c.codes.rows() &&
                      c.params.zero.cols() == c.params.scale.cols(),
                  kWhere, "c.params must have ", c.codes.rows(), " rows and equal shapes, got scale ",
                  c.params.scale.rows(), " x ", c.params.scale.cols(), " and zero ", c.params.zero.rows(), " x ",
                  c.params.zero.cols());
  detail_gptq_checkpoint::check_group_index(c.group_index, c.codes.cols(), c.params.scale.cols(), kWhere,
                                            "c.group_index");
  Eigen::MatrixXf w(c.codes.rows(), c.codes.cols());
  for (Eigen::Index k = 0; k < w.cols(); ++k) {
    const Eigen::Index g = c.group_index[static_cast<std::size_t>(k)];
    w.col(k) = (c.codes.col(k).cast<float>() - c.params.zero.col(g)).cwiseProduct(c.params.scale.col(g));
  }
  return w;
}

/// A linear whose inputs are sorted by group, and where they came from.
struct GptqInputsByGroup {
  GptqLinearCodes linear;                 ///< group_index[k] = k / group_size
  std::vector<Eigen::Index> input_order;  ///< input_order[k]: the original input now at k
  Eigen::Index group_size = 0;            ///< K / G
};

/// An act-order linear (g_idx not k / S, S = K / G inputs per group) as an
/// ordinary per-group one: its inputs sorted by group, stably, so that group
/// g is inputs g·S .. g·S+S−1, with codes and parameters unchanged. An engine gathers its activations
/// x(:, input_order), or folds the gather into the op before, and runs a
/// contiguous per-group kernel (oq's W4A16 after quant::pack_int4, u4):
/// x(:, input_order)·Ŵ_sortedᵀ = x·Ŵᵀ (exllama's and vLLM's approach to
/// desc_act checkpoints). Throws std::invalid_argument unless every one of
/// the G groups holds exactly K / G inputs (GPTQ's groups do), naming the
/// first that does not.
inline GptqInputsByGroup sort_inputs_by_group(const GptqLinearCodes& c) {
  constexpr std::string_view kWhere = "oq::io::sort_inputs_by_group";
  const Eigen::Index in = c.codes.cols(), groups = c.params.scale.cols();
  detail::require(in > 0, kWhere, "c.codes must have at least one input (column), got ", in);
  detail::require(groups > 0 && c.params.scale.rows() == c.codes.rows() && c.params.zero.rows() == c.codes.rows() &&
                      c.params.zero.cols() == groups,
                  kWhere, "c.params.scale and c.params.zero must both be ", c.codes.rows(), " x G with G > 0, got ",
                  c.params.scale.rows(), " x ", groups, " and ", c.params.zero.rows(), " x ", c.params.zero.cols());
  detail_gptq_checkpoint::check_group_index(c.group_index, in, groups, kWhere, "c.group_index");
  std::vector<Eigen::Index> count(static_cast<std::size_t>(groups), 0);
  for (const std::int32_t g : c.group_index) ++count[static_cast<std::size_t>(g)];
  for (Eigen::Index g = 0; g < groups; ++g) {
    detail::require(in % groups == 0 && count[static_cast<std::size_t>(g)] == in / groups, kWhere, "group ", g,
                    " holds ", count[static_cast<std::size_t>(g)], " of the ", in, " inputs (expected K / G = ",
                    in / groups, " each, and K a multiple of G = ", groups, ")");
  }
  GptqInputsByGroup sorted;
  sorted.group_size = in / groups;
  // Counting sort: the inputs of group g, in their original order, at g·S.
  std::vector<Eigen::Index> next(static_cast<std::size_t>(groups));
  for (Eigen::Index g = 0; g < groups; ++g) next[static_cast<std::size_t>(g)] = g * sorted.group_size;
  sorted.input_order.resize(static_cast<std::size_t>(in));
  for (Eigen::Index k = 0; k < in; ++k) {
    const auto g = static_cast<std::size_t>(c.group_index[static_cast<std::size_t>(k)]);
    sorted.input_order[static_cast<std::size_t>(next[g]++)] = k;
  }
  sorted.linear.codes = c.codes(Eigen::all, sorted.input_order);
  sorted.linear.params = c.params;
  sorted.linear.group_index.resize(static_cast<std::size_t>(in));
  for (Eigen::Index k = 0; k < in; ++k)
    sorted.linear.group_index[static_cast<std::size_t>(k)] = static_cast<std::int32_t>(k / sorted.group_size);
  return sorted;
}

/// A GPTQ linear with contiguous groups as oq's W4A16 kernels take it
/// (cuda/kernel/gemm_w4a16.cuh and gemm_w4a16_tensorop.cuh, GemmW4A16Params,
/// asymmetric: u4 codes and zero points): each output's codes packed along K
/// two per byte, low nibble first (format/int4_row.hpp), and the scales and
/// zero points row-major, one row per output. GPTQ's symmetric linears come
/// as u4 codes with zero 8 (gptq_linear_codes) and run the same way.
struct GptqW4A16Weights {
  quant::PackedInt4 w;            ///< N × K/2 bytes (ld_w = K/2)
  RowMajorMatrix<float> scales;   ///< N × G
  RowMajorMatrix<float> zeros;    ///< N × G, integers
  Eigen::Index group_size = 0;    ///< K / G
};

/// c's codes and parameters in the W4A16 kernels' layout. Throws
/// std::invalid_argument unless the groups are contiguous (group_index[k] =
/// k / (K / G): for a desc_act linear, sort_inputs_by_group first and gather
/// the activations), K is even, and the shapes agree.
inline GptqW4A16Weights w4a16_weights(const GptqLinearCodes& c) {
  constexpr std::string_view kWhere = "oq::io::w4a16_weights";
  const Eigen::Index out = c.codes.rows(), in = c.codes.cols(), groups = c.params.scale.cols();
  detail::require(in > 0 && in % 2 == 0, kWhere, "c.codes must have an even, positive number of inputs, got ", in);
  detail::require(groups > 0 && in % groups == 0 && c.params.scale.rows() == out && c.params.zero.rows() == out &&
                      c.params.zero.cols() == groups,
                  kWhere, "c.params.scale and c.params.zero must both be ", out, " x G with G > 0 dividing K = ", in,
                  ", got ", c.params.scale.rows(), " x ", groups, " and ", c.params.zero.rows(), " x ",
                  c.params.zero.cols());
  detail_gptq_checkpoint::check_group_index(c.group_index, in, groups, kWhere, "c.group_index");
  GptqW4A16Weights result;
  result.group_size = in / groups;
  for (Eigen::Index k = 0; k < in; ++k) {
    detail::require(c.group_index[static_cast<std::size_t>(k)] == k / result.group_size, kWhere, "c.group_index[", k,
                    "] must be ", k / result.group_size, " (contiguous groups of ", result.group_size, "), got ",
                    c.group_index[static_cast<std::size_t>(k)], ": sort_inputs_by_group first");
  }
  result.w = quant::pack_int4(c.codes, quant::Int4Kind::kUnsigned);  // names a code outside [0, 15]
  result.scales = c.params.scale;
  result.zeros = c.params.zero;
  return result;
}

/// Packs codes and parameters into the checkpoint's tensors. Scales are
/// rounded to binary16 (the format stores F16), ties to even.
/// Throws std::invalid_argument for shapes (K and N must be multiples of 8;
/// params N × G; group_index K entries in [0, G)), and std::domain_error for
/// a code outside [0, 15], a zero that is not an integer the format can
/// store (1..15 for "gptq", 0..15 for "gptq_v2"), or a scale that is not
/// finite and positive or becomes 0 or ∞ in binary16; each names the entry.
inline GptqPackedLinear pack_gptq_linear(const GptqLinearCodes& c, GptqCheckpointFormat format) {
  namespace d = detail_gptq_checkpoint;
  constexpr std::string_view kWhere = "oq::io::pack_gptq_linear";
  const Eigen::Index out = c.codes.rows(), in = c.codes.cols(), groups = c.params.scale.cols();
  detail::require(in % d::kCodesPerWord == 0 && out % d::kCodesPerWord == 0, kWhere,
                  "c.codes must be N x K with N and K multiples of 8 (eight 4-bit fields per 32-bit word), got ", out,
                  " x ", in);
  detail::require(c.params.scale.rows() == out && c.params.zero.rows() == out && c.params.zero.cols() == groups &&
                      groups > 0,
                  kWhere, "c.params.scale and c.params.zero must both be ", out, " x G with G > 0, got ",
                  c.params.scale.rows(), " x ", groups, " and ", c.params.zero.rows(), " x ", c.params.zero.cols());
  d::check_group_index(c.group_index, in, groups, kWhere, "c.group_index");

  GptqPackedLinear p;
  p.g_idx = c.group_index;
  p.qweight.resize(in / d::kCodesPerWord, out);
  for (Eigen::Index n = 0; n < out; ++n) {
    for (Eigen::Index i = 0; i < p.qweight.rows(); ++i) {
      std::uint32_t word = 0;
      for (int j = 0; j < d::kCodesPerWord; ++j) {
        const Eigen::Index k = d::kCodesPerWord * i + j;
        const std::int32_t code = c.codes(n, k);
        detail::require_domain(code >= 0 && code <= 15, kWhere, "c.codes(", n, ", ", k,
                               ") must be in [0, 15] (unsigned 4-bit), got ", code);
        word |= static_cast<std::uint32_t>(code) << (4 * j);
      }
      p.qweight(i, n) = static_cast<std::int32_t>(word);  // two's complement: the same 32 bits
    }
  }
  p.scales.resize(groups, out);
  p.qzeros.resize(groups, out / d::kCodesPerWord);
  const int stored_offset = d::stored_zero_offset(format), lo = stored_offset, hi = d::kMaxZero;
  for (Eigen::Index g = 0; g < groups; ++g) {
    for (Eigen::Index n = 0; n < out; ++n) {
      const float s = c.params.scale(n, g);
      const std::uint16_t bits = core::float_to_f16_bits(s);
      const float rounded = core::f16_bits_to_float(bits);
      detail::require_domain(std::isfinite(s) && s > 0.0f && std::isfinite(rounded) && rounded > 0.0f, kWhere,
                             "c.params.scale(", n, ", ", g,
                             ") must be positive, finite and within binary16's range once rounded to it, got ", s);
      p.scales(g, n) = bits;
    }
    for (Eigen::Index c8 = 0; c8 < p.qzeros.cols(); ++c8) {
      std::uint32_t word = 0;
      for (int j = 0; j < d::kCodesPerWord; ++j) {
        const Eigen::Index n = d::kCodesPerWord * c8 + j;
        const float z = c.params.zero(n, g);
        detail::require_domain(std::isfinite(z) && z == std::nearbyint(z) && z >= float(lo) && z <= float(hi),
                               kWhere, "c.params.zero(", n, ", ", g, ") must be an integer in [", lo, ", ", hi,
                               "] for checkpoint_format \"", to_string(format), "\", got ", z,
                               z == 0.0f && format == GptqCheckpointFormat::kGptq ? " (\"gptq_v2\" stores a zero of 0)"
                               : z < 0.0f || z > float(hi) ? " (QuantSpec::range_includes_zero keeps zeros in [0, 15])"
                                                           : "");
        word |= static_cast<std::uint32_t>(static_cast<int>(z) - stored_offset) << (4 * j);
      }
      p.qzeros(g, c8) = static_cast<std::int32_t>(word);
    }
  }
  return p;
}

/// Unpacks the checkpoint's tensors; a "gptq" zero nibble of 15 reads as 16
/// (file comment). Throws std::invalid_argument when their shapes disagree
/// (naming both) or g_idx leaves [0, G), and std::domain_error for a scale
/// that is NaN or ±∞ (any finite scale is returned as it is).
inline GptqLinearCodes unpack_gptq_linear(const GptqPackedLinear& p, GptqCheckpointFormat format) {
  namespace d = detail_gptq_checkpoint;
  constexpr std::string_view kWhere = "oq::io::unpack_gptq_linear";
  const Eigen::Index in = static_cast<Eigen::Index>(p.g_idx.size());
  const Eigen::Index out = p.scales.cols(), groups = p.scales.rows();
  detail::require(groups > 0, kWhere, "scales must have at least one group (row), got ", groups);
  // Compared by division: a forged dimension must not overflow a product.
  detail::require(in % d::kCodesPerWord == 0 && p.qweight.rows() == in / d::kCodesPerWord && p.qweight.cols() == out,
                  kWhere, "qweight must be [",
                  in, "/8, ", out, "] for g_idx of ", in, " and scales of ", out, " columns, got [", p.qweight.rows(),
                  ", ", p.qweight.cols(), "]");
  detail::require(p.qzeros.rows() == groups && out % d::kCodesPerWord == 0 && p.qzeros.cols() == out / d::kCodesPerWord,
                  kWhere, "qzeros must be [",
                  groups, ", ", out, "/8] for scales of [", groups, ", ", out, "], got [", p.qzeros.rows(), ", ",
                  p.qzeros.cols(), "]");
  d::check_group_index(p.g_idx, in, groups, kWhere, "g_idx");

  GptqLinearCodes c;
  c.group_index = p.g_idx;
  c.codes.resize(out, in);
  for (Eigen::Index i = 0; i < p.qweight.rows(); ++i) {
    for (Eigen::Index n = 0; n < out; ++n) {
      const auto word = static_cast<std::uint32_t>(p.qweight(i, n));
      for (int j = 0; j < d::kCodesPerWord; ++j)
        c.codes(n, d::kCodesPerWord * i + j) = static_cast<std::int32_t>(d::nibble(word, j));
    }
  }
  c.params.scale.resize(out, groups);
  c.params.zero.resize(out, groups);
  const int stored_offset = d::stored_zero_offset(format);
  for (Eigen::Index g = 0; g < groups; ++g) {
    for (Eigen::Index n = 0; n < out; ++n) {
      const float s = core::f16_bits_to_float(p.scales(g, n));
      detail::require_domain(std::isfinite(s), kWhere, "scales[", g, ", ", n, "] must be finite, got ", s);
      c.params.scale(n, g) = s;
      const auto word = static_cast<std::uint32_t>(p.qzeros(g, n / d::kCodesPerWord));
      c.params.zero(n, g) = static_cast<float>(static_cast<int>(d::nibble(word, int(n % d::kCodesPerWord))) +
                                               stored_offset);
    }
  }
  return c;
}

/// Adds <prefix>.qweight, .qzeros, .scales and .g_idx to a writer.
inline void add_gptq_linear(SafetensorsWriter& writer, std::string_view prefix, const GptqPackedLinear& p) {
  const std::string name(prefix);
  const auto dims = [](Eigen::Index r, Eigen::Index c) {
    return std::vector<std::size_t>{static_cast<std::size_t>(r), static_cast<std::size_t>(c)};
  };
  // Row-major Eigen storage is the C order safetensors wants (little-endian host).
  writer.add(name + ".qweight", DType::kI32, dims(p.qweight.rows(), p.qweight.cols()),
             std::as_bytes(std::span(p.qweight.data(), static_cast<std::size_t>(p.qweight.size()))));
  writer.add(name + ".qzeros", DType::kI32, dims(p.qzeros.rows(), p.qzeros.cols()),
             std::as_bytes(std::span(p.qzeros.data(), static_cast<std::size_t>(p.qzeros.size()))));
  writer.add(name + ".scales", DType::kF16, dims(p.scales.rows(), p.scales.cols()),
             std::as_bytes(std::span(p.scales.data(), static_cast<std::size_t>(p.scales.size()))));
  writer.add(name + ".g_idx", DType::kI32, {p.g_idx.size()}, std::as_bytes(std::span(p.g_idx)));
}

namespace detail_gptq_checkpoint {

// Throws FormatError unless tensor `name` has dtype `dtype`, rank `rank` and
// every dimension below 2³¹ (g_idx is int32; an empty tensor may still carry
// a forged dimension, since its size is 0 whatever the others are).
inline void require_tensor(const SafetensorsFile& file, const std::string& name, DType dtype, std::size_t rank) {
  const TensorInfo& t = file.info(name);
  if (t.dtype != dtype || t.shape.size() != rank) {
    throw FormatError("oq::io::read_gptq_linear: tensor '" + name + "' in " + file.source() + " must be " +
                      std::string(dtype_name(dtype)) + " of rank " + std::to_string(rank) + ", got " +
                      std::string(dtype_name(t.dtype)) + " of shape " + detail_safetensors::shape_str(t.shape));
  }
  for (const std::size_t dim : t.shape) {
    if (dim > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) {
      throw FormatError("oq::io::read_gptq_linear: tensor '" + name + "' in " + file.source() + " has shape " +
                        detail_safetensors::shape_str(t.shape) + " (expected every dimension below 2^31)");
    }
  }
}

}  // namespace detail_gptq_checkpoint

/// Reads <prefix>.qweight, .qzeros, .scales and .g_idx. Throws
/// std::invalid_argument when one is missing, FormatError when one has
/// another dtype or rank or a dimension of 2³¹ or more.
/// unpack_gptq_linear checks that the shapes agree.
inline GptqPackedLinear read_gptq_linear(const SafetensorsFile& file, std::string_view prefix) {
  namespace d = detail_gptq_checkpoint;
  const std::string name(prefix);
  GptqPackedLinear p;
  d::require_tensor(file, name + ".qweight", DType::kI32, 2);
  d::require_tensor(file, name + ".qzeros", DType::kI32, 2);
  d::require_tensor(file, name + ".scales", DType::kF16, 2);
  d::require_tensor(file, name + ".g_idx", DType::kI32, 1);
  p.qweight = file.stored_matrix<std::int32_t>(name + ".qweight", DType::kI32);
  p.qzeros = file.stored_matrix<std::int32_t>(name + ".qzeros", DType::kI32);
  p.scales = file.stored_matrix<std::uint16_t>(name + ".scales", DType::kF16);
  p.g_idx = file.stored_elements<std::int32_t>(name + ".g_idx", DType::kI32);
  return p;
}

/// The "quantization_config" of a Hugging Face config.json (and AutoGPTQ's
/// quantize_config.json) for 4-bit GPTQ linears: group_size −1 for
/// per-channel, desc_act when g_idx is not k / group_size. The stored-zero
/// convention goes under both of its names, as GPTQModel writes it: "format"
/// (what GPTQModel, optimum and recent transformers read) and
/// "checkpoint_format" (what vLLM, AutoGPTQ and older transformers read; the
/// others take it as an alias). A reader that saw only one name would take
/// "gptq" for the other and misread every "gptq_v2" zero by one
/// (docs/formats.md §6, loaders).
inline nlohmann::json gptq_quantization_config(Eigen::Index group_size, bool desc_act, bool symmetric,
                                               GptqCheckpointFormat format) {
  detail::require(group_size == -1 || group_size > 0, "oq::io::gptq_quantization_config",
                  "group_size must be -1 (per-channel) or > 0, got ", group_size);
  return {{"quant_method", "gptq"},
          {"bits", 4},
          {"group_size", group_size},
          {"desc_act", desc_act},
          {"sym", symmetric},
          {"format", std::string(to_string(format))},
          {"checkpoint_format", std::string(to_string(format))}};
}

}  // namespace oq::io
