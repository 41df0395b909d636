#!/usr/bin/env bash
# oq's one-command entry points on a fresh Debian machine:
#   bash cmake/run.sh example   build and run the main example
#   bash cmake/run.sh test      build everything and run the test suite
#   bash cmake/run.sh asan      the test suite under ASan + UBSan
#   bash cmake/run.sh deps      only install the Debian packages
# Each installs the Debian packages it needs when they are missing (apt-get,
# through sudo when not root), then runs the CMake workflow preset.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake ninja-build libeigen3-dev doctest-dev libbenchmark-dev nlohmann-json3-dev)

install_deps() {
  local missing=()
  for p in "${packages[@]}"; do
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

case "${1:-}" in
  deps)
    install_deps ;;
  example)
    install_deps
    cmake --preset default
    cmake --build --preset default --target 01_quantize
    ./build/default/examples/01_quantize/01_quantize ;;
  test)
    install_deps
    cmake --workflow --preset default ;;
  asan)
    install_deps
    cmake --workflow --preset asan ;;
  *)
    echo "usage: bash cmake/run.sh {example|test|asan|deps}" >&2
    exit 2 ;;
esac
