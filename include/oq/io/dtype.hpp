// oq/io/dtype.hpp: the element types that checkpoint and activation files
// store, and the conversion of one little-endian element to and from double.
//
// Shared by the safetensors and .npy readers/writers. Every stored element is
// little-endian (safetensors requires it; .npy files with '>' are rejected by
// the .npy parser, not converted). F16 and BF16 go through core/float16.hpp,
// which rounds to nearest even like PyTorch.
#pragma once

#include <oq/core/float16.hpp>

#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>

namespace oq::io {

static_assert(std::endian::native == std::endian::little,
              "oq::io reads little-endian files by reinterpreting bytes; big-endian hosts are not supported");

/// Element type of a stored tensor. Names follow safetensors ("F32", "BF16", ...).
enum class DType : std::uint8_t { kBool, kU8, kI8, kI16, kU16, kI32, kU32, kI64, kU64, kF16, kBF16, kF32, kF64 };

inline constexpr std::array<DType, 13> kAllDTypes{DType::kBool, DType::kU8,  DType::kI8,   DType::kI16, DType::kU16,
                                                  DType::kI32,  DType::kU32, DType::kI64,  DType::kU64, DType::kF16,
                                                  DType::kBF16, DType::kF32, DType::kF64};

/// Bytes per element.
constexpr std::size_t dtype_size(DType t) noexcept {
  switch (t) {
    case DType::kBool:
    case DType::kU8:
    case DType::kI8: return 1;
    case DType::kI16:
    case DType::kU16:
    case DType::kF16:
    case DType::kBF16: return 2;
    case DType::kI32:
    case DType::kU32:
    case DType::kF32: return 4;
    case DType::kI64:
    case DType::kU64:
    case DType::kF64: return 8;
  }
  return 0;
}

/// True for F16, BF16, F32, F64.
constexpr bool is_floating(DType t) noexcept {
  return t == DType::kF16 || t == DType::kBF16 || t == DType::kF32 || t == DType::kF64;
}

/// The safetensors spelling: "BOOL", "U8", "I8", ..., "F64".
constexpr std::string_view dtype_name(DType t) noexcept {
  switch (t) {
    case DType::kBool: return "BOOL";
    case DType::kU8: return "U8";
    case DType::kI8: return "I8";
    case DType::kI16: return "I16";
    case DType::kU16: return "U16";
    case DType::kI32: return "I32";
    case DType::kU32: return "U32";
    case DType::kI64: return "I64";
    case DType::kU64: return "U64";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kF32: return "F32";
    case DType::kF64: return "F64";
  }
  return "?";
}

/// Parse a safetensors dtype name; throws std::invalid_argument naming the
/// unknown name and the accepted ones.
inline DType dtype_from_name(std::string_view name) {
  for (DType t : kAllDTypes) {
    if (dtype_name(t) == name) return t;
  }
  std::string accepted;
  for (DType t : kAllDTypes) {
    if (!accepted.empty()) accepted += ", ";
    accepted += dtype_name(t);
  }
  throw std::invalid_argument("oq::io: unknown dtype '" + std::string(name) + "' (expected one of " + accepted + ")");
}

/// Read one little-endian element of type `t` at `src` as a double. Exact for
/// every type but I64/U64 beyond 2^53 (rounded, as any double conversion is).
inline double load_element(DType t, const std::byte* src) noexcept {
  auto load = [src]<class T>(T) {
    T v;
    std::memcpy(&v, src, sizeof(T));
    return v;
  };
  switch (t) {
    case DType::kBool: return load(std::uint8_t{}) != 0 ? 1.0 : 0.0;
    case DType::kU8: return load(std::uint8_t{});
    case DType::kI8: return load(std::int8_t{});
    case DType::kI16: return load(std::int16_t{});
    case DType::kU16: return load(std::uint16_t{});
    case DType::kI32: return load(std::int32_t{});
    case DType::kU32: return load(std::uint32_t{});
    case DType::kI64: return static_cast<double>(load(std::int64_t{}));
    case DType::kU64: return static_cast<double>(load(std::uint64_t{}));
    case DType::kF16: return core::f16_bits_to_float(load(std::uint16_t{}));
    case DType::kBF16: return core::bf16_bits_to_float(load(std::uint16_t{}));
    case DType::kF32: return load(float{});
    case DType::kF64: return load(double{});
  }
  return 0.0;
}

namespace detail_dtype {

/// The shortest text that reads back as `value` ("1e+39", "65520").
inline std::string shortest(double value) {
  std::array<char, 32> buffer{};
  const auto end = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value).ptr;
  return std::string(buffer.data(), end);
}

[[noreturn]] inline void overflow(double value, DType t) {
  throw std::domain_error("oq::io: value " + shortest(value) + " is finite but overflows " +
                          std::string(dtype_name(t)) + " (it would be stored as " + (value > 0 ? "+inf" : "-inf") +
                          "; expected a value within the type's range)");
}

/// value as a float, or std::domain_error when finite and beyond float's
/// range: from (2 − 2^−24)·2^127, half an ulp past FLT_MAX, a double rounds
/// to ±inf (and converting it is undefined behaviour in C++).
inline float to_float(double value, DType t) {
  const double rounds_to_inf = std::ldexp(2.0 - std::ldexp(1.0, -24), 127);
  if (std::isfinite(value) && std::fabs(value) >= rounds_to_inf) overflow(value, t);
  return static_cast<float>(value);
}

/// value's half-precision bits through float, or std::domain_error when a
/// finite value became ±inf (`inf_bits` with the sign cleared).
template <class Convert>
std::uint16_t narrowed_bits(double value, DType t, Convert convert, std::uint16_t inf_bits) {
  const std::uint16_t bits = convert(to_float(value, t));
  if (std::isfinite(value) && (bits & 0x7FFFu) == inf_bits) overflow(value, t);
  return bits;
}

}  // namespace detail_dtype

