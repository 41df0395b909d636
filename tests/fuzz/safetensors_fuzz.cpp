// libFuzzer target for oq::io::parse_safetensors_header and SafetensorsFile
// (oq/io/safetensors.hpp).
//
// Contract under test: any input either parses or throws oq::io::FormatError —
// never a crash, a sanitizer report, a hang or another exception. And what
// parses is a valid file, so everything after it must succeed (an exception
// escaping from there is a bug, reported by the driver):
//   - SafetensorsFile::from_bytes gives the same header;
//   - the raw round trip: every tensor re-added to SafetensorsWriter (dtype,
//     shape, bytes) in the parsed order, with the metadata, re-parses to the
//     same tensors (names, dtypes, shapes, offsets: the writer lays them out
//     contiguously in that order, which is what the parser required) and the
//     same data section, byte for byte;
//   - the value round trip: every tensor read as doubles, written as F64 and
//     re-parsed, reads back bit for bit;
//   - the fast conversion paths (F32/F16/BF16 → float, the matrix() and
//     vector() views) agree with the per-element load_element path.
// A broken check aborts, which libFuzzer and the replay driver report.
//
// Built twice (tests/fuzz/CMakeLists.txt): with replay_main.cpp in every build
// (ctest fuzz.safetensors_replay), and as a real libFuzzer binary with clang
// (OQ_BUILD_FUZZERS, ctest fuzz.safetensors).
#include <oq/io/safetensors.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <span>
#include <utility>
#include <vector>

namespace {

void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "safetensors_fuzz: round trip broken: %s\n", what);
  std::abort();
}

bool same_bits(const void* a, const void* b, std::size_t n) { return n == 0 || std::memcmp(a, b, n) == 0; }

// Equal floats, telling -0 from +0; any NaN equals any NaN (converting a
// signalling NaN through double quiets it, so payload bits may differ
// between the direct and the double path).
template <class T>
bool same_value(T a, T b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return same_bits(&a, &b, sizeof(T));
}

template <class T>
bool same_values(const T* a, const T* b, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (!same_value(a[i], b[i])) return false;
  }
  return true;
}

std::span<const std::byte> data_section(const oq::io::SafetensorsFile& f) {
  return f.file_bytes().subspan(f.header().data_offset);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto bytes = std::as_bytes(std::span<const std::uint8_t>(data, size));
  oq::io::SafetensorsHeader header;
  try {
    header = oq::io::parse_safetensors_header(bytes);
  } catch (const oq::io::FormatError&) {
    return 0;  // malformed input, reported as the API promises
  }

  const auto file = oq::io::SafetensorsFile::from_bytes(std::vector<std::byte>(bytes.begin(), bytes.end()));
  require(file.header() == header, "from_bytes parsed a different header");
  require(std::is_sorted(header.tensors.begin(), header.tensors.end(),
                         [](const auto& a, const auto& b) { return a.begin < b.begin; }),
          "tensors not sorted by begin");

  // Raw round trip.
  oq::io::SafetensorsWriter raw;
  for (const auto& [key, value] : header.metadata) raw.add_metadata(key, value);
  for (const auto& t : header.tensors) raw.add(t.name, t.dtype, t.shape, file.bytes(t.name));
  const auto again = oq::io::SafetensorsFile::from_bytes(raw.bytes());
  require(again.tensors() == header.tensors, "tensors changed through the writer");
  require(again.metadata() == header.metadata, "metadata changed through the writer");
  require(again.header().data_offset % 8 == 0, "the writer's data section is not 8-byte aligned");
  const auto before = data_section(file), after = data_section(again);
  require(before.size() == after.size() && same_bits(before.data(), after.data(), before.size()),
          "data section changed through the writer");

  // Value round trip through F64, and the conversion paths.
  oq::io::SafetensorsWriter values;
  std::vector<std::vector<double>> doubles;
  for (const auto& t : header.tensors) {
    std::vector<double> d = file.elements<double>(t.name);
    require(d.size() == t.size(), "elements<double> has the wrong size");
    values.add(t.name, oq::io::DType::kF64, t.shape,
               std::as_bytes(std::span<const double>(d.data(), d.size())));

    const std::vector<float> f = file.elements<float>(t.name);
    require(f.size() == d.size(), "elements<float> has the wrong size");
    const std::byte* src = file.bytes(t.name).data();
    for (std::size_t i = 0; i < d.size(); ++i) {
      const double reference = oq::io::load_element(t.dtype, src + i * oq::io::dtype_size(t.dtype));
      require(same_value(d[i], reference), "elements<double> differs from load_element");
      require(same_value(f[i], static_cast<float>(reference)), "elements<float> differs from load_element");
    }

    // The Eigen views hold the same values (they throw only for dimensions
    // beyond Eigen::Index, which an empty tensor can declare).
    const bool fits = std::all_of(t.shape.begin(), t.shape.end(), [](std::size_t dim) {
      return dim <= static_cast<std::size_t>(std::numeric_limits<Eigen::Index>::max());
    });
    if (fits && (t.shape.size() == 1 || t.shape.size() == 2)) {
      const auto m = file.matrix<float>(t.name);
      require(static_cast<std::size_t>(m.size()) == f.size() && same_values(m.data(), f.data(), f.size()),
              "matrix<float> differs from elements<float>");
    }
    if (fits && std::count_if(t.shape.begin(), t.shape.end(), [](std::size_t dim) { return dim != 1; }) <= 1) {
      const auto v = file.vector<double>(t.name);
      require(static_cast<std::size_t>(v.size()) == d.size() && same_values(v.data(), d.data(), d.size()),
              "vector<double> differs from elements<double>");
    }
    doubles.push_back(std::move(d));
  }
  const auto as_f64 = oq::io::SafetensorsFile::from_bytes(values.bytes());
  require(as_f64.tensors().size() == header.tensors.size(), "tensor count changed through F64");
  for (std::size_t k = 0; k < header.tensors.size(); ++k) {
    const auto& t = header.tensors[k];
    const auto& info = as_f64.info(t.name);
    require(info.dtype == oq::io::DType::kF64 && info.shape == t.shape, "dtype or shape changed through F64");
    const std::vector<double> back = as_f64.elements<double>(t.name);
    require(back.size() == doubles[k].size() &&
                same_bits(back.data(), doubles[k].data(), back.size() * sizeof(double)),
            "values changed through F64");
  }
  return 0;
}
