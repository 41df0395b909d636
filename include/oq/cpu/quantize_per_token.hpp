// oq/cpu/quantize_per_token.hpp: dynamic per-token quantization of float
// activations to INT4 / INT8 codes, optionally after a rotation fused into
// the same pass over each row (docs/design.md §2, §5, §6).
//
//   using namespace oq::cpu;
//   const auto spec = oq::quant::QuantSpec::per_token(4, /*symmetric=*/false, 0.9);
//   PackedActivations a = quantize_per_token(x, spec);                                 // plain
//   PackedActivations h = quantize_per_token(x, spec, TokenTransform::hadamard(128));  // QuaRot-style
//   PackedActivations s = quantize_per_token(x, spec, TokenTransform::smoothing(s));   // SmoothQuant, x·diag(s)⁻¹
//   const TokenTransform t = TokenTransform::duquant(duquant_transform);               // once
//   PackedActivations d = quantize_per_token(x, spec, t);                              // x·diag(s)⁻¹·R₁·P·R₂
//   const TokenTransform pb = TokenTransform::duquant_blockwise(blockwise_transform);   // one R per block
//   PackedActivations buf;                                                             // steady-state decoding:
//   quantize_per_token_into(x, spec, buf, t);                                          // the same bits, buf reused
//
// Each row is read once into a scratch buffer, transformed there, and its
// codes, scale, zero point and code sum written (packed_activations.hpp).
// Scales and zero points come from quant::range_params — the function
// oq::quant::compute_params calls — and codes from core::quantize_value's
// arithmetic, so the result equals oq::quant::compute_params + quantize (and
// the CUDA QuantizePerToken kernel) bit for bit on the transformed row.
//
// The transformed row is computed as token_row.hpp documents:
//   smoothing(s)     y[j] = x[j] / s[j], a division (never a multiplication
//                    by 1/s), as DuQuantTransform::apply divides;
//   hadamard(b)      bit-identical to transform::block_hadamard_rows(x, b);
//   full_hadamard    x·diag(s)⁻¹·H_n/√n over the whole row, n = K·2^m any order
//                    transform::hadamard_rows takes (QuaRot: 4096, 11008 =
//                    344·32, …): y[j] = x[j] / s[j] (if s is given), the
//                    butterflies of hadamard(2^m) on each 2^m-segment
//                    unscaled, then for K > 1 each output segment c summed
//                    as acc = +0, acc ± segment a for a = 0 … K − 1 in order
//                    (the sign H_K(a, c)), then every value times float(1/√n).
//                    For K = 1 that is hadamard(n) after the division,
//                    bit-identical to transform::hadamard_rows; for K > 1
//                    hadamard_rows sums the K segments with Eigen's GEMM, in
//                    another order: the two agree to float rounding
//                    (|Δ| ≤ γ_K·Σ_a |segment a| per entry), not bit for bit;
//   block_rotation   R applied per block by an FMA chain in the CUDA
//                    kernel's order (bit-identical to that kernel);
//   duquant(t)       smoothing division as t.apply(), then each rotation as
//                    block_rotation and each zigzag permutation. t.apply()
//                    multiplies the blocks with Eigen's GEMM, whose summation
//                    order differs: the two agree to float rounding (|Δ| ≤
//                    b·ε·‖row block‖ per rotation), not bit for bit.
//   duquant_blockwise(t)  the same with block c of stage i rotated by its
//                    own R_ic (DuQuantBlockwiseTransform), each block by
//                    block_rotation's FMA chain.
//
// quantize_per_token_into writes into a PackedActivations the caller keeps
// from call to call: its vectors are resized, so a buffer of the same or a
// bigger previous shape is reused without an allocation or a zero-fill
// (quantize_per_token, which calls it on a fresh one, zero-fills the codes
// on one thread before the rows are quantized: ~4 MiB for 2048 × 4096).
//
// Errors: spec not per-token with 4 or 8 bits, a transform for another
// width, odd K with 4 bits → std::invalid_argument (before `out` is
// touched); NaN/±Inf in x, or a transformed entry that overflows →
// std::domain_error naming the entry (`out` then has x's shape and
// unspecified values).
#pragma once

