#!/usr/bin/env bash
# Install Fashion-MNIST from Debian's package (into /usr/share/datasets/fashion-mnist)
# when it is missing and we are root; otherwise say how to get it. Never fails.
if [ -d /usr/share/datasets/fashion-mnist ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  echo "needle setup: installing Fashion-MNIST (apt-get install dataset-fashion-mnist)" >&2
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
    || echo "could not install dataset-fashion-mnist: Fashion-MNIST runs need --data-dir DIR"
else
  echo "run 'sudo apt-get install dataset-fashion-mnist' (or pass --data-dir DIR with the IDX files)"
fi
exit 0
