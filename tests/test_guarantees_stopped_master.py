"""A master stopped (SIGSTOP, a paused VM) or cut off from the network in the middle of a
transaction keeps that transaction, and the rows it locked, for as long as its connection lives:
hours, on a server's defaults. Its recovery by another master must not wait for it (MariaDB, the
real server): the recovery kills the dead master's connections (fastsched.backends.sessions),
and no one else's.

The stopped master here is a backend whose transactions are left open, as a master frozen
between two statements leaves them: the process row locked mid-heartbeat on its main connection,
one of its claimed jobs locked mid-outcome on a sibling connection.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from faultkit import connect_raw

from fastsched.backends import open_backend
from fastsched.backends.base import Backend, claim_owner
from fastsched.backends.sessions import session_prefix
from fastsched.dbclock import utcnow
from fastsched.dsn import parse_dsn
from fastsched.jobs import NewJob

STOPPED = "stopped-host"
STOPPED_PID = 4242
RECOVERY_DEADLINE = 30.0  # seconds: a recovery waiting on the dead master's locks takes 50 s a try


def long_ago() -> dt.datetime:
    """The stopped master's last heartbeat."""
    return utcnow() - dt.timedelta(seconds=120)


def alive_after() -> dt.datetime:
    """A lease of 60 s: the stopped master's has run out, a master registered just now is alive."""
    return utcnow() - dt.timedelta(seconds=60)


@pytest.fixture
def backends(mysql_dsn: str) -> Iterator[Any]:
    opened: list[Backend] = []

    def make() -> Backend:
        backend = open_backend(mysql_dsn)
        backend.init_schema()
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


def _open_transaction(cursor: Any, statement: str, args: Any) -> None:
    """Start a transaction that locks the rows of ``statement`` and leave it open."""
    cursor.execute("BEGIN")
    cursor.execute(statement, args)
    cursor.fetchall()


def _recover_in_time(backend: Backend, alive_after: dt.datetime) -> list[tuple[str, int]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(backend.recover_expired(alive_after)), daemon=True)
    thread.start()
    thread.join(RECOVERY_DEADLINE)
    assert not thread.is_alive(), "the recovery waited on the stopped master's locks"
    assert result, "the recovery failed (its error is in the log above)"
    return result[0]  # type: ignore[no-any-return]


def _notes(backend: Backend, host: str, pid: int) -> int:
    cursor = backend.connection.cursor_ready()  # type: ignore[attr-defined]
    cursor.execute("SELECT COUNT(*) FROM fastsched_meta WHERE name LIKE %s", (session_prefix(host, pid) + "%",))
    return int(cursor.fetchone()[0])


def _stopped_master(backends: Any, jobs: int) -> tuple[Backend, list[int], Any, Any]:
    """A master with ``jobs`` claimed, frozen mid-heartbeat and mid-outcome: the backend, the job
    ids and the two cursors whose transactions stay open."""
    master = backends()
    master.register_master(STOPPED, STOPPED_PID, 2, long_ago(), instance="i1", machine="m1")
    master.add_many([NewJob("Cmd", f"[{i}]", 30, None, None, None, False) for i in range(jobs)])
    batches = master.claim([0, 0, jobs, 0, 0], [STOPPED_PID + 1], claim_owner(STOPPED, "i1"), jobs, utcnow())
    ids = [job.id for batch in batches for job in batch.jobs]
    assert len(ids) == jobs
    heartbeat = master.connection.cursor_ready()
    _open_transaction(heartbeat, "SELECT pid FROM process WHERE host = %s AND pid = %s FOR UPDATE", (STOPPED, STOPPED_PID))
    outcome = master.open_sibling().connection.cursor_ready()
    _open_transaction(outcome, "SELECT id FROM workerqueue WHERE id = %s FOR UPDATE", (ids[0],))
    return master, ids, heartbeat, outcome


def test_a_master_stopped_mid_transaction_is_recovered_and_cut_off(backends: Any) -> None:
    master, ids, heartbeat, outcome = _stopped_master(backends, 3)
    assert _notes(backends(), STOPPED, STOPPED_PID) == 2  # its main connection and the sibling

    recoverer = backends()
    released = _recover_in_time(recoverer, alive_after())

    assert released == [(STOPPED, 3)]
    assert _notes(recoverer, STOPPED, STOPPED_PID) == 0
    for cursor in (heartbeat, outcome):  # whatever it sends later reaches no transaction of its
        with pytest.raises(pymysql.MySQLError):
            cursor.execute("SELECT 1")
    assert master.heartbeat(STOPPED, STOPPED_PID, 2, None, "i1") is False  # it learns it was declared dead
    batches = recoverer.claim([0, 0, 3, 0, 0], [77], claim_owner("other-host", ""), 3, utcnow())
    assert sorted(job.id for batch in batches for job in batch.jobs) == sorted(ids)


def test_the_recovery_kills_no_connection_but_the_dead_masters(backends: Any) -> None:
    _stopped_master(backends, 2)
    live = backends()
    live.register_master("live-host", 5151, 1, None, instance="i2", machine="m2")
    [other] = live.add_many([NewJob("Other", "[]", 30, None, None, None, False)])
    live_cursor = live.connection.cursor_ready()
    _open_transaction(live_cursor, "SELECT id FROM workerqueue WHERE id = %s FOR UPDATE", (other,))
    producer = backends()
    producer_cursor = producer.connection.cursor_ready()
    _open_transaction(producer_cursor, "SELECT COUNT(*) FROM workerqueue", ())

    released = _recover_in_time(backends(), alive_after())

    assert sorted(released) == [(STOPPED, 2)]  # only the stopped one: the live master's heartbeat is fresh
    for cursor in (live_cursor, producer_cursor):
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
        cursor.execute("COMMIT")