#include <oq/cpu/isa.hpp>
#include <oq/cpu/kernel/token_row.hpp>
#include <oq/cpu/packed_activations.hpp>
#include <oq/cpu/parallel.hpp>
#include <oq/cpu/types.hpp>
#include <oq/detail/check.hpp>
#include <oq/quant/params.hpp>
#include <oq/quant/spec.hpp>
#include <oq/transform/hadamard.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace oq::cpu {

/// The rotation applied to every token before it is quantized: none, a block
/// Walsh–Hadamard, one block rotation R, a whole DuQuant transform (one R
/// shared by the blocks, or one per block), or a full-width Hadamard of any
/// constructible order (QuaRot's).
/// Built once (it copies what it needs), used for every batch.
class TokenTransform {
 public:
  /// kRotations: smoothing, then rotations and permutations; kFullHadamard:
  /// an optional division, then H_n/√n over the whole row.
  enum class Kind { kNone, kHadamard, kRotations, kFullHadamard };

  TokenTransform() = default;

  /// x ← x·diag(H_b, …, H_b)/√b, b a power of two ≥ 2 (Sylvester order).
  static TokenTransform hadamard(std::int64_t block_size) {
    constexpr std::string_view kWhere = "oq::cpu::TokenTransform::hadamard";
    detail::require(block_size >= 2 && (block_size & (block_size - 1)) == 0, kWhere,
                    "block_size must be a power of two >= 2, got ", block_size);
    TokenTransform t;
    t.kind_ = Kind::kHadamard;
    t.block_ = block_size;
    t.hadamard_scale_ = static_cast<float>(1.0 / std::sqrt(static_cast<double>(block_size)));
    return t;
  }

  /// x ← x·diag(R, …, R), R b × b (any Eigen matrix of float, taken as given:
  /// orthogonality is the caller's business, as on the GPU).
  template <class Derived>
  static TokenTransform block_rotation(const Eigen::MatrixBase<Derived>& r) {
    constexpr std::string_view kWhere = "oq::cpu::TokenTransform::block_rotation";
    detail::require(r.rows() >= 1 && r.rows() == r.cols(), kWhere, "r must be square and non-empty, got ", r.rows(),
                    " x ", r.cols());
    detail::require_finite(r, kWhere, "r");
    TokenTransform t;
    t.kind_ = Kind::kRotations;
    t.block_ = r.rows();
    t.rotations_.push_back(row_major(r));
    return t;
  }

  /// x ← x·diag(s)⁻¹ (SmoothQuant's activations, where the division is not
  /// folded into the previous norm): s holds one positive finite scale per
  /// channel.
  template <class Derived>
  static TokenTransform smoothing(const Eigen::MatrixBase<Derived>& s) {
    constexpr std::string_view kWhere = "oq::cpu::TokenTransform::smoothing";
    detail::require(s.size() > 0 && (s.rows() == 1 || s.cols() == 1), kWhere, "s must be a non-empty vector, got ",
                    s.rows(), " x ", s.cols());
    detail::require_finite(s, kWhere, "s");
    TokenTransform t;
    t.kind_ = Kind::kRotations;
    t.block_ = 1;
    t.channels_ = s.size();
    for (Eigen::Index i = 0; i < s.size(); ++i) {
      const auto v = static_cast<float>(s(i));
      detail::require(v > 0.0f && std::isfinite(v), kWhere, "s(", i, ") = ", s(i), " must be positive and finite as a float");
      t.smoothing_.push_back(v);
    }
    return t;
  }

  /// x ← x·H_n/√n, the full-width Hadamard transform::hadamard_rows applies
  /// (n = K·2^m, any order with a construction: 4096, 11008 = 344·32, …),
  /// for rows of exactly n channels. QuaRot's online Hadamards (the o_proj
  /// and down_proj inputs).
  static TokenTransform full_hadamard(std::int64_t n) {
    return full_hadamard_of(n, {}, "oq::cpu::TokenTransform::full_hadamard");
  }

