"""The README scripts' environment choice (scripts/env.sh), checked without installing.

The full path — a stock Debian with only /usr/bin/python3, the scripts creating ./.venv —
is what .ci/run runs on every submission; these tests pin the decisions around it.
"""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _source_env(tmp_path, extra_env: dict, path: str) -> subprocess.CompletedProcess:
    """Source a copy of scripts/env.sh inside a scratch repo and print what it chose."""
    (tmp_path / "scripts").mkdir(exist_ok=True)
    (tmp_path / "scripts" / "env.sh").write_text((ROOT / "scripts" / "env.sh").read_text())
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env.update(extra_env, PATH=path)
    return subprocess.run(
        ["/bin/bash", "-c", 'source scripts/env.sh && echo "$PYTHON"'],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_active_virtual_environment_is_used_as_it_is(tmp_path):
    bindir = str(pathlib.Path(sys.executable).parent)
    proc = _source_env(
        tmp_path, {"VIRTUAL_ENV": str(pathlib.Path(bindir).parent)}, f"{bindir}:/usr/bin:/bin"
    )
    assert proc.returncode == 0, proc.stderr
    assert pathlib.Path(proc.stdout.strip()).parent == pathlib.Path(bindir)
    assert not (tmp_path / ".venv").exists()


def test_an_existing_dot_venv_is_reused(tmp_path):
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    proc = _source_env(tmp_path, {}, "/usr/bin:/bin")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(venv_bin / "python")
    assert "created" not in proc.stderr


def test_no_python3_says_what_to_install(tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    proc = _source_env(tmp_path, {}, str(empty))
    assert proc.returncode == 1
    assert "no python3 on PATH" in proc.stderr and not (tmp_path / ".venv").exists()


def _fake_python(tmp_path) -> pathlib.Path:
    """A ``python3`` that logs each ``-m pip`` call and reports tmp_path/env as its prefix."""
    bindir, prefix = tmp_path / "bin", tmp_path / "env"
    bindir.mkdir()
    prefix.mkdir()
    (bindir / "python3").write_text(
        "#!/bin/sh\n"
        f'case "$1" in\n'
        f'  -m) echo "$*" >> {tmp_path}/pip.log ;;\n'
        f'  -V) echo "Python 3.11.0" ;;\n'
        f'  -c) case "$2" in *prefix*) echo {prefix} ;; esac ;;\n'
        f"esac\n"
    )
    (bindir / "python3").chmod(0o755)
    return bindir


def test_install_needle_runs_pip_only_when_the_package_changed(tmp_path):
    bindir = _fake_python(tmp_path)
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    for name, text in {
        "pyproject.toml": "[project]\n",
        "CMakeLists.txt": "",
        "src/kernel.cc": "int f();\n",
        "needle.py": "x = 1\n",
    }.items():
        (repo / name).write_text(text)

    def install(extras: str = "train,viz") -> subprocess.CompletedProcess:
        proc = _source_env(repo, {"VIRTUAL_ENV": str(tmp_path / "env")}, f"{bindir}:/usr/bin:/bin")
        assert proc.returncode == 0, proc.stderr
        return subprocess.run(
            ["/bin/bash", "-c", f"source scripts/env.sh && install_needle {extras}"],
            cwd=repo,
            env={"PATH": f"{bindir}:/usr/bin:/bin", "VIRTUAL_ENV": str(tmp_path / "env")},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def pip_calls() -> list[str]:
        log = tmp_path / "pip.log"
        return log.read_text().splitlines() if log.exists() else []

    first = install()
    assert first.returncode == 0, first.stderr
    assert first.stderr == (
        f"needle setup: installing needle[train,viz] into {tmp_path / 'env'} "
        f"with pip (builds the C++ backend: about a minute the first "
        f"time)\n"
    )
    assert pip_calls() == [f"-m pip install -q -e {repo}[train,viz]"]
    again = install()
    assert (again.returncode, again.stderr, len(pip_calls())) == (0, "", 1)
    (repo / "needle.py").write_text("x = 2\n")  # Python: live in an editable install
    assert (install().stderr, len(pip_calls())) == ("", 1)
    (repo / "src" / "kernel.cc").write_text("int f(); int g();\n")
    assert install().stderr.startswith("needle setup: installing") and len(pip_calls()) == 2
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert install().stderr.startswith("needle setup: installing") and len(pip_calls()) == 3
    assert install("dev").stderr.startswith("needle setup: installing needle[dev]")
    assert install().stderr == "" and len(pip_calls()) == 4  # each extras has its own stamp
