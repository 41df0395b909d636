// oq/cuda/kernel/gemm_w4a4_epilogue.cuh: the epilogue of every W4A4 GEMM
// kernel — int32 accumulators back to real outputs with the scales and zero
// points of docs/design.md §7:
//
//   acc[m, n] = Σ_k qa[m, k] · qw[n, k]                       (exact, int32)
//   y[m, n]   = s_a[m] · s_w[n] · (acc − z_w[n]·Σ_k qa[m, k] − z_a[m]·Σ_k qw[n, k] + K·z_a[m]·z_w[n])
//
// i.e. s_a·s_w·Σ_k (qa − z_a)(qw − z_w): the zero-point terms vanish for
// symmetric operands. The K·z_a·z_w term, needed when both operands are
// asymmetric, is part of docs/design.md §7's formula. The bracket is formed in
// int64 (zero points are integers), so the only roundings are the float
// conversion and the two scale products. Another epilogue (a bias, an
// activation function) is another function of this shape in its own header.
#pragma once

#include <oq/cuda/kernel/gemm_w4a4_params.cuh>
#include <oq/cuda/numeric.cuh>

#include <cstdint>

namespace oq::cuda::kernel {

/// The epilogue of one output element: the raw accumulator to p.acc and the
/// scaled, zero-point corrected value to p.y, each where given. (row, col)
/// must be in bounds.
template <class ElementOut>
__device__ __forceinline__ void store_w4a4_output(const GemmW4A4Params<ElementOut>& p, std::int64_t row,
                                                  std::int64_t col, std::int32_t acc) {
  if (p.acc != nullptr) p.acc[row * p.ld_acc + col] = acc;
  if (p.y != nullptr) {
    std::int64_t total = acc;
    // Zero points are integer-valued floats (docs/design.md §2): round, never truncate, so that
    // one carrying a rounding error (6.9999995) still counts as 7.
    const std::int64_t za = p.zero_a != nullptr ? __float2ll_rn(p.zero_a[row]) : 0;
    const std::int64_t zw = p.zero_w != nullptr ? __float2ll_rn(p.zero_w[col]) : 0;
    if (zw != 0) total -= zw * p.sum_a[row];
    if (za != 0) total -= za * p.sum_w[col];
    total += p.k * za * zw;
    p.y[row * p.ld_y + col] = cuda::from_float<ElementOut>(p.scale_a[row] * p.scale_w[col] * static_cast<float>(total));
  }
}

}  // namespace oq::cuda::kernel
