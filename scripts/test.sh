#!/usr/bin/env bash
# The test command: install Fashion-MNIST and the package with its dev extras (into the
# active virtual environment, or ./.venv, created when missing), then run the test suite
# (the slow end-to-end runs are deselected; `-m slow` selects them).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/install-fashion-mnist.sh
"$PYTHON" -m pip install -q -e ".[dev]"
"$PYTHON" -m pytest -q "$@"
