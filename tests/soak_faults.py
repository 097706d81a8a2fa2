"""The guarantees soak (issue 11): two masters drain a steady stream of jobs from one MariaDB while
faults are mixed in, and every run of every job is checked afterwards.

The database is a private MariaDB (its own data directory under /tmp, a free port), restarted during
the run, reached through :class:`faultkit.FaultProxy` (which loses a claim's COMMIT answer on
cue). The jobs are ``fault.rec``: each records its start and end in a file of its child, so that
overlapping runs are seen whatever the pool believed. The faults, in turn, one every
``--fault-every`` seconds: a child SIGKILLed mid-job; a master frozen with SIGSTOP for one and a half
leases, then let go; a master SIGKILLed and started again; a lost COMMIT answer; the database
stopped and started again; SIGTERM to every process of a pool at once (systemd's default
KillMode), the pool started again; a second master with the same host id in a PID namespace of
its own (refused).

After the run, with every pool stopped: every job ended done, failed (with a reason) or deferred;
no two runs of a job overlapped in time (a run that never ended lasted until its child was last
seen alive); no claim is left (no claim without a live owner). The figures say what was done and
measured. Run from the repository root (not in CI; its short form is
tests/test_guarantees_soak.py)::

    python tests/soak_faults.py --seconds 300 --json soak.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import itertools

from faultkit import (
    ChildWatcher,
    FaultProxy,
    PoolProc,
    Run,
    is_alive,
    load_runs,
    private_mariadb,
    short_tempdir,
    sql,
)

import fastsched

LEASE = 4.0  # seconds
WORKERS = 3
FAULTS = ("child_kill", "master_stop", "lost_commit", "master_kill", "db_restart", "group_term", "twin")
ADD_EVERY = 0.5  # seconds between two producer rounds
DRAIN_TIMEOUT = 240.0  # seconds for the queue to drain after the last fault
EXIT_TIMEOUT = 60.0
TWIN_TIMEOUT = 20.0  # seconds a refused twin may take to say so and exit
EVERY_KIND_GRACE = 120.0  # seconds past --seconds for every kind of fault to strike once


@dataclasses.dataclass
class Figures:
    seconds: float = 0.0
    jobs: int = 0
    runs: int = 0
    jobs_run_more_than_once: int = 0
    runs_interrupted: int = 0
    overlapping_runs: int = 0
    worst_overlap_ms: float = 0.0
    closest_rerun_after_an_interrupted_run_ms: float | None = None
    done: int = 0
    failed: int = 0
    deferred: int = 0
    claims_left: int = 0
    twin_refused: int = 0
    twin_not_refused: int = 0
    faults: dict[str, int] = dataclasses.field(default_factory=dict)


class Soak:
    def __init__(self, base: Path, seconds: float, fault_every: float, seed: int) -> None:
        self.base = base
        self.seconds = seconds
        self.fault_every = fault_every
        self.rng = random.Random(seed)
        self.runs_dir = base / "runs"
        self.runs_dir.mkdir(parents=True)
        self.logs = base / "logs"
        self.logs.mkdir()
        self.figures = Figures(faults=dict.fromkeys(FAULTS, 0))
        self.pools: dict[str, PoolProc] = {}
        self.rundirs: dict[str, str] = {}
        self.old_pools: list[PoolProc] = []
        self.watcher = ChildWatcher()
        self.job_ids: list[int] = []
        self._stop_producing = threading.Event()

    # ------------------------------------------------------------------------------- pools
    def start_pool(self, host: str, dsn: str) -> None:
        rundir = self.rundirs.setdefault(host, short_tempdir())
        pool = PoolProc(
            dsn, self.logs, "--workers", str(WORKERS), "--lease", str(LEASE), "--retry-delay", "1",
            "--shutdown-grace", "10", "--fetch-limit", "4", host_id=host, rundir=rundir,
        )
        self.pools[host] = pool
        self.watcher.watch(pool.pid)
        pool.started()

    def replace_pool(self, host: str, dsn: str) -> None:
        self.old_pools.append(self.pools.pop(host))
        self.start_pool(host, dsn)

    # ------------------------------------------------------------------------------- the producer
    def produce(self, dsn: str) -> None:
        with fastsched.connect(dsn) as queue:
            n = 0
            while not self._stop_producing.is_set():
                jobs: list[tuple[Any, ...]] = []
                for _ in range(30):
                    n += 1
                    # Mostly short jobs; one in 30 runs for 2 s, so that faults find jobs mid-run.
                    ms = 2000.0 if n % 30 == 0 else float(self.rng.choice((1, 5, 20, 50)))
                    jobs.append((self.rng.choice((20, 30, 30, 40)), "fault.rec", str(self.runs_dir), n, ms))
                try:
                    self.job_ids.extend(queue.add_many(jobs))
                except fastsched.errors.DatabaseError:
                    pass  # the database is being restarted: that round is not added
                self._stop_producing.wait(ADD_EVERY)

    # ------------------------------------------------------------------------------- faults
    def fault(self, kind: str, dsn: str, server: Any, proxy: FaultProxy) -> None:
        host = self.rng.choice(sorted(self.pools))
        pool = self.pools[host]
        if kind == "child_kill":
            busy = [pid for pid in pool.children() if is_alive(pid)]
            if not busy:
                return
            self.watcher.kill(self.rng.choice(busy))
        elif kind == "master_stop":
            os.kill(pool.pid, signal.SIGSTOP)
            time.sleep(LEASE * 1.5)
            os.kill(pool.pid, signal.SIGCONT)
        elif kind == "lost_commit":
            proxy.arm(lost_answer=True)
        elif kind == "master_kill":
            pool.kill()
            self.replace_pool(host, dsn)
        elif kind == "db_restart":
            server.stop()
            time.sleep(1.5)
            server.start()
        elif kind == "group_term":
            for pid in [pool.pid, *pool.children()]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            pool.wait(EXIT_TIMEOUT)
            self.replace_pool(host, dsn)
        elif kind == "twin":
            twin = PoolProc(
                dsn, self.logs, "--workers", "1", "--lease", str(LEASE), host_id=host, rundir=short_tempdir(),
                wrapper=("unshare", "--pid", "--fork", "--mount-proc", "--kill-child"),
            )
            try:
                code: int | None = twin.wait(TWIN_TIMEOUT)
            except AssertionError:
                code = None  # it did not exit: it was not refused (wait() has ended it)
            finally:
                twin.close()
            if code == 5:
                self.figures.twin_refused += 1
            else:
                self.figures.twin_not_refused += 1
        self.figures.faults[kind] += 1

    # ------------------------------------------------------------------------------- the run
    def run(self) -> Figures:
        started = time.monotonic()
        # A free port, not a fixed one: two runs at once (two test suites on one machine) must not meet.
        with private_mariadb(self.base / "mariadb") as server:
            proxy = FaultProxy(server.port)
            direct = server.database()
            head, _, rest = direct.rpartition("@")
            dsn = f"{head}@127.0.0.1:{proxy.port}/{rest.partition('/')[2]}"
            with fastsched.connect(direct):
                pass  # the schema
            producer = threading.Thread(target=self.produce, args=(direct,), daemon=True)
            try:
                for host in ("soak-a", "soak-b"):
                    self.start_pool(host, dsn)
                producer.start()
                kinds = list(FAULTS)
                deadline = started + self.seconds
                turn = 0
                # Past the deadline, on until every kind of fault has struck once (a loaded machine
                # makes each slower), within a bound.
                while time.monotonic() < deadline or (
                    not all(self.figures.faults.values()) and time.monotonic() < deadline + EVERY_KIND_GRACE
                ):
                    time.sleep(self.fault_every)
                    self.fault(kinds[turn % len(kinds)], dsn, server, proxy)
                    turn += 1
                self._stop_producing.set()
                producer.join(30)
                self._drain(direct)
                for pool in self.pools.values():
                    pool.stop(EXIT_TIMEOUT)
                self.watcher.settle()
                self._check(direct)
            finally:
                self._stop_producing.set()
                for pool in [*self.pools.values(), *self.old_pools]:
                    pool.close()
                proxy.close()
                self.watcher.close()
        self.figures.seconds = round(time.monotonic() - started, 1)
        return self.figures

    def _drain(self, dsn: str) -> None:
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            ((left,),) = sql(
                dsn, "SELECT COUNT(*) FROM workerqueue WHERE done = 0 AND (pid <> 0 OR next_try <= UTC_TIMESTAMP(6))"
            )
            if not left:
                return
            time.sleep(0.5)

    def _check(self, dsn: str) -> None:
        figures = self.figures
        rows = sql(dsn, "SELECT done, pid <> 0, next_try > UTC_TIMESTAMP(6), COUNT(*) FROM workerqueue GROUP BY 1, 2, 3")
        for done, claimed, later, count in rows:
            if claimed and not done:
                figures.claims_left += int(count)
            elif done == 1:
                figures.done += int(count)
            elif done == 2:
                figures.failed += int(count)
            elif later:
                figures.deferred += int(count)
        figures.jobs = len(self.job_ids)
        runs = load_runs(self.runs_dir)
        figures.runs = len(runs)
        by_job: dict[int, list[Run]] = {}
        for run in runs:
            by_job.setdefault(run.job, []).append(run)
        closest: float | None = None
        for job_runs in by_job.values():
            if len(job_runs) > 1:
                figures.jobs_run_more_than_once += 1
            job_runs.sort(key=lambda r: r.start)
            for first, second in itertools.pairwise(job_runs):
                end = first.end
                if end is None:
                    end = max(self.watcher.died_after(first.pid) or first.start, first.start)
                gap = second.start - end
                if first.end is None:
                    closest = gap if closest is None else min(closest, gap)
                if gap < 0:
                    figures.overlapping_runs += 1
                    figures.worst_overlap_ms = max(figures.worst_overlap_ms, round(-gap * 1000, 1))
        figures.runs_interrupted = sum(1 for run in runs if run.end is None)
        figures.closest_rerun_after_an_interrupted_run_ms = None if closest is None else round(closest * 1000, 1)

    def verdict(self) -> list[str]:
        """What broke a guarantee (empty: none did)."""
        f = self.figures
        broken = []
        if f.overlapping_runs:
            broken.append(f"{f.overlapping_runs} pairs of runs of one job overlapped (worst {f.worst_overlap_ms} ms)")
        if f.claims_left:
            broken.append(f"{f.claims_left} claims left with every pool stopped")
        if f.done + f.failed + f.deferred != f.jobs:
            broken.append(f"{f.jobs} jobs added, {f.done} done + {f.failed} failed + {f.deferred} deferred")
        if f.twin_not_refused:
            broken.append(f"{f.twin_not_refused} twin masters were not refused")
        return broken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/soak_faults.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="how long faults are mixed in")
    parser.add_argument("--fault-every", type=float, default=4.0, help="seconds between two faults")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="fsoak", dir="/tmp"))
    soak = Soak(base, args.seconds, args.fault_every, args.seed)
    figures = soak.run()
    print(json.dumps(dataclasses.asdict(figures), indent=2, sort_keys=True))
    if args.json:
        Path(args.json).write_text(json.dumps(dataclasses.asdict(figures), indent=2, sort_keys=True))
    broken = soak.verdict()
    for line in broken:
        print("BROKEN:", line)
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
