"""Storage backends: one contract per consumer (``contracts``), one SQL implementation, two dialects."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastsched.backends.contracts import Backend, MasterStore, OperatorStore, ProducerStore
from fastsched.backends.dialect import Dialect
from fastsched.dsn import DSN, parse_dsn
from fastsched.errors import ConfigError

if TYPE_CHECKING:
    from fastsched.backends.mysql import MySQLBackend
    from fastsched.backends.sqlite import SQLiteBackend

__all__ = ["Backend", "MasterStore", "OperatorStore", "ProducerStore", "dialect_class", "one_host", "open_backend"]


def dialect_class(dsn: DSN) -> type[Dialect]:
    """The dialect of ``dsn`` (its driver loads here, not on import of fastsched)."""
    if dsn.dialect == "mysql":
        from fastsched.backends.mysql import MySQLDialect

        return MySQLDialect
    if dsn.dialect == "sqlite":
        from fastsched.backends.sqlite import SQLiteDialect

        return SQLiteDialect
    raise ConfigError(f"no backend for the {dsn.dialect!r} dialect")


def one_host(dsn: DSN) -> bool:
    """Whether every master of this database runs on one machine (``Dialect.one_host``)."""
    return dialect_class(dsn).one_host


def open_backend(dsn: str | DSN | None = None) -> Backend:
    """The backend for ``dsn`` (see ``fastsched.dsn.parse_dsn``; None means $FASTSCHED_DSN or the
    SQLite default). Nothing connects yet: the first operation does, and creates the schema."""
    parsed = parse_dsn(dsn)
    if parsed.dialect == "mysql":
        from fastsched.backends.mysql import MySQLBackend  # drivers load on first use, not on import

        return MySQLBackend(parsed)
    if parsed.dialect == "sqlite":
        from fastsched.backends.sqlite import SQLiteBackend

        return SQLiteBackend(parsed)
    raise ConfigError(f"no backend for the {parsed.dialect!r} dialect")


def _satisfies_every_contract(mysql: MySQLBackend, sqlite: SQLiteBackend) -> None:
    """Never called: mypy checks here that both backends satisfy each consumer's contract."""
    checks: tuple[ProducerStore, MasterStore, OperatorStore, Backend] = (mysql, mysql, mysql, mysql)
    checks = (sqlite, sqlite, sqlite, sqlite)
    del checks
