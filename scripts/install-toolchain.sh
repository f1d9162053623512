#!/usr/bin/env bash
# Make sure a C++ compiler is there to build needle's compiled backend (`pip install -e .`).
# CMake and Ninja need no step: scikit-build-core fetches them from PyPI when missing.
# With a compiler on PATH this does nothing and prints nothing; otherwise, as root, it
# installs Debian's g++ (saying so); otherwise it prints the command to run and exits
# non-zero.
set -euo pipefail

if command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "needle setup: no C++ compiler found; installing Debian's g++ (apt-get)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
  exit 0
fi

cat >&2 <<'MSG'
install-toolchain: no C++ compiler (c++ or g++) found, and this script can only install one as
root on Debian/Ubuntu. Install a C++17 compiler yourself, for example:
    sudo apt-get update && sudo apt-get install -y g++
or install needle without its compiled backend (NumPy fallback):
    pip install -e . --config-settings=wheel.cmake=false
MSG
exit 1
