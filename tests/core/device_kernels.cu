#include "device_kernels.hpp"

#include <oq/core/int4.hpp>
#include <oq/core/rounding.hpp>

#include <cuda_runtime.h>

#include "support/device_buffer.cuh"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace {

using oq::test::check_cuda;

__global__ void core_kernel(const float* values, int n_values, float* rounded, std::uint8_t* repacked,
                            const std::uint32_t* words, int n_words, std::uint64_t* widened) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n_values) rounded[i] = oq::core::round_half_even(values[i]);
  if (i < 256) {
    const auto byte = static_cast<std::uint8_t>(i);
    repacked[i] = oq::core::pack_s4x2(oq::core::unpack_s4_first(byte), oq::core::unpack_s4_second(byte));
  }
  if (i < n_words) widened[i] = oq::core::widen_s4x8_to_s8x8(words[i]);
}

using oq::test::DeviceBuffer;

}  // namespace

namespace oq::test {

CoreDeviceResults run_core_on_device(const std::vector<float>& values, const std::vector<std::uint32_t>& words) {
  const int n_values = static_cast<int>(values.size());
  const int n_words = static_cast<int>(words.size());
  DeviceBuffer<float> d_values(values.size()), d_rounded(values.size());
  DeviceBuffer<std::uint8_t> d_repacked(256);
  DeviceBuffer<std::uint32_t> d_words(words.size());
  DeviceBuffer<std::uint64_t> d_widened(words.size());
  check_cuda(cudaMemcpy(d_values.ptr, values.data(), values.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
  check_cuda(cudaMemcpy(d_words.ptr, words.data(), words.size() * sizeof(std::uint32_t), cudaMemcpyHostToDevice),
        "cudaMemcpy");
  const int n = std::max(std::max(n_values, n_words), 256);
  core_kernel<<<(n + 255) / 256, 256>>>(d_values.ptr, n_values, d_rounded.ptr, d_repacked.ptr, d_words.ptr, n_words,
                                        d_widened.ptr);
  check_cuda(cudaGetLastError(), "core_kernel launch");
  check_cuda(cudaDeviceSynchronize(), "core_kernel");
  CoreDeviceResults results{std::vector<float>(values.size()), std::vector<std::uint8_t>(256),
                            std::vector<std::uint64_t>(words.size())};
  check_cuda(cudaMemcpy(results.rounded.data(), d_rounded.ptr, values.size() * sizeof(float), cudaMemcpyDeviceToHost),
        "cudaMemcpy");
  check_cuda(cudaMemcpy(results.repacked.data(), d_repacked.ptr, 256, cudaMemcpyDeviceToHost), "cudaMemcpy");
  check_cuda(cudaMemcpy(results.widened.data(), d_widened.ptr, words.size() * sizeof(std::uint64_t),
                   cudaMemcpyDeviceToHost),
        "cudaMemcpy");
  return results;
}

}  // namespace oq::test
