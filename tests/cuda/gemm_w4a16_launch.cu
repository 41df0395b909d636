#include "gemm_w4a16_launch.hpp"

#include <oq/cuda/device/gemm_w4a16.cuh>
#include <oq/cuda/device/gemm_w4a16_tensorop.cuh>
#include <oq/cuda/numeric.cuh>

#include "support/device_buffer.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstring>
#include <stdexcept>

namespace {

using oq::test::check_cuda;
using oq::test::DeviceBuffer;

template <class ElementA>
typename oq::cuda::device::GemmW4A16<ElementA, float>::Params params_of(const oq::test::W4A16Problem& q) {
  typename oq::cuda::device::GemmW4A16<ElementA, float>::Params p;
  p.m = q.m;
  p.n = q.n;
  p.k = q.k;
  p.group_size = q.group_size;
  p.ld_a = q.ld_a;
  p.ld_w = q.ld_w;
  p.ld_y = q.ld_y;
  p.symmetric = q.symmetric;
  return p;
}

template <class ElementA>
std::vector<float> run(const oq::test::W4A16Problem& q, std::vector<float>& a, const std::vector<std::uint8_t>& w,
                       const std::vector<float>& scales, const std::vector<float>& zeros) {
  std::vector<ElementA> a16(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    a16[i] = oq::cuda::from_float<ElementA>(a[i]);
    a[i] = oq::cuda::to_float(a16[i]);
  }
  const auto out_size = static_cast<std::size_t>(q.m * q.ld_y);
  DeviceBuffer<ElementA> d_a(a16.size());
  DeviceBuffer<std::uint8_t> d_w(w.size());
  DeviceBuffer<float> d_scales(scales.size()), d_zeros(zeros.size()), d_y(out_size);
  check_cuda(cudaMemcpy(d_a.ptr, a16.data(), a16.size() * sizeof(ElementA), cudaMemcpyHostToDevice), "cudaMemcpy a");
  check_cuda(cudaMemcpy(d_w.ptr, w.data(), w.size(), cudaMemcpyHostToDevice), "cudaMemcpy w");
  check_cuda(cudaMemcpy(d_scales.ptr, scales.data(), scales.size() * sizeof(float), cudaMemcpyHostToDevice),
             "cudaMemcpy scales");
  if (!zeros.empty())
    check_cuda(cudaMemcpy(d_zeros.ptr, zeros.data(), zeros.size() * sizeof(float), cudaMemcpyHostToDevice),
               "cudaMemcpy zeros");
  std::vector<float> y(out_size, std::nanf(""));
  check_cuda(cudaMemcpy(d_y.ptr, y.data(), out_size * sizeof(float), cudaMemcpyHostToDevice), "poison y");

  auto p = params_of<ElementA>(q);
  p.a = d_a.ptr;
  p.w = d_w.ptr;
  p.scales = d_scales.ptr;
  p.zeros = q.symmetric ? nullptr : d_zeros.ptr;
  p.y = d_y.ptr;
  const auto report = q.tensor_op ? oq::cuda::device::GemmW4A16TensorOp<ElementA, float>::run(p)
                                  : oq::cuda::device::GemmW4A16<ElementA, float>::run(p);
  if (!report.ok()) throw std::runtime_error(report.message);
  check_cuda(cudaDeviceSynchronize(), "gemm_w4a16_kernel");
  check_cuda(cudaMemcpy(y.data(), d_y.ptr, out_size * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy y");
  return y;
}

}  // namespace

namespace oq::test {

namespace {
template <class ElementA, bool kSymmetric>
W4A16ExactPair exact_pair_for(std::uint8_t byte, float zero) {
  using Kernel = oq::cuda::kernel::GemmW4A16TensorOp<ElementA, float, kSymmetric>;
  W4A16ExactPair out;
  out.exact = Kernel::exact_zero(zero);
  if (!out.exact) return out;
  const std::uint32_t pair = Kernel::exact_pair(byte, Kernel::bias2(zero));
  ElementA v[2];
  std::memcpy(v, &pair, sizeof pair);
  out.first = oq::cuda::to_float(v[0]);
  out.second = oq::cuda::to_float(v[1]);
  return out;
}
}  // namespace

W4A16ExactPair w4a16_exact_pair(std::uint8_t byte, float zero, bool bf16, bool symmetric) {
  if (bf16)
    return symmetric ? exact_pair_for<__nv_bfloat16, true>(byte, zero) : exact_pair_for<__nv_bfloat16, false>(byte, zero);
  return symmetric ? exact_pair_for<__half, true>(byte, zero) : exact_pair_for<__half, false>(byte, zero);
}

bool w4a16_wide_loop(const W4A16Problem& q) {
  auto p = params_of<__half>(q);  // p.w == nullptr: aligned like any cudaMalloc result
  return oq::cuda::device::GemmW4A16<__half, float>::KernelFor<false>::wide(p);
}

std::string check_w4a16_arguments(const W4A16Problem& problem) {
  auto p = params_of<__half>(problem);
  alignas(16) static __half a[16];
  alignas(16) static std::uint8_t w[16];
  static float s[1];
  static float y[1];
  p.a = problem.misalign_a ? a + 1 : a;
  p.w = w;
  p.scales = s;
  p.zeros = s;
  p.y = y;
  const auto report = problem.tensor_op ? oq::cuda::device::GemmW4A16TensorOp<__half, float>::check_arguments(p)
                                        : oq::cuda::device::GemmW4A16<__half, float>::check_arguments(p);
  return report.ok() ? std::string() : report.message;
}

std::vector<float> gemm_w4a16_on_device(const W4A16Problem& problem, std::vector<float>& a, bool bf16,
                                        const std::vector<std::uint8_t>& w, const std::vector<float>& scales,
                                        const std::vector<float>& zeros) {
  return bf16 ? run<__nv_bfloat16>(problem, a, w, scales, zeros) : run<__half>(problem, a, w, scales, zeros);
}

}  // namespace oq::test