  /// x ← x·diag(s)⁻¹·H_n/√n, n = s.size(): a division by s[j] (nonzero and
  /// finite as a float, either sign), then the full-width Hadamard. A
  /// division by ±1 is the exact sign flip, so QuaRot's randomized
  /// x·D·H_n/√n is s = d, and its residual rotation seen from the
  /// normalised input, x·diag(γ)⁻¹·D·H_n/√n, is s = γ ⊙ d (x/(γ_j·d_j) =
  /// (x/γ_j)·d_j exactly).
  template <class Derived>
  static TokenTransform full_hadamard(const Eigen::MatrixBase<Derived>& s) {
    constexpr std::string_view kWhere = "oq::cpu::TokenTransform::full_hadamard";
    detail::require(s.size() > 0 && (s.rows() == 1 || s.cols() == 1), kWhere, "s must be a non-empty vector, got ",
                    s.rows(), " x ", s.cols());
    std::vector<float> divisors;
    for (Eigen::Index i = 0; i < s.size(); ++i) {
      const auto v = static_cast<float>(s(i));
      detail::require(v != 0.0f && std::isfinite(v), kWhere, "s(", i, ") = ", s(i),
                      " must be nonzero and finite as a float");
      divisors.push_back(v);
    }
    return full_hadamard_of(s.size(), std::move(divisors), kWhere);
  }

  /// DuQuant's M (with its smoothing): x ← x·diag(s)⁻¹·R₁·P₁·R₂ ⋯, for
  /// exactly t.channels() channels. `t` is a transform::DuQuantTransform
  /// (float or double; rotations are used as float): a template, so that
  /// this header need not include transform/duquant.hpp and its SVD.
  template <class DuQuantTransform>
  static TokenTransform duquant(const DuQuantTransform& t) {
    TokenTransform out = duquant_without_rotations(t);
    for (const auto& r : t.rotations()) out.rotations_.push_back(row_major(r));
    return out;
  }

  /// DuQuant with one rotation per block (the paper's BlockDiag(R̂_b1, …,
  /// R̂_bK), Lin et al. 2024 §3.1): x ← x·diag(s)⁻¹·R₁·P₁·R₂ ⋯ where every
  /// R_i = diag(R_i1, …, R_iK) holds K = channels / b rotations of its own.
  /// `t` is a transform::DuQuantBlockwiseTransform (float or double; used as
  /// float), a template for the reason duquant() is. Each block is rotated by
  /// the FMA chain of block_rotation with its own matrix, so where every
  /// block of a stage holds the same R the codes equal duquant()'s of the
  /// shared transform bit for bit. The cost: K·b² floats per stage, read
  /// once per token (2 MiB per stage at 4096 channels, b = 128), against b²
  /// for the shared form.
  template <class DuQuantBlockwiseTransform>
  static TokenTransform duquant_blockwise(const DuQuantBlockwiseTransform& t) {
    TokenTransform out = duquant_without_rotations(t);
    out.rotations_per_stage_ = t.blocks();
    for (const auto& stage : t.rotations()) {
      std::vector<float> all;
      all.reserve(static_cast<std::size_t>(t.blocks() * t.block_size() * t.block_size()));
      for (const auto& r : stage) {
        const std::vector<float> one = row_major(r);
        all.insert(all.end(), one.begin(), one.end());
      }
      out.rotations_.push_back(std::move(all));
    }
    return out;
  }

  Kind kind() const noexcept { return kind_; }
  /// b (1 for smoothing alone), or 0 for kNone.
  std::int64_t block_size() const noexcept { return block_; }
  /// The channel count the transform was built for, or 0 when any multiple of b will do.
  std::int64_t channels() const noexcept { return channels_; }
  /// kRotations: how many b × b rotations each stage holds, 1 (one R shared
  /// by every block) or channels() / b (duquant_blockwise).
  std::int64_t rotations_per_stage() const noexcept { return rotations_per_stage_; }

  /// For kFullHadamard: K and 2^m of n = K·2^m (1 and 0 otherwise).
  std::int64_t hadamard_base() const noexcept { return base_order_; }
  std::int64_t hadamard_power_of_two() const noexcept { return sylvester_; }

  /// Throws std::invalid_argument unless rows of k channels can be transformed.
  /// A transform built for a channel count (full_hadamard, smoothing,
  /// duquant) names that count, which x.cols() must equal; a block transform
  /// names its block size, which must divide x.cols().
  void check_width(std::int64_t k, std::string_view where) const {
    if (kind_ == Kind::kNone) return;
    if (channels_ != 0) {  // a multiple of block_
      detail::require(channels_ == k, where, "x.cols() must be ", channels_, ", the channel count the transform (",
                      kind_ == Kind::kFullHadamard ? "full_hadamard" : "smoothing or duquant",
                      ") was built for, got ", k);
      return;
    }
    detail::require(k % block_ == 0, where, "the transform's block size (", block_, ") must divide x.cols() = ", k);
  }

