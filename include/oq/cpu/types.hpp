// oq/cpu/types.hpp: what every CPU kernel's signature uses — the options
// (threads, instruction set) and the row-major matrix types — without the
// kernels themselves, so that a header declaring an engine's interfaces can
// name them cheaply.
#pragma once

#include <oq/cpu/isa.hpp>

#include <Eigen/Core>

#include <cstdint>

namespace oq::cpu {

class ThreadPool;  // thread_pool.hpp

using RowMajorMatrixXf = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMajorMatrixXi32 = Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Options of the CPU kernels: threads (0: all hardware threads), the
/// instruction set (kAuto: the best this CPU runs; another value forces it,
/// and is refused where the CPU lacks it), and a pool of threads the caller
/// owns (thread_pool.hpp), which the call then runs on instead of starting
/// threads (threads must be 0 then).
struct KernelOptions {
  int threads = 0;
  Isa isa = Isa::kAuto;
  ThreadPool* pool = nullptr;
};

}  // namespace oq::cpu
