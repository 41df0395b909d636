// libFuzzer target for oq::io::parse_npy (oq/io/npy.hpp).
//
// Contract under test: any input either parses or throws oq::io::FormatError —
// never a crash, a sanitizer report, a hang or another exception. And what
// parses must survive the writer: npy_bytes(a) parses back to a, and the
// matrix view (npy_to_matrix<double>) written as '<f8' reads back bit for bit.
// A broken round trip aborts, which libFuzzer and the replay driver report.
//
// Built twice (tests/fuzz/CMakeLists.txt): with replay_main.cpp in every build
// (ctest fuzz.npy_replay), and as a real libFuzzer binary with clang
// (OQ_BUILD_FUZZERS, ctest fuzz.npy).
#include <oq/io/npy.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <stdexcept>

namespace {

void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "npy_fuzz: round trip broken: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto bytes = std::as_bytes(std::span<const std::uint8_t>(data, size));
  oq::io::NpyArray a;
  try {
    a = oq::io::parse_npy(bytes);
  } catch (const oq::io::FormatError&) {
    return 0;  // malformed input, reported as the API promises
  }
  // Anything that parsed is a valid array: re-serialising and re-parsing it
  // must not throw (an exception escaping here is a bug) and must give it back.
  require(oq::io::parse_npy(oq::io::npy_bytes(a)) == a, "parse_npy(npy_bytes(a)) != a");

  Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> m;
  try {
    m = oq::io::npy_to_matrix<double>(a);
  } catch (const std::invalid_argument&) {
    return 0;  // a valid file whose dimensions do not fit Eigen::Index
  }
  require(static_cast<std::size_t>(m.size()) == a.size(), "npy_to_matrix lost elements");
  const auto back = oq::io::npy_to_matrix<double>(
      oq::io::parse_npy(oq::io::npy_bytes(oq::io::make_npy(m, oq::io::DType::kF64))));
  require(back.rows() == m.rows() && back.cols() == m.cols(), "matrix shape changed through '<f8'");
  // Bitwise: NaN payloads and signed zeros must survive too.
  require(m.size() == 0 || std::memcmp(back.data(), m.data(), static_cast<std::size_t>(m.size()) * sizeof(double)) == 0,
          "matrix values changed through '<f8'");
  return 0;
}
