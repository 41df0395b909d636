// oq/cuda/arch/cluster.cuh: the thread-block-cluster pieces oq's kernels use
// on Hopper (sm_90): a CTA's rank in its cluster, the cluster-wide barrier,
// and loads from a peer CTA's shared memory (distributed shared memory).
//
//   cluster_rank()               %cluster_ctarank
//   cluster_sync()               barrier.cluster.arrive.release + wait.acquire:
//                                every thread of every CTA of the cluster; the
//                                shared-memory writes before it are visible to
//                                the cluster's loads after it
//   load_peer_shared(p, rank)    the float/int at shared address p in CTA
//                                `rank` of this cluster (mapa + ld.shared::cluster)
//
// They need sm_90 (arch::Sm90) and a launch with a cluster dimension; on
// other targets they compile to a trap (arch/arch.cuh's policy), which
// callers must not reach (their launchers check the device first).
#pragma once

#if !defined(__CUDACC__)
#error "oq/cuda/ headers need a CUDA compiler (nvcc); host code includes <oq/oq.hpp>"
#endif

#include <oq/cuda/arch/arch.cuh>
#include <oq/cuda/arch/memory.cuh>

#include <cstdint>
#include <cstring>

namespace oq::cuda::arch {

__device__ __forceinline__ unsigned cluster_rank() {
  if constexpr (compiled_for<Sm90>()) {
    unsigned rank;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
    return rank;
  } else {
    unsupported();
    return 0;
  }
}

__device__ __forceinline__ void cluster_sync() {
  if constexpr (compiled_for<Sm90>()) {
    asm volatile(
        "barrier.cluster.arrive.release.aligned;\n"
        "barrier.cluster.wait.acquire.aligned;\n" ::
            : "memory");
  } else {
    unsupported();
  }
}

/// The 32-bit value at `local` (a shared-memory address of this CTA's
/// layout) in the shared memory of CTA `rank` of the cluster.
template <class T>
__device__ __forceinline__ T load_peer_shared(const T* local, unsigned rank) {
  static_assert(sizeof(T) == 4, "32-bit values");
  if constexpr (compiled_for<Sm90>()) {
    std::uint32_t remote, bits;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(shared_address(local)), "r"(rank));
    asm volatile("ld.shared::cluster.b32 %0, [%1];\n" : "=r"(bits) : "r"(remote) : "memory");
    T value;
    memcpy(&value, &bits, sizeof value);
    return value;
  } else {
    unsupported();
    return T{};
  }
}

}  // namespace oq::cuda::arch
