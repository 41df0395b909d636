// oq/transform/duquant_io.hpp: a calibrated DuQuant transform on disk.
//
// Format (all integers and floats little-endian, no padding):
//
//   offset  size        field
//   0       8           magic "OQDUQNT\0"
//   8       4  u32      format version (1)
//   12      4  u32      bytes per scalar: 4 (float) or 8 (double)
//   16      8  u64      channels C (1 .. 2^24)
//   24      8  u64      block size b (divides C, at most 65536)
//   32      8  u64      rotations n (1 .. 64); permutations = n − 1
//   40      8  u64      1 if smoothing scales follow, else 0
//   48      n·b·b       rotation blocks, each row-major
//   …       (n−1)·C·8   permutations, u64 each (perm[j] = old channel at j)
//   …       C           smoothing scales (if present)
//
// Nothing may follow the data. Loading checks every field and the stream
// after every read, so a truncated, extended or corrupted file gives
// std::invalid_argument naming what is wrong (a NaN
// or ±Inf rotation entry or scale gives std::domain_error, as NaN/Inf data
// does everywhere in oq; both derive from std::logic_error), never a
// half-filled transform; the DuQuantTransform constructor then re-checks that
// the rotations are orthogonal, the permutations are permutations and the
// scales are positive. The header's sizes are bounded (kDuQuantMaxChannels,
// kDuQuantMaxBlockSize, kDuQuantMaxRotations) and, where the stream can
// seek, checked against the bytes it holds before anything is allocated;
// the data is read in chunks, so even an unseekable stream with a lying
// header costs memory only for what it holds. save_duquant refuses a
// transform beyond those bounds, so whatever it writes loads. A rotation
// slightly off orthogonal, as files from before 2026-11-30 may hold, is
// projected onto the orthogonal matrices on load (kDuQuantLegacyOrthogonality,
// bounded by kDuQuantLegacyBlockCap).
//
//   std::ofstream out("layer3.duquant", std::ios::binary);
//   oq::transform::save_duquant(out, transform);
//   auto back = oq::transform::load_duquant<float>(in);   // or <double>: a float file widens exactly
#pragma once

#include <oq/detail/check.hpp>
#include <oq/transform/duquant.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <istream>
#include <limits>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace oq::transform {

inline constexpr std::array<char, 8> kDuQuantMagic = {'O', 'Q', 'D', 'U', 'Q', 'N', 'T', '\0'};
inline constexpr std::uint32_t kDuQuantFormatVersion = 1;
/// Bounds of the header that load_duquant accepts and save_duquant enforces.
inline constexpr std::uint64_t kDuQuantMaxChannels = std::uint64_t(1) << 24;
inline constexpr std::uint64_t kDuQuantMaxBlockSize = 65536;
inline constexpr std::uint64_t kDuQuantMaxRotations = kMaxPermutationRounds + 1;  // 64, the most calibration makes
/// The orthogonality tolerance of files written before 2026-11-30, in units
/// of min(b, kDuQuantLegacyBlockCap)·ε: load_duquant projects a rotation
/// within it (see there).
inline constexpr double kDuQuantLegacyOrthogonality = 100.0;
/// The old tolerance 100·b·ε grew with b, to 0.78 at b = 65536 for float:
/// within it a matrix far from any rotation would have been projected onto a
/// different one and loaded silently (issue 23). What those files can
/// honestly hold does not grow with b: their drift came from float products
/// of the greedy steps, measured at ~150ε at most. So the tolerance stops at
/// its value at DuQuant's default block size 128 (100·128·ε ≈ 1.5e-3 in
/// float), which every file calibrated at b ≤ 128 met when it was written.
inline constexpr std::uint64_t kDuQuantLegacyBlockCap = 128;

