#!/usr/bin/env bash
# tools/oq/demo.sh BUILD_DIR: the oq tool's story on a model trained here
# (`bash cmake/run.sh example` runs it after building 03_small_transformer
# and the tool):
#   1. train example 03's small byte-level LLaMA on the KJV Bible (baseline
#      only, about 2 minutes on 2 cores; kept in build/demo/model/baseline),
#   2. oq analyze it: the outlier report, its CSV files and its figures
#      (massive.png, channels.png, drawn by the tool; no Python needed),
#   3. oq quantize it W4A4 with each method,
#   4. oq eval each quantized checkpoint (the CPU integer kernels) and the
#      full-precision model, and print the perplexity table.
# Calibration: 64 sequences of 128 bytes from the training text; evaluation:
# 256 sequences of the held-out last 5 % (the split example 03 trains with).
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root: build/ and tools/ are relative to it
build=${1:?usage: demo.sh BUILD_DIR (e.g. build/default)}
oq="$build/tools/oq"
trainer="$build/examples/03_small_transformer/03_small_transformer"
out=build/demo
mkdir -p "$out"
[ -s build/kjv.txt ] || bible -f Gen1:1-Rev22:21 > build/kjv.txt
size=$(stat -c %s build/kjv.txt)
head -c $((size * 95 / 100 < 1048576 ? size * 95 / 100 : 1048576)) build/kjv.txt > "$out/calibration.txt"
tail -c $((size - size * 95 / 100)) build/kjv.txt > "$out/heldout.txt"

if [ ! -f "$out/model/baseline/config.json" ]; then
  echo "== training the small model (example 03, baseline)"
  "$trainer" --text build/kjv.txt --variants baseline --out "$out/model"
fi
model="$out/model/baseline"

echo "== oq analyze"
rm -rf "$out/analysis"
"$oq" analyze "$model" --calib "$out/calibration.txt" --sequences 16 --out "$out/analysis"

methods=(rtn smoothquant hadamard duquant duquant+smooth quarot)
for m in "${methods[@]}"; do
  echo "== oq quantize --method $m"
  rm -rf "$out/quantized/$m"
  mkdir -p "$out/quantized"
  "$oq" quantize "$model" --calib "$out/calibration.txt" --sequences 64 --method "$m" --out "$out/quantized/$m"
done

echo "== oq eval"
table="| model | perplexity (bytes) |\n|---|---|\n"
ppl() { "$oq" eval "$1" --data "$out/heldout.txt" --sequences 256 | awk '/^perplexity/ {print $2}'; }
table+="| full precision | $(ppl "$model") |\n"
for m in "${methods[@]}"; do table+="| $m | $(ppl "$out/quantized/$m") |\n"; done
echo
printf "%b" "$table" | tee "$out/perplexity.md"
echo "(held-out KJV text; the integer kernels of oq::cpu run every quantized model)"
