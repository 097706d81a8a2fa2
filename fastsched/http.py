"""The pool's HTTP endpoints, served by ``fastsched-pool start --http HOST:PORT``.

    /               the dashboard (fastsched/static: its own HTML, JS and CSS; no CDN, no other origin)
    /status.json    the status (``fastsched.status.collect``): the same document as ``status --json``
    /history.json   samples of the queue and this pool's counters over the last minutes (the charts)
    /metrics        Prometheus text format, written by prometheus_client from its own registry

The server runs in threads of the master: one accepts, one per request, one samples the history.
They read the database through a backend of their own (a backend is not thread-safe), under one
lock, and reuse a status reading for ``STATUS_MAX_AGE`` seconds, so scrapes and dashboards cost the
database a few statements a second at most. They read the pool's counters (``Pool.metrics``) and
feed two histograms from ``Pool.on_cycle``. The threads start before the master forks its
children; a child never touches what they hold (their database connection, their sockets), and
logging's locks are reset in a forked child. (Python 3.12+ warns about fork() in a process with
threads; the children are forked before the threads run a request, and again only to replace one.)

Security: it binds where it is told (the CLI refuses an address beyond loopback without a token).
With a token (``settings.http_token``) every request must carry ``Authorization: Bearer TOKEN``
or the cookie set by opening ``/?token=TOKEN`` once in a browser. Without one, requests must name
a loopback host in their Host header (a page elsewhere cannot reach it by DNS rebinding). Every
response forbids other origins' scripts, styles and frames. Nothing served holds the DSN password:
the DSN is masked and database errors are scrubbed before they are shown.
"""
from __future__ import annotations

import collections
import hmac
import http.cookies
import http.server
import ipaddress
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from fastsched import status as status_mod
from fastsched.backends import open_backend
from fastsched.config import DEFAULT_LEASE, PoolSettings
from fastsched.dsn import DSN
from fastsched.errors import ConfigError, FastschedError
from fastsched.pool_duties import DB_TIME_KINDS
from fastsched.priority import Priority

log = logging.getLogger(__name__)

STATUS_MAX_AGE = 1.0  # seconds a status reading is served again before the database is asked anew
HISTORY_INTERVAL = 2.0  # seconds between history samples
HISTORY_SAMPLES = 450  # samples kept: 15 minutes at HISTORY_INTERVAL
REQUEST_TIMEOUT = 10.0  # seconds a client may take to send its request
TOKEN_COOKIE = "fastsched_token"
STATIC_DIR = Path(__file__).with_name("static")
DASHBOARD = "dashboard.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# Seconds: a claim cycle is well under a millisecond when idle, tens of ms on a busy MySQL.
CYCLE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LOOPBACK_NAMES = ("localhost", "localhost.")
# Pool.metrics counters exposed as fastsched_<name>_total, with their help text.
POOL_COUNTERS = {
    "jobs_failed": "jobs this master failed (kept for a person: retries or crashes exhausted, unknown command)",
    "jobs_retried": "jobs that raised and were put back for another attempt",
    "jobs_deferred": "jobs that deferred themselves (fastsched.defer())",
    "jobs_released": "claimed jobs given back unstarted (shutdown, database outage)",
    "jobs_crashed": "jobs whose child process died while running them",
    "jobs_timed_out": "jobs stopped at their priority's run-time limit",
    "jobs_claimed": "jobs claimed",
    "claims": "claim transactions",
    "cycles": "cycles of the master's loop",
    "db_errors": "database errors seen by the master",
    "children_started": "child processes started",
    "children_died": "child processes that exited",
}


