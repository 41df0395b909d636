// libFuzzer target for reading a GPTQ linear from a checkpoint: a safetensors
// file through oq::io::read_gptq_linear and unpack_gptq_linear, in both
// qzeros conventions (oq/io/gptq_checkpoint.hpp).
//
// Contract under test: any input either gives a linear or throws what the API
// documents — FormatError for a malformed file or a tensor of the wrong dtype
// or rank, std::invalid_argument for a missing tensor or shapes that disagree
// (or g_idx outside [0, G)), std::domain_error for a NaN or ±∞ scale — never a
// crash, a sanitizer report, a hang or another exception. What unpacks is a
// valid linear, so everything after it must hold (a broken check aborts):
//   - every code is in [0, 15] and every zero an integer in the format's range
//     ("gptq" stores zero − 1 in a nibble: 1..16; "gptq_v2": 0..15);
//   - dequantize_gptq_linear is scale · (code − zero) for every weight, read
//     through g_idx;
//   - packing it again either succeeds and unpacks to the same linear, bit for
//     bit, or refuses for a reason the unpacked linear shows: a scale that is
//     not positive, or a "gptq" zero of 16 (the nibble 15), which "gptq" cannot
//     store (pack_gptq_linear's documented domain errors).
//
// Built twice (tests/fuzz/CMakeLists.txt): with replay_main.cpp in every build
// (ctest fuzz.gptq_replay), and as a real libFuzzer binary with clang
// (OQ_BUILD_FUZZERS, ctest fuzz.gptq).
#include <oq/io/gptq_checkpoint.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <stdexcept>
#include <vector>

namespace {

void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "gptq_fuzz: broken: %s\n", what);
  std::abort();
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

void check_linear(const oq::io::GptqPackedLinear& packed, oq::io::GptqCheckpointFormat format) {
  oq::io::GptqLinearCodes c;
  try {
    c = oq::io::unpack_gptq_linear(packed, format);
  } catch (const std::invalid_argument&) {
    return;  // shapes that disagree, g_idx out of range
  } catch (const std::domain_error&) {
    return;  // a NaN or ±∞ scale
  }
  const bool v1 = format == oq::io::GptqCheckpointFormat::kGptq;
  const Eigen::Index out = c.codes.rows(), in = c.codes.cols(), groups = c.params.scale.cols();
  require(c.params.zero.rows() == out && c.params.zero.cols() == groups && c.params.scale.rows() == out,
          "parameter shapes");
  require(static_cast<Eigen::Index>(c.group_index.size()) == in, "group_index size");
  require((c.codes.array() >= 0).all() && (c.codes.array() <= 15).all(), "a code outside [0, 15]");
  bool packable = true;
  for (Eigen::Index n = 0; n < out; ++n) {
    for (Eigen::Index g = 0; g < groups; ++g) {
      const float z = c.params.zero(n, g), s = c.params.scale(n, g);
      require(z == std::nearbyint(z) && z >= (v1 ? 1.0f : 0.0f) && z <= (v1 ? 16.0f : 15.0f), "a zero out of range");
      require(std::isfinite(s), "a non-finite scale was returned");
      if (!(s > 0.0f) || (v1 && z == 16.0f)) packable = false;
    }
  }

  const Eigen::MatrixXf w = oq::io::dequantize_gptq_linear(c);
  for (Eigen::Index n = 0; n < out; ++n) {
    for (Eigen::Index k = 0; k < in; ++k) {
      const Eigen::Index g = c.group_index[static_cast<std::size_t>(k)];
      const float expected = (static_cast<float>(c.codes(n, k)) - c.params.zero(n, g)) * c.params.scale(n, g);
      require(same_bits(w(n, k), expected), "dequantize_gptq_linear differs from scale * (code - zero)");
    }
  }

  oq::io::GptqPackedLinear again;
  try {
    again = oq::io::pack_gptq_linear(c, format);
  } catch (const std::domain_error&) {
    require(!packable, "pack_gptq_linear refused a linear it can store");
    return;
  }
  require(packable, "pack_gptq_linear stored a zero or scale it documents as unstorable");
  const oq::io::GptqLinearCodes back = oq::io::unpack_gptq_linear(again, format);
  require(back.codes == c.codes && back.group_index == c.group_index && back.params.zero == c.params.zero,
          "codes, g_idx or zeros changed through pack/unpack");
  for (Eigen::Index i = 0; i < c.params.scale.size(); ++i) {
    require(same_bits(back.params.scale.data()[i], c.params.scale.data()[i]), "a scale changed through pack/unpack");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto bytes = std::as_bytes(std::span<const std::uint8_t>(data, size));
  oq::io::GptqPackedLinear packed;
  try {
    const auto file = oq::io::SafetensorsFile::from_bytes(std::vector<std::byte>(bytes.begin(), bytes.end()));
    packed = oq::io::read_gptq_linear(file, "l");
  } catch (const oq::io::FormatError&) {
    return 0;  // malformed file, or a tensor of the wrong dtype or rank
  } catch (const std::invalid_argument&) {
    return 0;  // a tensor missing
  }
  check_linear(packed, oq::io::GptqCheckpointFormat::kGptq);
  check_linear(packed, oq::io::GptqCheckpointFormat::kGptqV2);
  return 0;
}
