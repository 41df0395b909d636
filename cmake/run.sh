#!/usr/bin/env bash
# oq's one-command entry points on a fresh Debian machine:
#   bash cmake/run.sh example   the oq tool's story (tools/oq/demo.sh): train example 03's small model,
#                               oq analyze it, oq quantize it W4A4 with every method, oq eval each
#   bash cmake/run.sh layer     example 02: a synthetic 4-layer LLaMA-2-7B-shaped model, every method, and its figures
#   bash cmake/run.sh train     example 03: train a small transformer on the KJV Bible three ways,
#                               quantize each W4A4 with every method, draw the outlier statistics
#   bash cmake/run.sh outlier-budget   example 03: train the baseline at growing budgets (size, steps) and
#                               report when Sun et al.'s massive-activation test fires (an hour or more)
#   bash cmake/run.sh lambda-sweep [FLAGS...]   example 03: the kurtosis regularizer's λ sweep, with and
#                               without QAT, at the budget FLAGS name (e.g. --hidden 256 --steps 3000)
#   bash cmake/run.sh test      build everything and run the test suite
#   bash cmake/run.sh asan      the test suite under ASan + UBSan
#   bash cmake/run.sh clang     the test suite and header check built with clang++
#   bash cmake/run.sh fuzz      each file parser's libFuzzer target for 20 s (clang)
#   bash cmake/run.sh arm       the CPU kernels' tests cross-compiled for aarch64 (NEON dot product)
#                               and run under qemu-user (cmake/arm_check.sh)
#   bash cmake/run.sh deps      only install the Debian packages
#   bash cmake/run.sh gpu-pack  build the GPU tests and benchmarks (nvcc, no GPU needed) into .gpu/,
#                               which a lent GPU machine runs with cmake/gpu_check.sh (see there)
# Each installs the Debian packages it needs when they are missing (apt-get,
# through sudo when not root), then runs the CMake workflow preset. `fuzz`
# also needs clang and libFuzzer (clang, libclang-rt-dev), installed for it only.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake ninja-build libeigen3-dev doctest-dev libbenchmark-dev nlohmann-json3-dev
          libcli11-dev libsentencepiece-dev pkg-config)  # the last three: the oq tool (tools/oq)
fuzz_packages=(clang libclang-rt-dev)
arm_packages=(g++-aarch64-linux-gnu qemu-user)
example_packages=(python3-matplotlib)  # plot_channels.py (Debian's python3, /usr/bin/python3)
train_packages=(python3-matplotlib bible-kjv)  # plot_training.py; the training text (4.4 MB of English)
demo_packages=(bible-kjv)  # the demo's training text; oq analyze draws its figures itself

# install_deps [extra packages...]: the common packages plus the extra ones.
install_deps() {
  local missing=()
  for p in "${packages[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "oq: installing Debian packages: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  # The CUDA toolkit is optional: when installed in the usual place, use it.
  if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH="/usr/local/cuda/bin:$PATH"
  fi
}

# example03_and_text [extra packages...]: example 03 built and its training
# text at build/kjv.txt (the whole King James Bible, one verse per line,
# bible-kjv's own reader).
example03_and_text() {
  install_deps bible-kjv "$@"
  cmake --preset default
  cmake --build --preset default --target 03_small_transformer
  mkdir -p build
  [ -s build/kjv.txt ] || bible -f Gen1:1-Rev22:21 > build/kjv.txt
}

