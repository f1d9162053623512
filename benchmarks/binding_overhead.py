"""Per-call overhead of the two binding libraries: nanobind vs pybind11.

Builds benchmarks/binding_overhead/bench_module.cc twice (once per library, same C++) with
CMake into build/binding-overhead, then times a no-op and `ewise_add` on 16 float32 values,
alternating the libraries round by round and keeping each one's best round. needle's own
compiled `ewise_add` (nanobind) is timed alongside when it is installed.

Usage (needs ``pip install nanobind pybind11 cmake`` and a C++ compiler)::

    python benchmarks/binding_overhead.py            # ~20 s after the build
    python benchmarks/binding_overhead.py --quick
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

try:  # both libraries are build tools this benchmark compiles against, not needle's needs
    import nanobind
    import pybind11
except ImportError as error:
    sys.exit(
        f"binding_overhead.py needs nanobind and pybind11 ({error}): "
        f"pip install nanobind pybind11 cmake"
    )

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "benchmarks" / "binding_overhead"
BUILD = ROOT / "build" / "binding-overhead"
SIZE = 16


def build() -> None:
    """Configure and build both bench modules (incremental after the first run)."""
    subprocess.run(
        [
            "cmake",
            "-S",
            str(SOURCE),
            "-B",
            str(BUILD),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dnanobind_DIR={nanobind.cmake_dir()}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(["cmake", "--build", str(BUILD)], check=True, stdout=subprocess.DEVNULL)
    sys.path.insert(0, str(BUILD))


def cases() -> dict[str, Callable[[], None]]:
    """name -> a zero-argument call to time."""
    out: dict[str, Callable[[], None]] = {}
    for lib in ("nanobind", "pybind11"):
        mod = importlib.import_module(f"bench_{lib}")
        a, b, c = mod.Array(SIZE), mod.Array(SIZE), mod.Array(SIZE)
        out[f"{lib} noop()"] = mod.noop
        out[f"{lib} ewise_add({SIZE})"] = lambda mod=mod, a=a, b=b, c=c: mod.ewise_add(a, b, c)
    try:
        from needle.backend_ndarray import ndarray_backend_cpu as cpu
    except ImportError:
        return out
    a, b, c = cpu.Array(SIZE), cpu.Array(SIZE), cpu.Array(SIZE)
    out[f"needle ewise_add({SIZE})"] = lambda: cpu.ewise_add(a, b, c)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    build()
    calls = cases()
    rounds, number = (3, 20_000) if args.quick else (9, 100_000)
    best = {name: float("inf") for name in calls}
    for _ in range(rounds):  # alternate the libraries so background load hits both alike
        for name, call in calls.items():
            best[name] = min(best[name], timeit.timeit(call, number=number) / number)
    print(f"best of {rounds} rounds x {number} calls (ns per call):")
    for name, seconds in best.items():
        print(f"  {name:28s} {seconds * 1e9:7.1f}")


if __name__ == "__main__":
    main()
