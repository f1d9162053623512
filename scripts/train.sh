#!/usr/bin/env bash
# The main job: install Fashion-MNIST and the package with its training extras, then
# train the MLP ResNet. Extra arguments go to `needle train` (see `needle train --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-fashion-mnist.sh
python -m pip install -q -e ".[train]"
exec needle train "$@"
