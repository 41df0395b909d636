// libFuzzer target for oq::transform::load_duquant (oq/transform/duquant_io.hpp),
// read as float and as double.
//
// Contract under test: any input either loads or throws what the loader
// documents — std::invalid_argument for a truncated or corrupted file (a bad
// magic, version, scalar size, header bound, a rotation that is not
// orthogonal, a permutation that is not one, a scale that is not positive),
// std::domain_error for a NaN or ±Inf entry — never a crash, a sanitizer
// report, an allocation a lying header asks for, a hang or another exception.
// What loads is a valid transform, so everything after it must hold (a broken
// check aborts):
//   - save_duquant writes the header, permutations and scales exactly as they
//     were read (the format has one encoding of each), and the rotations too
//     unless load projected one that was slightly off orthogonal (files from
//     before 2026-11-30); loading what it wrote gives the same transform, bit
//     for bit (a projected rotation is not projected again); a float file
//     read as double is widened exactly and saved as float again;
//   - every rotation is b×b with b dividing the channel count, every
//     permutation a permutation of the channels.
//
// Built twice (tests/fuzz/CMakeLists.txt): with replay_main.cpp in every build
// (ctest fuzz.duquant_replay), and as a real libFuzzer binary with clang
// (OQ_BUILD_FUZZERS, ctest fuzz.duquant).
#include <oq/transform/duquant_io.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "duquant_fuzz: broken: %s\n", what);
  std::abort();
}

template <class Scalar>
bool same(const oq::transform::DuQuantTransform<Scalar>& a, const oq::transform::DuQuantTransform<Scalar>& b) {
  if (a.channels() != b.channels() || a.rotations().size() != b.rotations().size() ||
      a.permutations() != b.permutations() || a.smoothing().size() != b.smoothing().size())
    return false;
  for (std::size_t i = 0; i < a.rotations().size(); ++i) {
    if (a.rotations()[i] != b.rotations()[i]) return false;  // finite (checked), so == is bitwise up to ±0
  }
  return a.smoothing() == b.smoothing();
}

template <class Scalar>
void check(const std::string& bytes) {
  std::istringstream in(bytes);
  std::optional<oq::transform::DuQuantTransform<Scalar>> t;
  try {
    t.emplace(oq::transform::load_duquant<Scalar>(in));
  } catch (const std::invalid_argument&) {
    return;  // malformed
  } catch (const std::domain_error&) {
    return;  // a NaN or ±Inf entry
  }
  const Eigen::Index c = t->channels(), b = t->block_size();
  require(b > 0 && c % b == 0, "block size does not divide the channels");
  for (const auto& r : t->rotations()) require(r.rows() == b && r.cols() == b, "a rotation is not b x b");
  for (const auto& p : t->permutations()) {
    std::vector<Eigen::Index> sorted(p.begin(), p.end());
    std::sort(sorted.begin(), sorted.end());
    bool identity = static_cast<Eigen::Index>(sorted.size()) == c;
    for (std::size_t j = 0; identity && j < sorted.size(); ++j) identity = sorted[j] == static_cast<Eigen::Index>(j);
    require(identity, "a permutation is not a permutation of the channels");
  }

  std::ostringstream out;
  oq::transform::save_duquant(out, *t);  // within the load bounds, so it must not throw
  const std::string saved = out.str();
  const std::size_t header = 48;
  // In the file's scalar size: a float file read as double (widened) is
  // saved as float again.
  const std::size_t rotation_bytes = t->rotations().size() * static_cast<std::size_t>(b * b) * t->scalar_bytes();
  require(saved.size() <= bytes.size() && bytes.compare(0, header, saved, 0, header) == 0 &&
              bytes.compare(header + rotation_bytes, saved.size() - header - rotation_bytes, saved,
                            header + rotation_bytes) == 0,
          "save_duquant did not write the header, permutations or scales that were loaded");
  std::istringstream again(saved);
  require(same(*t, oq::transform::load_duquant<Scalar>(again)), "the transform changed through save/load");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  check<float>(bytes);
  check<double>(bytes);
  return 0;
}
