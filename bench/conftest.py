"""Benchmark fixtures: private databases, the quick-mode switch.

``FASTSCHED_BENCH_QUICK=1`` shrinks every size so that the whole of bench/ runs in about a
minute: CI runs it once so the benchmarks cannot rot. Full mode (the default) is what
``python bench/report.py`` runs to regenerate bench/RESULTS.md.

Each MariaDB benchmark gets a database of its own (``fastsched_bench_<hex>`` on the server at
``FASTSCHED_BENCH_MYSQL``, else ``FASTSCHED_TEST_MYSQL``, else mysql://root@127.0.0.1:3306),
created for it and dropped after it; nobody else's data is touched. SQLite files live in the
test's tmp_path. An unreachable MariaDB fails the benchmark: it never skips.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import harness


def pytest_report_header(config: pytest.Config) -> str:
    mode = "QUICK (FASTSCHED_BENCH_QUICK=1: tiny sizes, one round)" if harness.QUICK else "FULL"
    return f"fastsched benchmarks: {mode}; MariaDB at {harness.MYSQL_SERVER}"


FULL_MODE_TIMEOUT = 3600  # seconds per benchmark in full mode (a million-job drain is long)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Full-size runs outlast the project's 300 s per-test timeout: lift it for bench/ only."""
    if harness.QUICK or not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(FULL_MODE_TIMEOUT))


@pytest.fixture
def quick() -> bool:
    return harness.QUICK


@pytest.fixture
def bench_mysql_dsn() -> Iterator[str]:
    """A private MariaDB database for this benchmark: its DSN; dropped afterwards."""
    try:
        with harness.private_mysql_database() as dsn:
            yield dsn
    except RuntimeError as exc:
        if "not reachable" in str(exc):
            pytest.fail(str(exc), pytrace=False)
        raise


@pytest.fixture
def bench_sqlite_dsn(tmp_path: Path) -> str:
    return harness.sqlite_dsn(tmp_path)


@pytest.fixture(params=["mysql", "sqlite"])
def bench_dsn(request: pytest.FixtureRequest) -> str:
    """Each benchmark that takes ``bench_dsn`` runs on MariaDB and on SQLite."""
    name = "bench_mysql_dsn" if request.param == "mysql" else "bench_sqlite_dsn"
    return str(request.getfixturevalue(name))
