"""Parsing database DSNs, with the password kept out of every repr, str and error."""
from __future__ import annotations

import dataclasses
import os
import re
import urllib.parse
from collections.abc import Sequence

from fastsched.errors import ConfigError

DEFAULT_DSN = "sqlite:///fastsched.sqlite3"
DSN_ENV = "FASTSCHED_DSN"
DEFAULT_MYSQL_PORT = 3306
MYSQL_SCHEMES = ("mysql", "mariadb")
SECRET_OPTIONS = frozenset({"password", "passwd", "pass"})  # option names whose values are masked
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{0,20}")


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
    # MySQL: every (host, port) the DSN names, in its order (host and port are the first): the
    # nodes of one multi-primary cluster (Galera), of which a connection uses one at a time.
    nodes: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if self.dialect != "sqlite" and not self.nodes:
            object.__setattr__(self, "nodes", ((self.host, self.port),))

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"DSN({self.masked()!r})"

    def masked(self) -> str:
        """The DSN as text, with the password replaced by ``***`` (and parseable again)."""
        if self.dialect == "sqlite":
            return "sqlite:///" + urllib.parse.quote(self.database, safe="/")
        auth = urllib.parse.quote(self.user, safe="")
        if self.password:
            auth += ":***"
        if auth:
            auth += "@"
        options = [(k, "***" if k.lower() in SECRET_OPTIONS else v) for k, v in self.options]
        query = ("?" + urllib.parse.urlencode(options, safe="*")) if options else ""
        database = urllib.parse.quote(self.database, safe="")
        return f"mysql://{auth}{_node_list(self.nodes)}/{database}{query}"

    @property
    def identity(self) -> str:
        """Names the database without secrets: used for wake-up sockets and logs. The nodes of a
        cluster in any order name one database."""
        if self.dialect == "sqlite":
            return "sqlite:" + os.path.abspath(self.database)
        return f"mysql:{_node_list(sorted(self.nodes))}/{self.database}"

    def at_node(self, index: int) -> DSN:
        """This DSN with only its ``index``-th node: what one connection uses."""
        host, port = self.nodes[index]
        return dataclasses.replace(self, host=host, port=port, nodes=((host, port),))


def _node_list(nodes: Sequence[tuple[str, int]]) -> str:
    return ",".join(f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in nodes)


def parse_dsn(dsn: str | DSN | None = None) -> DSN:
    """Parse ``mysql://user:password@host:port/db`` (also ``mariadb://``) or ``sqlite:///path``.

    A MySQL DSN may name several nodes of one multi-primary cluster (MariaDB Galera):
    ``mysql://user:password@h1:3306,h2:3306,h3:3306/db``, each port defaulting to 3306.

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
        return _parse_sqlite(rest)
    if scheme not in MYSQL_SCHEMES:
        # Name the scheme only if it looks like one: text before "://" may hold a password.
        shown = repr(scheme) if _SCHEME.fullmatch(scheme) else "in this DSN"
        raise ConfigError(f"unsupported DSN scheme {shown}: use mysql://, mariadb:// or sqlite:///")
    return _parse_mysql(rest)


def _parse_sqlite(rest: str) -> DSN:
    if rest and not rest.startswith("/"):
        raise ConfigError("malformed sqlite DSN: write sqlite:///relative/path or sqlite:////absolute/path")
    if "?" in rest or "#" in rest:
        raise ConfigError("malformed sqlite DSN: it takes no options; percent-encode ? and # in the file name")
    path = urllib.parse.unquote(rest[1:])
    if not path:
        raise ConfigError("malformed sqlite DSN: the file path is missing (sqlite:///fastsched.sqlite3)")
    if path == ":memory:" or path.startswith("file:"):
        raise ConfigError(
            "unsupported sqlite DSN: jobs must outlive the process and be shared with the pool, "
            "so use a file path (sqlite:///fastsched.sqlite3)"
        )
    return DSN(dialect="sqlite", database=path)


def _parse_mysql(rest: str) -> DSN:
    """One node (``host:port``), or several separated by commas: ``h1:3306,h2:3306,h3``."""
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    userinfo, at, hosts = rest[:cut].rpartition("@")
    if "," not in hosts:
        return _parse_one_mysql(rest)
    nodes = []
    for text in hosts.split(","):
        if not text:
            raise ConfigError("malformed DSN: an empty host in the list of nodes (mysql://user@h1:3306,h2:3306/db)")
        node = _parse_one_mysql(text + "/db")  # each node checked as a DSN of its own
        nodes.append((node.host, node.port))
    if len(set(nodes)) < len(nodes):
        raise ConfigError("malformed DSN: a node appears twice in the list of nodes")
    first = _parse_one_mysql(userinfo + at + hosts.split(",", 1)[0] + rest[cut:])
    if any(key == "unix_socket" for key, _ in first.options):
        raise ConfigError("malformed DSN: unix_socket names one local server, not a list of nodes")
    return dataclasses.replace(first, nodes=tuple(nodes))


def _latin1(text: str) -> bool:
    """Whether ``text`` can be sent as pymysql sends a password (encoded as Latin-1)."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _parse_one_mysql(rest: str) -> DSN:
    try:
        parts = urllib.parse.urlsplit("mysql://" + rest)
        port = parts.port
        hostname = parts.hostname
    except ValueError:
        raise ConfigError(
            "malformed DSN: the host or port is invalid (the port must be a number from 1 to 65535; "
            "percent-encode / ? # @ in the user name or password)"
        ) from None
    if port is None:
        port = DEFAULT_MYSQL_PORT
    elif not 1 <= port <= 65535:
        raise ConfigError("malformed DSN: the port must be a number from 1 to 65535")
    host = hostname or ""
    database = urllib.parse.unquote(parts.path.lstrip("/"))
    if not host:
        raise ConfigError("malformed DSN: the host is missing (mysql://user:password@host:3306/db)")
    if not database or "/" in database:
        raise ConfigError("malformed DSN: the database name is missing or contains '/' (mysql://user@host:3306/db)")
    if "@" in database:
        # mysql://u:12/secret@host parses as host "u", port 12, database "secret@host": never show it.
        raise ConfigError("malformed DSN: '@' after the host (percent-encode / in a password as %2F)")
    if parts.fragment:
        raise ConfigError("malformed DSN: unexpected '#...' (percent-encode # in a password as %23)")
    options = tuple(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    password = urllib.parse.unquote(parts.password or "")
    if not password.isascii() and not _latin1(password):
        # No part of it in the message, nor a UnicodeEncodeError (it names the character and where).
        raise ConfigError(
            "the DSN's password has a character outside Latin-1 (ISO 8859-1), which the MySQL driver "
            "cannot send: give the database user a password of Latin-1 characters"
        )
    return DSN(
        dialect="mysql",
        user=urllib.parse.unquote(parts.username or ""),
        password=password,
        host=host,
        port=port,
        database=database,
        options=options,
    )
