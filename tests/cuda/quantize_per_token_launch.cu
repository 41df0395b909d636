#include "quantize_per_token_launch.hpp"

#include <oq/cuda/device/quantize_per_token.cuh>
#include <oq/cuda/numeric.cuh>

#include "support/device_buffer.cuh"

#include <stdexcept>

namespace {

using oq::test::DeviceBuffer;

using oq::test::check_cuda;

template <class Element>
oq::cuda::kernel::QuantizePerTokenParams<Element> params_of(const oq::test::PerTokenArgs& a) {
  oq::cuda::kernel::QuantizePerTokenParams<Element> p;
  p.rows = a.rows;
  p.cols = a.cols;
  p.ld_x = a.ld_x;
  p.ld_codes = a.ld_codes;
  p.bits = a.bits;
  p.symmetric = a.symmetric;
  p.clip_ratio = a.clip_ratio;
  p.block_size = a.block_size;
  p.hadamard_block = a.hadamard_block;
  return p;
}

template <class Element>
oq::test::PerTokenResult run(const std::vector<float>& x, const oq::test::PerTokenArgs& a,
                             const std::vector<float>& rotation) {
  oq::test::PerTokenResult result;
  std::vector<Element> host(x.size());
  result.x_as_input.resize(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    host[i] = oq::cuda::from_float<Element>(x[i]);
    result.x_as_input[i] = oq::cuda::to_float(host[i]);
  }
  const auto rows = static_cast<std::size_t>(a.rows);
  DeviceBuffer<Element> d_x(host.size());
  DeviceBuffer<std::uint8_t> d_codes(rows * static_cast<std::size_t>(a.ld_codes));
  DeviceBuffer<float> d_scales(rows), d_zeros(rows), d_rotation(rotation.size());
  DeviceBuffer<std::int32_t> d_sums(rows);
  check_cuda(cudaMemcpy(d_x.ptr, host.data(), host.size() * sizeof(Element), cudaMemcpyHostToDevice), "cudaMemcpy x");
  if (!rotation.empty())
    check_cuda(cudaMemcpy(d_rotation.ptr, rotation.data(), rotation.size() * sizeof(float), cudaMemcpyHostToDevice),
          "cudaMemcpy rotation");
  check_cuda(cudaMemset(d_codes.ptr, 0xAB, rows * static_cast<std::size_t>(a.ld_codes)), "cudaMemset");
  check_cuda(cudaMemset(d_scales.ptr, 0xAB, rows * sizeof(float)), "cudaMemset");
  check_cuda(cudaMemset(d_zeros.ptr, 0xAB, rows * sizeof(float)), "cudaMemset");
  check_cuda(cudaMemset(d_sums.ptr, 0xAB, rows * sizeof(std::int32_t)), "cudaMemset");

  auto p = params_of<Element>(a);
  p.x = d_x.ptr;
  p.codes = d_codes.ptr;
  p.scales = d_scales.ptr;
  p.zeros = d_zeros.ptr;
  p.code_sums = d_sums.ptr;
  p.rotation = rotation.empty() ? nullptr : d_rotation.ptr;
  const oq::cuda::Report report = oq::cuda::device::QuantizePerToken<Element>::run(p);
  if (!report.ok()) throw std::runtime_error(report.message);
  check_cuda(cudaDeviceSynchronize(), "quantize_per_token_kernel");

  result.codes.resize(rows * static_cast<std::size_t>(a.ld_codes));
  result.scales.resize(rows);
  result.zeros.resize(rows);
  result.sums.resize(rows);
  check_cuda(cudaMemcpy(result.codes.data(), d_codes.ptr, result.codes.size(), cudaMemcpyDeviceToHost), "cudaMemcpy");
  check_cuda(cudaMemcpy(result.scales.data(), d_scales.ptr, rows * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
  check_cuda(cudaMemcpy(result.zeros.data(), d_zeros.ptr, rows * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
  check_cuda(cudaMemcpy(result.sums.data(), d_sums.ptr, rows * sizeof(std::int32_t), cudaMemcpyDeviceToHost), "cudaMemcpy");
  return result;
}

}  // namespace

namespace oq::test {

namespace {
template <class Element>
std::pair<bool, bool> wide_paths(const PerTokenArgs& args) {
  const auto p = params_of<Element>(args);  // null buffers: aligned like any cudaMalloc result
  using Kernel = typename oq::cuda::device::QuantizePerToken<Element>::Kernel;
  return {Kernel::wide_input(p), Kernel::wide_output(p)};
}
}  // namespace

std::pair<bool, bool> per_token_wide_paths(const PerTokenArgs& args, DeviceInput input) {
  switch (input) {
    case DeviceInput::kHalf: return wide_paths<__half>(args);
    case DeviceInput::kBf16: return wide_paths<__nv_bfloat16>(args);
    default: return wide_paths<float>(args);
  }
}

std::string check_per_token_arguments(const PerTokenArgs& args) {
  auto p = params_of<float>(args);
  static float dummy[1];
  static std::uint8_t dummy_codes[1];
  p.x = dummy;
  p.codes = dummy_codes;
  p.scales = args.null_output ? nullptr : dummy;
  p.zeros = dummy;
  p.rotation = args.with_rotation ? dummy : nullptr;
  const auto report = oq::cuda::device::QuantizePerToken<float>::check_arguments(p);
  return report.ok() ? std::string() : report.message;
}

PerTokenResult quantize_per_token_on_device(const std::vector<float>& x, const PerTokenArgs& args, DeviceInput input,
                                            const std::vector<float>& rotation) {
  switch (input) {
    case DeviceInput::kFloat: return run<float>(x, args, rotation);
    case DeviceInput::kHalf: return run<__half>(x, args, rotation);
    case DeviceInput::kBf16: return run<__nv_bfloat16>(x, args, rotation);
  }
  throw std::invalid_argument("unknown DeviceInput");
}

}  // namespace oq::test
