"""What every benchmark shares: sizes, private databases, recorded figures, the pool subprocess.

Figures go into ``benchmark.extra_info`` in one shape that ``bench/report.py`` renders:

    extra_info = {
        "title": "...",                      # one line saying what was measured
        "figures": {"jobs_per_s": 123.0, ...},  # scalars, shown as a table
        "tables": {"name": {"columns": [...], "rows": [[...], ...]}},
        "targets": [{"name", "value", "op", "goal", "unit", "met", "margin"}],
        "notes": ["..."],
    }

Timings are never asserted: a target missed is recorded (``met: false``) and the report says by
how much. Only correctness is asserted (every job ran, a plan uses its index).
"""
from __future__ import annotations

import compileall
import contextlib
import dataclasses
import functools
import math
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymysql

if TYPE_CHECKING:
    from typing_extensions import Self

REPO_ROOT = Path(__file__).resolve().parent.parent
QUICK = os.environ.get("FASTSCHED_BENCH_QUICK", "") not in ("", "0")
MYSQL_SERVER = os.environ.get(
    "FASTSCHED_BENCH_MYSQL", os.environ.get("FASTSCHED_TEST_MYSQL", "mysql://root@127.0.0.1:3306")
)
BENCH_DB_PREFIX = "fastsched_bench_"
POOL_START_TIMEOUT = 60.0  # seconds a pool may take to start and finish its first job
POOL_STOP_TIMEOUT = 30.0  # seconds between SIGTERM and SIGKILL when a benchmark stops a pool


def pick(full: Any, quick: Any) -> Any:
    """The full-mode size, or the quick-mode one under FASTSCHED_BENCH_QUICK=1."""
    return quick if QUICK else full


# --------------------------------------------------------------------------------- recording


@dataclasses.dataclass(frozen=True)
class Target:
    """A product target: ``value op goal`` (op is '>=' or '<=')."""

    name: str
    value: float
    op: str
    goal: float
    unit: str = ""

    @property
    def met(self) -> bool:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return False
        return self.value >= self.goal if self.op == ">=" else self.value <= self.goal

    @property
    def margin(self) -> float | None:
        """How far from the goal, as a factor: >1 means met with room, <1 missed (value/goal for
        '>=', goal/value for '<=')."""
        if self.value is None or self.goal == 0:
            return None
        if self.op == ">=":
            return self.value / self.goal
        return self.goal / self.value if self.value else math.inf

    def as_dict(self) -> dict[str, Any]:
        margin = self.margin
        return {
            "name": self.name,
            "value": self.value,
            "op": self.op,
            "goal": self.goal,
            "unit": self.unit,
            "met": self.met,
            "margin": None if margin is None or math.isinf(margin) else margin,
        }


def record(
    benchmark: Any,
    *,
    title: str,
    figures: dict[str, Any] | None = None,
    targets: Iterable[Target] = (),
    tables: dict[str, dict[str, Any]] | None = None,
    notes: Iterable[str] = (),
) -> None:
    """Store figures, tables and targets in the benchmark's extra_info (merged with earlier calls)."""
    info = benchmark.extra_info
    info["title"] = title
    info["quick"] = QUICK
    info.setdefault("figures", {}).update(_jsonable(figures or {}))
    info.setdefault("tables", {}).update(_jsonable(tables or {}))
    info.setdefault("targets", []).extend(t.as_dict() for t in targets)
    info.setdefault("notes", []).extend(notes)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    return {"columns": list(columns), "rows": [list(r) for r in rows]}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def run_once(benchmark: Any, fn: Callable[[], Any]) -> Any:
    """Let pytest-benchmark time one call of ``fn`` (end-to-end runs are too long to repeat)."""
    result: list[Any] = []
    benchmark.pedantic(lambda: result.append(fn()), rounds=1, iterations=1, warmup_rounds=0)
    return result[0]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return float(data[0])
    pos = (len(data) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return float(data[low] + (data[high] - data[low]) * (pos - low))


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


# --------------------------------------------------------------------------------- MariaDB


def server_kwargs() -> dict[str, Any]:
    parts = urllib.parse.urlsplit(MYSQL_SERVER)
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": urllib.parse.unquote(parts.username or "root"),
        "password": urllib.parse.unquote(parts.password or ""),
    }


