"""What `pip install .` installs: every module and data file of the package, so that a clean
install starts a pool (the README's `pip install . && fastsched-pool demo`)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "fastsched"
IGNORED = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.so", "*.sqlite3*", ".pytest_cache")
SHIPPED_SUFFIXES = {".py", ".pyi", ".sql", ".html", ".css", ".js"}


def _source_files() -> set[str]:
    return {
        path.relative_to(REPO).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and path.suffix in SHIPPED_SUFFIXES and "__pycache__" not in path.parts
    }


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_data_file_of_the_package(tmp_path: Path) -> None:
    # From a copy without build/: setuptools would otherwise ship what an earlier build left there.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*IGNORED))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("fastsched-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_source_files() - shipped)
    assert not missing, f"pip install . would leave out: {missing}"
    assert any(name.startswith("fastsched/_core.") and name.endswith(".so") for name in shipped)
    assert "fastsched/py.typed" in shipped, "without the PEP 561 marker, type checkers ignore the package's types"
