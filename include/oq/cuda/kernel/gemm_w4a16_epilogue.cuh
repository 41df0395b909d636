// oq/cuda/kernel/gemm_w4a16_epilogue.cuh: the epilogue of both W4A16 GEMM
// kernels — a finished fp32 sum Σ_k a·ŵ to the output element, rounded once
// to ElementOut. Another epilogue (a bias, an activation function, a
// residual) is another function of this shape in its own header.
#pragma once

#include <oq/cuda/kernel/gemm_w4a16_params.cuh>
#include <oq/cuda/numeric.cuh>

#include <cstdint>

namespace oq::cuda::kernel {

/// y[row, col] = sum, rounded to ElementOut. (row, col) must be in bounds.
template <class ElementA, class ElementOut>
__device__ __forceinline__ void store_w4a16_output(const GemmW4A16Params<ElementA, ElementOut>& p, std::int64_t row,
                                                   std::int64_t col, float sum) {
  p.y[row * p.ld_y + col] = cuda::from_float<ElementOut>(sum);
}

}  // namespace oq::cuda::kernel
