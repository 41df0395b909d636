// Tests of oq/cpu/gemm.hpp: the int32 accumulators of every dispatch path
// equal a plain integer loop over the unpacked codes, the float output equals
// the documented epilogue (computed here from Σ(qa − z_a)(qw − z_w) in int64,
// not from the kernel's code sums) bit for bit, and the output agrees with
// the product of the dequantized operands within the epilogue's rounding bound.
#include <oq/cpu/gemm.hpp>
#include <oq/cpu/quantize_per_token.hpp>
#include <oq/quant/quantize.hpp>

#include <doctest/doctest.h>

#include "support/cpu_paths.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace {

using oq::cpu::Isa;
using oq::cpu::PackedActivations;
using oq::cpu::PackedWeights;

std::vector<Isa> available_paths() { return oq_test::available_cpu_paths(); }

// Random codes in [lo, hi], with the ends of the range forced in every row
// (the bias tricks break first there).
std::vector<int> random_codes(std::int64_t rows, std::int64_t cols, int lo, int hi, std::mt19937& rng) {
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<int> q(static_cast<std::size_t>(rows * cols));
  for (auto& v : q) v = d(rng);
  for (std::int64_t r = 0; r < rows; ++r) {
    q[static_cast<std::size_t>(r * cols)] = lo;
    q[static_cast<std::size_t>(r * cols + cols - 1)] = hi;
  }
  return q;
}

struct Operands {
  PackedActivations a;
  PackedWeights w;
  std::vector<int> qa, qw;  // the codes, unpacked
};

// Packs the operands by hand (not through the library's packers), with zero
// points including the ends of plausible ranges.
Operands make_operands(std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t group, int act_bits, bool act_signed,
                       bool w_signed, std::mt19937& rng) {
  Operands o;
  const int alo = act_signed ? -(1 << (act_bits - 1)) : 0;
  const int ahi = act_signed ? (1 << (act_bits - 1)) - 1 : (1 << act_bits) - 1;
  o.qa = random_codes(m, k, alo, ahi, rng);
  o.qw = random_codes(n, k, w_signed ? -8 : 0, w_signed ? 7 : 15, rng);
  std::uniform_real_distribution<float> scale(0.01f, 2.0f);
  std::uniform_int_distribution<int> zero(-300, 300);

  o.a.m = m;
  o.a.k = k;
  o.a.bits = act_bits;
  o.a.is_signed = act_signed;
  o.a.codes.assign(static_cast<std::size_t>(m * o.a.row_bytes()), 0);
  for (std::int64_t r = 0; r < m; ++r) {
    std::int32_t sum = 0;
    for (std::int64_t c = 0; c < k; ++c) {
      const int q = o.qa[static_cast<std::size_t>(r * k + c)];
      sum += q;
      auto* row = o.a.codes.data() + r * o.a.row_bytes();
      if (act_bits == 8) {
        row[c] = static_cast<std::uint8_t>(q & 0xFF);
      } else {
        row[c / 2] = static_cast<std::uint8_t>(row[c / 2] | ((q & 0xF) << (4 * (c % 2))));
      }
    }
    o.a.scales.push_back(scale(rng));
    o.a.zeros.push_back(act_signed ? 0 : (r % 3 == 0 ? ahi : r % 3 == 1 ? -ahi : zero(rng)));
    o.a.code_sums.push_back(sum);
  }

  o.w.n = n;
  o.w.k = k;
  o.w.group_size = group;
  o.w.is_signed = w_signed;
  o.w.codes.assign(static_cast<std::size_t>(n * k / 2), 0);
  const std::int64_t groups = k / group;
  o.w.code_sums.assign(static_cast<std::size_t>(n * groups), 0);
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t c = 0; c < k; ++c) {
      const int q = o.qw[static_cast<std::size_t>(r * k + c)];
      o.w.code_sums[static_cast<std::size_t>(r * groups + c / group)] += q;
      auto& byte = o.w.codes[static_cast<std::size_t>(r * k / 2 + c / 2)];
      byte = static_cast<std::uint8_t>(byte | ((q & 0xF) << (4 * (c % 2))));
    }
    for (std::int64_t g = 0; g < groups; ++g) {
      o.w.scales.push_back(scale(rng));
      if (!w_signed) o.w.zeros.push_back(g % 2 == 0 ? 15 : zero(rng) / 10);
    }
  }
  return o;
}

