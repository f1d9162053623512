"""The README's first example prints what its comments say; the results table of
docs/results.md is the one scripts/results_table.py writes, and the text around it quotes it.

(Every python block of the README also runs in tests/docs/test_docs.py.)
"""

import contextlib
import importlib.util
import io
import pathlib
import re
import subprocess

from helpers.markdown import python_blocks

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _results_table_module():
    spec = importlib.util.spec_from_file_location(
        "results_table", ROOT / "scripts" / "results_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _default_run_section() -> str:
    """docs/results.md's section on the default run, up to the next result."""
    text = (ROOT / "docs" / "results.md").read_text()
    start = text.index("## `needle train` on Fashion-MNIST")
    return text[start : text.index("**Beyond the course recipe", start)]


def test_readme_example_runs_and_matches_its_comments():
    code = python_blocks(README.read_text())[0][1]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue().split() == [
        "3.5625",
        "[[6.",
        "]",
        "[5.5]]",
        "[[",
        "1.",
        "-0.25]",
        "[",
        "1.",
        "-0.25]]",
    ]


def test_the_default_run_table_is_the_scripts_output_and_the_text_quotes_it():
    section = _default_run_section()
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    rows = []
    for line in table.splitlines()[2:]:
        epoch, *values, seconds = [cell.strip(" *") for cell in line.strip("|").split("|")]
        rows.append(
            dict(epoch=epoch, seconds=seconds, **dict(zip(_results_table_module().COLUMNS, values)))
        )
    assert _results_table_module().results_table(rows) == table
    assert [row["epoch"] for row in rows] == [str(n) for n in range(1, 11)]
    last = float(rows[-1]["test_err"])
    assert f"Test error {100 * last:.1f}% after 10 epochs" in section
    assert "`OPENBLAS_NUM_THREADS=1 needle train --out runs/default`" in section
    assert "python scripts/results_table.py runs/default/metrics.csv" in section


def test_the_files_the_readme_commands_write_stay_out_of_the_work_tree():
    """Every --out of the README's commands, and every file its examples save, is ignored
    by git (under runs/, or a root-level example output), so following the README leaves
    no untracked file."""
    text = README.read_text()
    outs = re.findall(r"--out (\S+)", text)
    saved = re.findall(r'(?:save|trace)\([^"]*"([^"]+)"', text)
    assert "runs/mlp.svg" in outs and "model.npz" in saved and "trace.html" in saved
    for path in outs + saved:
        check = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT)
        assert check.returncode == 0, f"{path} would be an untracked file"
