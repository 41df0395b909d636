// oq/config.hpp: the macros every oq header relies on, and the library version.
//
// Host code and device code share the headers under core/ and format/. A
// function meant for both is marked OQ_HOST_DEVICE, which expands to
// `__host__ __device__` only when the translation unit is compiled by a CUDA
// compiler, so the same header builds with plain g++ as well.
#pragma once

#define OQ_VERSION_MAJOR 0
#define OQ_VERSION_MINOR 1
#define OQ_VERSION_PATCH 0
/// Single number for preprocessor comparisons: major * 10000 + minor * 100 + patch.
#define OQ_VERSION (OQ_VERSION_MAJOR * 10000 + OQ_VERSION_MINOR * 100 + OQ_VERSION_PATCH)

#if defined(__CUDACC__) || defined(__HIPCC__)
#define OQ_HOST_DEVICE __host__ __device__
#define OQ_DEVICE __device__
#define OQ_HAS_CUDA 1
#else
#define OQ_HOST_DEVICE
#define OQ_DEVICE
#define OQ_HAS_CUDA 0
#endif

// Loop unrolling hint. Under nvcc both the host and the device pass take
// `#pragma unroll`; plain host compilers get their own spelling.
#if defined(__CUDACC__)
#define OQ_UNROLL _Pragma("unroll")
#elif defined(__clang__)
#define OQ_UNROLL _Pragma("clang loop unroll(enable)")
#elif defined(__GNUC__)
#define OQ_UNROLL _Pragma("GCC unroll 16")
#else
#define OQ_UNROLL
#endif

namespace oq {

/// The library version, usable in constant expressions.
struct Version {
  int major;
  int minor;
  int patch;
};
inline constexpr Version kVersion{OQ_VERSION_MAJOR, OQ_VERSION_MINOR, OQ_VERSION_PATCH};

}  // namespace oq
