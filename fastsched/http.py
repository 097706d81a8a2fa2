"""The pool's HTTP endpoints, served by ``fastsched-pool start --http HOST:PORT``.

    /               the dashboard (fastsched/static: its own HTML, JS and CSS; no CDN, no other origin)
    /status.json    the status (``fastsched.status.collect``): the same document as ``status --json``
    /history.json   samples of the queue and this pool's counters over the last minutes (the charts)
    /metrics        Prometheus text format, written by prometheus_client from its own registry
    /actions.json   whether the dashboard's actions are allowed here; POST /actions/<name> runs one
                    (``fastsched.http_actions``: with the token only)

The server runs in a fixed set of threads of the master, all started with it: one accepts, a few
(``HANDLER_THREADS``) answer, one samples the history. The HTTP side never starts a thread per
connection and never holds more than ``HANDLER_THREADS + PENDING_CONNECTIONS`` connections: one
more is answered 503 and closed at once. A request's whole head (request line and headers, at
most ``MAX_HEAD_BYTES``) must arrive within ``HEAD_DEADLINE`` seconds of its connection being
accepted, or the connection is dropped; only then is the token (or the Host rule) checked, before
anything else is done. So slow or unauthenticated clients can delay the dashboard, never take the
master's threads, memory or file descriptors from the pool; and nothing raised here reaches it.
What they show comes from a ``fastsched.metrics.Monitor`` (its own backend under one lock, a
status reading reused for ``STATUS_MAX_AGE`` seconds, the pool's counters and cycle histograms;
both names are re-exported here, where callers found them first). The threads start before the
master forks its children; a child never touches what they hold (their database connection, their sockets), and
logging's locks are reset in a forked child. (Python 3.12+ warns about fork() in a process with
threads; the children are forked before the threads run a request, and again only to replace one.)

Security: it binds where it is told; without a token only to loopback (``config.validate`` refuses
anything else, and :func:`serve` checks the address it bound). ``config.is_loopback_host`` is the
one rule for "loopback", for the address and for the Host header alike.
With a token (``settings.http_token``) every request must carry ``Authorization: Bearer TOKEN``
or the cookie set by opening ``/?token=TOKEN`` once in a browser. Without one, requests must name
a loopback host in their Host header (a page elsewhere cannot reach it by DNS rebinding). Every
response forbids other origins' scripts, styles and frames. Nothing served holds the DSN password:
the DSN is masked and database errors are scrubbed before they are shown.
"""
from __future__ import annotations

import contextlib
import hmac
import http.cookies
import http.server
import io
import json
import logging
import queue
import socket
import threading
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fastsched import http_actions
from fastsched.config import PoolSettings, is_loopback_host, split_http_address
from fastsched.errors import ConfigError, FastschedError
from fastsched.http_actions import Actions
from fastsched.metrics import STATUS_MAX_AGE, Monitor

log = logging.getLogger(__name__)

