"""fastsched is MIT-licensed: the LICENSE file, the package metadata and the README agree."""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_package_is_mit_licensed_everywhere_it_says_so() -> None:
    assert (REPO / "LICENSE").read_text().startswith("MIT License\n")
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'license = { text = "MIT" }' in pyproject and "AGPL" not in pyproject
    assert '"License :: OSI Approved :: MIT License"' in pyproject
    assert "under the MIT licence ([LICENSE](LICENSE))" in (REPO / "README.md").read_text()
    # What pip shows for the installed package (CI installs from this tree).
    assert importlib.metadata.metadata("fastsched")["License"] == "MIT"
