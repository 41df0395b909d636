// GPU test (label `gpu`): the OQ_HOST_DEVICE helpers give the same bits on the
// device as on the host.
#include "device_kernels.hpp"

#include <oq/core/int4.hpp>
#include <oq/core/rounding.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>

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
