// Plain-C++ entry points to the per-token quantization launcher, so that the
// doctest cases (and Eigen) stay in .cpp files (docs/design.md §1).
#pragma once

#include <cstddef>
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
  int x_offset_bytes = 0;      ///< argument checks only: misalign x by this many bytes
  int codes_offset_bytes = 0;  ///< argument checks only: misalign codes
};

/// An instantiation of device::QuantizePerTokenTensorOp<Element, block, terms, groups>.
struct TensorOpConfig {
  int block = 128;
  int terms = 2;
  int groups = 1;
  int passes = 0;  ///< 0: run()'s choice; 1: kResidentY; 2: kRecompute; 3: kResidentYPair
};

/// Whether the current device has thread-block clusters (compute capability
/// 9.0 or newer), which kResidentYPair needs.
bool device_has_clusters();

/// The passes (1, 2, 3 as TensorOpConfig::passes) QuantizePerTokenTensorOp's
/// run() would take on the current device for these arguments.
int tensorop_chosen_passes(const PerTokenArgs& args, TensorOpConfig config);

/// QuantizePerTokenTensorOp::shared_memory_bytes for config.passes (1, 2, 3).
/// Needs no GPU.
std::size_t tensorop_shared_memory_bytes(const PerTokenArgs& args, TensorOpConfig config);

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

/// Whether the kernel keeps each row in registers (Kernel::register_path)
/// on these arguments with aligned buffers. No GPU.
bool per_token_register_path(const PerTokenArgs& args, DeviceInput input);

/// The staged float kernel (no rotation) on these arguments: the dynamic
/// shared memory it launches with (first), and the limit its kernel
/// attribute allows now (second, cudaFuncGetAttributes'
/// maxDynamicSharedSizeBytes on the current device).
std::pair<std::size_t, int> per_token_staged_shared_memory(const PerTokenArgs& args);

/// Runs the kernel on x (rows × cols, row-major, ld_x = cols), outputs poisoned
/// with 0xAB first so that unwritten bytes show. Throws std::runtime_error on
/// any failure, with the launcher's message.
PerTokenResult quantize_per_token_on_device(const std::vector<float>& x, const PerTokenArgs& args, DeviceInput input,
                                            const std::vector<float>& rotation);

/// QuantizePerTokenTensorOp<__nv_bfloat16, config…>::check_arguments: "" or
/// the message. Needs no GPU. Configs: those of quantize_per_token_tensorop_on_device.
std::string check_per_token_tensorop_arguments(const PerTokenArgs& args, TensorOpConfig config);

/// Runs device::QuantizePerTokenTensorOp (input kHalf or kBf16) as
/// quantize_per_token_on_device runs QuantizePerToken. Configs (input, block,
/// terms, groups): (kBf16, 128, 2, 1), (kBf16, 128, 1, 2), (kHalf, 64, 2, 2);
/// others throw std::invalid_argument.
PerTokenResult quantize_per_token_tensorop_on_device(const std::vector<float>& x, const PerTokenArgs& args,
                                                     DeviceInput input, const std::vector<float>& rotation,
                                                     TensorOpConfig config);

struct TensorOpReplay {
  std::vector<double> y;           ///< 8 × block, row-major: the replayed X·R
  std::vector<float> x_as_input;   ///< x rounded to the input type
  std::vector<float> r_as_input;   ///< R rounded to the input type (what terms = 1 multiplies by)
};

/// Replays, on the host, the warps of the tensor-core rotation on one block:
/// each lane's A registers from kernel::RotationOperand, its B registers as
/// the kernel reads them (RotationFragmentLayout), every mma.sync.m16n8k16
/// assembled from the 32 lanes by the PTX ISA's fragment layout and
/// multiplied in double, the accumulators scattered back through
/// acc_channel/acc_token. x: 8 × block (row-major), r: block × block
/// (row-major, R[input][output]). No GPU. block ∈ {32, 64, 128, 256},
/// terms ∈ {1, 2} (not 256 with 2), input kHalf or kBf16.
TensorOpReplay replay_tensorop_rotation(const std::vector<float>& x, const std::vector<float>& r, int block, int terms,
                                        DeviceInput input);

}  // namespace oq::test
