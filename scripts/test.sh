#!/usr/bin/env bash
# Install what the tests need (Fashion-MNIST from Debian, the package with its dev
# extras), then run the test suite (slow end-to-end runs are deselected by default).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
      || echo "could not install dataset-fashion-mnist: Fashion-MNIST tests will be skipped"
  else
    echo "not root: run 'sudo apt-get install dataset-fashion-mnist' for the Fashion-MNIST tests"
  fi
fi
python -m pip install -q -e ".[dev]"
python -m pytest -q "$@"
