// GPU test (label `gpu`): the OQ_HOST_DEVICE helpers give the same bits on the
// device as on the host.
#include "device_kernels.hpp"

#include <oq/core/int4.hpp>
#include <oq/core/quant_math.hpp>
#include <oq/core/rounding.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

TEST_CASE("core helpers agree between device and host") {
  std::vector<float> values;
  for (int k = -300; k <= 300; ++k) {
    values.push_back(static_cast<float>(k) + 0.5f);
    values.push_back(std::nextafter(static_cast<float>(k) + 0.5f, 0.0f));
  }
  std::mt19937 rng(9);
  std::normal_distribution<float> dist(0.0f, 100.0f);
  std::vector<std::uint32_t> words;
  for (int i = 0; i < 4096; ++i) {
    values.push_back(dist(rng));
    words.push_back(rng());
  }
  const auto results = oq::test::run_core_on_device(values, words);
  for (std::size_t i = 0; i < values.size(); ++i) {
    const float host = oq::core::round_half_even(values[i]);
    CHECK(std::memcmp(&host, &results.rounded[i], sizeof(float)) == 0);
    CHECK(results.rounded[i] == std::nearbyint(values[i]));
  }
  for (int b = 0; b < 256; ++b) CHECK(results.repacked[static_cast<std::size_t>(b)] == b);
  for (std::size_t i = 0; i < words.size(); ++i) CHECK(results.widened[i] == oq::core::widen_s4x8_to_s8x8(words[i]));
}

TEST_CASE("quantization parameters agree between device and host bit for bit (no contraction into FMA)") {
  // Mixed-sign, one-sided and degenerate ranges, clip ratios that make c·x
  // inexact: nvcc's default FMA contraction of c·max − c·min would round the
  // asymmetric scale once where the host rounds twice.
  std::mt19937 rng(21);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> lo, hi, clip;
  std::vector<int> bits;
  const float clips[] = {0.9f, 0.8f, 0.85f, 1.0f};
  for (int i = 0; i < 8192; ++i) {
    float a = normal(rng) * (i % 7 == 0 ? 1000.0f : 1.0f), b = normal(rng);
    if (i % 11 == 0) b = a;                     // constant group
    if (i % 13 == 0) a = std::fabs(a) + 0.5f;   // entirely above 0 (with b possibly too)
    lo.push_back(std::min(a, b));
    hi.push_back(std::max(a, b));
    clip.push_back(clips[i % 4]);
    bits.push_back(2 + i % 7);
  }
  lo.push_back(0.0f), hi.push_back(0.0f), clip.push_back(0.9f), bits.push_back(4);  // all zero
  const auto device = oq::test::run_params_on_device(lo, hi, clip, bits);
  auto same_bits = [](float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; };
  int mismatches = 0;
  for (std::size_t i = 0; i < lo.size(); ++i) {
    const auto asym = oq::core::asymmetric_params(lo[i], hi[i], clip[i], bits[i]);
    const float absmax = std::max(std::fabs(lo[i]), std::fabs(hi[i]));
    const bool same = same_bits(device.asym_scale[i], asym.scale) && same_bits(device.asym_zero[i], asym.zero) &&
                      same_bits(device.sym_scale[i], oq::core::symmetric_params(absmax, clip[i], bits[i]).scale) &&
                      same_bits(device.full_scale[i],
                                oq::core::symmetric_full_range_params(absmax, clip[i], bits[i]).scale);
    if (!same && mismatches++ < 5) {
      INFO("lo ", lo[i], " hi ", hi[i], " clip ", clip[i], " bits ", bits[i], ": device scale ", device.asym_scale[i],
           " host ", asym.scale);
      CHECK(same);
    }
  }
  CHECK(mismatches == 0);
}