  /// The transformed row x[0, k): x itself for kNone, else y or work, which
  /// it fills (x is not modified; y and work hold k floats). Where the
  /// transform finds the row's range on the way, it sets *range.
  const float* apply(const float* x, std::int64_t k, const kernel::TokenRowKernels& kernels, float* y, float* work,
                     std::optional<kernel::RowRange>* range = nullptr) const {
    switch (kind_) {
      case Kind::kNone:
        return x;
      case Kind::kHadamard: {
        const kernel::RowRange found = kernels.hadamard_blocks(x, y, k, block_, hadamard_scale_);
        if (range != nullptr) *range = found;
        return y;
      }
      case Kind::kFullHadamard: {
        // The stages ping-pong between y and work.
        const float* in = x;
        if (!smoothing_.empty()) {
          kernels.smooth(x, smoothing_.data(), work, k);
          in = work;
        }
        const auto other = [&](const float* p) { return p == y ? work : y; };
        if (base_order_ == 1) {
          float* out = other(in);
          const kernel::RowRange found = kernels.hadamard_blocks(in, out, k, sylvester_, hadamard_scale_);
          if (range != nullptr) *range = found;
          return out;
        }
        if (sylvester_ > 1) {
          float* out = other(in);
          kernels.hadamard_blocks(in, out, k, sylvester_, 1.0f);  // unscaled (× 1 is exact)
          in = out;
        }
        float* out = other(in);
        mix_segments(in, out);
        return out;
      }
      case Kind::kRotations: {
        // The stages ping-pong between y and work.
        const float* in = x;
        if (!smoothing_.empty()) {
          kernels.smooth(x, smoothing_.data(), work, k);
          in = work;
        }
        for (std::size_t i = 0; i < rotations_.size(); ++i) {
          float* out = in == work ? y : work;
          if (rotations_per_stage_ == 1) {
            kernels.rotate_blocks(in, rotations_[i].data(), block_, out, k);
          } else {  // block c by its own R (channels_ == k, checked by check_width)
            const std::int64_t area = block_ * block_;
            for (std::int64_t c = 0; c < rotations_per_stage_; ++c)
              kernels.rotate_blocks(in + c * block_, rotations_[i].data() + c * area, block_, out + c * block_, block_);
          }
          in = out;
          if (i < permutations_.size()) {
            float* permuted = in == work ? y : work;
            const std::int32_t* perm = permutations_[i].data();
            for (std::int64_t j = 0; j < k; ++j) permuted[j] = in[perm[j]];
            in = permuted;
          }
        }
        return in;
      }
    }
    return x;
  }

 private:
  // What both DuQuant forms hold besides their rotations: the block size, the
  // width, the permutations and the smoothing scales.
  template <class AnyDuQuantTransform>
  static TokenTransform duquant_without_rotations(const AnyDuQuantTransform& t) {
    TokenTransform out;
    out.kind_ = Kind::kRotations;
    out.block_ = t.block_size();
    out.channels_ = t.channels();
    for (const auto& p : t.permutations()) out.permutations_.emplace_back(p.begin(), p.end());
    if (t.smoothing().size() != 0) out.smoothing_.assign(t.smoothing().data(), t.smoothing().data() + t.smoothing().size());
    return out;
  }

  template <class Derived>
  static std::vector<float> row_major(const Eigen::MatrixBase<Derived>& r) {
    std::vector<float> out(static_cast<std::size_t>(r.rows() * r.cols()));
    for (Eigen::Index i = 0; i < r.rows(); ++i)
      for (Eigen::Index j = 0; j < r.cols(); ++j) out[static_cast<std::size_t>(i * r.cols() + j)] = static_cast<float>(r(i, j));
    return out;
  }

