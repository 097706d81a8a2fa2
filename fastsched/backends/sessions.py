"""A dead master's connections, cut off by the master that recovers it (MariaDB/MySQL).

A master stopped (SIGSTOP, a paused VM or container) or cut off from the network in the middle of
a transaction keeps that transaction open for as long as its connection lives, and the server
keeps such a connection for hours (wait_timeout): the rows it locked, its own process row among
them, stay locked, and the recovery that should release its claims waits on them. So each of a
master's connections is noted in fastsched_meta (``session:<host hash>:<pid>:<connection id>``,
with the server run it is on) when it opens, and a recovery of that master kills them: their open
transactions roll back, and nothing the master sends on them later can commit. The recovery waits
for the master's process row only briefly before it does so (``short_lock_waits``).

A connection id means a connection only on the server that gave it and until that server
restarts: a noted connection is killed only if it was opened on the same server run as the
recovering one (same ``@@hostname:@@port``, same start to within RUN_START_SLACK seconds).
Killing needs no privilege when every master connects as the same user (a user may kill its own
connections); otherwise the server refuses (logged), and a recovery that still finds the process
row locked gives that master up until its next round (``SQLBackend._lock_expired_master``).
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastsched.backends.dialect import Dialect

log = logging.getLogger(__name__)

PREFIX = "session:"
RUN_START_SLACK = 2  # seconds: a server's start computed twice from its uptime (whole seconds)
UNKNOWN_THREAD = 1094  # the connection is gone already
NOT_OWNER = 1095  # another user's connection, and no CONNECTION ADMIN (or SUPER) privilege
LOCK_WAIT_TIMEOUT = 1205
CUT_OFF_ATTEMPTS = 3  # short lock waits (then kills) before a recovery gives the master up for now


def session_prefix(host: str, pid: int) -> str:
    """The fastsched_meta name prefix of the connections of master ``pid`` of ``host``: the host id
    (up to 255 characters) by a hash, so that the name fits the column's 191."""
    digest = hashlib.blake2b(host.encode("utf-8"), digest_size=8).hexdigest()
    return f"{PREFIX}{digest}:{int(pid)}:"


def server_run(cursor: Any, queries: dict[str, str]) -> tuple[str, int]:
    """``<@@hostname>:<@@port>@<unix time the server started>`` of the cursor's connection, and
    the connection's id."""
    cursor.execute(queries["server_run"])
    where, now, connection = cursor.fetchone()
    cursor.execute(queries["server_uptime"])
    uptime = int(cursor.fetchone()[1])
    return f"{where}@{round(float(now)) - uptime}", int(connection)


def same_run(noted: str, here: str) -> bool:
    where, _, started = noted.rpartition("@")
    here_where, _, here_started = here.rpartition("@")
    try:
        return where == here_where and abs(int(started) - int(here_started)) <= RUN_START_SLACK
    except ValueError:
        return False  # not a value this module wrote


def record_session(cursor: Any, queries: dict[str, str], prefix: str, ended: str | None) -> str:
    """Note the cursor's connection as one of the master's (in autocommit: each statement commits
    itself), and forget the note ``ended`` of the connection it replaces; the new note's name."""
    if ended is not None:
        cursor.execute(queries["forget_session"], {"name": ended})
    run, connection = server_run(cursor, queries)
    cursor.execute(queries["record_session"], {"prefix": prefix, "server": run})
    return f"{prefix}{connection}"


def cut_off(cursor: Any, queries: dict[str, str], prefix: str, dialect: Dialect) -> int:
    """Kill the noted connections of a master (``prefix``) on this server run; how many were
    alive. The notes stay until the master's rows are deleted (``forget_sessions``)."""
    cursor.execute(queries["master_sessions"], {"prefix": prefix})
    noted = list(cursor.fetchall())
    if not noted:
        return 0
    here, _ = server_run(cursor, queries)
    killed = 0
    for name, run in noted:
        if not same_run(str(run), here):
            continue
        try:
            connection = int(str(name).rsplit(":", 1)[1])
        except ValueError:
            continue
        try:
            cursor.execute(queries["kill_session"], {"connection": connection})
        except dialect.driver_error as exc:
            code = dialect.error_code(exc)
            if code == UNKNOWN_THREAD:
                continue
            if code == NOT_OWNER:
                log.warning(
                    "cannot cut off connection %d of a dead master (another database user's, and this one "
                    "may not kill it): its locks stay until it closes; let every master connect as one user",
                    connection,
                )
                continue
            raise
        killed += 1
    if killed:
        log.warning("cut off %d connection(s) of a master declared dead (what they held is rolled back)", killed)
    return killed