namespace detail_io {

// Writes/reads the bytes of an arithmetic value in little-endian order on any host.
template <class T>
void write_le(std::ostream& out, T value) {
  static_assert(std::is_arithmetic_v<T>);
  std::array<char, sizeof(T)> bytes;
  std::memcpy(bytes.data(), &value, sizeof(T));
  if constexpr (std::endian::native == std::endian::big) std::reverse(bytes.begin(), bytes.end());
  out.write(bytes.data(), sizeof(T));
}

template <class T>
T read_le(std::istream& in, std::string_view field) {
  static_assert(std::is_arithmetic_v<T>);
  std::array<char, sizeof(T)> bytes;
  in.read(bytes.data(), sizeof(T));
  detail::require(static_cast<bool>(in), "oq::transform::load_duquant", "the stream ended inside ", field,
                  " (truncated file?)");
  if constexpr (std::endian::native == std::endian::big) std::reverse(bytes.begin(), bytes.end());
  T value;
  std::memcpy(&value, bytes.data(), sizeof(T));
  return value;
}

// `count` values, read `kChunk` at a time: memory grows with what the stream
// holds, not with what a corrupted header claims.
template <class T>
std::vector<T> read_array(std::istream& in, std::uint64_t count, std::string_view field) {
  static_assert(std::is_arithmetic_v<T>);
  constexpr std::uint64_t kChunk = std::uint64_t(1) << 16;
  std::vector<T> values;
  while (values.size() < count) {
    const std::size_t done = values.size();
    const auto n = static_cast<std::size_t>(std::min(kChunk, count - done));
    values.resize(done + n);
    in.read(reinterpret_cast<char*>(values.data() + done), static_cast<std::streamsize>(n * sizeof(T)));
    detail::require(static_cast<bool>(in), "oq::transform::load_duquant", "the stream ended inside ", field,
                    " (truncated file?)");
  }
  if constexpr (std::endian::native == std::endian::big) {
    for (T& v : values) {
      std::array<char, sizeof(T)> bytes;
      std::memcpy(bytes.data(), &v, sizeof(T));
      std::reverse(bytes.begin(), bytes.end());
      std::memcpy(&v, bytes.data(), sizeof(T));
    }
  }
  return values;
}

// Bytes from the read position to the end, where the stream can seek (files,
// string streams); std::nullopt where it cannot (pipes). The position is restored.
inline std::optional<std::uint64_t> remaining_bytes(std::istream& in) {
  const std::istream::pos_type here = in.tellg();
  if (here == std::istream::pos_type(-1)) return std::nullopt;
  in.seekg(0, std::ios::end);
  const std::istream::pos_type end = in.tellg();  // -1 when the seek failed
  in.clear();
  in.seekg(here);
  detail::require(static_cast<bool>(in), "oq::transform::load_duquant",
                  "the stream could not return to its position after measuring its length");
  if (end == std::istream::pos_type(-1) || end < here) return std::nullopt;
  return static_cast<std::uint64_t>(end - here);
}

// The file of t with Stored scalars (Stored holds every value of t exactly).
template <class Stored, class Scalar>
void write_duquant(std::ostream& out, const DuQuantTransform<Scalar>& t) {
  out.write(kDuQuantMagic.data(), kDuQuantMagic.size());
  write_le<std::uint32_t>(out, kDuQuantFormatVersion);
  write_le<std::uint32_t>(out, sizeof(Stored));
  const Eigen::Index b = t.block_size();
  write_le<std::uint64_t>(out, static_cast<std::uint64_t>(t.channels()));
  write_le<std::uint64_t>(out, static_cast<std::uint64_t>(b));
  write_le<std::uint64_t>(out, t.rotations().size());
  write_le<std::uint64_t>(out, t.smoothing().size() != 0 ? 1 : 0);
  for (const auto& r : t.rotations())
    for (Eigen::Index i = 0; i < b; ++i)
      for (Eigen::Index j = 0; j < b; ++j) write_le<Stored>(out, static_cast<Stored>(r(i, j)));
  for (const auto& p : t.permutations())
    for (Eigen::Index v : p) write_le<std::uint64_t>(out, static_cast<std::uint64_t>(v));
  for (Eigen::Index j = 0; j < t.smoothing().size(); ++j) write_le<Stored>(out, static_cast<Stored>(t.smoothing()[j]));
  detail::require(static_cast<bool>(out), "oq::transform::save_duquant", "writing to the stream failed");
}

}  // namespace detail_io