def admin_connection() -> pymysql.connections.Connection:
    try:
        return pymysql.connect(**server_kwargs(), autocommit=True)
    except pymysql.MySQLError as exc:
        raise RuntimeError(f"MariaDB is not reachable at {MYSQL_SERVER}: {exc}. Start it (see .ci/run).") from exc


@contextlib.contextmanager
def private_mysql_database() -> Iterator[str]:
    """A database of the benchmark's own, created now and dropped after: its DSN."""
    admin = admin_connection()
    name = BENCH_DB_PREFIX + secrets.token_hex(4)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    kw = server_kwargs()
    auth = urllib.parse.quote(str(kw["user"]), safe="")
    if kw["password"]:
        auth += ":" + urllib.parse.quote(str(kw["password"]), safe="")
    admin.close()
    try:
        yield f"mysql://{auth}@{kw['host']}:{kw['port']}/{name}"
    finally:
        admin = admin_connection()
        try:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            admin.close()


def mysql_connect(dsn: str, **extra: Any) -> pymysql.connections.Connection:
    """A raw pymysql connection to the database of ``dsn`` (autocommit unless told)."""
    parts = urllib.parse.urlsplit(dsn)
    kwargs = server_kwargs()
    kwargs.update(database=parts.path.lstrip("/"), autocommit=True)
    kwargs.update(extra)
    return pymysql.connect(**kwargs)


def mysql_server_info() -> dict[str, Any]:
    """Version and durability settings of the benchmark server."""
    conn = admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            info: dict[str, Any] = {"version": cur.fetchone()[0]}
            for name in (
                "innodb_flush_log_at_trx_commit",
                "sync_binlog",
                "log_bin",
                "innodb_buffer_pool_size",
                "innodb_log_file_size",
                "innodb_flush_method",
                "innodb_doublewrite",
            ):
                cur.execute("SHOW GLOBAL VARIABLES LIKE %s", (name,))
                row = cur.fetchone()
                info[name] = row[1] if row else None
        return info
    finally:
        conn.close()


def sqlite_dsn(directory: Path, name: str = "fastsched.sqlite3") -> str:
    return f"sqlite:///{directory / name}"


def dialect_of(dsn: str) -> str:
    return "sqlite" if dsn.startswith("sqlite:") else "mysql"


def sqlite_path(dsn: str) -> str:
    return dsn[len("sqlite:///"):]


# ----------------------------------------------------------------------- pool subprocess


def pool_argv(
    dsn: str, workers: int, fetch_limit: int | None, *, until_empty: bool, extra: Sequence[str] = ()
) -> list[str]:
    """``fastsched-pool start ...``: the installed console script next to this Python, else the
    same entry point through ``python -c`` (an uninstalled checkout). ``fetch_limit`` None: the
    default flags (no ``--fetch-limit``), what a newcomer runs."""
    script = Path(sys.executable).with_name("fastsched-pool")
    if script.exists():
        head = [str(script)]
    else:
        head = [sys.executable, "-c", "import sys; from fastsched.cli import main; sys.exit(main(sys.argv[1:]))"]
    argv = head + [
        "start",
        "--dsn",
        dsn,
        "--workers",
        str(workers),
        "--import",
        "bench.jobs",
    ]
    if fetch_limit is not None:
        argv += ["--fetch-limit", str(fetch_limit)]
    if until_empty:
        argv.append("--until-empty")
    argv.extend(extra)
    return argv


@functools.cache
def byte_compile_pool() -> None:
    """Compile the modules a pool runs to bytecode, once per session, as ``pip install`` does: a
    checkout run with PYTHONDONTWRITEBYTECODE=1 (as here) would otherwise compile every module from
    source at each pool start, 0.2 s of the master's CPU (2 µs a job in a 100,000-job drain) that
    an installed pool never pays. Stale bytecode is rewritten; none is written into site-packages."""
    for package in ("fastsched", "bench"):
        compileall.compile_dir(str(REPO_ROOT / package), quiet=1)


def pool_env(**extra: str) -> dict[str, str]:
    byte_compile_pool()
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env.update(extra)
    return env


