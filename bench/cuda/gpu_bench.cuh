// bench/cuda/gpu_bench.cuh: what oq's GPU benchmarks share — checked CUDA and
// cuBLAS calls, device buffers filled with random bits on the device (never
// zeros, which hide unwritten outputs and can run faster than real data), and
// one timing loop:
//
//   * every launch of a timed batch reads its own copy of the inputs, with as
//     many copies as it takes for the batch to read several times the L2 (so
//     small problems measure memory, not the cache);
//   * the batch is captured into a CUDA graph and replayed (no launch gaps for
//     the few-microsecond decode GEMMs), timed with CUDA events; one replay is
//     queued before the start event, so the GPU is busy when the host submits
//     the timed replay and the events see no submission latency;
//   * Google Benchmark repeats it and reports the median (the device script
//     asks for --benchmark_repetitions and aggregates);
//   * a first launch that takes longer than OQ_BENCH_MAX_LAUNCH_S seconds
//     (default 2) skips the benchmark with its time in the error message, and
//     later shapes of the same kernel whose work (ops or bytes) predicts a
//     launch over that limit, at the best rate seen so far, are skipped without
//     a launch: a slow first-version kernel cannot eat a lent GPU's minutes.
//
// Each benchmark sets counters `ops` (multiply-adds × 2), `bytes` (the fewest
// bytes the kernel must move: inputs read once, outputs written once) and,
// for the decode GEMMs, `weight_bytes`; bench/cuda/summarize.py divides them by
// the median time and forms the ratios against the baselines of the same run.
#pragma once

#include <benchmark/benchmark.h>
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace oq::bench_gpu {

inline void check(cudaError_t error, const char* call) {
  if (error != cudaSuccess) throw std::runtime_error(std::string(call) + ": " + cudaGetErrorString(error));
}
inline void check(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string(call) + ": cuBLAS status " + std::to_string(static_cast<int>(status)));
}

}  // namespace oq::bench_gpu

#define OQ_BENCH_CHECK(call) ::oq::bench_gpu::check((call), #call)

namespace oq::bench_gpu {

/// An owning device allocation of `count` elements of T (plain cudaMalloc).
template <class T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(std::size_t count) : count_(count) {
    if (count > 0) OQ_BENCH_CHECK(cudaMalloc(&data_, count * sizeof(T)));
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& other) noexcept : data_(other.data_), count_(other.count_) {
    other.data_ = nullptr;
    other.count_ = 0;
  }
  DeviceArray& operator=(DeviceArray&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(count_, other.count_);
    return *this;
  }
  ~DeviceArray() {
    if (data_ != nullptr) cudaFree(data_);
  }
  T* get() const noexcept { return data_; }
  std::size_t size() const noexcept { return count_; }
  std::size_t bytes() const noexcept { return count_ * sizeof(T); }

 private:
  T* data_ = nullptr;
  std::size_t count_ = 0;
};

namespace detail {

// splitmix64: a fixed, cheap mixing of (seed, index) into 64 random bits.
__host__ __device__ inline std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

template <class T, class Make>
__global__ void fill_kernel(T* out, std::size_t count, std::uint64_t seed, Make make) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    out[i] = make(mix(seed ^ mix(i)));
}

}  // namespace detail

/// Fills `count` elements at `out` with make(64 random bits) on the device.
template <class T, class Make>
void fill(T* out, std::size_t count, std::uint64_t seed, Make make) {
  if (count == 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<std::size_t>((count + 255) / 256, 65535));
  detail::fill_kernel<<<blocks, 256>>>(out, count, seed, make);
  OQ_BENCH_CHECK(cudaGetLastError());
}

/// Random bytes: packed INT4 or INT8 codes, every bit pattern valid.
struct RandomByte {
  __device__ std::uint8_t operator()(std::uint64_t r) const { return static_cast<std::uint8_t>(r); }
};
/// Uniform floats in [lo, hi), converted to T by T's float constructor.
template <class T>
struct RandomUniform {
  float lo, hi;
  __device__ T operator()(std::uint64_t r) const {
    const float u = static_cast<float>(r >> 40) * (1.0f / 16777216.0f);
    return T(lo + (hi - lo) * u);
  }
};

/// The current device's L2 size in bytes.
inline std::size_t l2_bytes() {
  int device = 0, l2 = 0;
  OQ_BENCH_CHECK(cudaGetDevice(&device));
  OQ_BENCH_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
  return static_cast<std::size_t>(l2);
}

