#!/usr/bin/env bash
# Install what needle.viz's pictures and browser tests need, from Debian's packages:
# graphviz (the `dot` layout program, for SVG/PNG) and chromium (the headless browser the
# trace tests drive). Installs when missing and we are root; otherwise says what to run.
# Never fails: without them, DOT text and the HTML trace still work and those tests skip.
# --no-browser: graphviz only (what `needle graph` needs; the browser is for the tests).
missing=""
command -v dot >/dev/null 2>&1 || missing="$missing graphviz"
if [ "${1:-}" != --no-browser ]; then
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
    || missing="$missing chromium"
fi
if [ -z "$missing" ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  echo "needle setup: installing$missing (apt-get), for needle.viz" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends $missing fonts-dejavu-core >/dev/null) \
    || echo "could not install$missing: SVG/PNG output and the browser tests will be skipped"
else
  echo "run 'sudo apt-get install$missing' for needle.viz's SVG/PNG output and browser tests"
fi
exit 0
