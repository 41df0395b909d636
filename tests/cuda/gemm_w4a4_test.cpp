// GPU test (label `gpu`): W4A4 int32 accumulators equal a host integer
// reference bit for bit, and the epilogue equals the same float expression,
// for both launchers (GemmW4A4 and GemmW4A4Multistage) on every MMA path.
#include "gemm_w4a4_launch.hpp"

#include <oq/quant/pack.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>

using namespace oq::quant;
using oq::test::W4A4Kernel;
using oq::test::W4A4Path;

namespace {

struct Shape {
  std::int64_t m, n, k;
};

// Random codes, scales and zero points for `s`; runs the kernel with rows
// `ld_pad` bytes longer than K/2 (filled with 0x5A, so that a mix-up of ld and
// K fails) and compares every accumulator and output with a plain loop.
// With `extremes`, every code is the least or the greatest of its range (−8 or
// 7, 0 or 15): the largest products, and −8 is the s8 lane −128 on the
// widened path.
void check_against_host(const Shape& s, bool a_signed, bool w_signed, W4A4Path path, W4A4Kernel kernel,
                        std::int64_t ld_a, std::int64_t ld_w, std::mt19937& rng, bool extremes = false) {
  CAPTURE(static_cast<int>(kernel));
  CAPTURE(static_cast<int>(path));
  CAPTURE(s.m);
  CAPTURE(s.n);
  CAPTURE(s.k);
  CAPTURE(a_signed);
  CAPTURE(w_signed);
  auto codes = [&](std::int64_t rows, bool is_signed) {
    Int4Codes c(rows, s.k);
    const int lo = is_signed ? -8 : 0, hi = is_signed ? 7 : 15;
    std::uniform_int_distribution<int> dist(lo, hi);
    std::bernoulli_distribution coin(0.5);
    for (Eigen::Index i = 0; i < c.size(); ++i) c.data()[i] = extremes ? (coin(rng) ? hi : lo) : dist(rng);
    return c;
  };
  const Int4Codes qa = codes(s.m, a_signed), qw = codes(s.n, w_signed);
  const PackedInt4 pa = pack_int4(qa, a_signed ? Int4Kind::kSigned : Int4Kind::kUnsigned);
  const PackedInt4 pw = pack_int4(qw, w_signed ? Int4Kind::kSigned : Int4Kind::kUnsigned);
  std::uniform_real_distribution<float> scale(0.001f, 0.1f);
  // Zero points as the quantizers produce them: often outside the code
  // range (docs/design.md §2: a group that does not straddle 0).
  std::uniform_int_distribution<int> zero(-20, 30);
  std::vector<float> sa(static_cast<std::size_t>(s.m)), sw(static_cast<std::size_t>(s.n)), za, zw;
  for (float& v : sa) v = scale(rng);
  for (float& v : sw) v = scale(rng);
  if (!a_signed)
    for (std::int64_t i = 0; i < s.m; ++i) {
      // Every fifth zero point one ulp below its integer (a zero that picked up
      // a rounding error): the epilogue rounds it, as the reference does.
      const auto z = static_cast<float>(zero(rng));
      za.push_back(i % 5 == 4 && z != 0.0f ? std::nextafter(z, 0.0f) : z);
    }
  if (!w_signed)
    for (std::int64_t i = 0; i < s.n; ++i) zw.push_back(static_cast<float>(zero(rng)));
  std::vector<std::int32_t> suma(static_cast<std::size_t>(s.m)), sumw(static_cast<std::size_t>(s.n));
  for (std::int64_t i = 0; i < s.m; ++i) suma[static_cast<std::size_t>(i)] = qa.row(i).sum();
  for (std::int64_t j = 0; j < s.n; ++j) sumw[static_cast<std::size_t>(j)] = qw.row(j).sum();

  auto padded = [](const PackedInt4& packed, std::int64_t ld) {
    std::vector<std::uint8_t> out(static_cast<std::size_t>(packed.rows() * ld), 0x5A);
    for (Eigen::Index r = 0; r < packed.rows(); ++r)
      std::copy(packed.row(r).data(), packed.row(r).data() + packed.cols(), out.begin() + r * ld);
    return out;
  };
  const oq::test::W4A4Problem problem{s.m, s.n, s.k, ld_a, ld_w, a_signed, w_signed, true, false, path, kernel};
  const auto got =
      oq::test::gemm_w4a4_on_device(problem, padded(pa, ld_a), padded(pw, ld_w), sa, za, sw, zw, suma, sumw);
  int acc_mismatches = 0, y_mismatches = 0;
  for (std::int64_t i = 0; i < s.m; ++i) {
    for (std::int64_t j = 0; j < s.n; ++j) {
      std::int64_t acc = 0, centred = 0;
      const std::int64_t a_zero = a_signed ? 0 : std::llrint(za[static_cast<std::size_t>(i)]);
      const std::int64_t w_zero = w_signed ? 0 : std::llrint(zw[static_cast<std::size_t>(j)]);
      for (std::int64_t k = 0; k < s.k; ++k) {
        acc += std::int64_t(qa(i, k)) * qw(j, k);
        centred += (std::int64_t(qa(i, k)) - a_zero) * (std::int64_t(qw(j, k)) - w_zero);
      }
      const auto at = static_cast<std::size_t>(i * s.n + j);
      acc_mismatches += got.acc[at] != acc;
      const float expected =
          sa[static_cast<std::size_t>(i)] * sw[static_cast<std::size_t>(j)] * static_cast<float>(centred);
      y_mismatches += std::memcmp(&got.y[at], &expected, sizeof(float)) != 0;
    }
  }
  CHECK(acc_mismatches == 0);
  CHECK(y_mismatches == 0);
}

constexpr W4A4Path kPaths[] = {W4A4Path::kAuto, W4A4Path::kNativeS4, W4A4Path::kWidenToS8};

}  // namespace

