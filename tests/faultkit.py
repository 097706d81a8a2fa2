"""Tools for the fault tests (tests/test_faults_*.py, test_bad_input.py, test_security.py): break
things on purpose, on real servers, and check what the queue promised.

- Tasks the fault pools run (``--import faultkit``): ``fault.rec`` records every run of a job,
  start and end, in a file per child pid (O_APPEND, two short writes a job, so 20,000 jobs cost
  little); the others misbehave on purpose (runaway memory, ignoring SIGTERM, echoing args).
- :func:`load_runs` / :func:`check_runs`: the invariants. Every job completed; no two runs of a
  job overlapped; a run that never ended belongs to a child that died; a job completed twice only
  when the child of its first completion died right after it (at-least-once).
- :class:`ChildWatcher` follows the children of pool masters (via /proc), :class:`PoolProc` runs
  ``python -m fastsched start`` in the background, :class:`PrivateMariaDB` is a MariaDB server the
  test owns (stop it, kill it, start it again: never the shared one at 127.0.0.1:3306), and
  :class:`FaultProxy` sits between a pool and MariaDB and drops its connection on cue.
- :func:`record_figures` prints what a test did (kills, restarts, jobs) and keeps it in
  ``<pytest basetemp>/fault-figures.json``; the README's "Guarantees" section quotes these figures.

Pools import this module (``--import faultkit``, tests/ on PYTHONPATH): it must stay importable
without pytest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymysql

import fastsched
from fastsched.protocol import PROGRESS_START

if TYPE_CHECKING:
    from typing_extensions import Self

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
START_TIMEOUT = 30.0  # seconds a pool may take to log "pool started"
EXIT_TIMEOUT = 60.0  # seconds a pool may take to exit once asked (or once its queue is empty)
WATCH_INTERVAL = 0.005  # seconds between two looks at the children of the watched masters
MARIADBD = "/usr/sbin/mariadbd"
SERVER_START_TIMEOUT = 60.0  # seconds for a private MariaDB to answer
SERVER_STOP_TIMEOUT = 60.0  # seconds for a private MariaDB to shut down after SIGTERM
# Seconds a master may hold a job's completion before writing it: a master killed within this
# long after a job ended may have lost the completion, and the job may run again.
OUTCOME_WINDOW = 2.0

# --------------------------------------------------------------------------------- tasks

_run_file = {"pid": 0, "fd": -1}


def _runs_fd(directory: str) -> int:
    pid = os.getpid()
    if _run_file["pid"] != pid:  # one file per child process, opened once
        _run_file["fd"] = os.open(
            os.path.join(directory, f"{pid}.runs"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
        )
        _run_file["pid"] = pid
    return _run_file["fd"]


def _start_record(job_id: int) -> bytes:
    """``S <job id> <monotonic now> <monotonic the child began the job>``: the last field is the
    moment a run-time limit counts from (the child's progress slot, set before it decodes the
    args and calls the task), so a test can compare a run with its limit on the master's terms.
    The field is left out if the child's frame no longer has it."""
    now = time.monotonic()
    frame = sys._getframe(2)  # the child's batch loop, which called the task
    progress = frame.f_locals.get("progress")
    try:
        began = float(progress[PROGRESS_START]) if progress is not None else None
    except (TypeError, IndexError):
        began = None
    if began is None:
        return b"S %d %.6f\n" % (job_id, now)
    return b"S %d %.6f %.6f\n" % (job_id, now, began)


@fastsched.task("fault.rec")
def rec(directory: str, n: int, ms: float = 0.0) -> None:
    """Record ``S <job id> <monotonic>``, work ``ms`` milliseconds, record ``E <job id> <monotonic>``."""
    fd = _runs_fd(directory)
    job_id = fastsched.current_job().id
    os.write(fd, _start_record(job_id))
    if ms:
        time.sleep(ms / 1000.0)
    os.write(fd, b"E %d %.6f\n" % (job_id, time.monotonic()))