def _is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6) as (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--http {address!r}: must be HOST:PORT, like 127.0.0.1:9100")
    return host.strip("[]"), int(port)


class Monitor:
    """What the endpoints show: the status (read through a backend of its own, cached), the
    history of samples and the pool's counters and cycle histograms."""

    def __init__(
        self,
        dsn: DSN,
        *,
        lease: float = DEFAULT_LEASE,
        metrics: Mapping[str, Any] | None = None,
        workers: int = 0,
        history_interval: float = HISTORY_INTERVAL,
        history_samples: int = HISTORY_SAMPLES,
    ) -> None:
        self.dsn = dsn
        self.lease = lease
        self.metrics = metrics  # Pool.metrics, read-only here; None outside a pool
        self.workers = workers
        self.history_interval = history_interval
        self._backend = open_backend(dsn)
        self._lock = threading.Lock()
        self._cached: dict[str, Any] | None = None
        self._cached_at = float("-inf")
        self._history: collections.deque[dict[str, Any]] = collections.deque(maxlen=history_samples)
        self.last_cycle_at = 0.0  # epoch seconds of the pool's last cycle
        self.registry = CollectorRegistry()
        self.cycle_seconds = Histogram(
            "fastsched_claim_cycle_seconds", "duration of a cycle of the master's loop (collect, plan, claim, "
            "dispatch), waits excluded", buckets=CYCLE_BUCKETS, registry=self.registry,
        )
        self.cycle_db_seconds = Histogram(
            "fastsched_cycle_db_seconds", "database time spent in a cycle of the master's loop",
            buckets=CYCLE_BUCKETS, registry=self.registry,
        )
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)

    # --- the pool's side ------------------------------------------------------------------------
    def observe_cycle(self, cycle_seconds: float, db_seconds: float) -> None:
        """``Pool.on_cycle``: called by the master after each cycle (quick, never raises)."""
        self.cycle_seconds.observe(cycle_seconds)
        self.cycle_db_seconds.observe(db_seconds)
        self.last_cycle_at = time.time()

    # --- reading --------------------------------------------------------------------------------
    def status(self, max_age: float = STATUS_MAX_AGE) -> dict[str, Any]:
        """The status, read anew when the last reading is older than ``max_age`` seconds.
        Raises a FastschedError (a DatabaseError, say) when it cannot be read."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached_at > max_age:
                try:
                    self._cached = status_mod.collect(self._backend, lease=self.lease)
                except FastschedError:
                    self._backend.close()  # the next reading reconnects
                    raise
                self._cached_at = now
            return self._cached

    def sample(self) -> None:
        """Append one history sample (skipped, with a debug line, when the database does not answer)."""
        try:
            current = self.status(max_age=self.history_interval / 2)
        except FastschedError as exc:
            log.debug("history sample skipped: %s", exc)
            return
        priorities = current["priorities"]
        done = None
        if self.metrics is not None:
            by_priority = self.metrics.get("jobs_done_by_priority", {})
            done = [int(by_priority.get(p["priority"], 0)) for p in priorities]
        self._history.append({
            "t": round(time.time(), 3),
            "waiting": [p["waiting"] for p in priorities],
            "deferred": [p["deferred"] for p in priorities],
            "running": [p["running"] for p in priorities],
            "workers": [p["workers"] for p in priorities],
            "limits": [p["limit"] for p in priorities],
            "done": done,
            "jobs_per_minute": current["jobs_per_minute"]["1"],
        })

    def history(self) -> dict[str, Any]:
        return {
            "format": "fastsched.history/1",
            "interval_seconds": self.history_interval,
            "priorities": [p.name for p in Priority],
            "workers": self.workers,
            "samples": list(self._history),
        }

    def close(self) -> None:
        with self._lock:
            self._backend.close()


class _Collector:
    """The metrics read at scrape time: the queue (from the status) and the pool's counters."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def describe(self) -> list[Metric]:
        return []  # nothing fixed to check for clashes; the registry calls collect() at scrape time

    def collect(self) -> Iterator[Metric]:
        monitor = self.monitor
        up = GaugeMetricFamily("fastsched_status_up", "1 if the queue's status could be read from the database")
        try:
            current = monitor.status()
        except FastschedError:
            current = None
        up.add_metric([], 1 if current is not None else 0)
        yield up
        if current is not None:
            yield from _queue_metrics(current)
        if monitor.metrics is not None:
            yield from _pool_metrics(monitor.metrics, monitor)


def _queue_metrics(current: Mapping[str, Any]) -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        "fastsched_queue_jobs", "jobs in the queue by priority and state (cluster-wide)", labels=["priority", "state"]
    )
    done = GaugeMetricFamily("fastsched_jobs_done_last_hour", "jobs done in the last hour", labels=["priority"])
    oldest = GaugeMetricFamily(
        "fastsched_oldest_wait_seconds", "age of the oldest waiting job (0 when none waits)", labels=["priority"]
    )
    running = GaugeMetricFamily(
        "fastsched_running_workers", "workers running jobs of this priority (cluster-wide)", labels=["priority"]
    )
    limit = GaugeMetricFamily(
        "fastsched_quadratic_limit", "workers this priority may hold under the quadratic rule (priorities in play)",
        labels=["priority"],
    )
    for p in current["priorities"]:
        name = p["name"]
        for state in ("waiting", "deferred", "running", "failed"):
            depth.add_metric([name, state], p[state])
        done.add_metric([name], p["done_last_hour"])
        oldest.add_metric([name], p["oldest_wait_seconds"] or 0.0)
        running.add_metric([name], p["workers"])
        if p["limit"] is not None:
            limit.add_metric([name], p["limit"])
    yield from (depth, done, oldest, running, limit)
    active = GaugeMetricFamily("fastsched_active_workers", "workers of all live masters (cluster-wide)")
    active.add_metric([], current["scheduler"]["active_workers"])
    yield active
    jpm = GaugeMetricFamily(
        "fastsched_jobs_per_minute", "jobs done per minute over the window (cluster-wide)", labels=["window"]
    )
    for minutes, value in current["jobs_per_minute"].items():
        jpm.add_metric([f"{minutes}m"], value)
    yield jpm
    masters = GaugeMetricFamily("fastsched_masters", "registered pool masters", labels=["state"])
    alive = [m["alive"] for host in current["hosts"] for m in host["masters"]]
    masters.add_metric(["alive"], sum(alive))
    masters.add_metric(["dead"], len(alive) - sum(alive))
    yield masters


