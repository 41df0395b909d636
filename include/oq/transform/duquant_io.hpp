// oq/transform/duquant_io.hpp: a calibrated DuQuant transform on disk.
//
// Format (all integers and floats little-endian, no padding):
//
//   offset  size        field
//   0       8           magic "OQDUQNT\0"
//   8       4  u32      format version (1)
//   12      4  u32      bytes per scalar: 4 (float) or 8 (double)
//   16      8  u64      channels C
//   24      8  u64      block size b (divides C)
//   32      8  u64      rotations n (>= 1); permutations = n − 1
//   40      8  u64      1 if smoothing scales follow, else 0
//   48      n·b·b       rotation blocks, each row-major
//   …       (n−1)·C·8   permutations, u64 each (perm[j] = old channel at j)
//   …       C           smoothing scales (if present)
//
// Loading checks every field and the stream after every read, so a truncated
// or corrupted file gives std::invalid_argument naming what is wrong, never a
// half-filled transform; the DuQuantTransform constructor then re-checks that
// the rotations are orthogonal and the permutations are permutations.
//
//   std::ofstream out("layer3.duquant", std::ios::binary);
//   oq::transform::save_duquant(out, transform);
//   auto back = oq::transform::load_duquant<float>(in);
#pragma once

#include <oq/detail/check.hpp>
#include <oq/transform/duquant.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <istream>
#include <ostream>
#include <string_view>
#include <type_traits>
#include <vector>

namespace oq::transform {

inline constexpr std::array<char, 8> kDuQuantMagic = {'O', 'Q', 'D', 'U', 'Q', 'N', 'T', '\0'};
inline constexpr std::uint32_t kDuQuantFormatVersion = 1;

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

}  // namespace detail_io

template <class Scalar>
void save_duquant(std::ostream& out, const DuQuantTransform<Scalar>& t) {
  out.write(kDuQuantMagic.data(), kDuQuantMagic.size());
  detail_io::write_le<std::uint32_t>(out, kDuQuantFormatVersion);
  detail_io::write_le<std::uint32_t>(out, sizeof(Scalar));
  const Eigen::Index b = t.block_size();
  detail_io::write_le<std::uint64_t>(out, static_cast<std::uint64_t>(t.channels()));
  detail_io::write_le<std::uint64_t>(out, static_cast<std::uint64_t>(b));
  detail_io::write_le<std::uint64_t>(out, t.rotations().size());
  detail_io::write_le<std::uint64_t>(out, t.smoothing().size() != 0 ? 1 : 0);
  for (const auto& r : t.rotations())
    for (Eigen::Index i = 0; i < b; ++i)
      for (Eigen::Index j = 0; j < b; ++j) detail_io::write_le<Scalar>(out, r(i, j));
  for (const auto& p : t.permutations())
    for (Eigen::Index v : p) detail_io::write_le<std::uint64_t>(out, static_cast<std::uint64_t>(v));
  for (Eigen::Index j = 0; j < t.smoothing().size(); ++j) detail_io::write_le<Scalar>(out, t.smoothing()[j]);
  detail::require(static_cast<bool>(out), "oq::transform::save_duquant", "writing to the stream failed");
}

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
  detail::require(scalar_bytes == sizeof(Scalar), kWhere, "the file holds ", scalar_bytes,
                  "-byte scalars, but load_duquant was asked for ", sizeof(Scalar), "-byte ones");
  const auto channels = detail_io::read_le<std::uint64_t>(in, "channels");
  const auto b = detail_io::read_le<std::uint64_t>(in, "the block size");
  const auto rotations = detail_io::read_le<std::uint64_t>(in, "the rotation count");
  const auto has_smoothing = detail_io::read_le<std::uint64_t>(in, "the smoothing flag");
  // Bounds before any allocation: a corrupted header must not ask for terabytes.
  constexpr std::uint64_t kMaxChannels = std::uint64_t(1) << 24;
  detail::require(channels > 0 && channels <= kMaxChannels, kWhere, "channels must be in [1, ", kMaxChannels,
                  "], got ", channels);
  detail::require(b > 0 && b <= 65536 && channels % b == 0, kWhere, "block size must divide channels (", channels,
                  ") and be at most 65536, got ", b);
  detail::require(rotations >= 1 && rotations <= 64, kWhere, "rotation count must be in [1, 64], got ", rotations);
  detail::require(has_smoothing <= 1, kWhere, "smoothing flag must be 0 or 1, got ", has_smoothing);

  const auto n = static_cast<Eigen::Index>(b);
  std::vector<DenseMatrix<Scalar>> rs;
  for (std::uint64_t k = 0; k < rotations; ++k) {
    DenseMatrix<Scalar> r(n, n);
    for (Eigen::Index i = 0; i < n; ++i)
      for (Eigen::Index j = 0; j < n; ++j) r(i, j) = detail_io::read_le<Scalar>(in, "a rotation block");
    rs.push_back(std::move(r));
  }
  std::vector<Permutation> ps;
  for (std::uint64_t k = 0; k + 1 < rotations; ++k) {
    Permutation p(static_cast<std::size_t>(channels));
    for (auto& v : p) {
      const auto raw = detail_io::read_le<std::uint64_t>(in, "a permutation");
      detail::require(raw < channels, kWhere, "permutation entry ", raw, " is not a channel below ", channels);
      v = static_cast<Eigen::Index>(raw);
    }
    ps.push_back(std::move(p));
  }
  typename DuQuantTransform<Scalar>::Vector smoothing;
  if (has_smoothing == 1) {
    smoothing.resize(static_cast<Eigen::Index>(channels));
    for (Eigen::Index j = 0; j < smoothing.size(); ++j) smoothing[j] = detail_io::read_le<Scalar>(in, "the smoothing scales");
  }
  return DuQuantTransform<Scalar>(static_cast<Eigen::Index>(channels), std::move(rs), std::move(ps),
                                  std::move(smoothing));
}

}  // namespace oq::transform