@fastsched.task("fault.rec_long")
def rec_long(directory: str, n: int, ms: float = 0.0) -> None:
    """fault.rec under a name of its own, for jobs far longer than the usual fault.rec ones: the
    pool's run-time estimates are per command, and a batch is claimed ahead behind a job expected
    to end soon (a few ms for fault.rec)."""
    rec(directory, n, ms)


@fastsched.task("fault.hog")
def hog(chunk_mb: int = 16) -> None:
    """Runaway memory: allocate ``chunk_mb`` MiB at a time until the address-space limit stops it."""
    hoard = []
    while True:
        hoard.append(bytearray(chunk_mb * 1024 * 1024))


@fastsched.task("fault.stubborn")
def stubborn(directory: str, seconds: float) -> None:
    """Like fault.rec, but ignores SIGTERM while it works ``seconds``: only SIGKILL ends it early."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd = _runs_fd(directory)
    job_id = fastsched.current_job().id
    os.write(fd, _start_record(job_id))
    time.sleep(seconds)
    os.write(fd, b"E %d %.6f\n" % (job_id, time.monotonic()))


@fastsched.task("fault.echo")
def echo(path: str, *args: object) -> None:
    """Append the job's id and args, as JSON, to ``path``: what the task was really called with."""
    line = json.dumps({"id": fastsched.current_job().id, "args": list(args)}, ensure_ascii=False) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- run records


@dataclasses.dataclass
class Run:
    job: int
    pid: int
    start: float  # by the task's own first line
    end: float | None  # None: the child never finished it
    last: bool = False  # the last run its child started
    began: float | None = None  # when the child began the job, the start its run-time limit counts from


def load_runs(directory: Path) -> list[Run]:
    """Every run of fault.rec recorded under ``directory``."""
    runs: list[Run] = []
    for path in sorted(directory.glob("*.runs")):
        pid = int(path.stem)
        mine: list[Run] = []
        for line in path.read_text().splitlines():
            kind, job, when, *began = line.split()
            if kind == "S":
                mine.append(Run(int(job), pid, float(when), None, began=float(began[0]) if began else None))
            else:
                assert mine and mine[-1].job == int(job) and mine[-1].end is None, (
                    f"{path}: unpaired {line!r}"
                )
                mine[-1].end = float(when)
        if mine:
            mine[-1].last = True
        runs.extend(mine)
    return runs


