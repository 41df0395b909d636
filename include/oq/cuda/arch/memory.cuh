// oq/cuda/arch/memory.cuh: the asynchronous copy and shared-memory matrix
// load instructions of oq's multistage GEMMs (sm_80 and newer).
//
//   cp_async_16(dst, src, valid)   16 bytes global → shared without a trip
//                                  through registers (cp.async.cg: L2 only);
//                                  valid = false writes 16 zero bytes instead
//                                  and reads nothing (the zero-fill form)
//   cp_async_commit() / cp_async_wait<N>()
//                                  close the current group of copies / wait
//                                  until at most N groups are still in flight
//   ldmatrix_x4(r, row_address)    four 8 × 8 matrices of 16-bit elements:
//                                  lanes 8i..8i+7 give the 16-byte rows of
//                                  matrix i; lane l receives, in r[i], the
//                                  4 bytes at row l / 4, bytes 4·(l % 4) of
//                                  matrix i — for 8-bit or 4-bit data, exactly
//                                  the A/B fragment registers of mma.sync
//                                  (arch/mma.cuh) when the rows are chosen so.
// Below sm_80 these instructions do not exist: code built for such a target
// traps where it would use one, rather than skip it and compute garbage
// (arch/arch.cuh's policy: a binary built only for compute_75 PTX also runs
// on an sm_80 device, JIT compiled, and the launchers' checks admit the device).
#pragma once

#if !defined(__CUDACC__)
#error "oq/cuda/ headers need a CUDA compiler (nvcc); host code includes <oq/oq.hpp>"
#endif

#include <oq/cuda/arch/arch.cuh>

#include <cstdint>

namespace oq::cuda::arch {

/// The shared-state-space address of a pointer into shared memory.
__device__ __forceinline__ std::uint32_t shared_address(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

/// Copies 16 bytes from global `src` to shared `dst` asynchronously, or, when
/// !valid, fills dst with zeros without reading src. Both 16-byte aligned.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  if constexpr (compiled_for<Sm80>()) {
    const int src_bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)), "l"(src),
                 "r"(src_bytes)
                 : "memory");
  } else {
    unsupported();
  }
}

__device__ __forceinline__ void cp_async_commit() {
  if constexpr (compiled_for<Sm80>()) {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  } else {
    unsupported();
  }
}

/// Waits until at most kPending committed groups of this thread are in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  if constexpr (compiled_for<Sm80>()) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
  } else {
    unsupported();
  }
}

/// ldmatrix.x4: see the file comment. `row` is this lane's row address
/// (16-byte aligned, in shared memory).
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* row) {
  if constexpr (compiled_for<Sm80>()) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(row)));
  } else {
    unsupported();
  }
}

}  // namespace oq::cuda::arch
