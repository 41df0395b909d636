// oq/cuda/numeric.cuh: conversions between float and the element types oq's
// kernels read and write (float, __half, __nv_bfloat16), round to nearest even.
#pragma once

#if !defined(__CUDACC__)
#error "oq/cuda/ headers need a CUDA compiler (nvcc); host code includes <oq/oq.hpp>"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace oq::cuda {

template <class T>
__host__ __device__ __forceinline__ float to_float(T v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half2float(v);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(v);
  } else {
    return static_cast<float>(v);
  }
}

template <class T>
__host__ __device__ __forceinline__ T from_float(float v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(v);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return static_cast<T>(v);
  }
}

}  // namespace oq::cuda