def running_job(directory: Path, pid: int) -> int | None:
    """The job child ``pid`` is running now, by its records (None: idle, or not started yet)."""
    try:
        with open(directory / f"{pid}.runs", "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(handle.tell() - 64, 0))
            last = handle.read().splitlines()[-1:]
    except OSError:
        return None
    return int(last[0].split()[1]) if last and last[0].startswith(b"S ") else None


def check_runs(
    runs: Sequence[Run],
    job_ids: Iterable[int],
    died_after: Callable[[int], float | None],
    may_fail: Iterable[int] = (),
    master_killed_at: Mapping[int, float] | None = None,
) -> dict[str, Any]:
    """Assert the invariants over the runs of ``job_ids``; return counts for the figures.

    Every job must have completed once, but those of ``may_fail`` (failed with a reason, checked
    by the caller), which must only never have run twice at the same time.

    ``died_after(pid)``: a moment the child was still alive (it died later), or None if it never
    died. A run that never ended lasted at least until then: that is what the overlap check uses,
    so a reported overlap is a real one.

    A completed job may run again (at-least-once) only when its completion died before the master
    wrote it: its child died right after it (the last run of a dead child), or ``master_killed_at``
    (child pid -> when a test killed that child's master) says its master was killed at most
    OUTCOME_WINDOW seconds after the run ended (or before: the child outlives it by a moment).
    """
    killed_masters = master_killed_at or {}
    lost_gaps: list[float] = []
    by_job: dict[int, list[Run]] = {}
    for run in runs:
        by_job.setdefault(run.job, []).append(run)
    expected = set(job_ids)
    failing = set(may_fail)
    expected |= failing
    assert not set(by_job) - expected, f"runs of unknown jobs: {sorted(set(by_job) - expected)[:10]}"
    never = sorted(expected - set(by_job))
    assert not never, f"{len(never)} jobs never ran, e.g. {never[:10]}"
    interrupted = completed_twice = 0
    for job, job_runs in by_job.items():
        job_runs.sort(key=lambda r: r.start)
        ends = []
        for run in job_runs:
            if run.end is not None:
                ends.append(run.end)
                continue
            interrupted += 1
            alive = died_after(run.pid)
            assert alive is not None, (
                f"job {job}: run in child {run.pid} never ended, yet that child never died"
            )
            assert run.last, f"job {job}: child {run.pid} went on to other jobs after a run it never finished"
            ends.append(max(alive, run.start))
        for (a, a_end), b in zip(zip(job_runs, ends), job_runs[1:]):
            assert a_end <= b.start, (
                f"job {job} ran twice at the same time: child {a.pid} from {a.start:.6f} (still running at "
                f"{a_end:.6f}) and child {b.pid} from {b.start:.6f}"
            )
        completed = [r for r in job_runs if r.end is not None]
        assert completed or job in failing, f"job {job} never completed: {job_runs}"
        for early in completed[:-1]:
            completed_twice += 1
            if early.last and died_after(early.pid) is not None:
                continue
            master_died = killed_masters.get(early.pid)
            # Ended before the master was killed (at most OUTCOME_WINDOW before), or after: a child
            # outlives its master by the moment PDEATHSIG takes, and nobody can write its work then.
            assert master_died is not None and master_died - (early.end or 0.0) <= OUTCOME_WINDOW, (
                f"job {job} completed twice although neither the child of its first completion ({early.pid}) "
                f"nor its master died right after it (master killed at {master_died}): {job_runs}"
            )
            lost_gaps.append(max(master_died - (early.end or 0.0), 0.0))
    return {
        "jobs": len(expected),
        "runs": len(runs),
        "jobs_run_more_than_once": sum(1 for r in by_job.values() if len(r) > 1),
        "runs_interrupted": interrupted,
        "jobs_completed_twice": completed_twice,
        "completions_lost_with_the_master": len(lost_gaps),
        "longest_unwritten_completion_ms": round(max(lost_gaps, default=0.0) * 1000, 1),
    }


# ------------------------------------------------------------------------------- children


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux /proc), zombies left out."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            pids = [int(p) for p in handle.read().split()]
    except OSError:
        return []
    return [p for p in pids if is_alive(p)]


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


class ChildWatcher:
    """A thread that follows the children of some masters: when each was last seen alive.

    ``died_after(pid)`` is that moment for a child that has died since (and at least the moment
    a test killed it, ``killed``); None while it lives. ``seen_dead(pid)`` is the first moment it
    was known dead. A child died between the two: a test that needs a run to have lasted at least
    so long measures up to ``seen_dead``, one that needs it to have ended soon enough up to
    ``died_after``, so that neither depends on how often this thread got to look.
    """

    def __init__(self) -> None:
        self.masters: set[int] = set()
        self.last_alive: dict[int, float] = {}
        self.gone: set[int] = set()
        self.first_dead: dict[int, float] = {}  # pid -> monotonic time, just after it was found dead
        self.killed: dict[int, float] = {}  # pid -> monotonic time just before a test's SIGKILL
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="child-watcher", daemon=True)
        self._thread.start()

    def watch(self, master_pid: int) -> None:
        with self._lock:
            self.masters.add(master_pid)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                for master in list(self.masters):
                    for pid in children_of(master):
                        if pid not in self.gone:
                            self.last_alive[pid] = now
                for pid in list(self.last_alive):
                    if pid not in self.gone and not is_alive(pid):
                        self._found_dead(pid)
            self._stop.wait(WATCH_INTERVAL)

    def _found_dead(self, pid: int) -> None:
        self.gone.add(pid)
        self.first_dead[pid] = time.monotonic()

    def kill(self, pid: int) -> None:
        """SIGKILL ``pid`` (a child of a watched master), noting when."""
        with self._lock:
            self.killed[pid] = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def died_after(self, pid: int) -> float | None:
        """None while ``pid`` lives; else the last moment it was known alive (0.0 if never seen)."""
        with self._lock:
            if pid not in self.gone and pid not in self.killed and is_alive(pid):
                return None
            return max(self.killed.get(pid, 0.0), self.last_alive.get(pid, 0.0))

    def seen_dead(self, pid: int) -> float | None:
        """None while ``pid`` lives (or before this thread noticed); else when it was first found dead."""
        with self._lock:
            return self.first_dead.get(pid)

    def settle(self) -> None:
        """Wait for one more look, so that every child that died is known as gone."""
        time.sleep(WATCH_INTERVAL * 4)
        with self._lock:
            for pid in list(self.last_alive):
                if pid not in self.gone and not is_alive(pid):
                    self._found_dead(pid)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------- pools


