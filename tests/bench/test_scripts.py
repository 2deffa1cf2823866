"""The benchmark starts as the README says (``python bench/run.py``): as a script, whose folder
comes first on ``sys.path``, so a module of ``bench/`` named like one of the standard library's
hides it from everything the script imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_no_bench_module_hides_a_standard_library_module() -> None:
    """``bench/profile.py`` did (session 9): ``cProfile`` then failed on import, so
    ``make bench`` stopped before measuring anything."""
    clashes = sorted(p.name for p in BENCH.glob("*.py") if p.stem in sys.stdlib_module_names)
    assert clashes == [], f"rename {clashes}: they hide standard modules from bench/run.py"


@pytest.mark.parametrize("script", ["run.py", "hotspots.py"])
def test_the_bench_scripts_start_as_scripts(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=BENCH.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