case "${1:-}" in
  deps)
    install_deps ;;
  example)
    install_deps "${demo_packages[@]}"
    cmake --preset default
    cmake --build --preset default --target 03_small_transformer oq_tool
    bash tools/oq/demo.sh build/default ;;
  layer)
    install_deps "${example_packages[@]}"
    cmake --preset default
    cmake --build --preset default --target 02_llama_layer
    ./build/default/examples/02_llama_layer/02_llama_layer --out build/llama_layer_out
    "$(command -v /usr/bin/python3 || command -v python3)" examples/02_llama_layer/plot_channels.py build/llama_layer_out/channel_magnitudes.csv ;;
  train)
    example03_and_text "${train_packages[@]}"
    ./build/default/examples/03_small_transformer/03_small_transformer --text build/kjv.txt --out build/small_transformer_out
    "$(command -v /usr/bin/python3 || command -v python3)" examples/03_small_transformer/plot_training.py build/small_transformer_out ;;
  outlier-budget)
    # Each budget "hidden:layers:steps" trains the baseline once (2 OpenMP
    # threads), logging the outlier statistics every 50 steps; override the
    # list with OQ_BUDGETS. The summary names the first logged step where
    # the test fires; the cosine schedule depends on --steps, so a budget is
    # a whole run, not a prefix of a longer one.
    example03_and_text
    budget_dirs=()
    for budget in ${OQ_BUDGETS:-128:4:3000 256:4:3000 256:6:6000}; do
      IFS=: read -r hidden layers steps <<< "$budget"
      dir="build/outlier_budget/h${hidden}_l${layers}_s${steps}"
      ./build/default/examples/03_small_transformer/03_small_transformer --text build/kjv.txt --variants baseline \
          --hidden "$hidden" --layers "$layers" --ffn $((3 * hidden)) --steps "$steps" --log-every 50 --out "$dir"
      budget_dirs+=("$dir")
    done
    "$(command -v /usr/bin/python3 || command -v python3)" examples/03_small_transformer/outlier_budget.py --markdown "${budget_dirs[@]}" ;;
  lambda-sweep)
    # Every λ of OQ_LAMBDAS, variants kurtosis and kurtosis+qat, plus the
    # baseline once, at the budget the remaining arguments give.
    example03_and_text
    shift
    sweep_dirs=(build/lambda_sweep/baseline)
    ./build/default/examples/03_small_transformer/03_small_transformer --text build/kjv.txt --variants baseline \
        --log-every 50 --out build/lambda_sweep/baseline "$@"
    for lambda in ${OQ_LAMBDAS:-1e-7 3e-7 1e-6 3e-6 1e-5}; do
      ./build/default/examples/03_small_transformer/03_small_transformer --text build/kjv.txt \
          --variants kurtosis,kurtosis+qat --lambda "$lambda" --log-every 50 --out "build/lambda_sweep/lambda_$lambda" "$@"
      sweep_dirs+=("build/lambda_sweep/lambda_$lambda")
    done
    "$(command -v /usr/bin/python3 || command -v python3)" examples/03_small_transformer/outlier_budget.py --markdown "${sweep_dirs[@]}" ;;
  test)
    install_deps
    cmake --workflow --preset default ;;
  asan)
    install_deps
    cmake --workflow --preset asan ;;
  clang)
    install_deps clang
    cmake --workflow --preset clang ;;
  fuzz)
    install_deps "${fuzz_packages[@]}"
    cmake --workflow --preset fuzz ;;
  arm)
    install_deps "${arm_packages[@]}"
    bash cmake/arm_check.sh ;;
  gpu-pack)
    install_deps
    command -v nvcc >/dev/null 2>&1 || { echo "oq: gpu-pack needs nvcc (the CUDA toolkit)" >&2; exit 1; }
    cmake --preset cuda
    targets=(core.device_test cuda.quantize_per_token_test cuda.gemm_w4a16_test cuda.gemm_w4a4_test
             bench.cuda.gemm bench.cuda.quantize_per_token 04_cuda_w4a4)
    cmake --build --preset cuda --target "${targets[@]}"
    rm -rf .gpu && mkdir -p .gpu/bin .gpu/lib
    for t in "${targets[@]}"; do cp "$(find build/cuda -maxdepth 3 -type f -name "$t" | head -1)" .gpu/bin/; done
    # Google Benchmark is a Debian library the GPU machine lacks, and the CUDA
    # runtime is small: carry both (cuBLAS is large and on the GPU machine).
    for lib in libbenchmark libcudart; do
      cp -L "$(ldd .gpu/bin/bench.cuda.gemm | awk -v l="$lib" '$1 ~ l {print $3}')" .gpu/lib/
    done
    echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' + uncommitted changes')" > .gpu/COMMIT
    du -sh .gpu ;;
  *)
    echo "usage: bash cmake/run.sh {example|layer|train|test|asan|clang|fuzz|arm|deps|gpu-pack}" >&2
    exit 2 ;;
esac