/// Store `value` as one little-endian element of type `t` at `dst`. Floating
/// types round to nearest even (F16/BF16 through float, which is exact for
/// float inputs; a double that is not a float can be rounded twice). Integer types
/// require an integral value in range and throw std::domain_error otherwise,
/// so a silent truncation can never happen. Likewise a finite value too large
/// for a floating type (one that would round to ±inf: |value| ≥ 65520 for
/// F16, about 3.3961e38 for BF16, 3.4028e38 for F32) throws std::domain_error
/// instead of being stored as ±inf (issue 23); ±inf and NaN are stored as
/// they are.
inline void store_element(DType t, double value, std::byte* dst) {
  using detail_dtype::narrowed_bits;
  using detail_dtype::to_float;
  auto store = [dst]<class T>(T v) { std::memcpy(dst, &v, sizeof(T)); };
  auto integral = [value, t]<class T>(T) {
    // max() + 1 = 2^digits is exact in double even for 64-bit types, whose
    // max() itself is not: compare against it strictly.
    const double upper_exclusive = std::ldexp(1.0, std::numeric_limits<T>::digits);
    if (!(std::nearbyint(value) == value) || value < static_cast<double>(std::numeric_limits<T>::lowest()) ||
        !(value < upper_exclusive)) {
      throw std::domain_error("oq::io: value " + std::to_string(value) + " is not representable as " +
                              std::string(dtype_name(t)));
    }
    return static_cast<T>(value);
  };
  switch (t) {
    case DType::kBool:
      if (value != 0.0 && value != 1.0) {
        throw std::domain_error("oq::io: value " + std::to_string(value) + " is not representable as BOOL (0 or 1)");
      }
      store(static_cast<std::uint8_t>(value != 0.0));
      return;
    case DType::kU8: store(integral(std::uint8_t{})); return;
    case DType::kI8: store(integral(std::int8_t{})); return;
    case DType::kI16: store(integral(std::int16_t{})); return;
    case DType::kU16: store(integral(std::uint16_t{})); return;
    case DType::kI32: store(integral(std::int32_t{})); return;
    case DType::kU32: store(integral(std::uint32_t{})); return;
    case DType::kI64: store(integral(std::int64_t{})); return;
    case DType::kU64: store(integral(std::uint64_t{})); return;
    case DType::kF16: store(narrowed_bits(value, t, core::float_to_f16_bits, std::uint16_t{0x7C00})); return;
    case DType::kBF16: store(narrowed_bits(value, t, core::float_to_bf16_bits, std::uint16_t{0x7F80})); return;
    case DType::kF32: store(to_float(value, t)); return;
    case DType::kF64: store(value); return;
  }
}

}  // namespace oq::io
