"""Galera (issue 16): drain throughput and conflict rate with 1, 2 and 3 masters on a 3-node
MariaDB Galera cluster, against one master on one plain server, in the same run.

Every server is the same ``mariadbd`` with the same settings, started by tests/galerakit.py on
loopback: three Galera nodes (ports 4440, 4450, 4460) and one server with wsrep off (port 4480).
Each drain fills the same jobs of mixed priorities (one in five of each) into a fresh database,
then runs the real ``fastsched-pool start --until-empty --workers 2 --import bench.jobs`` with
default flags: one per node, master i on node i (its DSN names the others after it). The figure
is jobs / (first pool start to last pool exit).

The conflict rate is the share of claims that lost to another node and ran again: the re-runs
are the pools' own log lines ("claim: (1213, ...); re-running the transaction"), the claims the
claim calls that committed, one per (owner, start time) of the done rows (a claim split over two
connections counts once, so the rate is if anything too high). Beside them: the other
transactions re-run (maintenance sweeps), and Galera's own counts summed over the nodes
(``wsrep_local_cert_failures``, lost certification at commit, plus ``wsrep_local_bf_aborts``,
aborted by a peer's write set while running: the same 1213).

Targets: conflict rate < 10 % of claims with 3 masters; 3 masters on 3 nodes drain at least as
fast as one master on one plain server. Needs galera-4 (``.ci/run`` installs it): without it the
benchmark fails, saying so, as the MariaDB benchmarks fail without a server.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fastsched
from bench import harness
from bench.harness import Target, pick, record, table

sys.path.insert(0, str(harness.REPO_ROOT / "tests"))
import galerakit

JOBS = pick(20_000, 1_500)
WORKERS = 2
MASTERS = (1, 2, 3)
PRIORITIES = (10, 20, 30, 40, 50)
CLUSTER_FIRST_PORT = 4440
PLAIN_FIRST_PORT = 4480
CONFLICT_TARGET = 0.10  # of claims, with 3 masters
DRAIN_TIMEOUT = 600.0  # seconds
CONFLICT_COUNTERS = ("wsrep_local_cert_failures", "wsrep_local_bf_aborts")
# The backend's line for each transaction it runs again (fastsched.backends.connection), naming it.
RERUN = re.compile(r"INFO fastsched\.backends\.connection: (\w+): .*; re-running the transaction")


@contextlib.contextmanager
def servers() -> Iterator[tuple[galerakit.GaleraCluster, galerakit.GaleraCluster]]:
    """The 3-node cluster and the plain server, under one temporary directory; stopped at the end."""
    if not os.path.exists(galerakit.PROVIDER):
        pytest.fail(f"{galerakit.PROVIDER} is missing: install galera-4 (.ci/run does)", pytrace=False)
    base = Path(tempfile.mkdtemp(prefix="fsgbench", dir="/tmp"))
    base.chmod(0o755)  # the servers may run as another user (galerakit.SERVER_USER)
    try:
        with (
            galerakit.galera_cluster(base / "cluster", first_port=CLUSTER_FIRST_PORT) as cluster,
            galerakit.galera_cluster(base / "plain", first_port=PLAIN_FIRST_PORT, plain=True) as plain,
        ):
            yield cluster, plain
    except BaseException:
        print(f"\nthe servers' data directories and error logs are kept in {base}")
        raise
    else:
        shutil.rmtree(base, ignore_errors=True)


def conflicts(cluster: galerakit.GaleraCluster) -> int:
    return sum(int(node.status().get(name, 0)) for node in cluster.nodes for name in CONFLICT_COUNTERS)


def fill(dsn: str, jobs: int) -> None:
    with fastsched.connect(dsn) as queue:
        for first in range(0, jobs, 5_000):
            queue.add_many(
                [(PRIORITIES[i % len(PRIORITIES)], "BenchNoop", "galera", i) for i in range(first, min(first + 5_000, jobs))]
            )


def rows(node: galerakit.Node, database: str, statement: str) -> list[tuple[Any, ...]]:
    conn = node.connect(database=database)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return list(cur.fetchall())
    finally:
        conn.close()


def drain(dsns: list[str], jobs: int, log_dir: Path, name: str, node: galerakit.Node, database: str) -> dict[str, Any]:
    """Fill ``jobs`` into the (empty) database, drain it with one pool per DSN at once; check the
    outcome through ``node``."""
    fill(dsns[0], jobs)
    pools = []
    for index, dsn in enumerate(dsns):
        # Masters on one machine: each its own host id, pid file and wake-up sockets' directory.
        own = Path(tempfile.mkdtemp(prefix="fsgpool", dir="/tmp"))
        extra = ("--host-id", f"bench-{name}-{index}", "--pidfile", str(own / "pool.pid"))
        pools.append(harness.PoolProcess(
            harness.pool_argv(dsn, WORKERS, None, until_empty=True, extra=extra), log_dir, f"{name}-{index}",
            env=harness.pool_env(XDG_RUNTIME_DIR=str(own)),
        ))
    started = min(pool.started for pool in pools)
    try:
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while any(pool.poll() is None for pool in pools):  # poll() notes when each one exited
            assert time.monotonic() < deadline, f"the pools did not drain within {DRAIN_TIMEOUT:g} s"
            time.sleep(0.01)
        codes = [pool.wait() for pool in pools]
        assert codes == [0] * len(pools), [pool.output_tail() for pool in pools]
        ended = max(pool.ended or time.perf_counter() for pool in pools)
    finally:
        for pool in pools:
            pool.close()
    states = rows(node, database, "SELECT done, pid <> 0, COUNT(*) FROM workerqueue GROUP BY done, pid <> 0")
    assert [(int(done), int(count)) for done, _, count in states] == [(1, jobs)], states
    (claims,), = rows(node, database, "SELECT COUNT(DISTINCT host_id, executed) FROM workerqueue WHERE done = 1")
    wall = ended - started
    reruns = [RERUN.findall(pool.stderr_path.read_text(errors="replace")) for pool in pools]
    return {
        "jobs_per_s": jobs / wall, "wall_seconds": wall, "claims": int(claims),
        "claim_reruns": sum(what == "claim" for found in reruns for what in found),
        "other_reruns": sum(what != "claim" for found in reruns for what in found),
    }


def test_galera_drain_and_conflicts(benchmark: Any, tmp_path: Path) -> None:
    table_rows: list[list[Any]] = []
    figures: dict[str, Any] = {"jobs": JOBS, "workers_per_master": WORKERS}

    def run_all() -> None:
        with servers() as (cluster, plain):
            database = plain.database()
            result = drain([plain.dsn(*database)], JOBS, tmp_path, "plain", plain.nodes[0], database[0])
            figures["plain_1_master_jobs_per_s"] = result["jobs_per_s"]
            table_rows.append(["plain server", 1, result["jobs_per_s"], result["claims"], result["claim_reruns"],
                               None, result["other_reruns"], None])
            for masters in MASTERS:
                database = cluster.database()
                dsns = [cluster.dsn(*database, nodes=[(i + k) % 3 for k in range(3)]) for i in range(masters)]
                before = conflicts(cluster)
                result = drain(dsns, JOBS, tmp_path, f"galera{masters}", cluster.nodes[0], database[0])
                lost = conflicts(cluster) - before
                claims = result["claims"]
                rate = result["claim_reruns"] / claims if claims else float("nan")
                key = f"galera_{masters}_masters"
                figures[f"{key}_jobs_per_s"] = result["jobs_per_s"]
                figures[f"{key}_claims"] = claims
                figures[f"{key}_claim_reruns"] = result["claim_reruns"]
                figures[f"{key}_other_reruns"] = result["other_reruns"]
                figures[f"{key}_wsrep_conflicts"] = lost
                figures[f"{key}_conflict_rate"] = rate
                table_rows.append([f"Galera, {masters} node(s) with a master", masters, result["jobs_per_s"],
                                   claims, result["claim_reruns"], rate, result["other_reruns"], lost])

    harness.run_once(benchmark, run_all)
    plain_rate = figures["plain_1_master_jobs_per_s"]
    record(
        benchmark,
        title=f"Galera: drain {JOBS:,} no-op jobs of mixed priorities, 1-3 masters on 3 nodes vs 1 master "
        "on one plain server (same mariadbd, same settings)",
        figures={**figures, "galera_3_masters_over_plain": figures["galera_3_masters_jobs_per_s"] / plain_rate},
        targets=[
            Target("conflicts / claims, 3 masters on 3 nodes", figures["galera_3_masters_conflict_rate"], "<=",
                   CONFLICT_TARGET),
            Target("3 masters on 3 Galera nodes / 1 master on one plain server, jobs/s",
                   figures["galera_3_masters_jobs_per_s"] / plain_rate, ">=", 1.0, "x"),
        ],
        tables={"drains": table(
            ["servers", "masters", "jobs/s", "claims", "claims re-run", "re-run / claims", "other re-runs",
             "Galera's conflict counts"],
            table_rows,
        )},
        notes=[
            ("All four servers and every pool share one machine: a Galera node applies every other node's "
            "write sets, so three nodes on one machine cost about three servers' CPU for the same jobs."),
        ],
    )