/// How many copies of `bytes_per_launch` of inputs a batch cycles through so
/// that it reads at least four times the L2 (at most 64 copies).
inline int copies_for(std::size_t bytes_per_launch) {
  const std::size_t want = 4 * l2_bytes();
  const std::size_t copies = (want + bytes_per_launch - 1) / std::max<std::size_t>(bytes_per_launch, 1);
  return static_cast<int>(std::clamp<std::size_t>(copies, 1, 64));
}

inline double max_launch_seconds() {
  const char* env = std::getenv("OQ_BENCH_MAX_LAUNCH_S");
  return env != nullptr ? std::atof(env) : 2.0;
}

/// An owning non-blocking CUDA stream for one benchmark.
class Stream {
 public:
  Stream() { OQ_BENCH_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() { cudaStreamDestroy(stream_); }
  cudaStream_t get() const noexcept { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

/// What the slow-launch guard knows of a kernel: its name and the work of
/// this launch (ops or bytes, any unit as long as a kernel keeps to one).
struct Work {
  std::string kernel;
  double amount = 0.0;
};

namespace detail {
// Best work per second seen for each kernel in this process.
inline std::map<std::string, double>& best_rates() {
  static std::map<std::string, double> rates;
  return rates;
}
}  // namespace detail

/// Times launch(stream, copy) over copies 0..copies−1 as one graph replay per
/// benchmark iteration; each iteration's time is the replay's over `copies`,
/// i.e. the time of one launch. `launch` must only enqueue work on the stream.
inline void time_launches(benchmark::State& state, int copies, const Work& work,
                          const std::function<void(cudaStream_t, int)>& launch) {
  const double limit_s = max_launch_seconds();
  if (const auto it = detail::best_rates().find(work.kernel); it != detail::best_rates().end()) {
    const double predicted_s = work.amount / it->second;
    if (predicted_s > limit_s) {
      state.SkipWithError(("not launched: " + std::to_string(predicted_s) + " s predicted from " + work.kernel +
                           "'s best rate so far, over OQ_BENCH_MAX_LAUNCH_S")
                              .c_str());
      return;
    }
  }
  Stream stream;
  cudaEvent_t start = nullptr, stop = nullptr;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  auto release = [&] {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (start != nullptr) cudaEventDestroy(start);
    if (stop != nullptr) cudaEventDestroy(stop);
  };
  try {
    OQ_BENCH_CHECK(cudaEventCreate(&start));
    OQ_BENCH_CHECK(cudaEventCreate(&stop));
    // First launch alone: module load, library heuristics, and the guard.
    OQ_BENCH_CHECK(cudaEventRecord(start, stream.get()));
    launch(stream.get(), 0);
    OQ_BENCH_CHECK(cudaEventRecord(stop, stream.get()));
    OQ_BENCH_CHECK(cudaEventSynchronize(stop));
    float first_ms = 0.0f;
    OQ_BENCH_CHECK(cudaEventElapsedTime(&first_ms, start, stop));
    double& best = detail::best_rates()[work.kernel];
    best = std::max(best, work.amount / (1e-3 * std::max(first_ms, 1e-6f)));
    if (first_ms > 1e3 * limit_s) {
      release();
      state.SkipWithError(("first launch took " + std::to_string(first_ms) +
                           " ms, over OQ_BENCH_MAX_LAUNCH_S; not timed further")
                              .c_str());
      return;  // the runner accepts a benchmark that errored before its loop
    }
    for (int i = 1; i < copies; ++i) launch(stream.get(), i);
    OQ_BENCH_CHECK(cudaStreamSynchronize(stream.get()));

    OQ_BENCH_CHECK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeRelaxed));
    try {
      for (int i = 0; i < copies; ++i) launch(stream.get(), i);
    } catch (...) {
      cudaGraph_t partial = nullptr;  // end the capture before the stream goes
      if (cudaStreamEndCapture(stream.get(), &partial) == cudaSuccess && partial != nullptr) cudaGraphDestroy(partial);
      throw;
    }
    OQ_BENCH_CHECK(cudaStreamEndCapture(stream.get(), &graph));
    OQ_BENCH_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    OQ_BENCH_CHECK(cudaGraphLaunch(exec, stream.get()));  // warm replay
    OQ_BENCH_CHECK(cudaStreamSynchronize(stream.get()));

    for (auto _ : state) {
      OQ_BENCH_CHECK(cudaGraphLaunch(exec, stream.get()));  // keeps the GPU busy while the host submits
      OQ_BENCH_CHECK(cudaEventRecord(start, stream.get()));
      OQ_BENCH_CHECK(cudaGraphLaunch(exec, stream.get()));
      OQ_BENCH_CHECK(cudaEventRecord(stop, stream.get()));
      OQ_BENCH_CHECK(cudaEventSynchronize(stop));
      float ms = 0.0f;
      OQ_BENCH_CHECK(cudaEventElapsedTime(&ms, start, stop));
      const double per_launch_s = 1e-3 * ms / copies;
      state.SetIterationTime(per_launch_s);
      best = std::max(best, work.amount / std::max(per_launch_s, 1e-12));  // warm rates for the guard
    }
    state.counters["copies"] = copies;
  } catch (...) {
    release();
    throw;
  }
  release();
}

/// Runs `body(state)`, turning an exception into SkipWithError, so that one
/// failing benchmark (an unsupported shape, a cuBLAS refusal) does not end the run.
inline void guarded(benchmark::State& state, const std::function<void(benchmark::State&)>& body) {
  try {
    body(state);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());  // no loop needed after an error
  }
}

