// Plain-C++ entry points to the per-token quantization launcher, so that the
// doctest cases (and Eigen) stay in .cpp files (DESIGN §1).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace oq::test {

enum class DeviceInput { kFloat, kHalf, kBf16 };

struct PerTokenArgs {
  std::int64_t rows = 0, cols = 0, ld_x = 0, ld_codes = 0;
  int bits = 4;
  bool symmetric = false;
  float clip_ratio = 1.0f;
  int block_size = 0;        ///< with a rotation
  int hadamard_block = 0;    ///< fused Walsh–Hadamard blocks instead
  bool with_rotation = false;
  bool null_output = false;  ///< pass a null scales pointer
};

/// QuantizePerToken<float>::check_arguments on these arguments: "" when fine,
/// else the message. Needs no GPU.
std::string check_per_token_arguments(const PerTokenArgs& args);

struct PerTokenResult {
  std::vector<std::uint8_t> codes;  ///< rows × ld_codes bytes
  std::vector<float> scales, zeros;
  std::vector<std::int32_t> sums;
  std::vector<float> x_as_input;  ///< x after rounding to the input type, as float
};

/// Whether the kernel reads rows with 16-byte loads (first) and writes codes
/// as 32-bit words (second) on these arguments with aligned buffers. No GPU.
std::pair<bool, bool> per_token_wide_paths(const PerTokenArgs& args, DeviceInput input);

/// Runs the kernel on x (rows × cols, row-major, ld_x = cols), outputs poisoned
/// with 0xAB first so that unwritten bytes show. Throws std::runtime_error on
/// any failure, with the launcher's message.
PerTokenResult quantize_per_token_on_device(const std::vector<float>& x, const PerTokenArgs& args, DeviceInput input,
                                            const std::vector<float>& rotation);

}  // namespace oq::test