/// Writes t in the format above. Throws std::invalid_argument, before
/// writing anything, when t exceeds the bounds load_duquant accepts (more
/// than kDuQuantMaxRotations rotations, channels or block size too large).
template <class Scalar>
void save_duquant(std::ostream& out, const DuQuantTransform<Scalar>& t) {
  constexpr std::string_view kWhere = "oq::transform::save_duquant";
  const auto channels = static_cast<std::uint64_t>(t.channels());
  detail::require(channels <= kDuQuantMaxChannels, kWhere, "t.channels() must be at most ", kDuQuantMaxChannels,
                  " for load_duquant to read it back, got ", channels);
  detail::require(static_cast<std::uint64_t>(t.block_size()) <= kDuQuantMaxBlockSize, kWhere,
                  "t.block_size() must be at most ", kDuQuantMaxBlockSize, " for load_duquant to read it back, got ",
                  t.block_size());
  detail::require(t.rotations().size() <= kDuQuantMaxRotations, kWhere, "t.rotations() must hold at most ",
                  kDuQuantMaxRotations, " matrices (kMaxPermutationRounds = ", kMaxPermutationRounds,
                  " permutation rounds) for load_duquant to read it back, got ", t.rotations().size());
  // A transform widened from float (DuQuantTransform's converting
  // constructor) holds float values: written as floats, exactly, it loads
  // back as itself (a double file's rotations would have to be orthogonal to
  // double's rounding, which float ones are not).
  if constexpr (!std::is_same_v<Scalar, float>) {
    if (t.scalar_bytes() == sizeof(float)) {
      detail_io::write_duquant<float>(out, t);
      return;
    }
  }
  detail_io::write_duquant<Scalar>(out, t);
}

namespace detail_io {

// load_duquant after the scalar size: the rest of a file of Scalar values.
template <class Scalar>
DuQuantTransform<Scalar> load_duquant_data(std::istream& in) {
  constexpr std::string_view kWhere = "oq::transform::load_duquant";
  const auto channels = read_le<std::uint64_t>(in, "channels");
  const auto b = read_le<std::uint64_t>(in, "the block size");
  const auto rotations = read_le<std::uint64_t>(in, "the rotation count");
  const auto has_smoothing = read_le<std::uint64_t>(in, "the smoothing flag");
  // Bounds before any allocation: a corrupted header must not ask for terabytes.
  detail::require(channels > 0 && channels <= kDuQuantMaxChannels, kWhere, "channels must be in [1, ",
                  kDuQuantMaxChannels, "], got ", channels);
  detail::require(b > 0 && b <= kDuQuantMaxBlockSize && channels % b == 0, kWhere, "block size must divide channels (",
                  channels, ") and be at most ", kDuQuantMaxBlockSize, ", got ", b);
  detail::require(rotations >= 1 && rotations <= kDuQuantMaxRotations, kWhere, "rotation count must be in [1, ",
                  kDuQuantMaxRotations, "], got ", rotations);
  detail::require(has_smoothing <= 1, kWhere, "smoothing flag must be 0 or 1, got ", has_smoothing);
  // At most 2^41 bytes under those bounds: no overflow.
  const std::uint64_t payload = rotations * b * b * sizeof(Scalar) + (rotations - 1) * channels * 8 +
                                has_smoothing * channels * sizeof(Scalar);
  if (const auto remaining = remaining_bytes(in)) {
    detail::require(*remaining >= payload, kWhere, "the stream ended inside the data: the header promises ", payload,
                    " bytes of rotations, permutations and scales, the stream holds ", *remaining,
                    " (truncated file?)");
  }

  const auto n = static_cast<Eigen::Index>(b);
  std::vector<DenseMatrix<Scalar>> rs;
  for (std::uint64_t k = 0; k < rotations; ++k) {
    const std::vector<Scalar> values = read_array<Scalar>(in, b * b, "a rotation block");
    rs.push_back(Eigen::Map<const RowMajorMatrix<Scalar>>(values.data(), n, n));
    // Files saved before calibration projected its greedy rotation onto the
    // orthogonal matrices (oq before 2026-11-30) hold float rotations drifted
    // by up to ~150ε at small b or many steps, beyond what the constructor now
    // accepts but within the 100·b·ε it accepted then: those are projected
    // (nearest_orthogonal, which moves them by their drift). A rotation
    // farther off (or beyond kDuQuantLegacyBlockCap's bound) is corrupt, and
    // the constructor says so.
    detail::require_finite(rs.back(), kWhere, "rotations[" + std::to_string(k) + "]");
    const double error = detail_rotation::orthogonality_error(rs.back());
    const double legacy_tolerance = kDuQuantLegacyOrthogonality *
                                    static_cast<double>(std::min<std::uint64_t>(b, kDuQuantLegacyBlockCap)) *
                                    static_cast<double>(std::numeric_limits<Scalar>::epsilon());
    if (error > detail_rotation::orthogonality_tolerance<Scalar>(n) && error <= legacy_tolerance) {
      rs.back() = nearest_orthogonal(rs.back());
    }
  }
  std::vector<Permutation> ps;
  for (std::uint64_t k = 0; k + 1 < rotations; ++k) {
    const std::vector<std::uint64_t> raw = read_array<std::uint64_t>(in, channels, "a permutation");
    Permutation p(raw.size());
    for (std::size_t j = 0; j < raw.size(); ++j) {
      detail::require(raw[j] < channels, kWhere, "permutation entry ", raw[j], " is not a channel below ", channels);
      p[j] = static_cast<Eigen::Index>(raw[j]);
    }
    ps.push_back(std::move(p));
  }
  typename DuQuantTransform<Scalar>::Vector smoothing;
  if (has_smoothing == 1) {
    const std::vector<Scalar> values = read_array<Scalar>(in, channels, "the smoothing scales");
    smoothing = Eigen::Map<const typename DuQuantTransform<Scalar>::Vector>(values.data(),
                                                                            static_cast<Eigen::Index>(channels));
  }
  // A file is one transform: bytes after it mean the header does not
  // describe the file (as the .npy and safetensors readers hold; issue 23).
  if (const auto remaining = remaining_bytes(in)) {
    detail::require(*remaining == 0, kWhere, *remaining, " bytes follow the transform (expected the stream to end ",
                    "there: the header does not describe them)");
  } else {
    detail::require(in.peek() == std::istream::traits_type::eof(), kWhere,
                    "bytes follow the transform (expected the stream to end there: the header does not describe "
                    "them)");
  }
  return DuQuantTransform<Scalar>(static_cast<Eigen::Index>(channels), std::move(rs), std::move(ps),
                                  std::move(smoothing));
}

}  // namespace detail_io

