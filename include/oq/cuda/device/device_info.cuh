// oq/cuda/device/device_info.cuh: what the launchers know of a device — its
// compute capability, multiprocessors and per-block shared memory — read
// once per device and cached, and the checks made against it.
//
//   DeviceInfo info;
//   if (auto r = oq::cuda::device::current_device_info(info); !r.ok()) ...
//   require_arch<arch::Sm80>(info, "GemmW4A4");           // kUnsupportedDevice, named
//   require_shared_memory(info, bytes, "GemmW4A4Multistage", "its pipeline stages");
//
// A DeviceInfo is a plain value: the launchers' device checks and the kernel
// choice (device/gemm_w4a4_dispatch.cuh) take one, so they can be tested with
// made-up devices on a machine without a GPU. The cache assumes a device's
// properties do not change while the program runs.
#pragma once

#include <oq/cuda/arch/arch.cuh>
#include <oq/cuda/status.cuh>

#include <cuda_runtime.h>

#include <cstddef>
#include <map>
#include <mutex>
#include <string>

namespace oq::cuda::device {

struct DeviceInfo {
  int device = 0;                 ///< the CUDA device ordinal
  int major = 0, minor = 0;       ///< compute capability
  int multiprocessors = 0;        ///< SMs
  int shared_memory_optin = 0;    ///< bytes per block, with the opt-in (cudaDevAttrMaxSharedMemoryPerBlockOptin)

  /// 10·major + minor: 80, 89, 90 — what the arch:: tags compare.
  constexpr int sm() const { return 10 * major + minor; }
};

/// Reads `device`'s DeviceInfo from the runtime (no cache).
inline Report query_device_info(int device, DeviceInfo& info) {
  info.device = device;
  OQ_CUDA_TRY(cudaDeviceGetAttribute(&info.major, cudaDevAttrComputeCapabilityMajor, device));
  OQ_CUDA_TRY(cudaDeviceGetAttribute(&info.minor, cudaDevAttrComputeCapabilityMinor, device));
  OQ_CUDA_TRY(cudaDeviceGetAttribute(&info.multiprocessors, cudaDevAttrMultiProcessorCount, device));
  OQ_CUDA_TRY(cudaDeviceGetAttribute(&info.shared_memory_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return Report::success();
}

namespace detail {
struct DeviceInfoCache {
  std::mutex mutex;
  std::map<int, DeviceInfo> devices;
};
inline DeviceInfoCache& device_info_cache() {
  static DeviceInfoCache cache;
  return cache;
}
}  // namespace detail

/// The current device's DeviceInfo: read from the runtime the first time a
/// device is asked for, then from the cache (one cudaGetDevice per call).
inline Report current_device_info(DeviceInfo& info) {
  int device = 0;
  OQ_CUDA_TRY(cudaGetDevice(&device));
  detail::DeviceInfoCache& cache = detail::device_info_cache();
  const std::lock_guard<std::mutex> lock(cache.mutex);
  if (auto it = cache.devices.find(device); it != cache.devices.end()) {
    info = it->second;
    return Report::success();
  }
  if (Report r = query_device_info(device, info); !r.ok()) return r;
  cache.devices[device] = info;
  return Report::success();
}

/// Success when a device like `info` runs Arch's code (arch::runs_on);
/// otherwise kUnsupportedDevice naming `who`.
template <class Arch>
Report require_arch(const DeviceInfo& info, const std::string& who) {
  if (arch::runs_on<Arch>(info.sm())) return Report::success();
  const std::string needed = std::to_string(Arch::kMinSm / 10) + "." + std::to_string(Arch::kMinSm % 10);
  return Report::failure(Status::kUnsupportedDevice,
                         who + ": needs compute capability " + needed + (Arch::kArchSpecific ? "" : " or newer") +
                             " (" + Arch::kName + "), got " + std::to_string(info.major) + "." +
                             std::to_string(info.minor));
}

/// Success when a block on a device like `info` may opt in to `bytes` of
/// shared memory; otherwise kUnsupportedDevice naming `who` and `what` needs it.
inline Report require_shared_memory(const DeviceInfo& info, std::size_t bytes, const std::string& who,
                                    const std::string& what) {
  if (bytes <= static_cast<std::size_t>(info.shared_memory_optin)) return Report::success();
  return Report::failure(Status::kUnsupportedDevice, who + ": " + what + " need " + std::to_string(bytes) +
                                                         " bytes of shared memory, the device allows " +
                                                         std::to_string(info.shared_memory_optin));
}

}  // namespace oq::cuda::device
