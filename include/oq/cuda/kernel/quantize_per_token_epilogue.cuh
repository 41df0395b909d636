// oq/cuda/kernel/quantize_per_token_epilogue.cuh: what every per-token
// quantization kernel does once a row's (rotated) values, scale and zero
// point are known (the latter from core/quant_math.hpp, the functions the
// host quantizers call, so they equal oq::quant::quantize bit for bit): the
// codes, packed into 32-bit words of the output row, and their sum.
#pragma once

#include <oq/config.hpp>
#include <oq/core/int4.hpp>
#include <oq/core/quant_math.hpp>

#include <cstdint>

namespace oq::cuda::kernel {

/// Quantizes 32 / bits consecutive values (8 for INT4, 4 for INT8; `values`
/// 16-byte aligned) into one little-endian 32-bit word of the output row —
/// the bytes format/int4_row.hpp (or plain int8/uint8) lays out — and adds
/// the raw codes to `sum`.
__device__ __forceinline__ std::uint32_t quantize_word(const float* values, core::AffineParams<float> params,
                                                       core::CodeRange range, int bits, int& sum) {
  const float4 v0 = reinterpret_cast<const float4*>(values)[0];
  std::uint32_t word = 0;
  if (bits == 4) {
    const float4 v1 = reinterpret_cast<const float4*>(values)[1];
    const float vals[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
    OQ_UNROLL
    for (int j = 0; j < 8; j += 2) {
      const int q0 = static_cast<int>(core::quantize_value(vals[j], params, range));
      const int q1 = static_cast<int>(core::quantize_value(vals[j + 1], params, range));
      word |= static_cast<std::uint32_t>(core::pack_u4x2(static_cast<unsigned>(q0), static_cast<unsigned>(q1)))
              << (4 * j);
      sum += q0 + q1;
    }
  } else {
    const float vals[4] = {v0.x, v0.y, v0.z, v0.w};
    OQ_UNROLL
    for (int j = 0; j < 4; ++j) {
      const int q = static_cast<int>(core::quantize_value(vals[j], params, range));
      word |= static_cast<std::uint32_t>(static_cast<std::uint8_t>(q)) << (8 * j);  // two's complement when signed
      sum += q;
    }
  }
  return word;
}

}  // namespace oq::cuda::kernel
