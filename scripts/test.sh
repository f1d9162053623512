#!/usr/bin/env bash
# The test command: install Fashion-MNIST and the package with its dev extras (into the
# active virtual environment, or ./.venv, created when missing), then run the test suite
# (the slow end-to-end runs are deselected; `-m slow` selects them).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/install-toolchain.sh >/dev/null  # a C++17 compiler for the compiled backend
bash scripts/install-fashion-mnist.sh
bash scripts/install-viz-deps.sh
"$PYTHON" -m pip install -q -e ".[dev]"
"$PYTHON" -m pytest -q "$@"
