"""docs/architecture.md stays true: every file and module it names exists, every module of the
package is named in it, and the classes, functions and tables it names are defined."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"
PACKAGE = REPO / "fastsched"
DIALECTS = ("mysql", "sqlite")
# Package modules the page need not name one by one: the Django app's insides are its own docs'.
UNLISTED = ("fastsched/contrib/django/",)
# Packages' __init__ files that hold no code of their own (the page names their modules instead).
PACKAGE_MARKERS = {"fastsched/backends/__init__.py", "fastsched/master/__init__.py", "fastsched/contrib/__init__.py"}


def _text() -> str:
    return DOC.read_text()


def _named_paths(text: str) -> set[str]:
    """Every repository path in backticks (``fastsched/...``, ``src_c/...``), <dialect> expanded."""
    paths = set()
    for raw in re.findall(r"`((?:fastsched|src_c|tests)/[^`\s]+)`", text):
        for path in (raw.replace("<dialect>", d) for d in DIALECTS) if "<dialect>" in raw else (raw,):
            if "migrate_N_to_M" not in path:
                paths.add(path)
    return paths


def _source() -> str:
    return "\n".join(path.read_text() for path in PACKAGE.rglob("*.py"))


def test_every_path_the_page_names_exists() -> None:
    missing = sorted(
        path for path in _named_paths(_text())
        if not (any(REPO.glob(path)) if "*" in path else (REPO / path).exists())
    )
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_every_module_of_the_package_is_on_the_page() -> None:
    named = _named_paths(_text())
    modules = sorted(str(path.relative_to(REPO)) for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts)
    unnamed = [m for m in modules if m not in named and not m.startswith(UNLISTED) and m not in PACKAGE_MARKERS]
    assert not unnamed, f"docs/architecture.md does not say what these modules own: {unnamed}"


def test_the_classes_functions_and_tables_it_names_are_defined() -> None:
    text, source = _text(), _source()
    names = set(re.findall(r"`([A-Z][A-Za-z_]+)`", text))
    names |= set(re.findall(r"`[A-Za-z_]+\.([A-Za-z_]+)`", text)) - {"py", "sql", "md"}  # not file names
    names -= {"FASTSCHED_UPDATE_DOCS"}
    undefined = sorted(
        name for name in names
        if not re.search(rf"^\s*(?:async def|def|class) {name}\b|^\s*{name}\s*[:=]", source, re.MULTILINE)
    )
    assert not undefined, f"docs/architecture.md names what the package does not define: {undefined}"
