"""fastsched on a 3-node MariaDB Galera cluster (tests/galerakit.py): what multi-primary needs.

- A certification failure (error 1213 at COMMIT: another node's write set touched the same rows
  first) re-runs the whole transaction on every write path, and nothing of the losing attempt
  stays; dedup stays atomic across nodes.
- A node out of the Primary component (error 1047) is an outage of that connection; a DSN that
  names several nodes moves to another one, and sees there what it committed before.
- Claims spread: the masters on different nodes take different shares of the runnable rows
  (oldest first within each), a short share takes from another's tail (or an idle one's head),
  and a claim locks only the rows it takes.
- The schema holds to what Galera needs: a primary key on every table, InnoDB only, no locking
  read that relies on a gap lock.

Each conflict is made on purpose: just before the backend's COMMIT on node 1, a raw connection to
node 2 commits a change to one of the rows the transaction wrote.
"""
from __future__ import annotations

import datetime as dt
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import galerakit
import pymysql
import pytest
from test_backend_contract import HOST, NOW, SECOND, new_job

from fastsched.backends import open_backend
from fastsched.backends.base import Backend
from fastsched.backends.shares import ShareView
from fastsched.backends.sqlfiles import expand_in, load_queries
from fastsched.errors import DatabaseUnavailable
from fastsched.jobs import Outcomes

pytestmark = pytest.mark.galera

QUERIES = load_queries("mysql")
LATER = NOW + 3600 * SECOND


@pytest.fixture
def database(galera: galerakit.GaleraCluster) -> tuple[str, str, str]:
    return galera.database()


def backend_on(galera: galerakit.GaleraCluster, database: tuple[str, str, str], *nodes: int) -> Any:
    backend = open_backend(galera.dsn(*database, nodes=list(nodes)))
    backend.init_schema()
    return backend


@pytest.fixture
def node1(galera: galerakit.GaleraCluster, database: tuple[str, str, str]) -> Iterator[Any]:
    backend = backend_on(galera, database, 0)
    yield backend
    backend.close()


def raw_on(galera: galerakit.GaleraCluster, database: tuple[str, str, str], node: int) -> pymysql.connections.Connection:
    """A plain connection to ``node`` whose every statement first waits for what the cluster
    committed before (wsrep_sync_wait): it sees what the test just did on another node."""
    name, user, password = database
    return pymysql.connect(
        host="127.0.0.1", port=galera.nodes[node].port, user=user, password=password, database=name,
        autocommit=True, init_command="SET SESSION wsrep_sync_wait = 15",
    )


def rival_before_commit(backend: Any, rival: pymysql.connections.Connection, statement: str, *params: object) -> list[int]:
    """Just before the backend's next COMMIT, commit ``statement`` on the rival's node (once).
    Returns a list that holds the rows the rival's statement changed, once it ran."""
    backend.connection.cursor_ready()
    conn = backend.connection.conn
    original = conn.commit
    changed: list[int] = []

    def commit() -> None:
        if not changed:
            with rival.cursor() as cur:
                changed.append(cur.execute(statement, params))
        original()

    conn.commit = commit
    return changed


def rows(conn: pymysql.connections.Connection, statement: str, *params: object) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return list(cur.fetchall())


def pending(backend: Backend, count: int, **kwargs: Any) -> list[int]:
    return backend.add_many([new_job(i, **kwargs) for i in range(count)])


# --- certification failures on every write path --------------------------------------------------