def test_a_connection_noted_before_the_server_restarted_is_not_killed(backends: Any) -> None:
    """A connection id names a connection only until the server restarts: a note from an earlier
    run of the server may carry the id of anyone's connection now."""
    innocent = backends()
    cursor = innocent.connection.cursor_ready()
    cursor.execute("SELECT CONNECTION_ID()")
    innocent_id = int(cursor.fetchone()[0])
    dead = backends()
    dead.register_master(STOPPED, STOPPED_PID, 1, long_ago(), instance="i1", machine="m1")
    dead.server_now()  # its next transaction notes its connection
    dead.close()
    note = session_prefix(STOPPED, STOPPED_PID) + str(innocent_id)
    cursor.execute("SELECT value FROM fastsched_meta WHERE name LIKE %s", (session_prefix(STOPPED, STOPPED_PID) + "%",))
    server_run = str(cursor.fetchone()[0])
    where, _, started = server_run.rpartition("@")
    cursor.execute(
        "INSERT INTO fastsched_meta (name, value) VALUES (%s, %s)", (note, f"{where}@{int(started) - 3600}")
    )

    released = _recover_in_time(backends(), alive_after())

    assert released == [(STOPPED, 0)]
    cursor.execute("SELECT 1")  # alive
    assert cursor.fetchone() == (1,)


def test_a_master_that_stops_leaves_no_notes(backends: Any) -> None:
    master = backends()
    master.register_master(STOPPED, STOPPED_PID, 1, None, instance="i1", machine="m1")
    master.open_sibling().connection.cursor_ready()
    assert _notes(master, STOPPED, STOPPED_PID) == 2
    master.unregister(STOPPED, STOPPED_PID)
    assert _notes(master, STOPPED, STOPPED_PID) == 0


@pytest.fixture
def other_user_dsn(mysql_dsn: str) -> Iterator[str]:
    """A second database user with every right on the test database and none on others' connections."""
    root = parse_dsn(mysql_dsn)
    user, password = "fs_cut_" + secrets.token_hex(3), "Pw_" + secrets.token_hex(8)
    admin = connect_raw(mysql_dsn)
    with admin.cursor() as cur:
        cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
        cur.execute(f"GRANT ALL ON `{root.database}`.* TO %s@'%%'", (user,))
    try:
        yield f"mysql://{user}:{password}@{root.host}:{root.port}/{root.database}"
    finally:
        with admin.cursor() as cur:
            cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))
        admin.close()


def test_a_recovery_that_may_not_kill_says_so_and_recovers_what_is_not_locked(
    backends: Any, other_user_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Masters connecting as different users: the recovering one may not kill the dead one's
    connections. It says so, and releases the claims no open transaction holds."""
    dead = backends()
    dead.register_master(STOPPED, STOPPED_PID, 1, long_ago(), instance="i1", machine="m1")
    dead.add_many([NewJob("Cmd", "[1]", 30, None, None, None, False)])
    dead.claim([0, 0, 1, 0, 0], [STOPPED_PID + 1], claim_owner(STOPPED, "i1"), 1, utcnow())
    dead_cursor = dead.connection.cursor_ready()
    other = open_backend(other_user_dsn)
    try:
        with caplog.at_level("WARNING", logger="fastsched.backends.sessions"):
            released = _recover_in_time(other, alive_after())
    finally:
        other.close()
    assert released == [(STOPPED, 1)]
    assert "cannot cut off connection" in caplog.text
    dead_cursor.execute("SELECT 1")  # not killed
    assert dead_cursor.fetchone() == (1,)


def test_a_master_that_reconnects_keeps_one_note_per_connection(backends: Any) -> None:
    """A connection that ended is forgotten when its master opens the next one: a master whose
    connections drop now and then does not pile notes up."""
    master = backends()
    master.register_master(STOPPED, STOPPED_PID, 1, None, instance="i1", machine="m1")
    master.server_now()
    killer = backends().connection.cursor_ready()
    for _ in range(3):
        cursor = master.connection.cursor_ready()
        cursor.execute("SELECT CONNECTION_ID()")
        killer.execute(f"KILL CONNECTION {int(cursor.fetchone()[0])}")
        master.server_now()  # reconnects
    cursor = master.connection.cursor_ready()
    cursor.execute("SELECT CONNECTION_ID()")
    live = int(cursor.fetchone()[0])
    cursor.execute("SELECT name FROM fastsched_meta WHERE name LIKE %s", (session_prefix(STOPPED, STOPPED_PID) + "%",))
    assert [row[0] for row in cursor.fetchall()] == [session_prefix(STOPPED, STOPPED_PID) + str(live)]


def test_a_row_that_stays_locked_is_recovered_by_a_later_round(
    backends: Any, other_user_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The recovering master may not kill the stopped one's connection: it gives the row up for
    this round after a few seconds (its own loop, its heartbeat among it, is not held up for the
    lock's whole timeout), and recovers it in a round after the lock is gone."""
    master, ids, heartbeat, outcome = _stopped_master(backends, 2)
    other = open_backend(other_user_dsn)
    try:
        with caplog.at_level("WARNING"):
            assert _recover_in_time(other, alive_after()) == []
        assert "its process row stays locked" in caplog.text
        heartbeat.execute("SELECT 1")  # still alive: it was not killed
        heartbeat.fetchall()
        for cursor in (heartbeat, outcome):
            cursor.execute("ROLLBACK")  # the stopped master goes on, then dies for good
        master.close()
        assert _recover_in_time(other, alive_after()) == [(STOPPED, 2)]
        batches = other.claim([0, 0, 2, 0, 0], [78], claim_owner("other-host", ""), 2, utcnow())
        assert sorted(job.id for batch in batches for job in batch.jobs) == sorted(ids)
    finally:
        other.close()