#if defined(__SIZEOF_INT128__)
__extension__ using Exact = __int128;  // T_G of extreme zero points exceeds int64
#else
using Exact = std::int64_t;
#endif

// Σ_k qa·qw per output, int64, plain loop.
std::vector<std::int64_t> accumulators_ref(const Operands& o) {
  const std::int64_t m = o.a.m, n = o.w.n, k = o.a.k;
  std::vector<std::int64_t> acc(static_cast<std::size_t>(m * n), 0);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t c = 0; c < k; ++c)
        acc[static_cast<std::size_t>(i * n + j)] +=
            std::int64_t{o.qa[static_cast<std::size_t>(i * k + c)]} * o.qw[static_cast<std::size_t>(j * k + c)];
  return acc;
}

// The documented epilogue from T_G = Σ_{k∈G} (qa − z_a)(qw − z_w), int64.
std::vector<float> output_ref(const Operands& o) {
  const std::int64_t m = o.a.m, n = o.w.n, k = o.a.k, g = o.w.group_size, groups = k / g;
  std::vector<float> y(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      float out = 0.0f;
      for (std::int64_t G = 0; G < groups; ++G) {
        const auto cell = static_cast<std::size_t>(j * groups + G);
        const std::int64_t za = o.a.zeros[static_cast<std::size_t>(i)];
        const std::int64_t zw = o.w.is_signed ? 0 : o.w.zeros[cell];
        Exact t = 0;
        for (std::int64_t c = G * g; c < (G + 1) * g; ++c)
          t += Exact{o.qa[static_cast<std::size_t>(i * k + c)] - za} * (o.qw[static_cast<std::size_t>(j * k + c)] - zw);
        const float p = o.a.scales[static_cast<std::size_t>(i)] * o.w.scales[cell];
        out = G == 0 ? p * static_cast<float>(t) : std::fma(p, static_cast<float>(t), out);
      }
      y[static_cast<std::size_t>(i * n + j)] = out;
    }
  }
  return y;
}

void check_all_paths(const Operands& o, int threads) {
  const auto acc_ref = accumulators_ref(o);
  const auto y_ref = output_ref(o);
  for (Isa isa : available_paths()) {
    CAPTURE(oq::cpu::to_string(isa));
    CAPTURE(threads);
    const auto acc = oq::cpu::gemm_accumulators(o.a, o.w, {threads, isa});
    const auto y = oq::cpu::gemm(o.a, o.w, {threads, isa});
    REQUIRE(acc.rows() == o.a.m);
    REQUIRE(acc.cols() == o.w.n);
    std::int64_t checked = 0;
    for (std::int64_t i = 0; i < o.a.m; ++i) {
      for (std::int64_t j = 0; j < o.w.n; ++j) {
        const auto at = static_cast<std::size_t>(i * o.w.n + j);
        CAPTURE(i);
        CAPTURE(j);
        REQUIRE(acc(i, j) == acc_ref[at]);
        std::uint32_t got, want;
        std::memcpy(&got, &y(i, j), 4);
        std::memcpy(&want, &y_ref[at], 4);
        REQUIRE(got == want);
        ++checked;
      }
    }
    CHECK(checked == o.a.m * o.w.n);
  }
}

}  // namespace

TEST_CASE("every path: accumulators equal a plain integer loop, outputs the epilogue bit for bit") {
  std::mt19937 rng(20261206);
  struct Shape {
    std::int64_t k, group;
  };
  // K not a multiple of any SIMD width (2, 6, 130, 250), groups of 2, 32, 64
  // and 128 that do and do not span a whole SIMD chunk.
  const Shape shapes[] = {{2, 2}, {6, 6}, {130, 130}, {250, 250}, {96, 32}, {320, 64}, {384, 128}, {12, 2}, {260, 130}};
  for (const Shape s : shapes) {
    for (int act_bits : {4, 8}) {
      for (bool act_signed : {false, true}) {
        for (bool w_signed : {false, true}) {
          for (std::int64_t m : {1, 3, 17}) {
            const std::int64_t n = m == 3 ? 1 : m == 1 ? 13 : 7;  // N odd, including a single output
            CAPTURE(s.k);
            CAPTURE(s.group);
            CAPTURE(act_bits);
            CAPTURE(act_signed);
            CAPTURE(w_signed);
            CAPTURE(m);
            check_all_paths(make_operands(m, n, s.k, s.group, act_bits, act_signed, w_signed, rng), 1);
          }
        }
      }
    }
  }
}