def short_tempdir() -> str:
    """A short directory under /tmp (a Unix socket path holds ~107 bytes; pytest's tmp_path may not)."""
    return tempfile.mkdtemp(prefix="fsf", dir="/tmp")


def pool_env(rundir: str, **extra: str) -> dict[str, str]:
    """The environment of a pool subprocess: no FASTSCHED_* leaks in from ours (but the core choice)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTSCHED_") or k == "FASTSCHED_IMPL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(TESTS), os.environ.get("PYTHONPATH")]))
    env["XDG_RUNTIME_DIR"] = rundir
    env.update(extra)
    return env


class PoolProc:
    """``python -m fastsched start --import faultkit ...`` in the background, its output in a file."""

    def __init__(
        self,
        dsn: str,
        logdir: Path,
        *args: str,
        host_id: str | None = None,
        rundir: str | None = None,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
        dsn_in_env: bool = False,
        pidfile: bool = True,
        wrapper: Sequence[str] = (),
        launcher: Sequence[str] = ("-m", "fastsched"),
    ) -> None:
        self.host_id = host_id or "fault-" + secrets.token_hex(3)
        self.rundir = rundir or short_tempdir()
        self.pidfile = os.path.join(self.rundir, f"{self.host_id}.pid")
        self.log_path = logdir / f"pool-{self.host_id}-{secrets.token_hex(2)}.log"
        environ = env if env is not None else pool_env(self.rundir)
        # wrapper: a command the pool runs under, e.g. unshare for a PID namespace of its own;
        # launcher: what python runs instead of the CLI's module (a script taking the CLI's argv).
        argv = [*wrapper, sys.executable, *launcher, "start", "--import", "faultkit", "--host-id", self.host_id]
        if pidfile:  # else the default place, next to the wake-up sockets
            argv += ["--pidfile", self.pidfile]
        argv += args
        if dsn_in_env:
            environ = {**environ, "FASTSCHED_DSN": dsn}
        else:
            argv += ["--dsn", dsn]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(TESTS),
                env=environ,
                preexec_fn=preexec_fn,  # noqa: PLW1509 - the hooks only call setrlimit or umask, which take no lock
            )
        self.pid = self.proc.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        return f"--- pool {self.host_id} (pid {self.pid}), last output ---\n{self.log[-chars:]}"

    def wait_for_log(self, text: str, timeout: float = START_TIMEOUT, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.log.count(text) < count:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the pool exited ({self.proc.returncode}) before logging {text!r}\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"the pool did not log {text!r} within {timeout:g}s\n{self.tail()}")
            time.sleep(0.02)

    def started(self) -> PoolProc:
        self.wait_for_log("pool started")
        return self

    def children(self) -> list[int]:
        return children_of(self.pid)

    def wait(self, timeout: float = EXIT_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"the pool did not exit within {timeout:g}s\n{self.tail()}") from None

    def stop(self, timeout: float = EXIT_TIMEOUT) -> int:
        """SIGTERM (a graceful stop), then wait for the exit code."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> float:
        """SIGKILL the master (its children follow it by PDEATHSIG) and reap it; returns when, monotonic."""
        at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(EXIT_TIMEOUT)
        return at

    def close(self) -> None:
        """Leave nothing running: the master, and any child it left (only ours, by pid)."""
        children = self.children()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(EXIT_TIMEOUT)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------ databases


