"""The storage contracts per consumer (fastsched.backends.contracts): both backends implement every
operation of each with the same parameters, and no code outside fastsched/backends/ depends on a
concrete backend class (consumers see the contract and the dialect's capabilities only).

mypy strict checks the same at type level (fastsched.backends._satisfies_every_contract); this
test keeps it true for a run without mypy, and for parameter names, which mypy does not compare."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from fastsched.backends.contracts import Backend, MasterStore, OperatorStore, ProducerStore
from fastsched.backends.mysql import MySQLBackend
from fastsched.backends.sqlite import SQLiteBackend

PACKAGE = Path(__file__).resolve().parents[1] / "fastsched"
CONTRACTS = (ProducerStore, MasterStore, OperatorStore, Backend)
CONCRETE = ("MySQLBackend", "SQLiteBackend", "SQLBackend", "MySQLDialect", "SQLiteDialect")


def _members(contract: type) -> dict[str, object]:
    found: dict[str, object] = {}
    for cls in reversed(contract.__mro__):
        if cls is object or cls.__name__ in ("Protocol", "Generic"):
            continue
        found.update({name: value for name, value in vars(cls).items() if not name.startswith("_")})
    return found


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("backend", [MySQLBackend, SQLiteBackend], ids=lambda c: c.__name__)
def test_both_backends_implement_every_operation_of_each_contract(contract: type, backend: type) -> None:
    members = _members(contract)
    assert members, contract
    for name, declared in members.items():
        assert hasattr(backend, name) or name == "dsn", f"{backend.__name__} has no {name} of {contract.__name__}"
        if not callable(declared):
            continue
        expected = list(inspect.signature(declared).parameters)  # type: ignore[arg-type]
        got = list(inspect.signature(getattr(backend, name)).parameters)
        assert got == expected, f"{backend.__name__}.{name}{got} against {contract.__name__}.{name}{expected}"


def test_the_producer_contract_holds_what_the_queue_needs_and_nothing_of_the_master() -> None:
    producer = set(_members(ProducerStore))
    assert {"add_many", "get", "cancel", "retry", "failed", "bulk", "stats", "pause", "resume"} <= producer
    assert not producer & {"claim", "write_outcomes", "register_master", "heartbeat", "recover_expired"}
    master = set(_members(MasterStore))
    assert {"plan_counts", "claim", "write_outcomes", "register_master", "heartbeat", "recover_expired",
            "run_periodic", "purge"} <= master
    operator = set(_members(OperatorStore))
    assert {"upgrade_schema", "stats", "processes", "jobs_ahead", "queue_stats"} <= operator


def test_no_code_outside_the_backends_names_a_concrete_backend() -> None:
    offenders = []
    pattern = re.compile(r"\b(" + "|".join(CONCRETE) + r")\b")
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("backends/"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"fastsched/{relative}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_what_differs_between_the_databases_is_the_dialects_capabilities() -> None:
    """The master asks the dialect, never which backend it holds: MariaDB runs writers side by side
    (claims split over two connections, outcomes written beside them) and its masters may run on
    many machines; SQLite has one writer, on one machine."""
    from fastsched.backends import one_host, open_backend
    from fastsched.dsn import parse_dsn

    mysql = parse_dsn("mysql://user@db.example:3306/jobs")
    sqlite = parse_dsn("sqlite:///jobs.sqlite3")
    assert (open_backend(mysql).concurrent_connections, one_host(mysql)) == (2, False)
    assert (open_backend(sqlite).concurrent_connections, one_host(sqlite)) == (1, True)
    assert open_backend(mysql).open_sibling().concurrent_connections == 2  # nothing connects
