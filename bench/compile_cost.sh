#!/usr/bin/env bash
# Compile cost of including oq (issue 22, item 1): for each module header and
# oq.hpp, a translation unit that only includes it is compiled twice, once
# with -fsyntax-only (parse + template instantiation, no code generation) and
# once with -O2 -c (what a build pays).  Reported: CPU seconds (user + sys,
# the figure to judge on a shared machine, since wall time depends on what
# else runs), wall seconds and peak resident memory of the compiler.
#
# Then a small program that calls oq
# (bench/compile_cost_program.cpp: DuQuant calibration and GPTQ), compiled
# as is and with OQ_EXTERN_TEMPLATES, and <oq/instantiate.hpp> alone: what a
# program that opts in compiles once (include/oq/instantiate.hpp).
#
# Usage: bench/compile_cost.sh [compiler] [row ...]
#   compiler defaults to g++; clang++ works the same way.
#   rows: a header under include/oq/ without .hpp (quant, oq, instantiate,
#   ...), `program` or `program-extern`; by default all of the above.
# Environment: OQ_CXXFLAGS adds flags (e.g. -march=native), REPEAT=n takes
# the smallest CPU time of n runs (default 1).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cxx="${1:-g++}"
shift || true
headers=("$@")
if [ ${#headers[@]} -eq 0 ]; then
  headers=(quant analysis smoothquant kurtosis hadamard duquant io oq program)
  # A tree without <oq/instantiate.hpp> (before it) has no opt-in to measure.
  if [ -f "$here/include/oq/instantiate.hpp" ]; then headers+=(program-extern instantiate); fi
fi
repeat="${REPEAT:-1}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
eigen_inc="$(pkg-config --cflags-only-I eigen3 2>/dev/null || echo -I/usr/include/eigen3)"
flags=(-std=c++20 -I"$here/include" $eigen_inc -pthread ${OQ_CXXFLAGS:-})

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

# row <label> <source> [flags...]: one line of the table.
row() {
  local label="$1" src="$2"
  shift 2
  read -r sc sw sm < <(measure -fsyntax-only "$@" "$src")
  read -r oc ow om < <(measure -O2 -c "$@" "$src" -o "$tmp/row.o")
  if [ -z "${sc:-}" ] || [ -z "${oc:-}" ]; then echo "$label: compile failed" >&2; exit 1; fi
  printf '%-28s %9s %9s %9s   %9s %9s %9s\n' "$label" "$sc" "$sw" "$sm" "$oc" "$ow" "$om"
}

echo "compiler: $("$cxx" --version | head -1)"
echo "flags: ${flags[*]}"
printf '%-28s %28s   %28s\n' "" "-fsyntax-only" "-O2 -c"
printf '%-28s %9s %9s %9s   %9s %9s %9s\n' "translation unit" cpu_s wall_s peak_MB cpu_s wall_s peak_MB
for h in "${headers[@]}"; do
  case "$h" in
    program) row "compile_cost_program.cpp" "$here/bench/compile_cost_program.cpp" ;;
    program-extern)
      row "  with OQ_EXTERN_TEMPLATES" "$here/bench/compile_cost_program.cpp" -DOQ_EXTERN_TEMPLATES ;;
    *)
      printf '#include <oq/%s.hpp>\n' "$h" >"$tmp/$h.cpp"
      row "$h.hpp" "$tmp/$h.cpp" ;;
  esac
done
