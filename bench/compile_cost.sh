#!/usr/bin/env bash
# Compile cost of including oq (issue 22, item 1): for each module header and
# oq.hpp, a translation unit that only includes it is compiled twice, once
# with -fsyntax-only (parse + template instantiation, no code generation) and
# once with -O2 -c (what a build pays).  Reported: CPU seconds (user + sys,
# the figure to judge on a shared machine, since wall time depends on what
# else runs), wall seconds and peak resident memory of the compiler.
#
# Usage: bench/compile_cost.sh [compiler] [header ...]
#   compiler defaults to g++; clang++ works the same way.
#   headers default to the module headers and oq.hpp.
# Environment: OQ_CXXFLAGS adds flags (e.g. -march=native), REPEAT=n takes
# the smallest CPU time of n runs (default 1).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cxx="${1:-g++}"
shift || true
headers=("$@")
if [ ${#headers[@]} -eq 0 ]; then
  headers=(quant analysis smoothquant kurtosis hadamard duquant io oq)
fi
repeat="${REPEAT:-1}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
eigen_inc="$(pkg-config --cflags-only-I eigen3 2>/dev/null || echo -I/usr/include/eigen3)"
flags=(-std=c++20 -I"$here/include" $eigen_inc ${OQ_CXXFLAGS:-})

# One measurement: prints "cpu_s wall_s peak_MB" of the best (least CPU) run.
measure() {
  local best="" line
  for ((i = 0; i < repeat; ++i)); do
    /usr/bin/time -f '%U %S %e %M' -o "$tmp/time" "$cxx" "${flags[@]}" "$@" >/dev/null 2>"$tmp/err" \
      || { cat "$tmp/err" >&2; echo "compile failed" >&2; exit 1; }
    line="$(awk '{printf "%.1f %.1f %.0f\n", $1 + $2, $3, $4 / 1024}' "$tmp/time")"
    if [ -z "$best" ] || awk -v a="$line" -v b="$best" 'BEGIN{split(a,x," ");split(b,y," ");exit !(x[1]<y[1])}'; then
      best="$line"
    fi
  done
  echo "$best"
}

echo "compiler: $("$cxx" --version | head -1)"
echo "flags: ${flags[*]}"
printf '%-16s %28s   %28s\n' "" "-fsyntax-only" "-O2 -c"
printf '%-16s %9s %9s %9s   %9s %9s %9s\n' header cpu_s wall_s peak_MB cpu_s wall_s peak_MB
for h in "${headers[@]}"; do
  src="$tmp/$h.cpp"
  printf '#include <oq/%s.hpp>\n' "$h" >"$src"
  read -r sc sw sm < <(measure -fsyntax-only "$src")
  read -r oc ow om < <(measure -O2 -c "$src" -o "$tmp/$h.o")
  printf '%-16s %9s %9s %9s   %9s %9s %9s\n' "$h.hpp" "$sc" "$sw" "$sm" "$oc" "$ow" "$om"
done
