// GPU test (label `gpu`): the W4A16 GEMM against a float64 host reference built
// from oq's own quantizer and packing.
#include "gemm_w4a16_launch.hpp"

#include <oq/io/gptq_checkpoint.hpp>
#include <oq/quant.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <algorithm>
#include <cmath>

using namespace oq::quant;
using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace {

struct Shape {
  std::int64_t m, n, k, group;
};

// The relative rounding count n·u of each kernel's bound γ = n·u/(1 − n·u)
// on Σ|a·ŵ|, derived in the test cases below.
double cuda_core_nu(std::int64_t k) { return (40.0 + double((k + 255) / 256)) * std::ldexp(1.0, -24); }
double tensor_op_nu(std::int64_t k, bool bf16) {
  return std::ldexp(1.0, bf16 ? -8 : -11) + double(k + 24) * std::ldexp(1.0, -22);
}

// One problem against a float64 product of the host's dequantized weights:
// random heavy-tailed weights quantized per group by oq::quant, Gaussian
// activations rounded to the 16-bit type, padded leading dimensions (so that
// a mix-up of ld and K or N fails), outputs poisoned with NaN. Every output
// must be finite and within bound(i, j) of the reference, where
// magnitude(i, j) = Σ_k |a·ŵ|.
// zero_shift moves the zero points (asymmetric only) off the integers (float
// zero points, as HQQ stores them) or out of the exact range, which both
// kernels handle on a second path; with odd_groups_only, only those of odd
// groups, so that the two paths alternate along a row.
template <class Bound>
void check_against_host(const Shape& s, bool symmetric, bool bf16, std::int64_t ld_w, bool tensor_op, Bound bound,
                        float zero_shift = 0.0f, bool odd_groups_only = false) {
  CAPTURE(s.m);
  CAPTURE(s.n);
  CAPTURE(s.k);
  CAPTURE(s.group);
  CAPTURE(symmetric);
  CAPTURE(bf16);
  CAPTURE(ld_w);
  CAPTURE(tensor_op);
  CAPTURE(zero_shift);
  CAPTURE(odd_groups_only);
  const RowMatrix w = oq::test::heavy_tailed<float>(s.n, s.k, static_cast<std::uint64_t>(s.n * s.k));
  const QuantSpec spec = QuantSpec::per_group(4, symmetric, s.group);
  auto params = compute_params(w, spec);
  const auto codes = quantize(w, params, spec);
  if (!symmetric)
    for (Eigen::Index g = odd_groups_only ? 1 : 0; g < params.zero.cols(); g += odd_groups_only ? 2 : 1)
      params.zero.col(g).array() += zero_shift;
  const PackedInt4 packed = pack_int4(codes, symmetric ? Int4Kind::kSigned : Int4Kind::kUnsigned);
  const RowMatrix w_hat = dequantize(codes, params, spec);

  const std::int64_t ld_a = s.k + 8, ld_y = s.n + 3;
  oq::test::W4A16Problem q{s.m, s.n, s.k, s.group, ld_a, ld_w, ld_y, symmetric, false};
  q.tensor_op = tensor_op;
  RowMatrix a = oq::test::gaussian<float>(s.m, s.k, 7);
  std::vector<float> a_flat(static_cast<std::size_t>(s.m * ld_a), 1e4f);
  for (Eigen::Index r = 0; r < s.m; ++r) std::copy(a.row(r).data(), a.row(r).data() + s.k, a_flat.begin() + r * ld_a);
  std::vector<std::uint8_t> w_flat(static_cast<std::size_t>(s.n * ld_w), 0x77);
  for (Eigen::Index r = 0; r < s.n; ++r)
    std::copy(packed.row(r).data(), packed.row(r).data() + packed.cols(), w_flat.begin() + r * ld_w);
  const RowMatrix scales = params.scale;  // n × groups, row-major as the kernel reads it
  const RowMatrix zeros = params.zero;
  const auto y = oq::test::gemm_w4a16_on_device(q, a_flat, bf16, w_flat,
                                                std::vector<float>(scales.data(), scales.data() + scales.size()),
                                                std::vector<float>(zeros.data(), zeros.data() + zeros.size()));
  for (Eigen::Index r = 0; r < s.m; ++r)  // the 16-bit values the kernel saw
    a.row(r) = Eigen::Map<const Eigen::RowVectorXf>(a_flat.data() + r * ld_a, s.k);
  const Eigen::MatrixXd reference = a.cast<double>() * w_hat.cast<double>().transpose();
  const Eigen::MatrixXd magnitude = a.cast<double>().cwiseAbs() * w_hat.cast<double>().cwiseAbs().transpose();
  int outside = 0;
  for (Eigen::Index i = 0; i < s.m; ++i) {
    for (Eigen::Index j = 0; j < s.n; ++j) {
      const float got = y[static_cast<std::size_t>(i * ld_y + j)];
      REQUIRE(std::isfinite(got));  // NaN poison: every output written
      outside += !(std::fabs(got - reference(i, j)) <= bound(magnitude(i, j)) + 1e-30);  // 1e-30: all-zero rows
    }
  }
  CHECK(outside == 0);
}

}  // namespace

