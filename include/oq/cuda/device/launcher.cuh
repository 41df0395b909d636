// oq/cuda/device/launcher.cuh: the skeleton every host launcher of
// include/oq/cuda/device/ shares (CRTP, as CUTLASS's device-level operators):
//
//   static check_arguments(p)         the argument checks alone: no CUDA call,
//                                     usable without a GPU
//   static can_implement(p[, info])   arguments, then the device: the
//                                     launcher's architecture tag, then its own
//                                     device checks (shared memory, …)
//   static run(p, stream)             can_implement once, then the launch
//   initialize(p), run(stream)        the same as an object: the checks once in
//                                     initialize, then launches without
//                                     re-checking (the device of initialize)
//
// A launcher derives from Launcher<Derived, Params> and provides:
//   static constexpr const char* kName;     the prefix of its messages
//   using Arch = arch::Sm80;                the least architecture it runs on
//   static Report check_arguments_as(const Params&, const std::string& who);
//                                           its argument checks, messages
//                                           prefixed with `who` (a launcher
//                                           that extends another's checks
//                                           passes its own name down)
//   static bool empty(const Params&);       nothing to compute (no launch)
//   static Report launch(const Params&, const DeviceInfo&, cudaStream_t);
//                                           the launch alone, checks done
// and, where it has more to check than the architecture, hides
//   static Report check_device(const Params&, const DeviceInfo&);
//
// dispatch<kValues...>(value, f) and dispatch_bool(value, f) turn a run-time
// value into the template argument of f.template operator()<k>(): the
// launchers pick among kernel instantiations with them.
#pragma once

#include <oq/cuda/device/device_info.cuh>
#include <oq/cuda/status.cuh>

#include <cuda_runtime.h>

#include <string>

namespace oq::cuda::device {

/// f.template operator()<k>() for the first k of kValues equal to `value`,
/// or for the last one when none is (the default).
template <auto kFirst, auto... kRest, class T, class F>
decltype(auto) dispatch(const T& value, F&& f) {
  if constexpr (sizeof...(kRest) == 0) {
    return f.template operator()<kFirst>();
  } else {
    if (value == kFirst) return f.template operator()<kFirst>();
    return dispatch<kRest...>(value, f);
  }
}

/// f.template operator()<value>() for a run-time bool.
template <class F>
decltype(auto) dispatch_bool(bool value, F&& f) {
  return dispatch<true, false>(value, f);
}

template <class Derived, class ParamsType>
class Launcher {
 public:
  using Params = ParamsType;

  /// The argument checks alone: no CUDA call, usable without a GPU.
  static Report check_arguments(const Params& p) { return Derived::check_arguments_as(p, Derived::kName); }

  /// The device checks beyond the architecture tag (none unless the launcher
  /// hides this).
  static Report check_device(const Params&, const DeviceInfo&) { return Report::success(); }

  /// Arguments, then a device like `info`: no CUDA call unless the launcher's
  /// own device checks make one.
  static Report can_implement(const Params& p, const DeviceInfo& info) {
    if (Report r = check_arguments(p); !r.ok()) return r;
    if (Report r = require_arch<typename Derived::Arch>(info, Derived::kName); !r.ok()) return r;
    return Derived::check_device(p, info);
  }
  /// Arguments, then the current device.
  static Report can_implement(const Params& p) {
    DeviceInfo info;
    if (Report r = current_device_info(info); !r.ok()) return r;
    return can_implement(p, info);
  }

  /// Checks the arguments and the current device once, then launches.
  static Report run(const Params& p, cudaStream_t stream = nullptr) {
    DeviceInfo info;
    if (Report r = current_device_info(info); !r.ok()) return r;
    if (Report r = can_implement(p, info); !r.ok()) return r;
    if (Derived::empty(p)) return Report::success();
    return Derived::launch(p, info, stream);
  }

  /// Checks p against the current device and keeps both for run(stream).
  Report initialize(const Params& p) {
    ready_ = false;
    if (Report r = current_device_info(info_); !r.ok()) return r;
    if (Report r = can_implement(p, info_); !r.ok()) return r;
    params_ = p;
    ready_ = true;
    return Report::success();
  }
  /// Launches on initialize()'s arguments, with no further checks.
  Report run(cudaStream_t stream = nullptr) const {
    if (!ready_)
      return Report::failure(Status::kInvalidArgument, std::string(Derived::kName) + ": run() before a successful initialize()");
    if (Derived::empty(params_)) return Report::success();
    return Derived::launch(params_, info_, stream);
  }

 private:
  Params params_{};
  DeviceInfo info_{};
  bool ready_ = false;
};

}  // namespace oq::cuda::device