class PoolProcess:
    """A ``fastsched-pool start`` subprocess, its output kept in files; always stopped on exit."""

    def __init__(self, argv: list[str], log_dir: Path, name: str = "pool", env: dict[str, str] | None = None):
        self.argv = argv
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.err"
        self._stdout = open(self.stdout_path, "wb")  # noqa: SIM115
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, stdout=self._stdout, stderr=self._stderr, cwd=str(REPO_ROOT), env=env or pool_env(),
            stdin=subprocess.DEVNULL,
        )
        self.ended: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float | None = None) -> int:
        code = self.proc.wait(timeout)
        if self.ended is None:
            self.ended = time.perf_counter()
        return code

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is not None and self.ended is None:
            self.ended = time.perf_counter()
        return code

    def stop(self, timeout: float = POOL_STOP_TIMEOUT) -> int:
        """First signal (graceful stop), then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.wait()

    def kill(self) -> None:
        """SIGKILL the master and the children it left (only processes this pool started)."""
        children = []
        with contextlib.suppress(Exception):
            import psutil

            children = psutil.Process(self.proc.pid).children(recursive=True)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        for child in children:
            with contextlib.suppress(Exception):
                child.kill()
        self.proc.wait()

    def output_tail(self, chars: int = 3000) -> str:
        self._stdout.flush()
        self._stderr.flush()
        out = self.stdout_path.read_text(errors="replace")[-chars:]
        err = self.stderr_path.read_text(errors="replace")[-chars:]
        return f"--- pool stdout (tail) ---\n{out}\n--- pool stderr (tail) ---\n{err}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.stop()
        self._stdout.close()
        self._stderr.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_PERF = re.compile(
    r"Performance: (?P<done>\d+) jobs done.*? - db (?P<db>[\d.]+)s \(count (?P<count>[\d.]+), stat (?P<stat>[\d.]+), "
    r"claim (?P<claim>[\d.]+), write (?P<write>[\d.]+), other (?P<other>[\d.]+)\), rest (?P<rest>[\d.]+)s, "
    r"jobs (?P<jobs>[\d.]+)s, (?P<claims>\d+) claims, (?P<cycles>\d+) cycles"
)


def master_time_split(log_path: Path) -> dict[str, float]:
    """The pool's own account of its master's time, summed over its 'Performance' log lines (one
    every 10 s; the last partial interval is not in them): seconds in plan_counts ('count'),
    stats, claim, outcome writes, other DB work, the rest of the loop, and the children's job
    time; claims and cycles. Empty when the pool logged no such line."""
    totals: dict[str, float] = {}
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return totals
    for match in _PERF.finditer(text):
        for key, value in match.groupdict().items():
            totals[key] = totals.get(key, 0.0) + float(value)
    return totals


SPLIT_PARTS = (
    ("count", "plan_counts"), ("claim", "claim transactions"), ("write", "other writes: outcomes alone, heartbeats, purge and recovery sweeps"),
    ("stat", "stats (Load line)"), ("other", "other DB calls"), ("rest", "the rest of the loop"),
)


def split_table(split: dict[str, float]) -> dict[str, Any]:
    """The master's time by part, from the pool's own Performance lines."""
    total = sum(split.get(key, 0.0) for key, _ in SPLIT_PARTS)
    rows = [[label, split.get(key, 0.0), split.get(key, 0.0) / total if total else None] for key, label in SPLIT_PARTS]
    rows.append(["(children running jobs, in parallel)", split.get("jobs", 0.0), None])
    return table(["master's time in", "seconds", "share"], rows)


def db_server_process(dsn: str | None = None) -> Any:
    """The local MariaDB server process (psutil) that listens on ``dsn``'s port (any local one
    without a DSN, or when none can be told apart), or None when it is not on this host. A private
    server (a mariadbd of one's own beside the shared one) then has its CPU measured alone."""
    import psutil

    port = (urllib.parse.urlsplit(dsn).port or 3306) if dsn else None
    servers = [proc for proc in psutil.process_iter(["name"]) if proc.info["name"] in ("mariadbd", "mysqld")]
    for proc in servers:
        try:
            listening = {c.laddr.port for c in proc.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            continue
        if port in listening:
            return proc
    return servers[0] if servers else None


def _cpu(proc: Any) -> float:
    try:
        times = proc.cpu_times()
        return float(times.user + times.system)
    except Exception:  # noqa: BLE001 - gone, or not ours to read
        return math.nan


CPU_SAMPLE_INTERVAL = 0.01  # seconds between readings of the master's CPU time while it runs


def run_pool_until_empty(
    dsn: str, workers: int, fetch_limit: int | None, log_dir: Path, *, timeout: float, name: str = "pool",
    extra: Sequence[str] = (), env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``fastsched-pool start --until-empty``; return its wall time in seconds (start to exit)
    and the CPU seconds it cost: the master (its own rusage, user + system over all its threads, as
    the kernel keeps it in /proc, last read at most CPU_SAMPLE_INTERVAL before it exited), its
    children (reaped by the master, so they reach us through RUSAGE_CHILDREN), and the local
    MariaDB server (shared with anything else using it). ``env``: extra environment for the pool
    (FASTSCHED_IMPL=python runs its master on the pure-Python core)."""
    import resource

    import psutil

    argv = pool_argv(dsn, workers, fetch_limit, until_empty=True, extra=extra)
    server = db_server_process(dsn) if dialect_of(dsn) == "mysql" else None
    server_before = _cpu(server) if server is not None else math.nan
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    master_cpu = 0.0
    with PoolProcess(argv, log_dir, name, env=pool_env(**(env or {}))) as pool:
        master = psutil.Process(pool.pid)
        deadline = time.monotonic() + timeout
        while True:
            try:
                times = master.cpu_times()
                master_cpu = times.user + times.system
            except psutil.Error:
                pass
            try:
                code = pool.wait(CPU_SAMPLE_INTERVAL)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    pool.kill()
                    raise AssertionError(
                        f"the pool did not drain within {timeout:.0f} s\n{pool.output_tail()}"
                    ) from None
        assert code == 0, f"fastsched-pool exited with {code}\n{pool.output_tail()}"
        assert pool.ended is not None
        wall = pool.ended - pool.started
    usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (usage_after.ru_utime - usage_before.ru_utime) + (usage_after.ru_stime - usage_before.ru_stime)
    return {
        "wall": wall,
        "split": master_time_split(pool.stderr_path),
        "cpu_master": master_cpu,
        "cpu_children": max(0.0, reaped - master_cpu),
        "cpu_db_server": (_cpu(server) - server_before) if server is not None else math.nan,
    }


# ------------------------------------------------------------------------ job start reports


class PingCollector:
    """A UDP socket on 127.0.0.1 that bench.jobs tasks report to; a thread keeps the datagrams
    with their arrival time (time.monotonic(), comparable across processes on Linux)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, bytes]] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="ping-collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(512)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            with self._cond:
                self.messages.append((now, data))
                self._cond.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until at least ``count`` datagrams have arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def parsed(self) -> list[list[str]]:
        with self._cond:
            return [data.decode().split() for _, data in self.messages]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------ queue state


def fill_jobs(dsn: str, count: int, *, priority: int = 30, command: str = "BenchNoop", tag: str = "job",
              chunk: int = 10_000) -> float:
    """Add ``count`` distinct runnable jobs through ``add_many``; return the seconds it took."""
    import fastsched

    start = time.perf_counter()
    with fastsched.connect(dsn) as queue:
        for first in range(0, count, chunk):
            queue.add_many([(priority, command, tag, i) for i in range(first, min(first + chunk, count))])
    return time.perf_counter() - start


def query(dsn: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of one read-only statement, on a connection of its own (%s placeholders on both)."""
    if dialect_of(dsn) == "mysql":
        conn = mysql_connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        finally:
            conn.close()
    import sqlite3

    conn2 = sqlite3.connect(sqlite_path(dsn), timeout=30)
    try:
        return list(conn2.execute(sql.replace("%s", "?"), params).fetchall())
    finally:
        conn2.close()


def state_counts(dsn: str) -> dict[str, int]:
    """How many rows are pending, claimed, done and failed."""
    rows = query(
        dsn,
        "SELECT SUM(CASE WHEN done = 0 AND pid = 0 THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN done = 0 AND pid <> 0 THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN done = 1 THEN 1 ELSE 0 END), SUM(CASE WHEN done = 2 THEN 1 ELSE 0 END),"
        " COUNT(*) FROM workerqueue",
    )
    pending, claimed, done, failed, total = (int(v or 0) for v in rows[0])
    return {"pending": pending, "claimed": claimed, "done": done, "failed": failed, "total": total}


def _as_datetime(value: Any) -> Any:
    import datetime as dt

    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def drain_span(dsn: str) -> float:
    """Seconds from the first claim to the last completion written, from the rows themselves."""
    (first, last), = query(dsn, "SELECT MIN(executed), MAX(finished) FROM workerqueue WHERE done = 1")
    first, last = _as_datetime(first), _as_datetime(last)
    if first is None or last is None:
        return math.nan
    return (last - first).total_seconds()
