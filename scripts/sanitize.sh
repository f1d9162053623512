#!/usr/bin/env bash
# Build the compiled CPU backend with AddressSanitizer + UndefinedBehaviorSanitizer into its own
# venv (.venv-asan) and build dir (build/asan), then run the backend tests under it. Any
# out-of-bounds access or undefined behaviour aborts the run, so CI fails.
#   bash scripts/sanitize.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv-asan/bin/python ]; then
  "$python" -m venv --system-site-packages .venv-asan
fi
# Without build isolation the build in build/asan is incremental (seconds instead of minutes);
# that needs the build requirements importable and CMake + Ninja on PATH.
isolation=()
if .venv-asan/bin/python -c "import scikit_build_core, nanobind" 2>/dev/null \
    && command -v cmake >/dev/null && command -v ninja >/dev/null; then
  isolation=(--no-build-isolation)
fi
.venv-asan/bin/python -m pip install -q -e ".[dev]" "${isolation[@]}" \
  --config-settings=build-dir=build/asan --config-settings=cmake.define.NEEDLE_SANITIZE=ON

tests=(tests/backends/test_backend_cpu.py)
for f in tests/backends/test_ndarray*.py; do
  [ -e "$f" ] && tests+=("$f")
done

# Python itself is not instrumented, so the ASan runtime must be loaded first; libstdc++ too,
# or ASan's __cxa_throw interceptor finds no real function and aborts on the first C++ throw.
LD_PRELOAD="$(c++ -print-file-name=libasan.so) $(c++ -print-file-name=libstdc++.so)" \
ASAN_OPTIONS=detect_leaks=0 \
UBSAN_OPTIONS=print_stacktrace=1 \
  .venv-asan/bin/python -m pytest -q -p no:cacheprovider "${tests[@]}" "$@"
