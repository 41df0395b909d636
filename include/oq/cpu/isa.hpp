// oq/cpu/isa.hpp: the instruction sets of oq's CPU kernels, which of them
// this build compiled and this processor runs, and how a caller picks one.
//
//   using namespace oq::cpu;
//   Isa best = best_isa();                 // kAvx512Vnni, kAvx2 or kScalar here
//   bool ok = isa_supported(Isa::kAvx2);   // compiled in and run by this CPU
//   Isa use = resolve_isa(Isa::kAuto, "my_engine");  // throws for a forced ISA the CPU lacks
//
// Dispatch is at run time, per call: the kernels of every instruction set are
// compiled into the same translation unit with GCC/clang function attributes
// (`__attribute__((target(...)))`, OQ_CPU_TARGET_*), so an engine built for
// plain x86-64 still runs VNNI code on a CPU that has it, and no global
// -march flag is needed. Every path computes the same int32 accumulators
// (exact integer arithmetic) and the same float epilogue.
//
// ARM: the NEON dot-product path (kNeonDot: sdot) is compiled where the
// compiler targets it (aarch64 with __ARM_FEATURE_DOTPROD, e.g.
// -march=armv8.2-a+dotprod or -mcpu=native on such a core); a binary built
// so assumes the CPU has it, as the compiler does. Elsewhere on aarch64 the
// scalar path runs.
#pragma once

#include <oq/detail/check.hpp>

#include <string_view>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define OQ_CPU_X86 1
#include <immintrin.h>
// AVX2 path: vpmaddubsw / vpmaddwd (and FMA for the rotations).
#define OQ_CPU_TARGET_AVX2 __attribute__((target("avx2,fma")))
// AVX-512 VNNI path: vpdpbusd, byte masks (BW), 256-bit forms (VL).
#define OQ_CPU_TARGET_AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))
#else
#define OQ_CPU_X86 0
#endif

#if defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD) && defined(__ARM_NEON)
#define OQ_CPU_NEON_DOT 1
#include <arm_neon.h>
#else
#define OQ_CPU_NEON_DOT 0
#endif

// GCC 12's intrinsics headers trip its own -Wmaybe-uninitialized and
// -Wuninitialized through _mm512_undefined_* (GCC bug 105593, fixed in 13):
// the kernels' headers silence both between these two macros.
#if defined(__GNUC__) && !defined(__clang__)
#define OQ_CPU_INTRINSICS_WARNINGS_OFF \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"") \
      _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")
#define OQ_CPU_INTRINSICS_WARNINGS_ON _Pragma("GCC diagnostic pop")
#else
#define OQ_CPU_INTRINSICS_WARNINGS_OFF
#define OQ_CPU_INTRINSICS_WARNINGS_ON
#endif

namespace oq::cpu {

/// An instruction set of the CPU kernels. kAuto picks the best this CPU runs.
enum class Isa { kAuto, kScalar, kAvx2, kAvx512Vnni, kNeonDot };

constexpr std::string_view to_string(Isa isa) noexcept {
  switch (isa) {
    case Isa::kAuto: return "auto";
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "AVX2";
    case Isa::kAvx512Vnni: return "AVX-512 VNNI";
    case Isa::kNeonDot: return "NEON dot product";
  }
  return "unknown";
}

/// Whether this build has `isa`'s kernels and this processor (and its OS,
/// which must save the wide registers) runs them. kScalar always; kAuto too.
inline bool isa_supported(Isa isa) noexcept {
  switch (isa) {
    case Isa::kAuto:
    case Isa::kScalar: return true;
#if OQ_CPU_X86
    // libgcc/compiler-rt's cpu model checks XGETBV as well: an OS that does
    // not save the AVX/AVX-512 state reports the feature as absent.
    case Isa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::kAvx512Vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else
    case Isa::kAvx2:
    case Isa::kAvx512Vnni: return false;
#endif
    case Isa::kNeonDot: return OQ_CPU_NEON_DOT != 0;
  }
  return false;
}

/// The fastest instruction set this build and this CPU share.
inline Isa best_isa() noexcept {
  if (isa_supported(Isa::kAvx512Vnni)) return Isa::kAvx512Vnni;
  if (isa_supported(Isa::kAvx2)) return Isa::kAvx2;
  if (isa_supported(Isa::kNeonDot)) return Isa::kNeonDot;
  return Isa::kScalar;
}

/// kAuto → best_isa(); any other value is returned when supported and
/// otherwise refused with std::invalid_argument naming `where`.
inline Isa resolve_isa(Isa requested, std::string_view where) {
  if (requested == Isa::kAuto) return best_isa();
  detail::require(isa_supported(requested), where, "options.isa = ", to_string(requested),
                  " is not available on this CPU or in this build (best available: ", to_string(best_isa()), ")");
  return requested;
}

}  // namespace oq::cpu