  static TokenTransform full_hadamard_of(std::int64_t n, std::vector<float> divisors, std::string_view where) {
    const transform::HadamardConstruction c =
        transform::hadamard_construction(n, where, "n");  // n > 0 with a construction
    TokenTransform t;
    t.kind_ = Kind::kFullHadamard;
    t.block_ = n;
    t.channels_ = n;
    t.base_order_ = c.base;
    t.sylvester_ = c.sylvester_size();
    t.smoothing_ = std::move(divisors);
    t.hadamard_scale_ = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
    if (c.base > 1) {
      // H_K: the construction of K itself has m = 0 and the same H_K (n's
      // search tried K with the same rules before any smaller 2^m).
      const Eigen::MatrixXi hk = transform::hadamard_matrix(c.base);
      t.base_signs_.resize(static_cast<std::size_t>(c.base * c.base));
      for (Eigen::Index a = 0; a < c.base; ++a)
        for (Eigen::Index b = 0; b < c.base; ++b)
          t.base_signs_[static_cast<std::size_t>(a * c.base + b)] = static_cast<std::int8_t>(hk(a, b));
    }
    return t;
  }

  // out segment c (2^m values) = float(1/√n) · (+0 ± in segment 0 ± … ±
  // in segment K − 1), the sign H_K(a, c), summed in that order: the same
  // operations per element whatever the instruction set (plain loops over
  // the contiguous segment, which the compiler may vectorise).
  void mix_segments(const float* in, float* out) const {
    const std::int64_t k = base_order_, p = sylvester_;
    for (std::int64_t c = 0; c < k; ++c) {
      float* o = out + c * p;
      for (std::int64_t d = 0; d < p; ++d) o[d] = 0.0f;
      for (std::int64_t a = 0; a < k; ++a) {
        const float* v = in + a * p;
        if (base_signs_[static_cast<std::size_t>(a * k + c)] > 0) {
          for (std::int64_t d = 0; d < p; ++d) o[d] = o[d] + v[d];
        } else {
          for (std::int64_t d = 0; d < p; ++d) o[d] = o[d] - v[d];
        }
      }
      for (std::int64_t d = 0; d < p; ++d) o[d] = o[d] * hadamard_scale_;
    }
  }

  Kind kind_ = Kind::kNone;
  std::int64_t block_ = 0;
  std::int64_t channels_ = 0;
  float hadamard_scale_ = 1.0f;
  std::vector<std::vector<float>> rotations_;  // per stage: rotations_per_stage_ row-major b × b, block 0 first
  std::int64_t rotations_per_stage_ = 1;
  std::vector<std::vector<std::int32_t>> permutations_;  // perm[j]: the old channel at new index j
  std::vector<float> smoothing_;  // kFullHadamard: the divisors s (any sign)
  std::int64_t base_order_ = 1;    // kFullHadamard: K
  std::int64_t sylvester_ = 0;     // kFullHadamard: 2^m
  std::vector<std::int8_t> base_signs_;  // H_K row-major (K > 1)
};

namespace detail_token {

inline void check_spec(const quant::QuantSpec& spec, std::string_view where) {
  spec.validate(where);
  detail::require(spec.granularity == quant::Granularity::kPerRow, where,
                  "spec.granularity must be per-row (per token), got ", to_string(spec.granularity));
  detail::require(spec.bits == 4 || spec.bits == 8, where, "spec.bits must be 4 or 8 (packed codes), got ",
                  spec.bits);
}

// Names x's first non-finite entry (row r holds one).
inline void throw_nonfinite(const float* x, std::int64_t r, std::int64_t k, std::string_view where,
                            std::string_view what) {
  for (std::int64_t j = 0; j < k; ++j)
    detail::require_domain(std::isfinite(x[j]), where, what, "(", r, ", ", j, ") is ", x[j],
                           what == "x" ? " (x must be finite)" : " (the transform overflowed float)");
}

}  // namespace detail_token

