#include "gemm_w4a4_launch.hpp"

#include <oq/cuda/device/gemm_w4a4.cuh>
#include <oq/cuda/device/gemm_w4a4_dispatch.cuh>
#include <oq/cuda/device/gemm_w4a4_multistage.cuh>
#include <oq/cuda/device/gemm_w4a4_wgmma.cuh>

#include "support/device_buffer.cuh"

#include <cmath>
#include <stdexcept>

namespace {

using oq::test::check_cuda;
using oq::test::DeviceBuffer;
using Gemm = oq::cuda::device::GemmW4A4<float>;
using oq::cuda::kernel::W4A4Mma;
using oq::test::W4A4Kernel;
using oq::test::W4A4Path;
template <W4A4Mma kMma>
using GemmOn = oq::cuda::device::GemmW4A4<float, 4, kMma>;
template <W4A4Mma kMma>
using MultistageOn = oq::cuda::device::GemmW4A4Multistage<float, kMma>;

using Wgmma = oq::cuda::device::GemmW4A4Wgmma<float>;
using WgmmaOneBuffer = oq::cuda::device::GemmW4A4Wgmma<float, 3, 1>;

oq::cuda::Report run_on(const oq::test::W4A4Problem& q, const Gemm::Params& p) {
  if (q.kernel == W4A4Kernel::kWgmma) return Wgmma::run(p);
  if (q.kernel == W4A4Kernel::kWgmmaOneBuffer) return WgmmaOneBuffer::run(p);
  if (q.kernel == W4A4Kernel::kMultistage) {
    return q.path == W4A4Path::kNativeS4     ? MultistageOn<W4A4Mma::kNativeS4>::run(p)
           : q.path == W4A4Path::kWidenToS8 ? MultistageOn<W4A4Mma::kWidenToS8>::run(p)
                                            : MultistageOn<W4A4Mma::kAuto>::run(p);
  }
  return q.path == W4A4Path::kNativeS4     ? GemmOn<W4A4Mma::kNativeS4>::run(p)
         : q.path == W4A4Path::kWidenToS8 ? GemmOn<W4A4Mma::kWidenToS8>::run(p)
                                          : Gemm::run(p);
}

Gemm::Params params_of(const oq::test::W4A4Problem& q) {
  Gemm::Params p;
  p.m = q.m;
  p.n = q.n;
  p.k = q.k;
  p.ld_a = q.ld_a;
  p.ld_w = q.ld_w;
  p.a_signed = q.a_signed;
  p.w_signed = q.w_signed;
  p.ld_acc = q.n;
  p.ld_y = q.n;
  return p;
}

template <class T>
void upload(DeviceBuffer<T>& d, const std::vector<T>& h) {
  if (!h.empty()) check_cuda(cudaMemcpy(d.ptr, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
}

__global__ void auto_paths_kernel(int* out) {
  out[0] = oq::cuda::kernel::GemmW4A4<float>::native_s4() ? 1 : 0;
  out[1] = oq::cuda::kernel::GemmW4A4Multistage<float, true, true>::native_s4() ? 1 : 0;
}

}  // namespace

namespace oq::test {

W4A4AutoPaths w4a4_auto_paths_on_device() {
  DeviceBuffer<int> d_out(2);
  check_cuda(cudaMemset(d_out.ptr, 0xFF, 2 * sizeof(int)), "cudaMemset");
  auto_paths_kernel<<<1, 1>>>(d_out.ptr);
  check_cuda(cudaGetLastError(), "auto_paths_kernel launch");
  int out[2] = {-1, -1};
  check_cuda(cudaMemcpy(out, d_out.ptr, sizeof out, cudaMemcpyDeviceToHost), "cudaMemcpy");
  if ((out[0] != 0 && out[0] != 1) || (out[1] != 0 && out[1] != 1))
    throw std::runtime_error("auto_paths_kernel did not run");
  int device = 0, major = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
  return {out[0] == 1, out[1] == 1, major};
}

namespace {
template <bool kASigned, bool kWSigned>
std::int64_t widened_dot_for(std::uint32_t a, std::uint32_t w) {
  using Widen = oq::cuda::kernel::W4A4Widen<kASigned, kWSigned>;
  std::uint32_t a8[2], w8[2];
  Widen::template widen<kASigned>(a, a8[0], a8[1]);
  Widen::template widen<kWSigned>(w, w8[0], w8[1]);
  std::int32_t sum = 0;  // int32, as the tensor cores accumulate
  for (int r = 0; r < 2; ++r)
    for (int byte = 0; byte < 4; ++byte)
      sum += static_cast<std::int8_t>(a8[r] >> (8 * byte)) * static_cast<std::int8_t>(w8[r] >> (8 * byte));
  return sum >> Widen::kWidenShift;
}
}  // namespace

std::int64_t widened_dot(std::uint32_t a, std::uint32_t w, bool a_signed, bool w_signed) {
  if (a_signed) return w_signed ? widened_dot_for<true, true>(a, w) : widened_dot_for<true, false>(a, w);
  return w_signed ? widened_dot_for<false, true>(a, w) : widened_dot_for<false, false>(a, w);
}

namespace {
// Params for argument-only calls: 16-byte aligned stand-ins for the buffers.
Gemm::Params host_params(const W4A4Problem& q) {
  auto p = params_of(q);
  alignas(16) static std::uint8_t bytes[16];
  static float f[1];
  static std::int32_t sums[1];
  p.a = bytes;
  p.w = bytes;
  p.scale_a = p.scale_w = f;
  p.zero_w = q.w_signed ? nullptr : f;
  p.zero_a = q.a_signed ? nullptr : f;
  p.sum_a = q.drop_sum_a ? nullptr : sums;
  p.sum_w = sums;
  p.y = q.with_y ? f : nullptr;
  return p;
}
}  // namespace

std::string choose_w4a4_kernel(const W4A4Problem& q, const FakeDevice& device) {
  oq::cuda::device::DeviceInfo info;
  info.major = device.major;
  info.minor = device.minor;
  info.multiprocessors = device.multiprocessors;
  info.shared_memory_optin = device.shared_memory_optin;
  oq::cuda::device::W4A4Kernel kernel{};
  const auto report = oq::cuda::device::GemmW4A4Dispatch<float>::choose(host_params(q), info, kernel);
  return report.ok() ? std::string(oq::cuda::device::to_string(kernel)) : report.message;
}

std::string run_w4a4_uninitialized() {
  const oq::cuda::device::GemmW4A4Dispatch<float> gemm;
  const auto report = gemm.run();
  return report.ok() ? std::string() : report.message;
}

std::string check_w4a4_arguments(const W4A4Problem& q) {
  auto p = params_of(q);
  alignas(16) static std::uint8_t bytes[16];
  static float f[1];
  static std::int32_t sums[1];
  p.a = bytes;
  p.w = bytes;
  p.scale_a = p.scale_w = f;
  p.zero_w = q.w_signed ? nullptr : f;
  p.zero_a = q.a_signed ? nullptr : f;
  p.sum_a = q.drop_sum_a ? nullptr : sums;
  p.sum_w = sums;
  p.y = q.with_y ? f : nullptr;
  const bool wgmma = q.kernel == W4A4Kernel::kWgmma || q.kernel == W4A4Kernel::kWgmmaOneBuffer;
  const auto report = wgmma                                ? Wgmma::check_arguments(p)
                      : q.kernel == W4A4Kernel::kMultistage ? MultistageOn<W4A4Mma::kAuto>::check_arguments(p)
                                                            : Gemm::check_arguments(p);
  return report.ok() ? std::string() : report.message;
}

W4A4Result gemm_w4a4_on_device(const W4A4Problem& q, const std::vector<std::uint8_t>& a,
                               const std::vector<std::uint8_t>& w, const std::vector<float>& scale_a,
                               const std::vector<float>& zero_a, const std::vector<float>& scale_w,
                               const std::vector<float>& zero_w, const std::vector<std::int32_t>& sum_a,
                               const std::vector<std::int32_t>& sum_w) {
  const auto out = static_cast<std::size_t>(q.m * q.n);
  DeviceBuffer<std::uint8_t> d_a(a.size()), d_w(w.size());
  DeviceBuffer<float> d_sa(scale_a.size()), d_za(zero_a.size()), d_sw(scale_w.size()), d_zw(zero_w.size()), d_y(out);
  DeviceBuffer<std::int32_t> d_suma(sum_a.size()), d_sumw(sum_w.size()), d_acc(out);
  upload(d_a, a);
  upload(d_w, w);
  upload(d_sa, scale_a);
  upload(d_za, zero_a);
  upload(d_sw, scale_w);
  upload(d_zw, zero_w);
  upload(d_suma, sum_a);
  upload(d_sumw, sum_w);
  check_cuda(cudaMemset(d_acc.ptr, 0xAB, out * sizeof(std::int32_t)), "poison acc");
  const std::vector<float> nan(out, std::nanf(""));
  upload(d_y, nan);

  auto p = params_of(q);
  p.a = d_a.ptr;
  p.w = d_w.ptr;
  p.scale_a = d_sa.ptr;
  p.scale_w = d_sw.ptr;
  p.zero_a = zero_a.empty() ? nullptr : d_za.ptr;
  p.zero_w = zero_w.empty() ? nullptr : d_zw.ptr;
  p.sum_a = d_suma.ptr;
  p.sum_w = d_sumw.ptr;
  p.acc = d_acc.ptr;
  p.y = d_y.ptr;
  const auto report = run_on(q, p);
  if (!report.ok()) throw std::runtime_error(report.message);
  check_cuda(cudaDeviceSynchronize(), "gemm_w4a4_kernel");
  W4A4Result result{std::vector<std::int32_t>(out), std::vector<float>(out)};
  check_cuda(cudaMemcpy(result.acc.data(), d_acc.ptr, out * sizeof(std::int32_t), cudaMemcpyDeviceToHost), "cudaMemcpy");
  check_cuda(cudaMemcpy(result.y.data(), d_y.ptr, out * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
  return result;
}

}  // namespace oq::test
