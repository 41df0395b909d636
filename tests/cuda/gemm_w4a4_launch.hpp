// Plain-C++ entry points to the W4A4 GEMM launcher (tests/cuda/gemm_w4a4_test.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace oq::test {

/// oq::cuda::kernel::W4A4Mma, spelled here without CUDA headers.
enum class W4A4Path { kAuto, kNativeS4, kWidenToS8 };
/// Which launcher: device::GemmW4A4, GemmW4A4Multistage or GemmW4A4Wgmma
/// with two or one widened buffers (these ignore the path: INT4 widened to s8).
enum class W4A4Kernel { kSimple, kMultistage, kWgmma, kWgmmaOneBuffer };

struct W4A4Problem {
  std::int64_t m = 0, n = 0, k = 0;
  std::int64_t ld_a = 0, ld_w = 0;
  bool a_signed = true, w_signed = true;
  bool with_y = true;
  bool drop_sum_a = false;  ///< argument checks: zero_w without sum_a
  W4A4Path path = W4A4Path::kAuto;
  W4A4Kernel kernel = W4A4Kernel::kSimple;
};

/// What W4A4Mma::kAuto resolves to in the code the current GPU runs (a
/// kernel reads the compile-time choice), and that GPU's compute capability.
struct W4A4AutoPaths {
  bool simple_native_s4 = false;
  bool multistage_native_s4 = false;
  int compute_capability_major = 0;
};
W4A4AutoPaths w4a4_auto_paths_on_device();

/// The widened path's dot product of two packed words (8 codes each) as the
/// kernels form it: both widened by GemmW4A4Multistage::widen, the s8 lanes
/// multiplied pairwise, the sum shifted back by kWidenShift. Needs no GPU.
std::int64_t widened_dot(std::uint32_t a, std::uint32_t w, bool a_signed, bool w_signed);

/// check_arguments of problem.kernel's launcher ("" when fine). Needs no GPU.
std::string check_w4a4_arguments(const W4A4Problem& problem);

/// A made-up device (oq::cuda::device::DeviceInfo, spelled here without CUDA headers).
struct FakeDevice {
  int major = 0, minor = 0;
  int multiprocessors = 0;
  int shared_memory_optin = 0;  ///< bytes per block
};

/// The kernel device::GemmW4A4Dispatch<float> chooses for `problem` (its
/// path and kernel fields ignored) on `device`: "GemmW4A4Wgmma",
/// "GemmW4A4Multistage" or "GemmW4A4", or the failure's message where none
/// can run. Needs no GPU.
std::string choose_w4a4_kernel(const W4A4Problem& problem, const FakeDevice& device);

/// The message of device::GemmW4A4Dispatch<float>'s run(stream) on an object
/// that was never initialized ("" if it succeeded). Needs no GPU.
std::string run_w4a4_uninitialized();

struct W4A4Result {
  std::vector<std::int32_t> acc;  ///< m × n
  std::vector<float> y;           ///< m × n
};

/// Runs problem.kernel's launcher (float out) on problem.path, writing both
/// accumulators and outputs (poisoned first).
/// zero_a / zero_w empty means symmetric.
W4A4Result gemm_w4a4_on_device(const W4A4Problem& problem, const std::vector<std::uint8_t>& a,
                               const std::vector<std::uint8_t>& w, const std::vector<float>& scale_a,
                               const std::vector<float>& zero_a, const std::vector<float>& scale_w,
                               const std::vector<float>& zero_w, const std::vector<std::int32_t>& sum_a,
                               const std::vector<std::int32_t>& sum_w);

}  // namespace oq::test
