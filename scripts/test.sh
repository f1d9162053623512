#!/usr/bin/env bash
# The test command: install Fashion-MNIST and the package with its dev extras (into the
# active virtual environment, or ./.venv, created when missing), then run the test suite
# (the slow end-to-end runs are deselected; `-m slow` selects them).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/install-toolchain.sh  # a C++17 compiler for the compiled backend (quiet if there)
bash scripts/install-fashion-mnist.sh
bash scripts/install-viz-deps.sh
install_needle dev  # skipped when nothing changed since the last install
"$PYTHON" -m pytest -q "$@"