def test_a_claim_that_lost_certification_is_rerun_whole(galera: Any, database: Any, node1: Any) -> None:
    earlier = pending(node1, 4, command="Earlier")
    (first,) = node1.claim([0, 0, 4, 0, 0], [101], HOST, 10, NOW)
    fresh = pending(node1, 6)
    rival = raw_on(galera, database, 1)
    # The claim's transaction also completes two of the earlier jobs: both parts must land once.
    changed = rival_before_commit(node1, rival, "UPDATE workerqueue SET last_error = 'rival' WHERE id IN %s", fresh)
    batches = node1.write_outcomes_and_claim(
        Outcomes(done=[job.id for job in first.jobs[:2]]), [0, 0, 6, 0, 0], [102, 103], HOST, 3, NOW
    )
    assert changed == [6] and node1.conflicts == 1
    assert sorted(job.id for batch in batches for job in batch.jobs) == fresh
    found = {job_id: (pid, done) for job_id, pid, done in rows(rival, "SELECT id, pid, done FROM workerqueue")}
    assert {job_id: found[job_id][1] for job_id in earlier} == {earlier[0]: 1, earlier[1]: 1, earlier[2]: 0, earlier[3]: 0}
    assert sorted(found[job_id][0] for job_id in fresh) == [102, 102, 102, 103, 103, 103]


@pytest.mark.parametrize("outcome", ["done", "released"])
def test_a_completion_or_release_that_lost_certification_is_written_again(
    galera: Any, database: Any, node1: Any, outcome: str
) -> None:
    ids = pending(node1, 5)
    node1.claim([0, 0, 5, 0, 0], [101], HOST, 10, NOW)
    rival = raw_on(galera, database, 1)
    changed = rival_before_commit(node1, rival, "UPDATE workerqueue SET last_error = 'rival' WHERE id IN %s", ids)
    node1.write_outcomes(HOST, NOW, Outcomes(**{outcome: ids}))
    assert changed == [5] and node1.conflicts == 1
    expected = (1, 101) if outcome == "done" else (0, 0)
    assert rows(rival, "SELECT DISTINCT done, pid FROM workerqueue") == [expected]


def test_a_heartbeat_that_lost_certification_is_rerun(galera: Any, database: Any, node1: Any) -> None:
    node1.register_master(HOST, 7, 4, NOW)
    rival = raw_on(galera, database, 1)
    changed = rival_before_commit(node1, rival, "UPDATE process SET workers = 99 WHERE host = %s", HOST)
    assert node1.heartbeat(HOST, 7, 4, NOW + SECOND) is True
    assert changed == [1] and node1.conflicts == 1
    assert rows(rival, "SELECT workers, heartbeat FROM process WHERE host = %s", HOST) == [(4, NOW + SECOND)]


def test_a_recovery_that_lost_certification_is_rerun(galera: Any, database: Any, node1: Any) -> None:
    node1.register_master("dead-host", 8, 2, NOW)
    ids = pending(node1, 3)
    node1.claim([0, 0, 3, 0, 0], [201], "dead-host", 10, NOW)
    rival = raw_on(galera, database, 1)
    changed = rival_before_commit(node1, rival, "UPDATE process SET workers = 5 WHERE host = 'dead-host'")
    assert node1.recover_expired(NOW + 60 * SECOND) == [("dead-host", 3)]
    assert changed == [1] and node1.conflicts == 1
    assert rows(rival, "SELECT COUNT(*) FROM process") == [(0,)]
    assert rows(rival, "SELECT DISTINCT pid FROM workerqueue WHERE id IN %s", ids) == [(0,)]


def test_a_purge_that_lost_certification_is_rerun(galera: Any, database: Any, node1: Any) -> None:
    ids = pending(node1, 4)
    node1.claim([0, 0, 4, 0, 0], [101], HOST, 10, NOW)
    node1.write_outcomes(HOST, NOW, Outcomes(done=ids))
    rival = raw_on(galera, database, 1)
    changed = rival_before_commit(node1, rival, "UPDATE workerqueue SET last_error = 'rival' WHERE id = %s", ids[0])
    assert node1.purge(LATER) == 4
    assert changed == [1] and node1.conflicts == 1
    assert rows(rival, "SELECT COUNT(*) FROM workerqueue") == [(0,)]


