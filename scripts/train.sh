#!/usr/bin/env bash
# The main job: install Fashion-MNIST and the package with its training extras (into the
# active virtual environment, or ./.venv, created when missing), then train the MLP
# ResNet. Extra arguments go to `needle train` (see `needle train --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/install-toolchain.sh  # a C++17 compiler for the compiled backend (quiet if there)
bash scripts/install-fashion-mnist.sh
bash scripts/install-viz-deps.sh --no-browser
install_needle train,viz  # skipped when nothing changed since the last install
exec "$PYTHON" -m needle train "$@"
