#!/usr/bin/env bash
# The CPU kernels' tests (tests/cpu/*_test.cpp) cross-compiled for aarch64
# with the NEON dot-product path (-march=armv8.2-a+dotprod, so
# oq::cpu::Isa::kNeonDot is compiled in and is the best path) and run under
# qemu-user: the NEON kernels are built and checked bit for bit against the
# same plain loops as on x86, on a machine without an ARM CPU.
#
# Needs g++-aarch64-linux-gnu, qemu-user (`bash cmake/run.sh arm` installs
# them), Eigen and doctest headers. Prints "N passed, M failed"; exits
# non-zero when a test fails.
#
# The compiler is called directly rather than through a CMake toolchain:
# the host's doctest package config would put /usr/include (the x86 C
# library's headers) on the cross compiler's include path.
set -euo pipefail
cd "$(dirname "$0")/.."
cxx=${OQ_ARM_CXX:-aarch64-linux-gnu-g++}
sysroot=${OQ_ARM_SYSROOT:-/usr/aarch64-linux-gnu}
out=build/arm
mkdir -p "$out/include"
rm -rf "$out/include/doctest" && cp -r /usr/include/doctest "$out/include/"
# -Wno-maybe-uninitialized: GCC 12 warns inside Eigen's own headers on aarch64.
flags=(-std=c++20 -O2 -march=armv8.2-a+dotprod -Wall -Wextra -Wpedantic -Wshadow -Werror -Wno-maybe-uninitialized
       -ffp-contract=off -Iinclude -I/usr/include/eigen3 -I"$out/include" -Itests)
"$cxx" "${flags[@]}" -c tests/test_main.cpp -o "$out/test_main.o"
tests=()
for src in tests/cpu/*_test.cpp; do tests+=("cpu.$(basename "$src" .cpp)"); done
# Two compilations at a time (the machine has 2 cores; each takes ~1 GB).
printf '%s\n' "${tests[@]}" | xargs -P 2 -I{} sh -c \
  'src=tests/cpu/$(echo {} | sed "s/^cpu\.//").cpp; "$0" "$@" "$src" '"$out"'/test_main.o -o '"$out"'/{}' \
  "$cxx" "${flags[@]}" || { echo "oq: a cross-compilation failed" >&2; exit 1; }
passed=0
failed=0
for name in "${tests[@]}"; do
  if qemu-aarch64 -L "$sysroot" "$out/$name" >"$out/$name.log" 2>&1; then
    passed=$((passed + 1))
    echo "aarch64 $name: passed ($(grep -o 'assertions: *[0-9]*' "$out/$name.log" | head -1))"
  else
    failed=$((failed + 1))
    echo "aarch64 $name: FAILED"
    tail -40 "$out/$name.log"
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