TEST_CASE("W4A4 (GemmW4A4) accumulators and epilogue against the host reference") {
  std::mt19937 rng(17);
  // K = 32 and 96 leave a 32-wide tail that the native path finishes widened.
  for (const Shape& s : {Shape{1, 8, 32}, Shape{17, 37, 64}, Shape{9, 24, 96}, Shape{33, 130, 512},
                         Shape{128, 64, 4096}}) {
    for (bool a_signed : {false, true}) {
      for (bool w_signed : {true, false}) {
        for (const W4A4Path path : kPaths) {
          // Rows padded past K/2 bytes by 6 and 2 (the launcher needs even strides).
          check_against_host(s, a_signed, w_signed, path, W4A4Kernel::kSimple, s.k / 2 + 6, s.k / 2 + 2, rng);
        }
      }
    }
  }
}

TEST_CASE("W4A4 (GemmW4A4Multistage) accumulators and epilogue against the host reference") {
  std::mt19937 rng(29);
  // Ragged in every direction against the 128 × 128 × 128 CTA tile: M and N
  // one past a tile, K tails of 32 and 96 codes, one K tile, many K tiles
  // (the pipeline wraps its 3 stages), a lone row.
  for (const Shape& s : {Shape{1, 8, 32}, Shape{20, 40, 96}, Shape{129, 136, 128}, Shape{257, 129, 544},
                         Shape{130, 257, 1056}, Shape{128, 128, 4096}}) {
    for (bool a_signed : {false, true}) {
      for (bool w_signed : {true, false}) {
        for (const W4A4Path path : kPaths) {
          // Strides a multiple of 16 bytes (cp.async), 16 and 32 past K/2.
          const std::int64_t row = (s.k / 2 + 15) / 16 * 16;
          check_against_host(s, a_signed, w_signed, path, W4A4Kernel::kMultistage, row + 16, row + 32, rng);
        }
      }
    }
  }
  // Extreme codes only, on every path and signedness.
  for (bool a_signed : {false, true}) {
    for (bool w_signed : {true, false}) {
      for (const W4A4Path path : kPaths)
        check_against_host(Shape{64, 72, 2048}, a_signed, w_signed, path, W4A4Kernel::kMultistage, 1040, 1024, rng,
                           true);
    }
  }
}

TEST_CASE("W4A4 (GemmW4A4Wgmma, sm_90a) accumulators and epilogue against the host reference") {
  const auto paths = oq::test::w4a4_auto_paths_on_device();
  if (paths.compute_capability_major != 9) {
    const std::string why = "skipped: GemmW4A4Wgmma needs compute capability 9.0, this device has major " +
                            std::to_string(paths.compute_capability_major);
    MESSAGE(why);
    return;
  }
  std::mt19937 rng(31);
  // The multistage kernel's ragged shapes (the same tiles and pipeline feed
  // it), and M = 100: the second warpgroup's rows partly past M.
  for (const Shape& s : {Shape{1, 8, 32}, Shape{20, 40, 96}, Shape{100, 136, 256}, Shape{129, 136, 128},
                         Shape{257, 129, 544}, Shape{130, 257, 1056}, Shape{128, 128, 4096}}) {
    for (bool a_signed : {false, true}) {
      for (bool w_signed : {true, false}) {
        // Two widened buffers (the default, widening overlapped with the MMAs) and one.
        for (const W4A4Kernel kernel : {W4A4Kernel::kWgmma, W4A4Kernel::kWgmmaOneBuffer}) {
          const std::int64_t row = (s.k / 2 + 15) / 16 * 16;
          check_against_host(s, a_signed, w_signed, W4A4Path::kAuto, kernel, row + 16, row + 32, rng);
        }
      }
    }
  }
  for (bool a_signed : {false, true}) {  // extreme codes only
    for (bool w_signed : {true, false})
      check_against_host(Shape{64, 72, 2048}, a_signed, w_signed, W4A4Path::kAuto, W4A4Kernel::kWgmma, 1040, 1024, rng,
                         true);
  }
}

TEST_CASE("W4A4Mma::kAuto is native INT4 MMA before Hopper and widened s8 from Hopper on") {
  const auto paths = oq::test::w4a4_auto_paths_on_device();
  CAPTURE(paths.compute_capability_major);
  const bool expect_native = paths.compute_capability_major < 9;  // docs/design.md §7: no INT4 tensor cores on sm_90
  CHECK(paths.simple_native_s4 == expect_native);
  CHECK(paths.multistage_native_s4 == expect_native);
}
