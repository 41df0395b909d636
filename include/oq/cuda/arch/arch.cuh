// oq/cuda/arch/arch.cuh: architecture tags, what this compilation pass
// targets, and the one policy for code that needs an architecture the pass
// lacks. The only place in oq that reads __CUDA_ARCH__.
//
//   arch::Sm80, Sm90, Sm90a     what a kernel or an instruction needs (tags, as
//                               CUTLASS's arch::Sm80): kMinSm = 10·major + minor,
//                               kArchSpecific for features that are not forward
//                               compatible (sm_90a's wgmma: exactly 9.0)
//   arch::kCompiledSm           the pass's target, 10·major + minor (80, 89, 90),
//                               0 in the host pass
//   compiled_for<Arch>()        whether the pass may issue Arch's instructions
//                               (compile time: `if constexpr`)
//   runs_on<Arch>(sm)           whether a device of compute capability sm runs
//                               Arch's code (run time: the launchers' checks)
//   unsupported()               what code does where compiled_for<Arch>() is false
//
// Policy for unsupported targets: trap. Every wrapper in arch/ and every
// kernel body that needs an architecture the compilation pass lacks compiles
// to __trap(), never to nothing: a binary whose image lacks the instructions
// — one built only for compute_75 PTX and JIT-compiled on an sm_80 device, or
// one without sm_90a code running on an H100 — fails loudly at the first use
// instead of returning unwritten or wrong outputs. The launchers check the
// device with runs_on<Arch> before they launch (and, where the image matters,
// the kernel's binary), so no supported configuration reaches a trap.
// oq's default targets (sm_80, sm_89, sm_90a; cmake/oqCudaArchitectures.cmake)
// compile every path for real; the traps are for other builds.
#pragma once

#if !defined(__CUDACC__)
#error "oq/cuda/ headers need a CUDA compiler (nvcc); host code includes <oq/oq.hpp>"
#endif

namespace oq::cuda::arch {

/// The architecture this compilation pass targets, 10·major + minor
/// (__CUDA_ARCH__ / 10), or 0 in the host pass.
#if defined(__CUDA_ARCH__)
inline constexpr int kCompiledSm = __CUDA_ARCH__ / 10;
#else
inline constexpr int kCompiledSm = 0;
#endif

/// Whether this pass targets sm_90a's architecture-specific features.
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
inline constexpr bool kCompiledSm90a = true;
#else
inline constexpr bool kCompiledSm90a = false;
#endif

/// Ampere and newer: mma.sync on integers and 16-bit floats, cp.async, ldmatrix.
struct Sm80 {
  static constexpr int kMinSm = 80;
  static constexpr bool kArchSpecific = false;
  static constexpr const char* kName = "sm_80";
};
/// Hopper and newer: thread-block clusters, distributed shared memory.
struct Sm90 {
  static constexpr int kMinSm = 90;
  static constexpr bool kArchSpecific = false;
  static constexpr const char* kName = "sm_90";
};
/// Hopper's architecture-specific features (wgmma): code built for sm_90a,
/// on a device of compute capability exactly 9.0 (not forward compatible).
struct Sm90a {
  static constexpr int kMinSm = 90;
  static constexpr bool kArchSpecific = true;
  static constexpr const char* kName = "sm_90a";
};

/// Whether this compilation pass may issue Arch's instructions (false in the
/// host pass).
template <class Arch>
__host__ __device__ constexpr bool compiled_for() {
  if constexpr (Arch::kArchSpecific) {
    return kCompiledSm90a && kCompiledSm == Arch::kMinSm;
  } else {
    return kCompiledSm >= Arch::kMinSm;
  }
}

/// Whether a device of compute capability `sm` (10·major + minor) runs Arch's code.
template <class Arch>
__host__ __device__ constexpr bool runs_on(int sm) {
  return Arch::kArchSpecific ? sm == Arch::kMinSm : sm >= Arch::kMinSm;
}

/// The code of an instruction or kernel body compiled for a target that
/// lacks its architecture: a trap (see the policy above).
__device__ __forceinline__ void unsupported() { __trap(); }

}  // namespace oq::cuda::arch
