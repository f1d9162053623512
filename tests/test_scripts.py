"""The README scripts' environment choice (scripts/env.sh), checked without installing.

The full path — a stock Debian with only /usr/bin/python3, the scripts creating ./.venv —
is what .ci/run runs on every submission; these tests pin the decisions around it.
"""
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _source_env(tmp_path, extra_env: dict, path: str) -> subprocess.CompletedProcess:
    """Source a copy of scripts/env.sh inside a scratch repo and print what it chose."""
    (tmp_path / "scripts").mkdir(exist_ok=True)
    (tmp_path / "scripts" / "env.sh").write_text((ROOT / "scripts" / "env.sh").read_text())
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env.update(extra_env, PATH=path)
    return subprocess.run(["/bin/bash", "-c", 'source scripts/env.sh && echo "$PYTHON"'],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_an_active_virtual_environment_is_used_as_it_is(tmp_path):
    bindir = str(pathlib.Path(sys.executable).parent)
    proc = _source_env(tmp_path, {"VIRTUAL_ENV": str(pathlib.Path(bindir).parent)},
                       f"{bindir}:/usr/bin:/bin")
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
