#!/usr/bin/env bash
# The style checks (configured in pyproject.toml and .clang-format): ruff's lint and format check
# over the Python, mypy over autograd, ops, nn and optim, clang-format over src/. Prints nothing
# when all pass; CI (.ci/run) runs it.
#   bash scripts/lint.sh          check
#   bash scripts/lint.sh --fix    first rewrite the files (ruff's fixes, ruff format,
#                                 clang-format), then check what is left
# The tools are pinned and installed into the active virtual environment, or ./.venv (created when
# missing, see scripts/env.sh). clang-format comes from PyPI too: its output changes between
# releases, and a pinned one formats alike on every machine (Debian's own differs by release).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  "" | --fix) ;;
  *) echo "usage: bash scripts/lint.sh [--fix]" >&2; exit 2 ;;
esac

source scripts/env.sh

tools=(ruff==0.17.6 mypy==2.4.1 clang-format==18.1.8)
# mypy reads NumPy's type annotations; the rest of needle's dependencies are not needed.
if ! "$PYTHON" - "${tools[@]}" <<'PY'
import sys
from importlib import metadata


def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


pins = [pin.split("==") for pin in sys.argv[1:]]
sys.exit(not (all(version(name) == wanted for name, wanted in pins) and version("numpy")))
PY
then
  prefix=$("$PYTHON" -c 'import sys; print(sys.prefix)')
  echo "needle lint: installing ${tools[*]} (and numpy, if missing) into $prefix with pip" >&2
  "$PYTHON" -m pip install -q "${tools[@]}" "numpy>=2.0"
fi

bin=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
cxx=(src/*.h src/*.cc)

if [ "${1:-}" = --fix ]; then
  "$bin/ruff" check -q --fix || true  # what it cannot fix, the check below reports
  "$bin/ruff" format -q
  "$bin/clang-format" -i "${cxx[@]}"
fi

# Every check runs, so one run reports all that is wrong.
status=0
"$bin/ruff" check -q || status=1
"$bin/ruff" format -q --check || status=1
"$PYTHON" -m mypy --no-error-summary || status=1
"$bin/clang-format" --dry-run --Werror "${cxx[@]}" || status=1
exit $status