/// A cuBLAS handle with a fixed workspace (so that graph capture allocates nothing).
class Cublas {
 public:
  Cublas() : workspace_(kWorkspaceBytes) {
    OQ_BENCH_CHECK(cublasCreate(&handle_));
    OQ_BENCH_CHECK(cublasLtCreate(&lt_));
  }
  /// Points the handle at `stream` with the fixed workspace. cublasSetStream
  /// resets the workspace to the default pool, so the two always go together.
  void use_stream(cudaStream_t stream) {
    OQ_BENCH_CHECK(cublasSetStream(handle_, stream));
    OQ_BENCH_CHECK(cublasSetWorkspace(handle_, workspace_.get(), workspace_.bytes()));
  }
  Cublas(const Cublas&) = delete;
  Cublas& operator=(const Cublas&) = delete;
  ~Cublas() {
    cublasLtDestroy(lt_);
    cublasDestroy(handle_);
  }
  cublasHandle_t handle() const noexcept { return handle_; }
  cublasLtHandle_t lt() const noexcept { return lt_; }
  void* workspace() const noexcept { return workspace_.get(); }
  static constexpr std::size_t kWorkspaceBytes = 64u << 20;

 private:
  DeviceArray<std::uint8_t> workspace_;
  cublasHandle_t handle_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
};

/// One handle for the whole run (creating one costs milliseconds).
inline Cublas& cublas() {
  static Cublas instance;
  return instance;
}

/// The bandwidth ceiling: a device-to-device cudaMemcpyAsync of range(0)
/// bytes; `bytes` counts them twice (read and written).
inline void device_copy(benchmark::State& state) {
  guarded(state, [](benchmark::State& st) {
    const auto bytes = static_cast<std::size_t>(st.range(0));
    DeviceArray<std::uint8_t> src(bytes), dst(bytes);
    fill(src.get(), bytes, 1, RandomByte{});
    time_launches(st, 1, Work{"copy", static_cast<double>(bytes)}, [&](cudaStream_t stream, int) {
      OQ_BENCH_CHECK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, stream));
    });
    st.counters["bytes"] = 2.0 * static_cast<double>(bytes);
  });
}

}  // namespace oq::bench_gpu

/// main() of a GPU benchmark: exits 77 (ctest: skipped) without a device.
#define OQ_GPU_BENCHMARK_MAIN()                                                                        \
  int main(int argc, char** argv) {                                                                    \
    int devices = 0;                                                                                   \
    const cudaError_t status = cudaGetDeviceCount(&devices);                                           \
    if (status != cudaSuccess || devices == 0) {                                                       \
      std::printf("SKIPPED: no usable CUDA device (cudaGetDeviceCount: %s, %d devices)\n",             \
                  cudaGetErrorString(status), devices);                                                \
      return 77;                                                                                       \
    }                                                                                                  \
    cudaDeviceProp prop{};                                                                             \
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)                                              \
      benchmark::AddCustomContext("device", std::string(prop.name) + ", sm_" +                         \
                                                std::to_string(prop.major * 10 + prop.minor) + ", " +  \
                                                std::to_string(prop.multiProcessorCount) + " SMs");    \
    benchmark::Initialize(&argc, argv);                                                                \
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;                                  \
    benchmark::RunSpecifiedBenchmarks();                                                               \
    benchmark::Shutdown();                                                                             \
    return 0;                                                                                          \
  }