TEST_CASE("W4A16 equals the dequantized product to fp32 accumulation error") {
  // K = 264 with groups of 8 and K = 96 with groups of 32 are the odd layouts.
  for (const Shape& s : {Shape{1, 64, 256, 128}, Shape{3, 37, 128, 128}, Shape{16, 130, 1024, 128},
                         Shape{64, 8, 512, 512}, Shape{9, 100, 4096, 128}, Shape{2, 16, 264, 8},
                         Shape{5, 33, 96, 32}}) {
    // Each lane sums a·(q − z) over one chunk with one fmaf rounding apiece (32
    // codes of a 16-byte load on the wide loop, 8 of a word on the narrow one),
    // scales the chunk once into its accumulator (one fmaf per chunk: ⌈K/1024⌉
    // or ⌈K/256⌉ of them), a 5-level shuffle tree adds 5 roundings, and the
    // host's ŵ = s·(q − z) (and a non-integer z) one each: every product passes
    // at most n = 40 + ⌈K/256⌉ roundings, so |error| <= γ_n·Σ|a·ŵ|,
    // γ_n = n·u/(1 − n·u), u = 2^−24 (Higham, recursive summation).
    const double nu = cuda_core_nu(s.k);
    const auto bound = [nu](double magnitude) { return nu / (1 - nu) * magnitude; };
    for (bool symmetric : {false, true}) {
      for (bool bf16 : {false, true}) {
        // Weight rows 4 bytes past K/2 (the narrow loop) or 16 (16-byte aligned:
        // the wide loop where K and the group size allow it).
        for (std::int64_t w_pad : {4, 16}) {
          const std::int64_t ld_w = (s.k / 2 + 15) / 16 * 16 + w_pad;
          oq::test::W4A16Problem q{s.m, s.n, s.k, s.group, s.k + 8, ld_w, s.n + 3, symmetric, false};
          // The loop this case exercises: wide exactly for 16-byte rows of whole 32-code groups.
          CHECK(oq::test::w4a16_wide_loop(q) == (w_pad == 16 && s.k % 32 == 0 && s.group % 32 == 0));
          check_against_host(s, symmetric, bf16, ld_w, false, bound);
          if (!symmetric) {
            check_against_host(s, symmetric, bf16, ld_w, false, bound, 0.37f);
            check_against_host(s, symmetric, bf16, ld_w, false, bound, 0.37f, true);
          }
        }
      }
    }
  }
}

TEST_CASE("W4A16 on tensor cores equals the dequantized product to fp32 accumulation or 16-bit weight rounding") {
  // M on each token tile (16: M ≤ 16, 32: M ≤ 32, 64) and past one 64-token
  // CTA row; ragged N; a K tail of one k16 step past the 64-code chunks;
  // groups of 16 (the warp's group changes every step); one K chunk per warp
  // or many.
  for (const Shape& s : {Shape{1, 64, 256, 128}, Shape{3, 37, 128, 128}, Shape{16, 130, 1024, 128},
                         Shape{27, 40, 512, 64}, Shape{64, 8, 512, 512}, Shape{9, 100, 4096, 128},
                         Shape{65, 24, 272, 16}, Shape{130, 17, 96, 32}}) {
    for (bool symmetric : {false, true}) {
      for (bool bf16 : {false, true}) {
        // ŵ is rounded once to the 16-bit type (unit roundoff 2^-8 for bf16,
        // 2^-11 for fp16) on the rounded form, not at all on the exact form
        // (q − z is exact; the scale multiplies each group's sum once, one
        // more rounding per group); products of 16-bit values are exact in fp32, and the
        // tensor cores' fp32 accumulation plus the 8-way split-K sum add at
        // most K + 24 roundings, counted at 2^-22 each because tensor-core
        // additions need not round to nearest.
        const double nu = tensor_op_nu(s.k, bf16);
        const auto bound = [nu](double magnitude) { return nu / (1 - nu) * magnitude; };
        const std::int64_t ld_w = (s.k / 2 + 15) / 16 * 16 + 8;  // 8-byte aligned rows
        check_against_host(s, symmetric, bf16, ld_w, true, bound);
        // Zero points the exact form does not take: off the integers, and
        // integers beyond bf16's exact range (|z| > 112; fp16 keeps them).
        if (!symmetric) {
          check_against_host(s, symmetric, bf16, ld_w, true, bound, 0.37f);
          check_against_host(s, symmetric, bf16, ld_w, true, bound, 200.0f);
          check_against_host(s, symmetric, bf16, ld_w, true, bound, 0.37f, true);  // the forms alternate
        }
      }
    }
  }
}