HEAD_DEADLINE = 5.0  # seconds from accept for a client to send its whole request head
MAX_HEAD_BYTES = 16 * 1024  # a request head longer than this is dropped
SEND_TIMEOUT = 10.0  # seconds a client may take to take each part of a response
HANDLER_THREADS = 4  # requests answered at once
PENDING_CONNECTIONS = 32  # accepted connections waiting for a handler; one more is refused with 503
LISTEN_BACKLOG = 64  # connections the kernel holds before they are accepted
_BUSY_BODY = b"too many clients, try again\n"
BUSY_RESPONSE = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 1\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)
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


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6) as (host, port); ConfigError naming the address."""
    try:
        return split_http_address(address)
    except ValueError as exc:
        raise ConfigError(f"--http {address!r}: {exc}") from None


# --- the server ---------------------------------------------------------------------------------


def read_head(connection: socket.socket, deadline: float) -> bytes | None:
    """What the client sent up to the blank line that ends its request head (and whatever came
    with it), read from ``connection`` by the monotonic ``deadline``; None if it is late, too
    long, or the client went away."""
    head = bytearray()
    while b"\r\n\r\n" not in head and b"\n\n" not in head:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or len(head) > MAX_HEAD_BYTES:
            return None
        connection.settimeout(remaining)
        try:
            chunk = connection.recv(4096)
        except OSError:  # the deadline (TimeoutError) or a reset
            return None
        if not chunk:
            return None
        head += chunk
    return bytes(head) if len(head) <= MAX_HEAD_BYTES + 4096 else None


class _AfterHead(io.RawIOBase):
    """The request as a file: what read_head received, then the rest of a body from the socket,
    all of it by ``deadline`` (a body is read only once the token was checked)."""

    def __init__(self, received: bytes, connection: socket.socket, deadline: float) -> None:
        super().__init__()
        self._received = memoryview(received)
        self._connection = connection
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._received:
            count = min(len(buffer), len(self._received))
            buffer[:count] = self._received[:count]
            self._received = self._received[count:]
            return count
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request took too long")
        self._connection.settimeout(remaining)
        try:
            return self._connection.recv_into(buffer)
        finally:
            self._connection.settimeout(SEND_TIMEOUT)  # for the response


class _Server(http.server.HTTPServer):
    """An HTTPServer whose accept loop hands connections to a fixed set of handler threads
    through a bounded queue (see the module's docstring)."""

    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG
    actions: Actions  # the dashboard's actions (fastsched.http_actions), set by HTTPServer

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, monitor: Monitor,
                 token: str | None, static: Mapping[str, Path]) -> None:
        self.address_family = family
        self.monitor = monitor
        self.token = token
        self.static = static
        self.bound_host = address[0]
        self.pending: queue.Queue[tuple[socket.socket, Any, float] | None] = queue.Queue(PENDING_CONNECTIONS)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            self.pending.put_nowait((request, client_address, time.monotonic() + HEAD_DEADLINE))
        except queue.Full:
            with contextlib.suppress(OSError):
                request.settimeout(0)
                request.send(BUSY_RESPONSE)
            self.shutdown_request(request)

    def handle_requests(self) -> None:
        """A handler thread's life: answer queued connections until None."""
        while True:
            item = self.pending.get()
            if item is None:
                return
            request, client_address, deadline = item
            try:
                _Handler(request, client_address, self, deadline)
            except Exception:  # one connection's failure must not end a handler thread
                log.debug("http: a connection from %s failed", client_address, exc_info=True)
            finally:
                self.shutdown_request(request)

    def drop_pending(self) -> None:
        while True:
            try:
                item = self.pending.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self.shutdown_request(item[0])


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    server_version = "fastsched"
    sys_version = ""

    def __init__(self, request: Any, client_address: Any, server: _Server, deadline: float | None = None) -> None:
        self.deadline = time.monotonic() + HEAD_DEADLINE if deadline is None else deadline
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        super().setup()
        received = read_head(self.connection, self.deadline)
        self.rfile.close()  # handle() reads the head from memory, then any body through _AfterHead
        self.rfile = io.BufferedReader(_AfterHead(received or b"", self.connection, self.deadline + HEAD_DEADLINE))
        self.connection.settimeout(SEND_TIMEOUT)
        self.close_connection = True

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
            return is_loopback_host(name) or name.strip("[]") == self.server.bound_host
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

    def do_POST(self) -> None:
        """The dashboard's actions (fastsched.http_actions): the same access rules as GET first."""
        if not self._authorized():
            if self.server.token:
                self._error(401, "a bearer token is required", {"WWW-Authenticate": "Bearer"})
            else:
                self._error(403, http_actions.NO_TOKEN)
            return
        try:
            http_actions.handle_post(self)
        except Exception:  # one bad request must not end the thread quietly
            log.exception("http: POST %s failed", urllib.parse.urlsplit(self.path).path)
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
        elif path == "/actions.json":
            self._json(200, self.server.actions.info())
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
        self._server.actions = http_actions.Actions(monitor.dsn, enabled=bool(token))
        self.monitor = monitor
        self.host = host
        self.port: int = self._server.server_address[1]
        self.bound_address: str = str(self._server.server_address[0])  # what the name resolved to
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
        ] + [
            threading.Thread(target=self._server.handle_requests, name=f"fastsched-http-{n}", daemon=True)
            for n in range(HANDLER_THREADS)
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
            self._server.drop_pending()
            for _ in range(HANDLER_THREADS):
                self._server.pending.put(None)
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server.actions.close()
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
    if not settings.http_token and not is_loopback_host(server.bound_address):
        server.stop()  # a name like localhost that resolves beyond loopback: refused as its spelling would be
        raise ConfigError(
            f"--http {settings.http!r} is bound to {server.bound_address}, which is reachable from other hosts: "
            "give a bearer token (--http-token or FASTSCHED_HTTP_TOKEN), or bind to 127.0.0.1"
        )
    if pool is not None:
        pool.on_cycle = monitor.observe_cycle
    server.start()
    bound = server.url
    log.info(
        "http: serving the dashboard at %s, /metrics and /status.json (%s)", bound,
        "bearer token required" if settings.http_token else "no token: loopback host names only",
        extra={"fields": {"http_url": bound, "http_token_required": bool(settings.http_token)}},
    )
    return server


__all__ = ["STATUS_MAX_AGE", "HTTPServer", "Monitor", "serve", "split_address"]