def _pool_metrics(metrics: Mapping[str, Any], monitor: Monitor) -> Iterator[Metric]:
    completed = CounterMetricFamily(
        "fastsched_jobs_completed", "jobs this master completed", labels=["priority"]
    )
    by_priority = metrics.get("jobs_done_by_priority", {})
    for p in Priority:
        completed.add_metric([p.name], by_priority.get(int(p), 0))
    yield completed
    for key, help_text in POOL_COUNTERS.items():
        if key in metrics:
            counter = CounterMetricFamily(f"fastsched_{key}", help_text)
            counter.add_metric([], metrics[key])
            yield counter
    db = CounterMetricFamily(
        "fastsched_db_seconds", "database time of this master by kind: count (plan), stat, claim, write, other",
        labels=["kind"],
    )
    for kind in DB_TIME_KINDS:
        db.add_metric([kind], metrics.get(f"db_{kind}_seconds", 0.0))
    yield db
    jobs = CounterMetricFamily("fastsched_job_seconds", "time children spent running jobs")
    jobs.add_metric([], metrics.get("job_seconds", 0.0))
    yield jobs
    gauges = (
        ("fastsched_workers_configured", "child processes this master is configured to run", monitor.workers),
        ("fastsched_workers", "child processes alive (updated with the Load line)", metrics.get("workers", 0)),
        ("fastsched_workers_busy", "children running a batch (updated with the Load line)",
         metrics.get("busy_workers", 0)),
        ("fastsched_db_up", "1 while this master's database connection works", int(bool(metrics.get("db_up")))),
        ("fastsched_last_cycle_seconds", "duration of the master's last cycle", metrics.get("last_cycle_seconds", 0.0)),
        ("fastsched_last_cycle_timestamp_seconds", "when the master's last cycle ended (epoch seconds)",
         monitor.last_cycle_at),
        ("fastsched_started_timestamp_seconds", "when the master started (epoch seconds)", metrics.get("started", 0.0)),
    )
    for name, help_text, value in gauges:
        gauge = GaugeMetricFamily(name, help_text)
        gauge.add_metric([], value)
        yield gauge


