// Launchers that run oq's OQ_HOST_DEVICE core helpers on a GPU, so the device
// results can be compared with the host ones (tests/core/device_test.cpp).
#pragma once

#include <cstdint>
#include <vector>

namespace oq::test {

struct CoreDeviceResults {
  std::vector<float> rounded;        ///< core::round_half_even of each value
  std::vector<std::uint8_t> repacked;  ///< pack_s4x2(unpack_s4_first(b), unpack_s4_second(b)) for b = 0..255
  std::vector<std::uint64_t> widened;  ///< core::widen_s4x8_to_s8x8 of each word
};

/// Runs the helpers on device 0; throws std::runtime_error naming a failed CUDA call.
CoreDeviceResults run_core_on_device(const std::vector<float>& values, const std::vector<std::uint32_t>& words);

/// core's parameter formulas of group i, whose values span [lo[i], hi[i]],
/// at clip ratio clip[i] and bits[i] bits.
struct ParamsDeviceResults {
  std::vector<float> asym_scale, asym_zero;  ///< core::asymmetric_params
  std::vector<float> sym_scale;              ///< core::symmetric_params of max(|lo|, |hi|)
  std::vector<float> full_scale;             ///< core::symmetric_full_range_params of the same
};

/// Runs core's parameter formulas on device 0 (float, as the kernels do).
ParamsDeviceResults run_params_on_device(const std::vector<float>& lo, const std::vector<float>& hi,
                                         const std::vector<float>& clip, const std::vector<int>& bits);

}  // namespace oq::test
