// oq::strict_fp's promise: a·b + c is rounded twice, never contracted into
// one fused multiply-add. With a = 1 + 2^-12, a·a = 1 + 2^-11 + 2^-24 exactly,
// halfway between two floats; rounded (to even) it is 1 + 2^-11, so with
// c = -(1 + 2^-11) two roundings give 0 and an FMA gives 2^-24.
#include <cstdio>

#if defined(__GNUC__)
#define OQ_CONSUMER_NOINLINE __attribute__((noinline))
#else
#define OQ_CONSUMER_NOINLINE
#endif

// Out of line, with inputs the compiler cannot see, so that it compiles the
// expression rather than folding it.
OQ_CONSUMER_NOINLINE float mul_add(float a, float b, float c) { return a * b + c; }

int main() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  // Built with -mfma: an FMA instruction on a CPU without one would fault.
  if (!__builtin_cpu_supports("fma")) {
    std::printf("strict_fp: this CPU has no FMA, nothing to check\n");
    return 0;
  }
#endif
  volatile float a = 1.0f + 0x1p-12f;
  volatile float c = -(1.0f + 0x1p-11f);
  const float r = mul_add(a, a, c);
#ifdef OQ_CONSUMER_CONTROL
  std::printf("strict_fp_control (no oq::strict_fp): a*a + c = %a (%s)\n", static_cast<double>(r),
              r == 0.0f ? "not contracted" : "contracted into an FMA");
  return 0;
#else
  if (r != 0.0f) {
    std::printf("strict_fp: a*a + c = %a, expected 0 (contracted into an FMA despite oq::strict_fp)\n",
                static_cast<double>(r));
    return 1;
  }
  std::printf("strict_fp: a*a + c = 0, not contracted\n");
  return 0;
#endif
}
