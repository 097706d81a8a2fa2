"""A bounded soak: producers in several processes add jobs at a steady rate for some minutes while
one pool drains them; every window reports the pool's memory, the queue and the start latency.
What it shows: memory and latency stay flat (no leak, no growing backlog), and nothing is lost.

Not run in CI (minutes long). Run it from the repository root:

    python -m bench.soak                         # 3 minutes, 3 producers x 100 jobs/s
    python -m bench.soak --minutes 10 --rate 400 --json soak.json

It uses a private database on the benchmark MariaDB (FASTSCHED_BENCH_MYSQL, else
FASTSCHED_TEST_MYSQL, else mysql://root@127.0.0.1:3306), dropped afterwards, unless ``--dsn``.
Latency is the time from ``add()`` returning to the job starting in a child (``time.monotonic``,
one clock for every process of a Linux host), reported per window by the jobs over UDP. Memory is
the resident set of the master and of its children (summed), per window. The verdict compares the
last third of the windows with the first third after a warm-up window.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any

import psutil

import fastsched
from bench import harness

WINDOW = 10.0  # seconds per reported window
DRAIN_TIMEOUT = 120.0  # seconds the pool may take to drain once the producers stop
BATCH = 20  # jobs per add_many call (half the producers' jobs go one add() at a time)
MEMORY_GROWTH_LIMIT = 1.10  # the last third's RSS over the first third's: above this, memory is not flat
LATENCY_GROWTH_LIMIT = 2.0  # the same ratio for p99 start latency
PRIORITIES = (10, 20, 30, 30, 30, 40, 50)  # the mix the producers draw from

_socket: socket.socket | None = None


@fastsched.task("SoakJob")
def soak_job(port: int, added: float, work_ms: float) -> None:
    """Report ``added started priority id`` to the soak (one datagram), then work ``work_ms`` milliseconds."""
    global _socket
    started = time.monotonic()
    if _socket is None:
        _socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    job = fastsched.current_job()
    _socket.sendto(f"{added!r} {started!r} {job.priority} {job.id}".encode(), ("127.0.0.1", port))
    if work_ms:
        time.sleep(work_ms / 1000.0)


def produce(
    dsn: str, port: int, rate: float, seconds: float, work_ms: float, seed: int, counter: Any
) -> None:
    """One producer process: ``rate`` jobs a second for ``seconds``, by add() and add_many()."""
    rng = random.Random(seed)
    queue = fastsched.connect(dsn)
    deadline = time.monotonic() + seconds
    next_at = time.monotonic()
    added = 0
    while time.monotonic() < deadline:
        if rng.random() < 0.5:
            queue.add(rng.choice(PRIORITIES), "SoakJob", port, time.monotonic(), work_ms)
            count = 1
        else:
            now = time.monotonic()
            # The same `added` time for the batch; `i` only keeps the jobs apart for dedup.
            queue.add_many(
                [(rng.choice(PRIORITIES), "SoakJob", port, now + i * 1e-9, work_ms) for i in range(BATCH)]
            )
            count = BATCH
        added += count
        next_at += count / rate
        time.sleep(max(0.0, next_at - time.monotonic()))
    queue.close()
    with counter.get_lock():
        counter.value += added


def _rss(pid: int) -> tuple[float, float]:
    """Resident MiB of the master and of all its children."""
    try:
        master = psutil.Process(pid)
        children = master.children(recursive=True)
        kids = 0.0
        for child in children:
            try:
                kids += child.memory_info().rss
            except psutil.Error:
                pass
        return master.memory_info().rss / 2**20, kids / 2**20
    except psutil.Error:
        return float("nan"), float("nan")


def _window_stats(messages: list[list[str]]) -> dict[str, Any]:
    latencies = [float(start) - float(added) for added, start, _, _ in messages]
    by_priority: dict[int, list[float]] = {}
    for (_, _, priority, _), latency in zip(messages, latencies):
        by_priority.setdefault(int(priority), []).append(latency)
    return {
        "started": len(latencies),
        "p50_ms": round(harness.percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(harness.percentile(latencies, 99) * 1000, 1),
        "max_ms": round(max(latencies, default=float("nan")) * 1000, 1),
        "p99_ms_by_priority": {
            p: round(harness.percentile(v, 99) * 1000, 1) for p, v in sorted(by_priority.items())
        },
    }


def soak(
    dsn: str,
    *,
    minutes: float,
    producers: int,
    rate: float,
    workers: int,
    fetch_limit: int,
    work_ms: float,
    log_dir: Path,
) -> dict[str, Any]:
    seconds = minutes * 60
    collector = harness.PingCollector()
    spawn = multiprocessing.get_context("spawn")  # producers share nothing with this process
    counter = spawn.Value("q", 0)
    argv = harness.pool_argv(
        dsn,
        workers,
        fetch_limit,
        until_empty=False,
        extra=["--import", "bench.soak", "--retention", "60", "--host-id", "soak"],
    )
    windows: list[dict[str, Any]] = []
    with harness.PoolProcess(argv, log_dir, "soak-pool") as pool:
        time.sleep(2.0)  # the pool starts and creates the schema
        procs = [
            spawn.Process(target=produce, args=(dsn, collector.port, rate, seconds, work_ms, seed, counter))
            for seed in range(producers)
        ]
        for proc in procs:
            proc.start()
        started = time.monotonic()
        seen = 0
        while any(proc.is_alive() for proc in procs) or time.monotonic() - started < seconds:
            time.sleep(WINDOW)
            messages = collector.parsed()
            window_messages = messages[seen:]
            seen = len(messages)
            master_mb, children_mb = _rss(pool.pid)
            counts = harness.state_counts(dsn)
            window = {
                "t_s": round(time.monotonic() - started),
                "master_rss_mib": round(master_mb, 1),
                "children_rss_mib": round(children_mb, 1),
                "pending": counts["pending"],
                "rows": counts["total"],
                **_window_stats(window_messages),
            }
            windows.append(window)
            print(json.dumps(window), flush=True)
            if pool.poll() is not None:
                raise SystemExit(f"the pool exited ({pool.proc.returncode})\n{pool.output_tail()}")
        for proc in procs:
            proc.join()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while (
            harness.state_counts(dsn)["pending"] + harness.state_counts(dsn)["claimed"]
            and time.monotonic() < deadline
        ):
            time.sleep(0.5)
        collector.wait_for(counter.value, 10)
        final = harness.state_counts(dsn)
        code = pool.stop()
    collector.close()
    steady = windows[1:] or windows  # the first window warms up
    third = max(1, len(steady) // 3)
    first, last = steady[:third], steady[-third:]

    def mean(rows: list[dict[str, Any]], key: str) -> float:
        values = [row[key] for row in rows if row[key] == row[key]]
        return sum(values) / len(values) if values else float("nan")

    rss_first = mean(first, "master_rss_mib") + mean(first, "children_rss_mib")
    rss_last = mean(last, "master_rss_mib") + mean(last, "children_rss_mib")
    p99_first, p99_last = mean(first, "p99_ms"), mean(last, "p99_ms")
    pending_first, pending_last = mean(first, "pending"), mean(last, "pending")
    report = {
        "minutes": minutes,
        "producers": producers,
        "rate_per_producer": rate,
        "workers": workers,
        "fetch_limit": fetch_limit,
        "work_ms": work_ms,
        "added": counter.value,
        "reported_started": len(collector.messages),
        "final": final,
        "pool_exit_code": code,
        "windows": windows,
        "rss_mib_first_third": round(rss_first, 1),
        "rss_mib_last_third": round(rss_last, 1),
        "p99_ms_first_third": round(p99_first, 1),
        "p99_ms_last_third": round(p99_last, 1),
        "pending_first_third": round(pending_first),
        "pending_last_third": round(pending_last),
    }
    # Done rows are purged as the soak goes (retention 60 s): count what started, by the jobs' reports
    # (UDP: a lost datagram would count as a lost job here, never the other way round).
    report["lost"] = counter.value - len({job_id for _, _, _, job_id in collector.parsed()})
    report["memory_flat"] = rss_last <= rss_first * MEMORY_GROWTH_LIMIT
    # A backlog that keeps growing shows as latency later: the queue must keep up too.
    report["latency_flat"] = p99_last <= max(p99_first * LATENCY_GROWTH_LIMIT, 50.0) and pending_last <= max(
        pending_first * LATENCY_GROWTH_LIMIT, 100
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--producers", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100.0, help="jobs per second per producer")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--fetch-limit", type=int, default=20)
    parser.add_argument("--work-ms", type=float, default=1.0, help="milliseconds each job works")
    parser.add_argument("--dsn", help="a database to use (default: a private one on the benchmark MariaDB)")
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args(argv)
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"fastsched-soak-{os.getpid()}"
    options = dict(  # noqa: C408 - keyword style, as the options are spelled on the command line
        minutes=args.minutes,
        producers=args.producers,
        rate=args.rate,
        workers=args.workers,
        fetch_limit=args.fetch_limit,
        work_ms=args.work_ms,
        log_dir=log_dir,
    )
    if args.dsn:
        report = soak(args.dsn, **options)
    else:
        with harness.private_mysql_database() as dsn:
            report = soak(dsn, **options)
    summary = {k: v for k, v in report.items() if k != "windows"}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    ok = (
        report["lost"] == 0
        and report["final"]["failed"] == 0
        and report["memory_flat"]
        and report["latency_flat"]
    )
    print("soak:", "memory and latency flat, nothing lost" if ok else "NOT FLAT or jobs lost: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
