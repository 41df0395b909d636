// oq/cuda/status.cuh: what a host launcher reports, and CUDA error checking.
//
// Launchers follow CUTLASS: can_implement(params) says whether (and why not)
// the kernel can run on these arguments and this device, without touching
// them; run(params, stream) checks the same, launches, and returns a Status.
// Every CUDA runtime call in a launcher goes through OQ_CUDA_TRY, which turns a
// failure into Status::kCudaError with the call and CUDA's message.
#pragma once

#if !defined(__CUDACC__)
#error "oq/cuda/ headers need a CUDA compiler (nvcc); host code includes <oq/oq.hpp>"
#endif

#include <cuda_runtime.h>

#include <cstddef>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>

namespace oq::cuda {

enum class Status {
  kSuccess,
  kInvalidArgument,    ///< a null pointer, bits outside {4, 8}, a bad clip ratio …
  kInvalidShape,       ///< a size the kernel does not support (e.g. odd K for INT4)
  kMisaligned,         ///< a pointer or leading dimension not aligned as required
  kUnsupportedDevice,  ///< compute capability too old, or not enough shared memory
  kCudaError,          ///< a CUDA runtime call failed
};

constexpr const char* to_string(Status s) noexcept {
  switch (s) {
    case Status::kSuccess: return "success";
    case Status::kInvalidArgument: return "invalid argument";
    case Status::kInvalidShape: return "invalid shape";
    case Status::kMisaligned: return "misaligned";
    case Status::kUnsupportedDevice: return "unsupported device";
    case Status::kCudaError: return "CUDA error";
  }
  return "unknown";
}

/// A Status with the reason, for can_implement() and run().
struct Report {
  Status status = Status::kSuccess;
  std::string message;

  bool ok() const noexcept { return status == Status::kSuccess; }
  static Report success() { return {}; }
  static Report failure(Status s, std::string why) { return {s, std::move(why)}; }
};

/// Report of a failed CUDA call: "<call>: <cudaGetErrorString>".
inline Report cuda_failure(const char* call, cudaError_t error) {
  return Report::failure(Status::kCudaError, std::string(call) + ": " + cudaGetErrorString(error));
}


}  // namespace oq::cuda

/// Evaluates a CUDA runtime call; on failure returns cuda_failure(...) from the
/// enclosing function (which must return oq::cuda::Report).
#define OQ_CUDA_TRY(call)                                                 \
  do {                                                                    \
    const cudaError_t oq_cuda_try_error_ = (call);                        \
    if (oq_cuda_try_error_ != cudaSuccess) {                              \
      return ::oq::cuda::cuda_failure(#call, oq_cuda_try_error_);         \
    }                                                                     \
  } while (0)

namespace oq::cuda {

/// Runs `launch`, one kernel launch (a <<<>>> statement, or a call that
/// returns the cudaError_t of cudaLaunchKernelEx), and reports that launch's
/// error. The runtime's last error is reset first: a call that failed
/// earlier (the caller's, or one of a launcher that returned its error)
/// leaves its error there, and it would be reported against this launch.
template <class Launch>
Report checked_launch(Launch&& launch) {
  (void)cudaGetLastError();
  if constexpr (std::is_same_v<decltype(launch()), cudaError_t>) {
    OQ_CUDA_TRY(launch());
  } else {
    launch();
  }
  OQ_CUDA_TRY(cudaGetLastError());
  return Report::success();
}

namespace detail {

// The largest dynamic shared memory size each (device, kernel) may launch
// with, as set through allow_dynamic_shared_memory: one table per program
// (an inline function's static), guarded by its mutex.
struct DynamicSharedMemoryLimits {
  std::mutex mutex;
  std::map<std::pair<int, const void*>, int> allowed;
};
inline DynamicSharedMemoryLimits& dynamic_shared_memory_limits() {
  static DynamicSharedMemoryLimits limits;
  return limits;
}

}  // namespace detail

/// Lets `entry` launch on the current device with `bytes` of dynamic shared
/// memory (cudaFuncAttributeMaxDynamicSharedMemorySize), raising the limit
/// and never lowering it. The attribute belongs to the kernel, not to the
/// launch: a launcher whose size depends on its arguments and that set the
/// attribute to each call's own size would let a second host thread lower it
/// between the first thread's set and launch, and that launch would fail. A
/// limit is only an upper bound (each launch reserves its own size, and
/// occupancy follows that size), so the limit only rises, and a size already
/// allowed makes no CUDA call. The table of limits assumes the
/// device's context lives as long as the program; after cudaDeviceReset()
/// nothing here knows that the attributes were reset.
template <class Kernel>
Report allow_dynamic_shared_memory(Kernel* entry, int bytes) {
  int device = 0;
  OQ_CUDA_TRY(cudaGetDevice(&device));
  detail::DynamicSharedMemoryLimits& limits = detail::dynamic_shared_memory_limits();
  const std::lock_guard<std::mutex> lock(limits.mutex);
  int& allowed = limits.allowed[{device, reinterpret_cast<const void*>(entry)}];
  if (bytes <= allowed) return Report::success();
  OQ_CUDA_TRY(cudaFuncSetAttribute(entry, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  allowed = bytes;
  return Report::success();
}

}  // namespace oq::cuda
