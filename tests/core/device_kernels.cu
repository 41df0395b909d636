#include "device_kernels.hpp"

#include <oq/core/int4.hpp>
#include <oq/core/quant_math.hpp>
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

__global__ void params_kernel(const float* lo, const float* hi, const float* clip, const int* bits, int n,
                              float* asym_scale, float* asym_zero, float* sym_scale, float* full_scale) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const auto asym = oq::core::asymmetric_params(lo[i], hi[i], clip[i], bits[i]);
  asym_scale[i] = asym.scale;
  asym_zero[i] = asym.zero;
  const float absmax = fmaxf(fabsf(lo[i]), fabsf(hi[i]));
  sym_scale[i] = oq::core::symmetric_params(absmax, clip[i], bits[i]).scale;
  full_scale[i] = oq::core::symmetric_full_range_params(absmax, clip[i], bits[i]).scale;
}

using oq::test::DeviceBuffer;

template <class T>
void copy_to_device(DeviceBuffer<T>& d, const std::vector<T>& v) {
  check_cuda(cudaMemcpy(d.ptr, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
}

template <class T>
std::vector<T> to_host(const DeviceBuffer<T>& d, std::size_t n) {
  std::vector<T> v(n);
  check_cuda(cudaMemcpy(v.data(), d.ptr, n * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
  return v;
}

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

ParamsDeviceResults run_params_on_device(const std::vector<float>& lo, const std::vector<float>& hi,
                                         const std::vector<float>& clip, const std::vector<int>& bits) {
  const std::size_t n = lo.size();
  if (hi.size() != n || clip.size() != n || bits.size() != n)
    throw std::invalid_argument("run_params_on_device: lo, hi, clip and bits must have one size");
  if (n == 0) return {};
  DeviceBuffer<float> d_lo(n), d_hi(n), d_clip(n);
  DeviceBuffer<int> d_bits(n);
  copy_to_device(d_lo, lo);
  copy_to_device(d_hi, hi);
  copy_to_device(d_clip, clip);
  copy_to_device(d_bits, bits);
  DeviceBuffer<float> asym_scale(n), asym_zero(n), sym_scale(n), full_scale(n);
  params_kernel<<<static_cast<unsigned>((n + 255) / 256), 256>>>(d_lo.ptr, d_hi.ptr, d_clip.ptr, d_bits.ptr,
                                                                 static_cast<int>(n), asym_scale.ptr, asym_zero.ptr,
                                                                 sym_scale.ptr, full_scale.ptr);
  check_cuda(cudaGetLastError(), "params_kernel launch");
  check_cuda(cudaDeviceSynchronize(), "params_kernel");
  return {to_host(asym_scale, n), to_host(asym_zero, n), to_host(sym_scale, n), to_host(full_scale, n)};
}

}  // namespace oq::test