def test_a_periodic_lease_that_lost_certification_is_rerun(galera: Any, database: Any, node1: Any) -> None:
    period = dt.timedelta(minutes=1)
    assert node1.take_periodic("tick", NOW, period) is True
    rival = raw_on(galera, database, 1)
    changed = rival_before_commit(node1, rival, "UPDATE fastsched_meta SET value = 'rival' WHERE name = 'periodic:tick'")
    assert node1.take_periodic("tick", NOW + period, period) is True
    assert changed == [1] and node1.conflicts == 1
    assert rows(rival, "SELECT due FROM fastsched_meta WHERE name = 'periodic:tick'") == [(NOW + 2 * period,)]
    assert node1.take_periodic("tick", NOW + period, period) is False  # taken once per period


def test_an_add_that_lost_to_an_identical_job_on_another_node_returns_that_job(
    galera: Any, database: Any, node1: Any
) -> None:
    jobs = [new_job("twin"), new_job("other")]
    rival = raw_on(galera, database, 1)
    changed = rival_before_commit(
        node1, rival,
        "INSERT INTO workerqueue (command, parameter, priority, created, next_try, dedup_hash) VALUES (%s, %s, %s, %s, %s, %s)",
        *jobs[0][:6],
    )
    twin, other = node1.add_many(jobs)
    assert changed == [1] and node1.conflicts == 1
    assert rows(rival, "SELECT id FROM workerqueue WHERE command = 'Cmd' AND parameter = '[\"twin\"]'") == [(twin,)]
    assert rows(rival, "SELECT COUNT(*) FROM workerqueue") == [(2,)] and other != twin