TEST_CASE("a desc_act GPTQ checkpoint, read back and sorted by group, runs on both W4A16 kernels") {
  // What an engine does with a GPTQ checkpoint: unpack, sort the act-order
  // groups contiguous (sort_inputs_by_group), lay the linear out for the
  // kernels (w4a16_weights), gather the activations, run. Reference: the
  // gathered activations (rounded to the 16-bit type, as the kernel reads
  // them) times the checkpoint's Ŵ, in double; bounds as in the cases above.
  const Eigen::Index m = 6, n = 40, k = 256, group = 64;
  const Eigen::MatrixXd x_cal = oq::test::correlated_inputs(512, k, 71);
  const Eigen::MatrixXd h = oq::test::gptq_hessian_of(x_cal);
  const Eigen::MatrixXf w = oq::test::heavy_tailed<float>(n, k, 72);
  for (const bool symmetric : {false, true}) {
    const QuantSpec spec = QuantSpec::gptq_reference(4, symmetric, group);
    const auto r = gptq_quantize(w, h, spec, {.act_order = true, .static_groups = false});
    const auto format = oq::io::GptqCheckpointFormat::kGptqV2;
    const oq::io::GptqLinearCodes read =
        oq::io::unpack_gptq_linear(oq::io::pack_gptq_linear(oq::io::gptq_linear_codes(r, spec), format), format);
    const oq::io::GptqInputsByGroup sorted = oq::io::sort_inputs_by_group(read);
    const oq::io::GptqW4A16Weights weights = oq::io::w4a16_weights(sorted.linear);
    const Eigen::MatrixXf w_hat = oq::io::dequantize_gptq_linear(sorted.linear);
    const RowMatrix x = oq::test::gaussian<float>(m, k, 73);
    const RowMatrix gathered = x(Eigen::all, sorted.input_order);
    for (const bool tensor_op : {false, true}) {
      for (const bool bf16 : {false, true}) {
        CAPTURE(symmetric);
        CAPTURE(tensor_op);
        CAPTURE(bf16);
        oq::test::W4A16Problem q{m, n, k, group, k, k / 2, n, false, false};
        q.tensor_op = tensor_op;
        std::vector<float> a(gathered.data(), gathered.data() + gathered.size());
        const std::vector<std::uint8_t> w_bytes(weights.w.data(), weights.w.data() + weights.w.size());
        const auto y = oq::test::gemm_w4a16_on_device(
            q, a, bf16, w_bytes, std::vector<float>(weights.scales.data(), weights.scales.data() + weights.scales.size()),
            std::vector<float>(weights.zeros.data(), weights.zeros.data() + weights.zeros.size()));
        const Eigen::MatrixXd a_seen = Eigen::Map<const RowMatrix>(a.data(), m, k).cast<double>();
        const Eigen::MatrixXd reference = a_seen * w_hat.cast<double>().transpose();
        const Eigen::MatrixXd magnitude = a_seen.cwiseAbs() * w_hat.cast<double>().cwiseAbs().transpose();
        const double nu = tensor_op ? tensor_op_nu(k, bf16) : cuda_core_nu(k);
        int outside = 0;
        for (Eigen::Index i = 0; i < m; ++i)
          for (Eigen::Index j = 0; j < n; ++j)
            outside += !(std::fabs(y[static_cast<std::size_t>(i * n + j)] - reference(i, j)) <=
                         nu / (1 - nu) * magnitude(i, j) + 1e-30);
        CHECK(outside == 0);
      }
    }
  }
}