TEST_CASE("every M from 1 to 17, threads 1 and 3: the same integers and outputs") {
  std::mt19937 rng(7);
  for (std::int64_t m = 1; m <= 17; ++m) {
    CAPTURE(m);
    const Operands o = make_operands(m, 9, 200, 200, 8, false, false, rng);
    check_all_paths(o, 1);
    check_all_paths(o, 3);
  }
}

TEST_CASE("threads over many output tiles and more than one 64-row block of tokens: the same integers and outputs") {
  std::mt19937 rng(21);
  const Operands o = make_operands(70, 37, 96, 32, 8, true, false, rng);
  check_all_paths(o, 3);
  const Operands p = make_operands(65, 33, 130, 130, 4, false, true, rng);
  check_all_paths(p, 2);
}

TEST_CASE("a caller-owned pool gives the same integers and outputs as the call's own threads") {
  std::mt19937 rng(37);
  const Operands o = make_operands(9, 41, 96, 96, 4, false, false, rng);
  oq::cpu::ThreadPool pool(3);
  for (Isa isa : available_paths()) {
    CAPTURE(oq::cpu::to_string(isa));
    oq::cpu::KernelOptions with_pool;
    with_pool.isa = isa;
    with_pool.pool = &pool;
    CHECK(oq::cpu::gemm_accumulators(o.a, o.w, with_pool) == oq::cpu::gemm_accumulators(o.a, o.w, {1, isa}));
    CHECK(oq::cpu::gemm(o.a, o.w, with_pool) == oq::cpu::gemm(o.a, o.w, {1, isa}));
  }
}

TEST_CASE("zero points near int32's ends: T_G beyond int64 is exact (128-bit epilogue) or refused") {
  std::mt19937 rng(23);
  Operands o = make_operands(3, 5, 64, 64, 8, false, false, rng);
  o.a.zeros = {2147483647, -2147483647, 5};
  for (std::size_t i = 0; i < o.w.zeros.size(); ++i) o.w.zeros[i] = i % 2 == 0 ? -2147483647 : 2147483000;
#if defined(__SIZEOF_INT128__)
  check_all_paths(o, 1);
#else
  CHECK_THROWS_WITH_AS(oq::cpu::gemm(o.a, o.w), doctest::Contains("too large for an exact 64-bit epilogue"),
                       std::domain_error);
#endif
}

TEST_CASE("K = kMaxK runs exactly; one more pair of codes is refused") {
  std::mt19937 rng(29);
  const Operands o = make_operands(1, 2, oq::cpu::kMaxK, oq::cpu::kMaxK, 8, false, false, rng);
  check_all_paths(o, 2);
  Operands big = make_operands(1, 1, 2, 2, 8, false, false, rng);
  big.w.k = big.a.k = oq::cpu::kMaxK + 2;
  big.a.codes.assign(static_cast<std::size_t>(big.a.k), 0);  // valid activations: the weights' k is refused
  CHECK_THROWS_WITH_AS(oq::cpu::gemm(big.a, big.w), doctest::Contains("weights.k must be even"), std::invalid_argument);
}

TEST_CASE("extreme codes: the largest |Σ qa·qw| of a row fills int32 without overflow on every path") {
  // K = 2^16 codes of 255 (u8) against 15 (u4): Σ = 2^16·3825 = 250,675,200,
  // and −128 against −8 (s8 × s4) likewise: the bias corrections must be exact.
  std::mt19937 rng(3);
  Operands o = make_operands(2, 3, 1 << 16, 1 << 16, 8, false, false, rng);
  std::fill(o.qa.begin(), o.qa.end(), 255);
  std::fill(o.qw.begin(), o.qw.end(), 15);
  std::fill(o.a.codes.begin(), o.a.codes.end(), std::uint8_t{255});
  std::fill(o.w.codes.begin(), o.w.codes.end(), std::uint8_t{0xFF});
  for (auto& s : o.a.code_sums) s = 255 << 16;
  for (auto& s : o.w.code_sums) s = 15 << 16;
  check_all_paths(o, 2);

  Operands s = make_operands(2, 3, 1 << 16, 1 << 16, 8, true, true, rng);
  std::fill(s.qa.begin(), s.qa.end(), -128);
  std::fill(s.qw.begin(), s.qw.end(), -8);
  std::fill(s.a.codes.begin(), s.a.codes.end(), std::uint8_t{0x80});
  std::fill(s.w.codes.begin(), s.w.codes.end(), std::uint8_t{0x88});
  for (auto& v : s.a.code_sums) v = -128 * (1 << 16);
  for (auto& v : s.w.code_sums) v = -8 * (1 << 16);
  check_all_paths(s, 1);
}