def test_dedup_is_atomic_across_nodes(galera: Any, database: Any) -> None:
    """Two producers on two nodes add the same 150 jobs at once, one autocommit INSERT each:
    every job is stored once, and both producers get its id."""
    backends = [backend_on(galera, database, node) for node in (0, 1)]
    jobs = [new_job("same", i) for i in range(150)]
    got: list[list[int]] = [[], []]
    start = threading.Barrier(2)

    def produce(index: int) -> None:
        start.wait()
        for job in jobs:
            got[index].extend(backends[index].add_many([job]))

    threads = [threading.Thread(target=produce, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert got[0] == got[1] and len(set(got[0])) == len(jobs)
        stored = rows(raw_on(galera, database, 2), "SELECT id FROM workerqueue ORDER BY id")
        assert sorted(got[0]) == [job_id for (job_id,) in stored]
    finally:
        for backend in backends:
            backend.close()


# --- claims spread over the nodes ----------------------------------------------------------------


def share_of(job_id: int, of: int = 3) -> int:
    """The share a job belongs to among ``of`` shares: MySQL's CRC32 of the id, as text, modulo ``of``."""
    return zlib.crc32(str(job_id).encode()) % of


def claimed_ids(backend: Any, count: int, now: dt.datetime, pid: int = 101, host: str = HOST) -> list[int]:
    return [job.id for batch in backend.claim([0, 0, count, 0, 0], [pid], host, count, now) for job in batch.jobs]


def masters_on(galera: Any, database: Any, nodes: list[int]) -> list[Any]:
    """A registered master on each of ``nodes`` (host ids m0, m1, ...), each recording its node."""
    backends = [backend_on(galera, database, node) for node in nodes]
    for index, backend in enumerate(backends):
        backend.register_master(f"m{index}", 10 + index, 2, None)
    return backends


def slots(backends: list[Any]) -> list[int]:
    """Each master's share: its node's rank among the masters' nodes (by gcomm UUID)."""
    nodes = sorted({backend.dialect.galera_node for backend in backends})
    return [nodes.index(backend.dialect.galera_node) for backend in backends]


def test_masters_on_three_nodes_claim_disjoint_shares_each_oldest_first(galera: Any, database: Any) -> None:
    """Claims through the three nodes' masters take rows of three different shares, none twice,
    each the oldest of its share, so the order within a priority stays close to FIFO; and every
    runnable job is claimed once."""
    backends = masters_on(galera, database, [0, 1, 2])
    try:
        ids = pending(backends[0], 60)
        by_share = {share: [i for i in ids if share_of(i) == share] for share in range(3)}
        assert min(len(members) for members in by_share.values()) >= 12  # the hash spreads ids
        taken: list[int] = []
        for round_ in range(2):
            for index, (backend, slot) in enumerate(zip(backends, slots(backends))):
                claim = claimed_ids(backend, 5, LATER, pid=100 * round_ + index, host=f"m{index}")
                assert claim == by_share[slot][5 * round_:5 * round_ + 5]
                taken += claim
        for index, backend in enumerate(backends):
            taken += claimed_ids(backend, 30, LATER, pid=300 + index, host=f"m{index}")
        assert sorted(taken) == ids
    finally:
        for backend in backends:
            backend.close()


def test_masters_on_one_node_have_no_share(galera: Any, database: Any) -> None:
    backends = masters_on(galera, database, [1, 1])
    try:
        ids = pending(backends[0], 12)
        assert claimed_ids(backends[1], 5, LATER, host="m1") == ids[:5]
        assert claimed_ids(backends[0], 5, LATER, host="m0") == ids[5:10]
    finally:
        for backend in backends:
            backend.close()


def test_a_master_whose_peers_are_gone_takes_everything_oldest_first(galera: Any, database: Any) -> None:
    backends = masters_on(galera, database, [0, 1, 2])
    try:
        ids = pending(backends[0], 30)
        backends[1].unregister("m1", 11)  # stopped
        long_ago = dt.datetime(2000, 1, 1)
        backends[2].register_master("m2", 12, 2, long_ago)  # its heartbeat stopped long ago: dead
        # A causal read on node 0 first: node 0 applies node 2's commits a moment after they return.
        causal = raw_on(galera, database, 0)
        assert rows(causal, "SELECT pid FROM process WHERE host = 'm2'") == [(12,)]
        causal.close()
        assert backends[0].recover_expired(long_ago + SECOND) == [("m2", 0)]
        assert claimed_ids(backends[0], 9, LATER, host="m0") == ids[:9]
    finally:
        for backend in backends:
            backend.close()


def test_a_short_share_takes_the_tail_of_a_busy_share_and_the_head_of_an_idle_one(
    galera: Any, database: Any
) -> None:
    """Masters on two nodes: one whose share runs short takes from the other's share only past
    what its owner claims next (as many rows as this claim), youngest first; once the owner has
    not claimed for a while (ACTIVE_WINDOW), from the oldest."""
    backends = masters_on(galera, database, [0, 1])
    try:
        ids = pending(backends[0], 80)
        mine, theirs = ([i for i in ids if share_of(i, 2) == slot] for slot in slots(backends))
        assert min(len(mine), len(theirs)) >= 30
        assert claimed_ids(backends[0], len(mine) - 3, LATER, host="m0") == mine[:-3]
        record = f"galera_node:{backends[1]._host_id('m1')}"
        raw = raw_on(galera, database, 0)
        with raw.cursor() as cur:  # the other master claimed just now
            cur.execute("UPDATE fastsched_meta SET due = UTC_TIMESTAMP(6) WHERE name = %s", (record,))
        # 7 wanted, 3 left of its own: 4 of the other share's youngest, none of its 7 oldest.
        claim = claimed_ids(backends[0], 7, LATER, pid=102, host="m0")
        assert sorted(claim) == sorted(mine[-3:] + theirs[-4:])
        with raw.cursor() as cur:  # ... and then not for an hour
            cur.execute("UPDATE fastsched_meta SET due = due - INTERVAL 1 HOUR WHERE name = %s", (record,))
        assert claimed_ids(backends[0], 5, LATER, pid=103, host="m0") == theirs[:5]
        # The owner takes its oldest rows on, untouched; the stealer left no hole in between.
        assert claimed_ids(backends[1], len(theirs), LATER, host="m1") == theirs[5:-4]
    finally:
        for backend in backends:
            backend.close()


def test_a_claim_that_lost_certification_runs_again_on_its_own_share_only(galera: Any, database: Any) -> None:
    backends = masters_on(galera, database, [0, 1])
    try:
        ids = pending(backends[0], 40)
        mine = [i for i in ids if share_of(i, 2) == slots(backends)[0]]
        claimed_ids(backends[0], len(mine) - 2, LATER, host="m0")
        rival = raw_on(galera, database, 1)
        changed = rival_before_commit(
            backends[0], rival, "UPDATE workerqueue SET last_error = 'rival' WHERE id IN %s", mine[-2:]
        )
        claim = claimed_ids(backends[0], 4, LATER, pid=102, host="m0")
        assert changed == [2] and backends[0].conflicts == 1
        assert claim == mine[-2:]  # the first run also took 2 of the other share's tail
    finally:
        for backend in backends:
            backend.close()


def test_a_claim_locks_only_the_rows_it_takes(galera: Any, database: Any, node1: Any) -> None:
    """A claim on Galera finds its share by a plain read and locks only the rows it claims: a
    locking read would also hold the other shares' rows it passed, and the other nodes' write
    sets on them would abort it. Seen from the same node, another share's rows stay free."""
    ids = pending(node1, 40)
    cursor = node1.connection.cursor_ready()
    node1.dialect.begin(cursor)
    try:
        view = ShareView(slot=0, of=3, active=(0, 1, 1))
        rows_taken = node1._claim_rows(cursor, (), {"priority": 30, "now": LATER, "limit": 5}, view)
        assert [row[0] for row in rows_taken] == [i for i in ids if share_of(i) == 0][:5]
        other = raw_on(galera, database, 0)
        free = []
        for job_id in ids:  # one row at a time: a locking read of many ids may scan past the held rows
            with other.cursor() as cur:
                cur.execute("BEGIN")
                try:
                    cur.execute("SELECT id FROM workerqueue WHERE id = %s FOR UPDATE NOWAIT", (job_id,))
                    free.append(job_id)
                except pymysql.OperationalError as exc:
                    assert exc.args[0] == 1205  # NOWAIT: held by another transaction
                cur.execute("ROLLBACK")
        assert sorted(set(ids) - set(free)) == [row[0] for row in rows_taken]
    finally:
        node1.connection.conn.rollback()


# --- a node that leaves the cluster --------------------------------------------------------------


def isolate(galera: galerakit.GaleraCluster, node: int, on: bool) -> None:
    conn = galera.nodes[node].connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SET GLOBAL wsrep_provider_options = 'gmcast.isolate={int(on)}'")
    finally:
        conn.close()


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_node_out_of_the_primary_component_is_an_outage_or_a_move(galera: Any, database: Any) -> None:
    alone = backend_on(galera, database, 2)
    moving = backend_on(galera, database, 2, 0, 1)
    (job_id,) = moving.add_many([new_job("before")])
    assert (alone.dialect.node, moving.dialect.node) == (0, 0)
    isolate(galera, 2, True)
    try:
        wait_for(lambda: galera.nodes[2].status().get("wsrep_cluster_status") == "non-Primary", "node 3 to leave")
        with pytest.raises(DatabaseUnavailable, match="WSREP has not yet prepared node|is not ready"):
            alone.get(job_id, NOW)
        # The next node in the DSN: the job added through node 3 is there, and so are new writes.
        assert moving.get(job_id, NOW).id == job_id and moving.dialect.node == 1
        (after,) = moving.add_many([new_job("after")])
        with pytest.raises(DatabaseUnavailable, match="is not ready"):
            open_backend(galera.dsn(*database, nodes=[2])).get(after, NOW)
    finally:
        isolate(galera, 2, False)
    wait_for(galera.nodes[2].synced, "node 3 to rejoin")
    assert alone.get(after, NOW).id == after  # the same connection object, back on its node
    alone.close()
    moving.close()


def test_an_unreachable_first_node_is_skipped(galera: Any, database: Any) -> None:
    name, user, password = database
    dsn = f"mysql://{user}:{password}@127.0.0.1:4499,127.0.0.1:{galera.nodes[1].port}/{name}"
    backend = open_backend(dsn)
    try:
        assert backend.add_many([new_job(1)]) and backend.dialect.node == 1
    finally:
        backend.close()
    with pytest.raises(DatabaseUnavailable, match="no node is reachable and ready") as info:
        open_backend(f"mysql://{user}:{password}@127.0.0.1:4498,127.0.0.1:4499/{name}").get(1, NOW)
    assert password not in str(info.value) and "127.0.0.1:4498" in str(info.value)


# --- what Galera needs of the schema -------------------------------------------------------------

# Every locking read, and what keeps it off gap locks: SKIP LOCKED, or an equality on a unique key
# (a gap lock is only ever taken for a range or a missing key, and READ COMMITTED takes none).
LOCKING_READS = {
    "lock_job": "PRIMARY",
    "lock_pending_by_hash": "dedup",
    "lock_expired_master": "PRIMARY",
    "lock_host": "PRIMARY",
    "lock_lease": "PRIMARY",
    "claim_priority": "SKIP LOCKED",
    "claim_priority_queue": "SKIP LOCKED",
    "claim_priority_packed": "SKIP LOCKED",  # claim_priority's rows as one value
    "lock_claimable": "PRIMARY",
}


def test_the_schema_has_what_galera_needs(galera: Any, database: Any, node1: Any) -> None:
    name = database[0]
    conn = raw_on(galera, database, 2)
    tables = rows(
        conn,
        "SELECT t.table_name, t.engine, "
        "(SELECT COUNT(*) FROM information_schema.table_constraints c WHERE c.table_schema = t.table_schema "
        " AND c.table_name = t.table_name AND c.constraint_type = 'PRIMARY KEY') "
        "FROM information_schema.tables t WHERE t.table_schema = %s ORDER BY t.table_name",
        name,
    )
    assert {table for table, _, _ in tables} >= {"workerqueue", "process", "fastsched_meta", "fastsched_host"}
    assert [(table, engine, keys) for table, engine, keys in tables if engine != "InnoDB" or keys != 1] == []
    locking = {query for query, text in QUERIES.items() if re.search(r"\bFOR\s+UPDATE\b", text)}
    assert locking == set(LOCKING_READS), "a new locking read: check it takes no gap lock, then list it"
    job = new_job("locked")
    (job_id,) = node1.add_many([job])
    node1.register_master(HOST, 7, 1, NOW)
    params = {
        "id": job_id, "hash": job.dedup_hash, "host": HOST, "master_pid": 7, "alive_after": LATER,
        "host_id": node1._host_id(HOST), "name": "schema_version",
    }
    for query, key in LOCKING_READS.items():
        text = QUERIES[query]
        if key == "SKIP LOCKED":
            assert "SKIP LOCKED" in text
            continue
        if "{ids}" in text:  # an IN list of the primary key: points, each an equality
            text = expand_in(text, [job_id, job_id + 1])
        with conn.cursor() as cur:
            cur.execute("EXPLAIN " + text, {**params, "priority": 30, "now": LATER})
            plan = list(cur.fetchall())
        points = ("const", "eq_ref", "ref", "range") if "{ids}" in QUERIES[query] else ("const", "eq_ref", "ref")
        assert any(step[5] == key and step[3] in points for step in plan), (query, plan)
    node1.connection.cursor_ready()
    assert rows(node1.connection.conn, "SELECT @@tx_isolation") == [("READ-COMMITTED",)]
