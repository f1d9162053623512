#!/usr/bin/env bash
# The main job: install Fashion-MNIST and the package with its training extras (into the
# active virtual environment, or ./.venv, created when missing), then train the MLP
# ResNet. Extra arguments go to `needle train` (see `needle train --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/install-fashion-mnist.sh
"$PYTHON" -m pip install -q -e ".[train]"
exec "$PYTHON" -m needle train "$@"
