# Sourced by the README's scripts: choose the Python environment needle installs into.
#
# - A virtual environment (or conda env) is active: use it, as a user would expect.
# - Otherwise: use ./.venv, creating it with `python3 -m venv` on the first run. Debian and
#   Ubuntu refuse `pip install` into the system Python (PEP 668), and we never override
#   that with --break-system-packages. If the venv module is missing (Debian's
#   python3-venv), install it with apt when root, else say exactly what to run.
#
# Afterwards `$PYTHON` is the environment's interpreter and its bin/ is first on PATH
# (so the `needle` command resolves), and `install_needle EXTRAS` installs needle into it.
# Activate it yourself with: source .venv/bin/activate

_here=${BASH_SOURCE[0]%/*}
[ "$_here" = "${BASH_SOURCE[0]}" ] && _here=.
_repo_root=$(cd "$_here/.." && pwd)

_fail() { echo "needle setup: $*" >&2; exit 1; }

_python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; }

_make_venv() {
  local base venv=$_repo_root/.venv
  base=$(command -v python3) || _fail "no python3 on PATH; install Python >= 3.10 (apt-get install python3)"
  _python_ok "$base" || _fail "$base is $("$base" -V 2>&1); needle needs Python >= 3.10"
  if ! "$base" -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    local pkg
    pkg="python$("$base" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "needle setup: installing $pkg (python3 -m venv needs it)" >&2
      apt-get update -qq && apt-get install -y -qq python3-venv "$pkg" >/dev/null \
        || _fail "apt-get install python3-venv $pkg failed"
      "$base" -m venv "$venv" || _fail "python3 -m venv $venv failed"
    else
      _fail "python3 -m venv failed: run 'sudo apt-get install python3-venv $pkg', then rerun"
    fi
  fi
  echo "needle setup: created the virtual environment $venv (activate: source .venv/bin/activate)" >&2
}

if [ -n "${VIRTUAL_ENV:-}" ] || [ -n "${CONDA_PREFIX:-}" ]; then
  PYTHON=$(command -v python3 || command -v python) || _fail "the active environment has no python"
else
  [ -x "$_repo_root/.venv/bin/python" ] || _make_venv
  PYTHON=$_repo_root/.venv/bin/python
  export PATH="$_repo_root/.venv/bin:$PATH"
fi
_python_ok "$PYTHON" || _fail "$PYTHON is $("$PYTHON" -V 2>&1); needle needs Python >= 3.10"
export PYTHON

# The fingerprint of what `pip install -e` makes of this checkout with extras $1: the
# checkout's path, the interpreter, pyproject.toml (dependencies, build settings) and the
# C++ sources. Python files need no reinstall: the install is editable.
_needle_fingerprint() {
  {
    echo "$_repo_root [$1]"
    "$PYTHON" -V 2>&1
    cd "$_repo_root" && cat pyproject.toml CMakeLists.txt
    find src -type f | LC_ALL=C sort | xargs cat
  } | sha256sum | cut -d' ' -f1
}

# install_needle EXTRAS: pip install -e ".[EXTRAS]", skipped when the stamp left in the
# environment by the last install matches (pip takes ~13 s even with nothing to do).
install_needle() {
  local extras=$1 prefix stamp fingerprint
  prefix=$("$PYTHON" -c 'import sys; print(sys.prefix)')
  stamp=$prefix/.needle-install-stamp-${extras//,/-}
  fingerprint=$(_needle_fingerprint "$extras")
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
    return 0
  fi
  echo "needle setup: installing needle[$extras] into $prefix with pip (builds the C++ backend: about a minute the first time)" >&2
  "$PYTHON" -m pip install -q -e "$_repo_root[$extras]"
  echo "$fingerprint" >"$stamp"
}