namespace detail_token {

// Both entry points; `where` names the one the caller called.
inline void quantize_into(const Eigen::Ref<const RowMajorMatrixXf>& x, const quant::QuantSpec& spec,
                          PackedActivations& out, const TokenTransform& transform, const KernelOptions& options,
                          std::string_view where) {
  detail_token::check_spec(spec, where);
  const Isa isa = resolve_isa(options.isa, where);
  const int threads = resolve_threads(options.threads, where, options.pool);
  const std::int64_t m = x.rows(), k = x.cols();
  detail::require(k > 0, where, "x must have at least one column, got ", k);
  detail::require(spec.bits == 8 || k % 2 == 0, where, "x.cols() must be even for 4-bit codes (two per byte), got ",
                  k);
  transform.check_width(k, where);

  PackedActivations& a = out;
  a.m = m;
  a.k = k;
  a.bits = spec.bits;
  a.is_signed = spec.symmetric;
  // resize() value-initializes only the elements beyond the old size, and
  // every element is overwritten below: a buffer of the same or a bigger
  // shape is neither reallocated nor zero-filled. One that must grow is
  // emptied first, so that the reallocation copies none of its old values.
  const auto resize = [](auto& v, std::int64_t n) {
    if (v.capacity() < static_cast<std::size_t>(n)) v.clear();
    v.resize(static_cast<std::size_t>(n));
  };
  resize(a.codes, m * a.row_bytes());
  resize(a.scales, m);
  resize(a.zeros, m);
  resize(a.code_sums, m);
  const core::CodeRange range = spec.code_range();
  const auto clip = static_cast<float>(spec.clip_ratio);

  const kernel::TokenRowKernels kernels = kernel::token_row_kernels(isa);
  parallel_for(m, threads, 16, [&](std::int64_t begin, std::int64_t end) {
    // The transform's two row buffers, each on a 64-byte boundary: at
    // malloc's 16-byte alignment, three in four AVX-512 loads and stores of
    // them would span two cache lines.
    constexpr std::int64_t kAlign = 64 / sizeof(float);
    const std::int64_t stride = (k + kAlign - 1) / kAlign * kAlign;
    std::vector<float> buffers(static_cast<std::size_t>(2 * stride + kAlign));
    float* y = buffers.data();
    while (reinterpret_cast<std::uintptr_t>(y) % 64 != 0) ++y;
    float* work = y + stride;
    for (std::int64_t r = begin; r < end; ++r) {
      const float* row = x.row(r).data();
      std::optional<kernel::RowRange> found;
      const float* t = transform.apply(row, k, kernels, y, work, &found);
      const kernel::RowRange span = found ? *found : kernels.row_range(t, k);
      if (!span.finite) {
        // Name the input's entry when the input is at fault, else the transform's.
        if (!kernel::scalar::row_range(row, k).finite) detail_token::throw_nonfinite(row, r, k, where, "x");
        detail_token::throw_nonfinite(t, r, k, where, "the transformed x");
      }
      const core::AffineParams<float> p = quant::range_params(span.lo, span.hi, spec, clip);
      std::uint8_t* codes = a.codes.data() + r * a.row_bytes();
      const float abs_max = std::max(std::abs(span.lo), std::abs(span.hi));
      const std::int64_t sum = kernels.quantize(t, k, p, range, a.bits, codes, abs_max);
      // An 8-bit row whose range is tiny against its offset (all of it in
      // [1e6, 1e6 + 1/16]) has a zero point up to 255·2^24: beyond int32.
      detail::require_domain(std::abs(p.zero) < 2147483648.0f, where, "row ", r, " has zero point ", p.zero,
                             " beyond int32 (its range is too narrow for its offset): quantize it symmetric");
      const auto i = static_cast<std::size_t>(r);
      a.scales[i] = p.scale;
      a.zeros[i] = static_cast<std::int32_t>(p.zero);
      a.code_sums[i] = static_cast<std::int32_t>(sum);
    }
  }, options.pool);
}

}  // namespace detail_token

/// Quantizes every row (token) of x (M × K floats; any row-major matrix binds
/// without a copy) after `transform`, per token under `spec` (4 or 8 bits,
/// per-token granularity, any clip ratio; range_includes_zero and
/// symmetric_full_range as in oq::quant).
inline PackedActivations quantize_per_token(
    const Eigen::Ref<const RowMajorMatrixXf>& x,
    const quant::QuantSpec& spec, const TokenTransform& transform = {}, const KernelOptions& options = {}) {
  PackedActivations a;
  detail_token::quantize_into(x, spec, a, transform, options, "oq::cpu::quantize_per_token");
  return a;
}

/// quantize_per_token into `out`, the same bits: it sets out's fields and
/// resizes its vectors to x's shape, keeping their capacity (a buffer from a
/// call with as many or more tokens is neither reallocated nor zero-filled).
inline void quantize_per_token_into(const Eigen::Ref<const RowMajorMatrixXf>& x, const quant::QuantSpec& spec,
                                    PackedActivations& out, const TokenTransform& transform = {},
                                    const KernelOptions& options = {}) {
  detail_token::quantize_into(x, spec, out, transform, options, "oq::cpu::quantize_per_token_into");
}

}  // namespace oq::cpu
