"""Parsing database DSNs, with the password kept out of every repr, str and error."""
from __future__ import annotations

import dataclasses
import os
import urllib.parse

from fastsched.errors import ConfigError

DEFAULT_DSN = "sqlite:///fastsched.sqlite3"
DSN_ENV = "FASTSCHED_DSN"
DEFAULT_MYSQL_PORT = 3306
MYSQL_SCHEMES = ("mysql", "mariadb")


@dataclasses.dataclass(frozen=True)
class DSN:
    """A parsed DSN. ``str()`` and ``repr()`` mask the password."""

    dialect: str  # "mysql" or "sqlite"
    user: str = ""
    password: str = dataclasses.field(default="", repr=False)
    host: str = ""
    port: int = 0
    database: str = ""  # the MySQL database, or the SQLite file path
    options: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"DSN({self.masked()!r})"

    def masked(self) -> str:
        """The DSN as text, with the password replaced by ``***``."""
        if self.dialect == "sqlite":
            return f"sqlite:///{self.database}"
        auth = urllib.parse.quote(self.user, safe="")
        if self.password:
            auth += ":***"
        query = ("?" + urllib.parse.urlencode(self.options)) if self.options else ""
        return f"mysql://{auth}@{self.host}:{self.port}/{self.database}{query}"

    @property
    def identity(self) -> str:
        """Names the database without secrets: used for wake-up sockets and logs."""
        if self.dialect == "sqlite":
            return "sqlite:" + os.path.abspath(self.database)
        return f"mysql:{self.host}:{self.port}/{self.database}"


def parse_dsn(dsn: str | DSN | None = None) -> DSN:
    """Parse ``mysql://user:password@host:port/db`` (also ``mariadb://``) or ``sqlite:///path``.

    ``None`` means ``$FASTSCHED_DSN``, else ``sqlite:///fastsched.sqlite3`` in the working directory.
    """
    if isinstance(dsn, DSN):
        return dsn
    if dsn is None:
        dsn = os.environ.get(DSN_ENV) or DEFAULT_DSN
    if not isinstance(dsn, str):
        raise ConfigError(f"dsn must be a string like mysql://user:password@host:3306/db, got {type(dsn).__name__}")
    text = dsn.strip()
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or not scheme:
        raise ConfigError("malformed DSN: expected mysql://user:password@host:port/db or sqlite:///path")
    if scheme == "sqlite":
        path = rest[1:] if rest.startswith("/") else rest
        if rest.startswith("/") is False and rest:
            raise ConfigError("malformed sqlite DSN: write sqlite:///relative/path or sqlite:////absolute/path")
        if not path:
            raise ConfigError("malformed sqlite DSN: the file path is missing (sqlite:///fastsched.sqlite3)")
        return DSN(dialect="sqlite", database=urllib.parse.unquote(path))
    if scheme not in MYSQL_SCHEMES:
        raise ConfigError(f"unsupported DSN scheme {scheme!r}: use mysql://, mariadb:// or sqlite:///")
    try:
        parts = urllib.parse.urlsplit("mysql://" + rest)
        port = parts.port or DEFAULT_MYSQL_PORT
    except ValueError:
        raise ConfigError("malformed DSN: the port must be a number from 1 to 65535") from None
    host = parts.hostname or ""
    database = urllib.parse.unquote(parts.path.lstrip("/"))
    if not host:
        raise ConfigError("malformed DSN: the host is missing (mysql://user:password@host:3306/db)")
    if not database or "/" in database:
        raise ConfigError("malformed DSN: the database name is missing or contains '/' (mysql://user@host:3306/db)")
    options = tuple(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return DSN(
        dialect="mysql",
        user=urllib.parse.unquote(parts.username or ""),
        password=urllib.parse.unquote(parts.password or ""),
        host=host,
        port=port,
        database=database,
        options=options,
    )