# --- the server ---------------------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, monitor: Monitor,
                 token: str | None, static: Mapping[str, Path]) -> None:
        self.address_family = family
        self.monitor = monitor
        self.token = token
        self.static = static
        self.bound_host = address[0]
        super().__init__(address, _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    server_version = "fastsched"
    sys_version = ""
    timeout = REQUEST_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s: " + format, self.address_string(), *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = urllib.parse.urlsplit(self.path).path  # never the query: it may hold the token
        log.debug("http %s %s %s %s", self.address_string(), self.command, path, code)

    # --- access ---------------------------------------------------------------------------------
    def _token_ok(self, given: str) -> bool:
        token = self.server.token or ""
        return bool(given) and hmac.compare_digest(given.encode(), token.encode())

    def _authorized(self) -> bool:
        if not self.server.token:
            host = self.headers.get("Host")
            if host is None:
                return True
            name = host.rpartition(":")[0] if host.rpartition(":")[2].isdigit() else host
            return _is_loopback_host(name) or name.strip("[]") == self.server.bound_host
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self._token_ok(value.strip()):
            return True
        try:
            cookies = http.cookies.SimpleCookie(self.headers.get("Cookie", ""))
        except http.cookies.CookieError:
            return False
        morsel = cookies.get(TOKEN_COOKIE)
        return morsel is not None and self._token_ok(urllib.parse.unquote(morsel.value))

    # --- responses ------------------------------------------------------------------------------
    def _send(self, code: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, document: Any) -> None:
        self._send(code, json.dumps(document, separators=(",", ":")).encode(), "application/json")

    def _error(self, code: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        self._send(code, (message + "\n").encode(), "text/plain; charset=utf-8", headers)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parts.query)
        if self.server.token and parts.path == "/" and "token" in query:
            if not self._token_ok(query["token"][0]):
                self._error(401, "wrong token", {"WWW-Authenticate": "Bearer"})
                return
            value = urllib.parse.quote(query["token"][0], safe="")
            cookie = f"{TOKEN_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict"
            self._send(303, b"", "text/plain", {"Location": "/", "Set-Cookie": cookie})
            return
        if not self._authorized():
            if self.server.token:
                self._error(401, "a bearer token is required (Authorization: Bearer TOKEN, or open /?token=TOKEN)",
                            {"WWW-Authenticate": "Bearer"})
            else:
                self._error(403, "this server answers requests for a loopback host name only")
            return
        try:
            self._route(parts.path)
        except Exception:  # one bad request must not end the thread quietly
            log.exception("http: %s %s failed", self.command, parts.path)
            self._error(500, "internal error (see the pool's log)")

    def _route(self, path: str) -> None:
        monitor = self.server.monitor
        if path == "/status.json":
            try:
                self._json(200, monitor.status())
            except FastschedError as exc:
                self._json(503, {"error": str(exc)})
        elif path == "/history.json":
            self._json(200, monitor.history())
        elif path == "/metrics":
            self._send(200, generate_latest(monitor.registry), CONTENT_TYPE_LATEST)
        elif path in ("/", "/index.html"):
            self._static(DASHBOARD)
        elif path.startswith("/static/"):
            self._static(path[len("/static/"):])
        else:
            self._error(404, "not found: try /, /status.json, /history.json or /metrics")

    def _static(self, name: str) -> None:
        file = self.server.static.get(name)
        if file is None:
            self._error(404, "not found")
            return
        self._send(200, file.read_bytes(), CONTENT_TYPES.get(file.suffix, "application/octet-stream"))


class HTTPServer:
    """The endpoints, bound at construction (an unusable address is a ConfigError), served from
    daemon threads after :meth:`start` until :meth:`stop`."""

    def __init__(self, address: str, monitor: Monitor, *, token: str | None = None) -> None:
        host, port = split_address(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        static = {path.name: path for path in STATIC_DIR.iterdir() if path.suffix in CONTENT_TYPES}
        if DASHBOARD not in static:
            raise ConfigError(f"the dashboard's files are missing from {STATIC_DIR} (a broken install?)")
        try:
            self._server = _Server((host, port), family, monitor, token, static)
        except (OSError, OverflowError) as exc:
            raise ConfigError(f"--http {address!r}: cannot listen there: {exc}") from exc
        self.monitor = monitor
        self.host = host
        self.port: int = self._server.server_address[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                             name="fastsched-http", daemon=True),
            threading.Thread(target=self._sample_loop, name="fastsched-history", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _sample_loop(self) -> None:
        while not self._stop.is_set():
            self.monitor.sample()
            self._stop.wait(self.monitor.history_interval)

    def stop(self) -> None:
        self._stop.set()
        if self._threads:
            self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self.monitor.close()


def serve(settings: PoolSettings, pool: Any = None) -> HTTPServer:
    """Bind ``settings.http``, hook the pool's counters and cycles in, and start serving.

    ConfigError when the address cannot be bound. ``pool``: the ``fastsched.pool.Pool`` whose
    ``metrics`` are exported and whose ``on_cycle`` feeds the cycle histograms (None: queue only).
    """
    assert settings.http is not None
    monitor = Monitor(
        settings.dsn, lease=settings.lease, metrics=getattr(pool, "metrics", None), workers=settings.workers
    )
    server = HTTPServer(settings.http, monitor, token=settings.http_token)
    if pool is not None:
        pool.on_cycle = monitor.observe_cycle
    server.start()
    bound = server.url
    log.info(
        "http: serving the dashboard at %s, /metrics and /status.json (%s)", bound,
        "bearer token required" if settings.http_token else "no token: loopback host names only",
        extra={"fields": {"http_url": bound, "http_token_required": bool(settings.http_token)}},
    )
    if not settings.http_token and not _is_loopback_host(server.host):
        log.warning("http: %s is reachable from other hosts without a token", bound)
    return server


__all__ = ["HTTPServer", "Monitor", "serve", "split_address"]
