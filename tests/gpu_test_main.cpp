// The runner of GPU test executables: runs the tests when a CUDA device is
// usable, and otherwise says why and exits 77, which ctest (SKIP_RETURN_CODE)
// reports as a skipped test instead of a pass or a failure.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <cstdio>

int main(int argc, char** argv) {
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no usable CUDA device (cudaGetDeviceCount: %s, %d devices)\n",
                cudaGetErrorString(status), devices);
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