def connect_raw(dsn: str, **extra: Any) -> pymysql.connections.Connection:
    """A plain autocommit pymysql connection to the database of a mysql:// DSN."""
    parts = urllib.parse.urlsplit(dsn)
    kwargs: dict[str, Any] = {
        "host": parts.hostname,
        "port": parts.port or 3306,
        "user": urllib.parse.unquote(parts.username or ""),
        "password": urllib.parse.unquote(parts.password or ""),
        "database": parts.path.lstrip("/") or None,
        "autocommit": True,
        "charset": "utf8mb4",
    }
    kwargs.update(extra)
    return pymysql.connect(**kwargs)


def sql(dsn: str, statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    conn = connect_raw(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def job_states(dsn: str) -> dict[str, int]:
    """How many jobs are pending (waiting, deferred or running), done and failed."""
    rows = sql(dsn, "SELECT done, COUNT(*) FROM workerqueue GROUP BY done")
    names = {0: "pending", 1: "done", 2: "failed"}
    found = {names[int(done)]: int(count) for done, count in rows}
    return {name: found.get(name, 0) for name in names.values()}


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateMariaDB:
    """A MariaDB server of the test's own: its data directory, port and process.

    The shared server at 127.0.0.1:3306 is never stopped; this one is, as often as a test likes.
    ``root`` has no password; :meth:`database` adds a database and a user with a password.
    """

    def __init__(self, base: Path, port: int | None = None) -> None:
        self.base = base
        self.datadir = base / "data"
        self.socket = base / "mysqld.sock"
        self.errlog = base / "mysqld.err"
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def install(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                "--user=root",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"mariadb-install-db failed:\n{done.stdout}\n{done.stderr}"

    def start(self, **variables: object) -> None:
        argv = [
            MARIADBD,
            "--no-defaults",
            "--user=root",
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.socket}",
            f"--pid-file={self.base / 'mysqld.pid'}",
            f"--log-error={self.errlog}",
            "--innodb-buffer-pool-size=64M",
            "--max-connections=200",
        ]
        argv += [f"--{name.replace('_', '-')}={value}" for name, value in variables.items()]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.starts += 1
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            try:
                pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=1).close()
                return
            except pymysql.MySQLError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"the private MariaDB did not start:\n{self.errlog_tail()}"
                    ) from None
                time.sleep(0.05)

    def stop(self, signum: int = signal.SIGTERM) -> float:
        """Stop the server (SIGTERM: a clean shutdown; SIGKILL: a crash); returns the seconds it took."""
        assert self.proc is not None
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signum)
        try:
            self.proc.wait(SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        return time.monotonic() - started

    def admin(self) -> pymysql.connections.Connection:
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", autocommit=True)

    def database(self, password: str | None = None) -> str:
        """A new database and a user owning it (with ``password``, if given): their DSN."""
        name = "faults_" + secrets.token_hex(3)
        user = "u_" + secrets.token_hex(3)
        password = password or secrets.token_urlsafe(12)
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
                cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
                cur.execute(f"GRANT ALL ON `{name}`.* TO '{user}'@'%'")
        finally:
            conn.close()
        return f"mysql://{user}:{urllib.parse.quote(password, safe='')}@127.0.0.1:{self.port}/{name}"

    def errlog_tail(self, chars: int = 3000) -> str:
        try:
            return self.errlog.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no error log)"

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


