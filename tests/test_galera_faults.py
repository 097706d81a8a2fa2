"""Pools on every node of a 3-node Galera cluster, through faults (issue 16): a real
``fastsched-pool start`` master on each node drains 20,000 jobs of mixed priorities while one
node is SIGKILLed mid-run and brought back (it rejoins by IST, or rsync SST), and one master is
SIGKILLed and started again. At the end every job is done, none was lost, and no two runs of a
job overlapped in time (each run records its start and end in a file of its child: fault.rec).

Each master's DSN names all three nodes, its own first: the master of the killed node moves to
the next one, and back is not needed. ``FASTSCHED_GALERA_FAULT_JOBS`` sets the number of jobs.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import galerakit
import pytest
from faultkit import (
    ChildWatcher,
    PoolProc,
    check_runs,
    connect_raw,
    is_alive,
    job_states,
    load_runs,
    record_figures,
    wait_until,
)

import fastsched

pytestmark = pytest.mark.galera

JOBS = int(os.environ.get("FASTSCHED_GALERA_FAULT_JOBS", "20000"))
PRIORITIES = (10, 20, 30, 40, 50)
JOB_MS = 1.0  # milliseconds each job works, so that a kill finds children mid-job
LEASE = 12.0  # seconds: covers the stall while the cluster evicts a dead node (galerakit: 2-4 s)
NODE_KILL_AT = 0.2  # shares of the jobs done at each step
NODE_BACK_AT = 0.4
MASTER_KILL_AT = 0.6
STEP_TIMEOUT = 180.0  # seconds for any one step
ORPHANS_DIE_WITHIN = 2.0  # seconds for a killed master's children to follow it (PDEATHSIG)
VICTIM_NODE = 2  # the (0-based) node killed; its master moves to the next in its DSN, node 0
VICTIM_MASTER = 1  # the master killed and started again


@pytest.fixture
def watcher() -> Iterator[ChildWatcher]:
    with ChildWatcher() as found:
        yield found


def _done(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM workerqueue WHERE done = 1")
        return int(cur.fetchone()[0])


def _claims_left(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM workerqueue WHERE done = 0 AND pid <> 0")
        return int(cur.fetchone()[0])


def test_masters_on_three_nodes_survive_a_node_kill_and_a_master_kill(
    galera: galerakit.GaleraCluster, tmp_path: Path, watcher: ChildWatcher
) -> None:
    database = galera.database()
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    dsns = [galera.dsn(*database, nodes=[node, (node + 1) % 3, (node + 2) % 3]) for node in range(3)]
    with fastsched.connect(dsns[0]) as queue:
        ids = queue.add_many(
            [(PRIORITIES[i % len(PRIORITIES)], "fault.rec", str(runs_dir), i, JOB_MS) for i in range(JOBS)]
        )
    assert len(ids) == JOBS
    # Watch the progress through a node that stays up all along.
    conn = connect_raw(galera.dsn(*database, nodes=[0]), init_command="SET SESSION wsrep_sync_wait = 1")
    options = ("--workers", "2", "--lease", str(LEASE))
    pools = [PoolProc(dsn, tmp_path, *options, host_id=f"galera-{index}") for index, dsn in enumerate(dsns)]
    master_killed_at: dict[int, float] = {}
    figures: dict[str, Any] = {"jobs": JOBS, "masters": len(pools)}
    started = time.monotonic()

    def reach(share: float, what: str) -> None:
        wait_until(lambda: _done(conn) >= share * JOBS, STEP_TIMEOUT, what, interval=0.1)

    try:
        for pool in pools:
            watcher.watch(pool.pid)
        for pool in pools:
            pool.started()
        reach(NODE_KILL_AT, f"{NODE_KILL_AT:.0%} of the jobs done")
        log_before = len(galera.nodes[VICTIM_NODE].errlog_tail(10**9))
        galera.kill_node(VICTIM_NODE)
        figures["node_killed_at_s"] = round(time.monotonic() - started, 1)
        reach(NODE_BACK_AT, f"{NODE_BACK_AT:.0%} of the jobs done with node {VICTIM_NODE + 1} down")
        back = time.monotonic()
        galera.start_node(VICTIM_NODE)
        galera.wait_cluster_size(3)
        figures["node_rejoin_s"] = round(time.monotonic() - back, 1)
        rejoin_log = galera.nodes[VICTIM_NODE].errlog_tail(10**9)[log_before:]
        figures["node_rejoined_by"] = "IST" if "IST received" in rejoin_log else "SST"
        reach(MASTER_KILL_AT, f"{MASTER_KILL_AT:.0%} of the jobs done")
        victim = pools[VICTIM_MASTER]
        children = victim.children()
        assert children, victim.tail()
        killed_at = victim.kill()
        master_killed_at.update(dict.fromkeys(children, killed_at))
        wait_until(lambda: not any(is_alive(pid) for pid in children), ORPHANS_DIE_WITHIN, "the orphans to die")
        figures["claims_held_when_a_master_was_killed"] = _claims_left(conn)
        pools[VICTIM_MASTER] = PoolProc(
            dsns[VICTIM_MASTER], tmp_path, *options, host_id=victim.host_id, rundir=victim.rundir
        )
        watcher.watch(pools[VICTIM_MASTER].pid)
        pools[VICTIM_MASTER].started()
        reach(1.0, "every job done")
        figures["seconds"] = round(time.monotonic() - started, 1)
        codes = [pool.stop() for pool in pools]
        logs = [pool.log for pool in pools]
        left = _claims_left(conn)
    finally:
        for pool in pools:
            pool.close()
        conn.close()
    watcher.settle()

    assert codes == [0, 0, 0], [log[-3000:] for log in logs]
    restarted = logs[VICTIM_MASTER]
    assert f"the previous master with host id {pools[VICTIM_MASTER].host_id}" in restarted, restarted[-3000:]
    moved = logs[VICTIM_NODE]
    assert f"connected to node 127.0.0.1:{galera.nodes[(VICTIM_NODE + 1) % 3].port}" in moved, moved[-3000:]
    assert left == 0
    assert job_states(galera.dsn(*database, nodes=[2])) == {"pending": 0, "done": JOBS, "failed": 0}
    counts = check_runs(load_runs(runs_dir), ids, watcher.died_after, master_killed_at=master_killed_at)
    record_figures(tmp_path, {**figures, **counts})
