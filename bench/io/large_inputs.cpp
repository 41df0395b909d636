// bench/io/large_inputs.cpp: time and peak memory of oq's readers on inputs
// at the size limits of their formats (issue 23, item 1).
//
// Not a Google Benchmark: what is measured is one read of one large file and
// the peak resident memory of the process (getrusage's ru_maxrss), which only
// a fresh process per measurement gives. So the file is written by one run
// (`write-*`) and read by another (`read-*`), each a separate process.
//
//   large_inputs write-safetensors <path> <tensors>  a header of <tensors> F32 [1] entries
//   large_inputs read-safetensors <path>             SafetensorsFile(path)
//   large_inputs write-npy <path> <MiB>              a (rows × 1024) '<f4' array of <MiB> MiB
//   large_inputs read-npy <path>                     read_npy_matrix<float>(path)
// Each read prints: seconds, peak RSS in MiB, file size in MiB.
#include <oq/io/npy.hpp>
#include <oq/io/safetensors.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include <sys/resource.h>

namespace {

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux: KiB
}

double file_mib(const char* path) { return static_cast<double>(std::filesystem::file_size(path)) / (1024.0 * 1024.0); }

template <class F>
void report(const char* path, F&& read) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::size_t n = read();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%.3f s  peak RSS %.1f MiB  file %.1f MiB  (%zu)\n", s, peak_rss_mib(), file_mib(path), n);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s write-safetensors|read-safetensors|write-npy|read-npy <path> [n]\n", argv[0]);
    return 2;
  }
  const std::string mode = argv[1];
  const char* path = argv[2];
  if (mode == "write-safetensors" && argc == 4) {
    const long n = std::atol(argv[3]);
    oq::io::SafetensorsWriter w;
    const float one = 1.0f;
    std::byte four[4];
    std::memcpy(four, &one, 4);
    for (long i = 0; i < n; ++i) w.add("t" + std::to_string(i), oq::io::DType::kF32, {1}, four);
    w.write(path);
    std::printf("header %zu bytes\n", w.header().size());
  } else if (mode == "read-safetensors") {
    report(path, [&] { return oq::io::SafetensorsFile(path).tensors().size(); });
  } else if (mode == "write-npy" && argc == 4) {
    const long mib = std::atol(argv[3]);
    const Eigen::Index cols = 1024, rows = mib * 1024 * 1024 / 4 / cols;
    oq::io::write_npy(path, Eigen::MatrixXf::Constant(rows, cols, 0.5f));
  } else if (mode == "read-npy") {
    report(path, [&] { return static_cast<std::size_t>(oq::io::read_npy_matrix<float>(path).size()); });
  } else {
    std::fprintf(stderr, "unknown mode or missing argument\n");
    return 2;
  }
  return 0;
}