TEST_CASE("quantized end to end: y agrees with the product of the dequantized operands within the epilogue's bound") {
  // y rounds T to float, the scale product and each fma: |y − Σ_G p_G·T_G| ≤
  // (G + 2)·u·Σ_G |p_G·T_G|. Fake quantization's x̂ = (q − z)·s and ŵ round
  // once each: |Σ x̂·ŵ − Σ_G s_a·s_w·T_G| ≤ 2u·Σ |x̂·ŵ| (+ u² terms). The
  // product here is summed in double (its error is far below either).
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const std::int64_t m = 6, n = 10, k = 256;
  oq::cpu::RowMajorMatrixXf x(m, k);
  Eigen::MatrixXf w(n, k);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = normal(rng);
  x(2, 17) = 900.0f;  // a massive activation
  x.row(4).setZero();  // an all-zero token
  const double u = std::ldexp(1.0, -24);
  for (int act_bits : {4, 8}) {
    for (std::int64_t group : {std::int64_t{0}, std::int64_t{64}}) {
      const auto wspec = group > 0 ? oq::quant::QuantSpec::per_group(4, false, group, 0.8)
                                   : oq::quant::QuantSpec::per_channel(4, false, 0.8);
      const auto aspec = oq::quant::QuantSpec::per_token(act_bits, false, 0.9);
      const PackedWeights pw = oq::cpu::quantize_weights(w, wspec);
      const PackedActivations pa = oq::cpu::quantize_per_token(x, aspec);
      const Eigen::MatrixXf x_hat = oq::quant::fake_quantize(Eigen::MatrixXf(x), aspec);
      const Eigen::MatrixXf w_hat = oq::quant::fake_quantize(w, wspec);
      const auto y = oq::cpu::gemm(pa, pw);
      const std::int64_t groups = pw.groups();
      for (std::int64_t i = 0; i < m; ++i) {
        for (std::int64_t j = 0; j < n; ++j) {
          double product = 0.0, magnitude = 0.0, exact_terms = 0.0;
          for (std::int64_t c = 0; c < k; ++c) {
            product += double{x_hat(i, c)} * w_hat(j, c);
            magnitude += std::abs(double{x_hat(i, c)} * w_hat(j, c));
          }
          for (std::int64_t G = 0; G < groups; ++G) {
            double t = 0.0;
            for (std::int64_t c = G * pw.group_size; c < (G + 1) * pw.group_size; ++c)
              t += (pa.code(i, c) - static_cast<double>(pa.zeros[static_cast<std::size_t>(i)])) *
                   (static_cast<double>(oq::format::load_u4(pw.row(j), static_cast<std::size_t>(c))) -
                    pw.zeros[static_cast<std::size_t>(j * groups + G)]);
            exact_terms += std::abs(double{pa.scales[static_cast<std::size_t>(i)]} *
                                    pw.scales[static_cast<std::size_t>(j * groups + G)] * t);
          }
          const double bound = (static_cast<double>(groups) + 2.0) * u * exact_terms + 2.0 * u * magnitude +
                               std::numeric_limits<float>::denorm_min();
          CAPTURE(act_bits);
          CAPTURE(group);
          CAPTURE(i);
          CAPTURE(j);
          CHECK(std::abs(double{y(i, j)} - product) <= bound);
          if (i == 4) {  // the all-zero token: s = 1, z = 0, codes 0, so T = 0 and y is exactly 0
            CHECK(y(i, j) == 0.0f);
            CHECK(product == 0.0);
          }
        }
      }
    }
  }
}

