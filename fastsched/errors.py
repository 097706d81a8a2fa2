"""One exception root for fastsched; a subclass's docstring is its default message.

Driver errors (pymysql, sqlite3) are wrapped at the storage boundary, so callers never import a
driver to catch them: the original is kept as ``__cause__``.
"""
from __future__ import annotations


class FastschedError(Exception):
    """A fastsched operation failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class InvalidInput(FastschedError, ValueError):
    """The input was invalid; nothing was stored."""


class ConfigError(FastschedError, ValueError):
    """The configuration is invalid."""


class DatabaseError(FastschedError):
    """The database failed to complete an operation."""


class DatabaseUnavailable(DatabaseError):
    """The database could not be reached."""


class UnsupportedServer(DatabaseError):
    """The database server is too old: fastsched needs MariaDB 10.6+ or MySQL 8.0+ (SKIP LOCKED)."""


class SchemaError(DatabaseError):
    """The database schema is missing or of a version this release cannot use."""


class JobNotFound(FastschedError, LookupError):
    """No job has that id."""


class InvalidState(FastschedError):
    """The job is not in a state that allows this operation."""


class TaskError(FastschedError):
    """A task could not be registered or looked up."""


class NotInJob(FastschedError, RuntimeError):
    """This call is only valid inside a running job."""


class PoolAlreadyRunning(FastschedError):
    """A pool with the same host id is already running against this database."""