/// Reads a transform that save_duquant wrote. A file of floats loads as
/// DuQuantTransform<double> too, widened exactly (the converting
/// constructor: the rotations keep their float rounding, and saving the
/// result writes the float file again); a file of doubles refuses to load
/// as float, which would round its rotations.
template <class Scalar>
DuQuantTransform<Scalar> load_duquant(std::istream& in) {
  constexpr std::string_view kWhere = "oq::transform::load_duquant";
  std::array<char, 8> magic{};
  in.read(magic.data(), magic.size());
  detail::require(static_cast<bool>(in) && magic == kDuQuantMagic, kWhere,
                  "the stream does not start with the DuQuant magic \"OQDUQNT\"");
  const auto version = detail_io::read_le<std::uint32_t>(in, "the version");
  detail::require(version == kDuQuantFormatVersion, kWhere, "format version must be ", kDuQuantFormatVersion, ", got ",
                  version);
  const auto scalar_bytes = detail_io::read_le<std::uint32_t>(in, "the scalar size");
  if (scalar_bytes == sizeof(Scalar)) return detail_io::load_duquant_data<Scalar>(in);
  if constexpr (!std::is_same_v<Scalar, float> && sizeof(float) < sizeof(Scalar)) {
    if (scalar_bytes == sizeof(float)) return DuQuantTransform<Scalar>(detail_io::load_duquant_data<float>(in));
  }
  throw std::invalid_argument(detail::message_of(
      kWhere, "the file holds ", scalar_bytes, "-byte scalars, but load_duquant was asked for ", sizeof(Scalar),
      "-byte ones (", sizeof(float), "-byte files also load as double; ", sizeof(double),
      "-byte ones only as double: a narrower type would round the rotations)"));
}

}  // namespace oq::transform