TEST_CASE("bad input is refused with a message naming it") {
  std::mt19937 rng(5);
  const Operands o = make_operands(2, 3, 64, 32, 8, false, false, rng);
  auto refuses = [](const PackedActivations& a, const PackedWeights& w, const char* what) {
    CAPTURE(what);
    try {
      (void)oq::cpu::gemm(a, w);
      FAIL("no exception");
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()).find(what) != std::string::npos);
    }
  };
  {
    PackedWeights w = o.w;
    w.k = 63;  // odd K
    refuses(o.a, w, "weights.k must be even");
  }
  {
    PackedWeights w = o.w;
    w.group_size = 24;  // does not divide 64
    refuses(o.a, w, "weights.group_size");
  }
  {
    PackedWeights w = o.w;
    w.scales.pop_back();
    refuses(o.a, w, "weights.scales must hold");
  }
  {
    PackedWeights w = o.w;
    w.zeros.clear();
    refuses(o.a, w, "weights.zeros must hold");
  }
  {
    PackedActivations a = o.a;
    a.code_sums.pop_back();
    refuses(a, o.w, "activations.scales, zeros and code_sums");
  }
  {
    PackedActivations a = o.a;
    a.scales[1] = std::numeric_limits<float>::quiet_NaN();
    refuses(a, o.w, "activations.scales[1]");
  }
  {
    const Operands other = make_operands(2, 3, 32, 32, 8, false, false, rng);
    refuses(o.a, other.w, "must equal weights.k");
  }
  {
    PackedActivations a = o.a;
    a.bits = 4;
    refuses(a, o.w, "activations.codes must hold");
  }
  oq::cpu::RowMajorMatrixXf y(3, 3);
  CHECK_THROWS_WITH_AS(oq::cpu::gemm(o.a, o.w, y), doctest::Contains("y must be 2 x 3"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(oq::cpu::gemm(o.a, o.w, {-1, Isa::kAuto}), doctest::Contains("options.threads"),
                       std::invalid_argument);
  // A path this CPU or build lacks (an ISA value no build knows stands in for
  // one, so the check runs on every machine).
  CHECK_THROWS_WITH_AS(oq::cpu::gemm(o.a, o.w, {1, static_cast<Isa>(99)}), doctest::Contains("options.isa"),
                       std::invalid_argument);
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512Vnni, Isa::kNeonDot}) {
    if (!oq::cpu::isa_supported(isa))
      CHECK_THROWS_WITH_AS(oq::cpu::gemm(o.a, o.w, {1, isa}), doctest::Contains("not available"),
                           std::invalid_argument);
  }
}

TEST_CASE("empty operands: no tokens or no outputs give an empty result") {
  std::mt19937 rng(9);
  Operands o = make_operands(1, 2, 8, 8, 4, true, true, rng);
  PackedActivations none = o.a;
  none.m = 0;
  none.codes.clear();
  none.scales.clear();
  none.zeros.clear();
  none.code_sums.clear();
  CHECK(oq::cpu::gemm(none, o.w).rows() == 0);
  PackedWeights nothing = o.w;
  nothing.n = 0;
  nothing.codes.clear();
  nothing.scales.clear();
  nothing.code_sums.clear();
  const auto y = oq::cpu::gemm(o.a, nothing);
  CHECK(y.rows() == 1);
  CHECK(y.cols() == 0);
}

TEST_CASE("gemm into a block of a larger row-major matrix: the block's stride, nothing around it written") {
  std::mt19937 rng(13);
  const Operands o = make_operands(5, 7, 64, 32, 4, false, true, rng);
  const auto want = oq::cpu::gemm(o.a, o.w);
  oq::cpu::RowMajorMatrixXf big = oq::cpu::RowMajorMatrixXf::Constant(9, 12, -7.0f);
  oq::cpu::gemm(o.a, o.w, big.block(2, 3, 5, 7));
  CHECK(big.block(2, 3, 5, 7) == want);
  int untouched = 0;
  for (Eigen::Index i = 0; i < big.rows(); ++i)
    for (Eigen::Index j = 0; j < big.cols(); ++j)
      if (i < 2 || i >= 7 || j < 3 || j >= 10) untouched += big(i, j) == -7.0f;
  CHECK(untouched == 9 * 12 - 5 * 7);
}
