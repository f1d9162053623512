#!/usr/bin/env bash
# Install the King James Bible from Debian's packages (bible-kjv: the `bible` program, and
# bible-kjv-text: its compressed text) when `bible` is missing and we are root; otherwise
# say what to run. `needle train --dataset kjv` converts the text PTB-style into its cache
# folder on first use. Never fails: without it, --dataset kjv stops with the same command.
if command -v bible >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends bible-kjv bible-kjv-text) \
    || echo "could not install bible-kjv: language models need --dataset ptb --data-dir DIR"
else
  echo "run 'sudo apt-get install bible-kjv bible-kjv-text' for needle train --dataset kjv"
fi
exit 0
