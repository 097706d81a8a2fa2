"""``fastsched-pool start --http``: /metrics, /status.json, /history.json and the dashboard's files,
served by a real pool on SQLite and MariaDB; the bearer token, the loopback Host rule and the
DSN password kept out of every output; the Load and Performance log lines as JSON fields.
"""
from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from prometheus_client.parser import text_string_to_metric_families

import fastsched
from fastsched import status
from fastsched.backends import open_backend
from fastsched.dsn import parse_dsn
from fastsched.http import STATUS_MAX_AGE, HTTPServer, Monitor
from fastsched.master.metrics import PoolMetrics

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0  # seconds for a pool to start serving
WAIT_TIMEOUT = 30.0  # seconds for the queue to reach a state


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTSCHED_") or k == "FASTSCHED_IMPL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


def wait_for(condition: Callable[[], Any], timeout: float = WAIT_TIMEOUT, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class PoolRun:
    """``python -m fastsched start --http 127.0.0.1:0 --log-format json ...`` in a subprocess."""

    def __init__(self, dsn: str | None, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = workdir / f"pool-{secrets.token_hex(3)}.log"
        self.rundir = tempfile.mkdtemp(prefix="fsh", dir="/tmp")
        command = [sys.executable, "-m", "fastsched", "start", "--import", "tests.pooljobs", "--log-format", "json",
                   "--host-id", "http-" + secrets.token_hex(3), *args]
        if dsn is not None:
            command += ["--dsn", dsn]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, env={**(env or cli_env()), "XDG_RUNTIME_DIR": self.rundir}, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            )
        self.url = wait_for(self._url, START_TIMEOUT, "the pool's http_url log line")

    def _url(self) -> str | None:
        if self.process.poll() is not None:
            raise AssertionError(f"the pool exited ({self.process.returncode}):\n{self.log()}")
        for entry in self.entries():
            if "http_url" in entry:
                return str(entry["http_url"])
        return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def entries(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                pass
        return found

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        return request(self.url, path, headers, method)

    def json(self, path: str) -> Any:
        code, _, body = self.get(path)
        assert code == 200, body
        return json.loads(body)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        finally:
            shutil.rmtree(self.rundir, ignore_errors=True)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.rundir, ignore_errors=True)


def request(url: str, path: str, headers: dict[str, str] | None = None,
            method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def metrics(run_or_url: Any, headers: dict[str, str] | None = None) -> dict[str, list[Any]]:
    """Samples by name, parsed by prometheus_client's own parser."""
    url = run_or_url.url if isinstance(run_or_url, PoolRun) else run_or_url
    code, found, body = request(url, "/metrics", headers)
    assert code == 200 and found["content-type"].startswith("text/plain; version=")
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    matching = [s.value for s in samples[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    assert matching, f"no sample {name} {labels}"
    return float(sum(matching))


@pytest.fixture
def pools(tmp_path: Path) -> Iterator[Callable[..., PoolRun]]:
    started: list[PoolRun] = []

    def start(dsn: str | None, *args: str, env: dict[str, str] | None = None) -> PoolRun:
        run = PoolRun(dsn, tmp_path, *args, env=env)
        started.append(run)
        return run

    yield start
    for run in started:
        run.close()


def comparable(document: dict[str, Any]) -> dict[str, Any]:
    """A status without what changes from one reading to the next."""
    document = json.loads(json.dumps(document))
    document.pop("generated_at")
    for host in document["hosts"]:
        for master in host["masters"]:
            for entry in (master, *master["children"]):
                entry.pop("heartbeat_age_seconds")
                entry.pop("heartbeat")
    return document


# --- a pool serving -----------------------------------------------------------------------------


def test_start_http_serves_metrics_status_history_and_the_dashboard(dsn, tmp_path, pools):
    q = fastsched.connect(dsn)
    sleepers = q.add_many([(p, "Sleep", 0.4 + i / 100) for i, p in enumerate((20, 30, 40, 20, 30, 40))])
    quick = q.add_many([(fastsched.Priority.MEDIUM, "noop", i) for i in range(20)])
    failing = q.add(fastsched.Priority.HIGH, "fail", str(tmp_path / "rec"), "no mailbox")
    run = pools(dsn, "--workers", "2", "--retry-limit", "0", "--http", "127.0.0.1:0")
    assert run.url.startswith("http://127.0.0.1:")

    busy = wait_for(lambda: (m := metrics(run)) and value(m, "fastsched_running_workers") >= 1 and m,
                    what="a worker running")
    assert value(busy, "fastsched_status_up") == 1
    assert len(busy["fastsched_queue_jobs"]) == 5 * 4  # priority x (waiting, deferred, running, failed)
    assert value(busy, "fastsched_active_workers") == 2

    wait_for(lambda: run.json("/status.json")["totals"]["done_last_hour"] == len(sleepers) + len(quick),
             what="every job done")
    m = metrics(run)
    assert value(m, "fastsched_jobs_completed_total") == len(sleepers) + len(quick)
    assert value(m, "fastsched_jobs_completed_total", priority="MEDIUM") == 2 + len(quick)
    assert value(m, "fastsched_jobs_failed_total") == 1
    assert value(m, "fastsched_queue_jobs", priority="HIGH", state="failed") == 1
    assert value(m, "fastsched_queue_jobs", state="waiting") == 0
    assert value(m, "fastsched_claim_cycle_seconds_count") > 0
    assert value(m, "fastsched_cycle_db_seconds_count") == value(m, "fastsched_claim_cycle_seconds_count")
    assert value(m, "fastsched_db_seconds_total", kind="claim") > 0
    assert value(m, "fastsched_db_seconds_total", kind="count") > 0
    assert value(m, "fastsched_job_seconds_total") >= 6 * 0.4
    assert value(m, "fastsched_workers_configured") == 2
    assert 0 < time.time() - value(m, "fastsched_last_cycle_timestamp_seconds") < 60
    assert value(m, "fastsched_masters", state="alive") == 1
    assert value(m, "fastsched_jobs_per_minute", window="1m") == len(sleepers) + len(quick)
    assert "process_resident_memory_bytes" in m

    # /status.json is `status --json`.
    backend = open_backend(dsn)
    try:
        time.sleep(STATUS_MAX_AGE + 0.1)  # past the server's reuse of a reading
        assert comparable(run.json("/status.json")) == comparable(status.collect(backend))
    finally:
        backend.close()
    served = run.json("/status.json")
    assert served["failed_recent"][0]["id"] == failing
    assert served["failed_recent"][0]["error_summary"] == "RuntimeError: no mailbox"

    history = run.json("/history.json")
    assert history["format"] == "fastsched.history/1" and history["priorities"][0] == "CRITICAL"
    last = history["samples"][-1]
    assert set(last) == {"t", "waiting", "deferred", "running", "workers", "limits", "done", "jobs_per_minute"}
    wait_for(lambda: sum(run.json("/history.json")["samples"][-1]["done"]) == len(sleepers) + len(quick),
             what="a history sample after the last job")

    code, headers, body = run.get("/")
    assert code == 200 and headers["content-type"].startswith("text/html")
    assert b'src="/static/dashboard.js"' in body and b'href="/static/dashboard.css"' in body
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        code, headers, _ = run.get("/static/" + name)
        assert code == 200 and headers["content-type"].startswith(kind)
    assert run.get("/static/../http.py")[0] == 404
    assert run.get("/static/%2e%2e/http.py")[0] == 404
    assert run.get("/nowhere")[0] == 404
    code, _, body = run.get("/", method="HEAD")
    assert code == 200 and body == b""
    # No token: only loopback host names (a page elsewhere cannot reach it by DNS rebinding).
    assert run.get("/status.json", {"Host": "attacker.example:80"})[0] == 403
    assert run.get("/status.json", {"Host": "localhost:1234"})[0] == 200

    assert run.stop() == 0
    with pytest.raises(OSError):
        request(run.url, "/metrics")
    load = [e for e in run.entries() if e.get("event") == "load"]
    assert load and load[0]["max_workers"] == 2 and set(load[0]["priorities"]) == {p.name for p in fastsched.Priority}


def test_http_needs_a_bearer_token_when_one_is_set(sqlite_dsn):
    token = "t0ken-" + secrets.token_hex(8)
    fastsched.connect(sqlite_dsn).add(fastsched.Priority.LOW, "noop")
    server = HTTPServer("127.0.0.1:0", Monitor(parse_dsn(sqlite_dsn), workers=1), token=token)
    server.start()
    try:
        url = server.url
        code, headers, _ = request(url, "/status.json")
        assert code == 401 and headers["www-authenticate"] == "Bearer"
        assert request(url, "/metrics", {"Authorization": "Bearer wrong"})[0] == 401
        assert request(url, "/", {"Authorization": "Basic " + token})[0] == 401
        code, _, body = request(url, "/status.json", {"Authorization": f"Bearer {token}"})
        assert code == 200 and json.loads(body)["totals"]["waiting"] == 1
        assert request(url, "/?token=wrong")[0] == 401
        code, headers, _ = request(url, "/?token=" + urllib.parse.quote(token))
        assert code == 303 and headers["location"] == "/"
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        jar = cookie.split(";", 1)[0]
        assert request(url, "/metrics", {"Cookie": jar})[0] == 200
        assert request(url, "/metrics", {"Cookie": "fastsched_token=wrong"})[0] == 401
        # With a token the Host header is not what protects it.
        assert request(url, "/status.json", {"Authorization": f"Bearer {token}", "Host": "pool.example"})[0] == 200
    finally:
        server.stop()


def test_a_database_error_is_a_503_and_status_up_0_without_the_password():
    password = "Pw-" + secrets.token_hex(6)
    server = HTTPServer("127.0.0.1:0", Monitor(parse_dsn(f"mysql://app:{password}@127.0.0.1:1/jobs")))
    server.start()
    try:
        code, _, body = request(server.url, "/status.json")
        assert code == 503 and "error" in json.loads(body)
        samples = metrics(server.url)
        assert value(samples, "fastsched_status_up") == 0
        code, _, history = request(server.url, "/history.json")
        assert code == 200 and json.loads(history)["samples"] == []
        for path in ("/status.json", "/metrics", "/history.json", "/"):
            assert password.encode() not in request(server.url, path)[2]
    finally:
        server.stop()


def test_start_refuses_a_public_address_without_a_token_and_a_busy_port(sqlite_dsn, tmp_path):
    public = subprocess.run(
        [sys.executable, "-m", "fastsched", "start", "--dsn", sqlite_dsn, "--http", "0.0.0.0:0"],
        env=cli_env(), capture_output=True, text=True, timeout=60, check=False,
    )
    assert public.returncode == 2 and "give a bearer token with --http-token" in public.stderr
    server = HTTPServer("127.0.0.1:0", Monitor(parse_dsn(sqlite_dsn)))
    try:
        busy = subprocess.run(
            [sys.executable, "-m", "fastsched", "start", "--dsn", sqlite_dsn, "--http", f"127.0.0.1:{server.port}"],
            env=cli_env(XDG_RUNTIME_DIR=str(tmp_path)), capture_output=True, text=True, timeout=60, check=False,
        )
    finally:
        server.stop()
    assert busy.returncode == 2 and "cannot listen there" in busy.stderr


def test_loopback_is_one_rule_for_the_address_and_the_host_header(sqlite_dsn, pools):
    """``--http LOCALHOST:0`` without a token: the settings accept it as loopback (the CLI used
    to refuse it while the server counted it as loopback), it binds to 127.0.0.1, and a request
    naming LOCALHOST in its Host header is answered; another name is not."""
    from fastsched.config import is_loopback_host

    run = pools(sqlite_dsn, "--workers", "1", "--http", "LOCALHOST:0")
    port = urllib.parse.urlsplit(run.url).port
    assert request(f"http://127.0.0.1:{port}/", "/status.json", {"Host": f"LOCALHOST:{port}"})[0] == 200
    assert request(f"http://127.0.0.1:{port}/", "/status.json", {"Host": "pool.example"})[0] == 403
    assert run.stop() == 0
    assert all(is_loopback_host(h) for h in ("LOCALHOST", "localhost.", "127.0.0.2", "[::1]"))
    assert not any(is_loopback_host(h) for h in ("0.0.0.0", "localhost.example", "10.0.0.1", "::"))


SLOW_CLIENTS = 300  # connections that send half a request head and then nothing
SIEGE_JOBS = 30  # jobs the pool must run while they hang on


def _threads_and_fds(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status") as handle:
        threads = next(int(line.split()[1]) for line in handle if line.startswith("Threads:"))
    return threads, len(os.listdir(f"/proc/{pid}/fd"))


def _closed_by_the_server(client: socket.socket, received: dict[socket.socket, bytes]) -> bool:
    """Whether the server has closed ``client`` (after a 503 or nothing at all); False while open.
    What it sent is kept in ``received``."""
    try:
        while chunk := client.recv(4096):
            received[client] = received.get(client, b"") + chunk
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


@pytest.mark.mysql
def test_slow_unauthenticated_clients_hold_neither_threads_nor_the_pool(mysql_dsn, tmp_path, pools):
    """300 clients that open a connection, send half a request head without a token and wait:
    the master keeps its fixed threads and a bounded number of connections, drops each of them
    within the head deadline (or at once, with a 503, when the queue is full), runs its jobs all
    along, and answers an authorized request afterwards."""
    from fastsched import http as fastsched_http

    token = "t0ken-" + secrets.token_hex(8)
    q = fastsched.connect(mysql_dsn)
    run = pools(mysql_dsn, "--workers", "2", "--http", "127.0.0.1:0", env=cli_env(FASTSCHED_HTTP_TOKEN=token))
    assert request(run.url, "/status.json", {"Authorization": f"Bearer {token}"})[0] == 200
    threads_before, fds_before = _threads_and_fds(run.process.pid)
    port = urllib.parse.urlsplit(run.url).port
    clients = []
    try:
        for _ in range(SLOW_CLIENTS):
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            client.sendall(b"GET /status.json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and nothing more
            client.setblocking(False)
            clients.append(client)
        ids = q.add_many([(fastsched.Priority.MEDIUM, "noop", "siege", i) for i in range(SIEGE_JOBS)])
        peak_threads, peak_fds = threads_before, fds_before

        def all_done() -> bool:
            nonlocal peak_threads, peak_fds
            threads, fds = _threads_and_fds(run.process.pid)
            peak_threads, peak_fds = max(peak_threads, threads), max(peak_fds, fds)
            return all(q.get(i).state is fastsched.JobState.DONE for i in ids)

        wait_for(all_done, what="the jobs added during the siege to run")
        # A claim may run a side thread or two for a moment; the HTTP side adds none.
        assert peak_threads <= threads_before + 3, (threads_before, peak_threads)
        bound = fastsched_http.HANDLER_THREADS + fastsched_http.PENDING_CONNECTIONS
        assert peak_fds <= fds_before + bound + 4, (fds_before, peak_fds, bound)
        received: dict[socket.socket, bytes] = {}
        def all_dropped() -> bool:
            closed = [_closed_by_the_server(c, received) for c in clients]  # each read, every time
            return all(closed)

        wait_for(all_dropped,
                 timeout=4 * fastsched_http.HEAD_DEADLINE + 10, what="the slow clients to be dropped")
        # Beyond the handlers and the waiting room, a client is told at once, in well-formed HTTP.
        busy = [data for data in received.values() if data.startswith(b"HTTP/1.0 503 ")]
        assert len(busy) >= SLOW_CLIENTS - bound, len(busy)
        head, _, body = busy[0].partition(b"\r\n\r\n")
        assert f"Content-Length: {len(body)}".encode() in head
    finally:
        for client in clients:
            client.close()
    assert run.process.poll() is None, run.log()[-3000:]
    assert request(run.url, "/status.json")[0] == 401
    code, _, body = request(run.url, "/status.json", {"Authorization": f"Bearer {token}"})
    assert code == 200 and json.loads(body)["totals"]["waiting"] == 0
    assert run.stop() == 0, run.log()[-3000:]


def test_the_operations_guide_states_the_http_bounds_the_server_has() -> None:
    from fastsched import http as fastsched_http

    text = " ".join((REPO / "docs" / "operations.md").read_text().split())
    assert f"it answers from {fastsched_http.HANDLER_THREADS} threads started with the master" in text
    assert f"holds at most {fastsched_http.PENDING_CONNECTIONS} more connections waiting" in text
    assert f"({fastsched_http.MAX_HEAD_BYTES // 1024} KiB at most) within {fastsched_http.HEAD_DEADLINE:g} s" in text


# --- secrets and the log lines ------------------------------------------------------------------


@pytest.fixture
def mysql_user(mysql_dsn: str) -> Iterator[tuple[str, str]]:
    """A MariaDB user with a password on the test database: (its DSN, the password)."""
    root = parse_dsn(mysql_dsn)
    name = "fs_" + secrets.token_hex(4)
    password = "S3cret-" + secrets.token_hex(8)
    admin = pymysql.connect(host=root.host, port=root.port, user=root.user, password=root.password, autocommit=True)
    try:
        with admin.cursor() as cursor:
            for host in ("localhost", "127.0.0.1", "%"):
                cursor.execute("CREATE USER %s@%s IDENTIFIED BY %s", (name, host, password))
                cursor.execute(f"GRANT ALL ON `{root.database}`.* TO %s@%s", (name, host))
        yield f"mysql://{name}:{password}@{root.host}:{root.port}/{root.database}", password
    finally:
        with admin.cursor() as cursor:
            for host in ("localhost", "127.0.0.1", "%"):
                cursor.execute("DROP USER IF EXISTS %s@%s", (name, host))
        admin.close()


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read().replace(b"\0", b" ").decode(errors="replace")


def test_ps_never_shows_the_dsn_password_or_the_token_of_a_pool(mysql_user, pools):
    """A pool started with the password in --dsn and the token in --http-token on its command
    line: neither shows in /proc/PID/cmdline (what ps reads) of the master or of its children."""
    dsn, password = mysql_user
    token = "Tk-" + secrets.token_hex(8)
    q = fastsched.connect(dsn)
    q.add_many([(fastsched.Priority.MEDIUM, "Sleep", 3 + i / 10) for i in range(2)])
    run = pools(dsn, "--workers", "2", "--http", "127.0.0.1:0", "--http-token", token, env=cli_env())
    master = run.process.pid

    def children() -> list[int]:
        with open(f"/proc/{master}/task/{master}/children") as handle:
            return [int(pid) for pid in handle.read().split()]

    kids = wait_for(lambda: len(children()) >= 2 and children(), what="the children to start")
    titles = {pid: _cmdline(pid) for pid in [master, *kids]}
    ps = subprocess.run(["ps", "-eo", "pid,args", "ww"], capture_output=True, text=True, check=True).stdout
    assert run.stop() == 0
    for pid, title in titles.items():
        assert password not in title and token not in title, (pid, title)
        assert "fastsched start" in title and ":***@" in title and "--http-token ***" in title, title
    assert password not in ps and token not in ps


@pytest.mark.slow
def test_the_password_is_never_shown_and_the_log_lines_carry_fields(mysql_user, tmp_path, pools):
    user_dsn, password = mysql_user
    q = fastsched.connect(user_dsn)
    q.add_many([(fastsched.Priority.LOW, "Sleep", 0.2 + i / 100) for i in range(4)])
    failing = q.add(fastsched.Priority.HIGH, "fail", str(tmp_path / "rec"), "boom")
    env = cli_env(FASTSCHED_DSN=user_dsn)
    run = pools(None, "--workers", "2", "--retry-limit", "0", "--log-level", "DEBUG", "--http", "127.0.0.1:0",
                env=env)
    started = time.monotonic()
    seen = [run.get(path)[2] for path in ("/", "/status.json", "/metrics", "/history.json", "/static/dashboard.js")]
    commands = [
        subprocess.run([sys.executable, "-m", "fastsched", *args], env=env, capture_output=True, text=True,
                       timeout=60, check=False)
        for args in (("status",), ("status", "--json"), ("explain", str(failing)), ("failed",))
    ]
    assert all(c.returncode == 0 for c in commands), [c.stderr for c in commands]
    assert ":***@127.0.0.1" in commands[0].stdout  # the DSN is shown, its password masked
    # Performance lines come every LOG_INTERVAL (10 s) after the first Load line.
    wait_for(lambda: any(e.get("event") == "performance" for e in run.entries()), timeout=20 + START_TIMEOUT,
             what="a Performance log line")
    assert time.monotonic() - started < 60
    assert run.stop() == 0
    outputs = seen + [c.stdout.encode() + c.stderr.encode() for c in commands] + [run.log().encode()]
    for output in outputs:
        assert password.encode() not in output
    entries = run.entries()
    load = next(e for e in entries if e.get("event") == "load")
    assert {"load", "max_load", "deferred", "active", "waiting", "idle", "busy", "priorities", "allowed_workers",
            "max_workers"} <= set(load)
    assert load["message"].startswith("Load: ")
    performance = next(e for e in entries if e.get("event") == "performance")
    for key in ("db_count_seconds", "db_stat_seconds", "db_claim_seconds", "db_write_seconds", "db_other_seconds"):
        assert isinstance(performance[key], float) and performance[key] >= 0
    assert performance["message"].startswith("Performance: ")
    parts = sum(performance[f"db_{k}_seconds"] for k in ("count", "stat", "claim", "write", "other"))
    assert abs(parts - performance["db_seconds"]) < 0.01
    assert {"jobs_done", "jobs_per_second", "rest_seconds", "job_seconds", "claims", "cycles"} <= set(performance)
    assert any(e.get("level") == "DEBUG" for e in entries)  # the most verbose level, still no password


def test_history_keeps_a_bounded_number_of_samples(sqlite_dsn):
    metrics = PoolMetrics()
    metrics.jobs_done_by_priority[30] = 5
    monitor = Monitor(parse_dsn(sqlite_dsn), metrics=metrics, history_samples=3)
    try:
        for _ in range(5):
            monitor.sample()
        samples = monitor.history()["samples"]
        assert len(samples) == 3 and samples[-1]["done"] == [0, 0, 5, 0, 0]
        assert samples[0]["t"] <= samples[-1]["t"] <= time.time() + 0.001  # rounded to ms
    finally:
        monitor.close()