@contextlib.contextmanager
def private_mariadb(base: Path, port: int | None = None) -> Iterator[PrivateMariaDB]:
    """A private MariaDB, installed under ``base``, running (on ``port``, else a free one);
    stopped at the end whatever happens."""
    if not os.access(MARIADBD, os.X_OK):
        raise AssertionError(f"{MARIADBD} is missing: .ci/run installs mariadb-server")
    server = PrivateMariaDB(base, port)
    server.install()
    server.start()
    try:
        yield server
    finally:
        server.close()


# ------------------------------------------------------------------------------ the proxy


class FaultProxy:
    """A TCP proxy in front of a MariaDB that drops the client's connection on cue.

    It follows the MySQL packets from the client; after the client's claim (an ``UPDATE
    workerqueue SET pid``), at the transaction's ``COMMIT``, an armed drop closes the connection:

    - ``lost_answer=True``: the COMMIT reaches the server (the claim is committed) but its answer
      never reaches the client, which cannot know whether it holds the jobs;
    - ``lost_answer=False``: the answer is delivered, then the connection drops: the client has its
      batches and finds the connection gone at its next statement.
    """

    CLAIM = b"UPDATE workerqueue SET pid"

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._armed: list[bool] = []  # lost_answer per pending drop, first first
        self._lock = threading.Lock()
        self.fired = {"lost_answer": 0, "after_answer": 0}
        self.connections = 0
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()

    def arm(self, lost_answer: bool) -> None:
        with self._lock:
            self._armed.append(lost_answer)

    def armed(self) -> int:
        with self._lock:
            return len(self._armed)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
                self._sockets += [client, server]
            state = {"mute": False, "close_after_reply": False, "claimed": False}
            threading.Thread(target=self._upstream, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client, state), daemon=True).start()

    @staticmethod
    def _read(sock: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            part = sock.recv(size - len(data))
            if not part:
                raise ConnectionError("closed")
            data += part
        return data

    def _upstream(self, client: socket.socket, server: socket.socket, state: dict[str, bool]) -> None:
        try:
            while True:
                header = self._read(client, 4)
                payload = self._read(client, int.from_bytes(header[:3], "little"))
                drop: bool | None = None
                if payload[:1] == b"\x03":  # COM_QUERY
                    text = payload[1:]
                    if self.CLAIM in text:
                        state["claimed"] = True
                    elif text.strip().upper() in (b"COMMIT", b"ROLLBACK"):
                        if state["claimed"] and text.strip().upper() == b"COMMIT":
                            with self._lock:
                                drop = self._armed.pop(0) if self._armed else None
                        state["claimed"] = False
                if drop is True:
                    state["mute"] = True  # nothing the server says from now on reaches the client
                elif drop is False:
                    state["close_after_reply"] = True
                server.sendall(header + payload)
                if drop is True:
                    time.sleep(0.2)  # let the server commit, then hang up on both
                    self.fired["lost_answer"] += 1
                    self._hang_up(client, server)
                    return
                if drop is False:
                    self.fired["after_answer"] += 1
        except OSError:
            self._hang_up(client, server)

    def _downstream(self, server: socket.socket, client: socket.socket, state: dict[str, bool]) -> None:
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    raise ConnectionError("closed")
                if state["mute"]:
                    continue
                client.sendall(data)
                if state["close_after_reply"]:
                    self._hang_up(client, server)
                    return
        except OSError:
            self._hang_up(client, server)

    @staticmethod
    def _hang_up(*sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            self._hang_up(*self._sockets)


# ------------------------------------------------------------------------------- figures


def record_figures(tmp_path: Path, figures: dict[str, Any], test: str | None = None) -> None:
    """Print what the running fault test did and measured, and keep it in fault-figures.json in
    pytest's base temporary directory (``tmp_path`` is the test's, just under it)."""
    test = test or os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0].rpartition("::")[2]
    print(f"\nFAULT FIGURES {test}: {json.dumps(figures, sort_keys=True)}")
    with open(tmp_path.parent / "fault-figures.json", "a") as handle:
        handle.write(json.dumps({"test": test, **figures}, sort_keys=True) + "\n")
