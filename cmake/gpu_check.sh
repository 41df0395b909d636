#!/usr/bin/env bash
# oq's checks on a lent GPU machine, in one call (issues 5, 6 and 7), on the
# binaries that `bash cmake/run.sh gpu-pack` built and put in .gpu/ on the
# machine without a GPU (nvcc is there; building here would spend lent minutes):
#
#   1. tests     every GPU test executable (ctest label `gpu`) and example 04 (issue 5)
#   2. hf        examples/02_llama_layer/transformers_check.py: a
#                save_pretrained checkpoint and transformers' layer inputs and
#                outputs, tarred (issue 7; copy to tests/data/transformers_llama/)
#   3. sass      which matrix instructions each kernel uses, per architecture
#                (IMMA / IGMMA, not emulation: issue 6)
#   4. sanitize  the W4A4, W4A16 and quantize tests under compute-sanitizer
#                memcheck, racecheck, initcheck and synccheck (issue 5)
#   5. bench     bench.cuda.gemm and bench.cuda.quantize_per_token, JSON, then
#                bench/cuda/summarize.py's tables and plot (issue 6)
#
# Usage, from the repository root on the device machine (through the device
# tool, carrying .gpu):  bash cmake/gpu_check.sh [stage…]   (default: all five,
# in the order tests hf sass bench sanitize)
# Everything lands in $OUT (default /tmp/oq_gpu_out) as at most 8 files:
# log.txt, hf.tar, gemm.json, quantize.json, summary.md, gemm.png.
# Every command has its own time limit and the whole run a deadline
# (OQ_GPU_DEADLINE_S seconds, default 520, inside the device tool's 600 s per
# command): a command never runs past it, so the summary always comes back.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/oq_gpu_out}"
mkdir -p "$OUT"
LOG="$OUT/log.txt"
BIN=.gpu/bin
stages=("$@")
# Default order: what every issue needs first (tests), then hf (CPU only,
# about a minute, and the bench stage alone may use 450 s of the deadline),
# then the numbers; the sanitizer last — it is slow on Firecracker and
# refused on gVisor (KINDS.md).
[ ${#stages[@]} -eq 0 ] && stages=(tests hf sass bench sanitize)

deadline=$((SECONDS + ${OQ_GPU_DEADLINE_S:-520}))
say() { echo "== $*" | tee -a "$LOG"; }
# run_logged <seconds> <command…>: the command's output into the log, its exit
# status and time after it; at most <seconds>, and never past the deadline
# (exit 124 when cut, 125 when not started for lack of time).
run_logged() {
  local limit=$1
  shift
  local left=$((deadline - SECONDS))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    echo "== exit 125 after 0 s (no time left before the deadline): $*" >>"$LOG"
    return 125
  fi
  local start=$SECONDS
  timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "== exit $rc after $((SECONDS - start)) s: $*" >>"$LOG"
  return $rc
}

# cuBLAS: the toolkit's, else the one PyTorch's wheels bring; libbenchmark from .gpu/lib.
cublas_lib=$(ls /usr/local/cuda/lib64/libcublas.so.13 2>/dev/null || find /usr/local /opt -name 'libcublas.so.13*' 2>/dev/null | head -1)
export LD_LIBRARY_PATH="$PWD/.gpu/lib:/usr/local/cuda/lib64${cublas_lib:+:$(dirname "$cublas_lib")}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="/usr/local/cuda/bin:$PATH"

say "oq gpu_check: $(cat .gpu/COMMIT 2>/dev/null || echo 'no .gpu/COMMIT'), stages: ${stages[*]}, $(date -u)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv >>"$LOG" 2>&1
for b in "$BIN"/*; do
  if ldd "$b" 2>/dev/null | grep -q "not found"; then
    say "missing libraries for $b:"
    ldd "$b" | grep "not found" >>"$LOG"
  fi
done

for stage in "${stages[@]}"; do
  case "$stage" in
    tests)
      say "stage tests"
      for t in "$BIN"/core.device_test "$BIN"/cuda.*_test; do
        case "$t" in *_args_test) continue ;; esac
        run_logged 90 "$t"
      done
      run_logged 90 "$BIN"/04_cuda_w4a4 128 4096 4096  # example 04: GPU vs the host simulation (exit 1 if off)
      ;;
    sanitize)
      say "stage sanitize"
      # OQ_SANITIZE_TOOLS narrows the tools (e.g. "memcheck racecheck").
      for tool in ${OQ_SANITIZE_TOOLS:-memcheck racecheck initcheck synccheck}; do
        for t in "$BIN"/cuda.gemm_w4a4_test "$BIN"/cuda.gemm_w4a16_test "$BIN"/cuda.quantize_per_token_test; do
          run_logged 90 compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 20 "$t"
        done
      done
      ;;
    hf)
      say "stage hf"
      rm -rf /tmp/transformers_llama
      # Offline: the machine reaches no hub, and a stray download attempt
      # would wait out the whole limit instead of failing.
      HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 \
        run_logged 180 python3 examples/02_llama_layer/transformers_check.py /tmp/transformers_llama &&
        tar -C /tmp -cf "$OUT/hf.tar" transformers_llama
      ;;
    sass)
      say "stage sass"
      for b in "$BIN"/cuda.gemm_w4a4_test "$BIN"/cuda.gemm_w4a16_test "$BIN"/cuda.quantize_per_token_test "$BIN"/bench.cuda.gemm; do
        [ -x "$b" ] || continue
        echo "-- $b: matrix and INT4-related instructions per architecture" >>"$LOG"
        timeout -k 5 60 cuobjdump --dump-sass "$b" 2>>"$LOG" |
          awk '/arch = sm_/ {arch=$NF} /IMMA|IGMMA|HMMA|HGMMA|IDP|I2F|PRMT/ {
                 match($0, /(IMMA|IGMMA|HMMA|HGMMA|IDP|I2F|PRMT)[.A-Z0-9_]*/); key=arch " " substr($0, RSTART, RLENGTH); n[key]++ }
               END {for (k in n) print k, n[k]}' | sort >>"$LOG"
      done
      ;;
    bench)
      say "stage bench"
      export OQ_BENCH_MAX_LAUNCH_S="${OQ_BENCH_MAX_LAUNCH_S:-0.5}"
      common=(--benchmark_min_time=0.1 --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
              --benchmark_out_format=json)
      run_logged 150 "$BIN"/bench.cuda.quantize_per_token "${common[@]}" --benchmark_out="$OUT/quantize.json"
      run_logged 300 "$BIN"/bench.cuda.gemm "${common[@]}" --benchmark_out="$OUT/gemm.json"
      python3 bench/cuda/summarize.py "$OUT/quantize.json" "$OUT/gemm.json" --plot "$OUT/gemm.png" \
        >"$OUT/summary.md" 2>>"$LOG"
      cat "$OUT/summary.md"
      ;;
    *)
      say "unknown stage $stage (tests, hf, sass, sanitize, bench)"
      ;;
  esac
done
say "done at $(date -u)"
grep -E "^== (exit [^0]|missing)|test cases:|ERROR SUMMARY|RACECHECK SUMMARY|relative error|GPU|CHECK FAILED|self-checks" "$LOG" | tail -40
