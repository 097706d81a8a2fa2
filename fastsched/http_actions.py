"""The dashboard's actions: ``POST /actions/<name>`` on the pool's HTTP server, and
``GET /actions.json`` (whether they are allowed here).

    POST /actions/pause    {"priority": "LOW", "command": null, "queue": null}   any combination, one at least
    POST /actions/resume   the same parts, or {"all": true}
    POST /actions/retry    {"id": 12}, or {"filter": {...}, "dry_run": true}      failed jobs
    POST /actions/cancel   {"id": 12}, or {"filter": {...}, "failed_only": true, "dry_run": true}

A filter holds ``command``, ``priority``, ``queue``, ``error``, ``older_than`` (seconds), as the
command line's (``fastsched.controls.JobFilter``). The answer is JSON: what changed (``total``,
``counts`` by state, a ``message`` in words), or ``error``. The page runs each action as a dry run
first and asks for confirmation with its count.

Only with the HTTP token: a server without one refuses every action (403), whatever the client;
with one, the request must carry it (bearer header or the dashboard's cookie, checked by
``fastsched.http``), be JSON (a page elsewhere cannot send that without a preflight, which this
server never grants), and name this server in its Origin if it has one. Every action is recorded
in the history (``actions_recent`` of the status) as ``dashboard (CLIENT ADDRESS)``.
"""
from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from typing import Any

from fastsched import controls
from fastsched.dsn import DSN
from fastsched.errors import FastschedError, InvalidInput, InvalidState, JobNotFound
from fastsched.jobs import JobState

log = logging.getLogger("fastsched.http")

MAX_BODY = 16_384  # bytes of an action's JSON body
PREFIX = "/actions/"
NAMES = (controls.PAUSE, controls.RESUME, controls.RETRY, controls.CANCEL)
NO_TOKEN = "actions need the HTTP token: start the pool with --http-token (FASTSCHED_HTTP_TOKEN)"


class Actions:
    """Runs the actions on a queue of its own, opened at the first one (a Queue serializes its calls)."""

    def __init__(self, dsn: DSN, *, enabled: bool) -> None:
        self.dsn = dsn
        self.enabled = enabled
        self._queue: Any = None
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "actions": list(NAMES), "reason": None if self.enabled else NO_TOKEN}

    def _open(self) -> Any:
        with self._lock:
            if self._queue is None:
                from fastsched.queue import connect

                self._queue = connect(self.dsn)
            return self._queue

    def close(self) -> None:
        with self._lock:
            if self._queue is not None:
                self._queue.close()
                self._queue = None

    def run(self, name: str, body: Any, actor: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, answer) of one action."""
        if name not in NAMES:
            return 404, {"error": f"no action {name!r}: one of {', '.join(NAMES)}"}
        if not isinstance(body, dict):
            return 400, {"error": "the body must be a JSON object"}
        try:
            queue = self._open()
            if name in (controls.PAUSE, controls.RESUME):
                return 200, _pause_or_resume(queue, name, body, actor)
            return 200, _on_jobs(queue, name, body, actor)
        except JobNotFound as exc:
            return 404, {"error": str(exc)}
        except (InvalidInput, InvalidState) as exc:
            return 400, {"error": str(exc)}
        except FastschedError as exc:
            log.warning("http: action %s failed: %s", name, exc)
            return 503, {"error": str(exc)}


def _parts(body: dict[str, Any]) -> tuple[Any, Any, Any]:
    return body.get("priority") or None, body.get("command") or None, body.get("queue") or None


def _pause_or_resume(queue: Any, name: str, body: dict[str, Any], actor: str) -> dict[str, Any]:
    if name == controls.PAUSE:
        pause = queue.pause(*_parts(body), by=actor)
        return {"action": name, "total": 0, "pause": pause.as_dict(),
                "message": f"paused {pause.describe()}: no master claims this work until it is resumed"}
    if body.get("all") is True:
        removed = queue.resume(everything=True, by=actor)
        return {"action": name, "total": removed, "message": f"resumed {removed} pause{'s' if removed != 1 else ''}"}
    wanted = controls.Pause.of(*_parts(body))
    if not queue.resume(wanted.priority, wanted.command, wanted.queue, by=actor):
        raise InvalidInput(f"{wanted.describe()} is not paused")
    return {"action": name, "total": 1, "message": f"resumed {wanted.describe()}"}


def _flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if type(value) is not bool:
        raise InvalidInput(f"{key} must be true or false, got {value!r}")
    return value


def _on_jobs(queue: Any, name: str, body: dict[str, Any], actor: str) -> dict[str, Any]:
    if "id" in body:
        job_id = body["id"]
        if name == controls.RETRY:
            job = queue.retry(job_id, by=actor)
            return {"action": name, "total": 1, "id": job.id, "message": f"job {job_id} is back in the queue"}
        job = queue.cancel(job_id, by=actor)
        said = ("its master stops it, and it ends cancelled" if job.state is JobState.RUNNING
                else f"deleted (it was {job.state.value})")
        return {"action": name, "total": 1, "id": job.id, "message": f"job {job_id} cancelled: {said}"}
    given = body.get("filter")
    if not isinstance(given, dict):
        raise InvalidInput("give the job's id, or a filter (command, priority, queue, error, older_than)")
    unknown = set(given) - {"command", "priority", "queue", "error", "older_than"}
    if unknown:
        raise InvalidInput(f"unknown filter key(s): {', '.join(sorted(unknown))}")
    job_filter = controls.JobFilter.of(**{key: value if value != "" else None for key, value in given.items()})
    dry_run, failed_only = _flag(body, "dry_run"), _flag(body, "failed_only")
    result = queue.bulk(name, job_filter, dry_run=dry_run, failed_only=failed_only, by=actor)
    verb = {controls.RETRY: "put back in the queue", controls.CANCEL: "cancelled"}[name]
    what = f"{result.describe()} matching {job_filter.describe()}"
    message = f"{what} would be {verb}" if dry_run else f"{what} {verb}"
    return {"action": name, "dry_run": dry_run, "total": result.total, "counts": result.counts, "message": message}


def same_origin(origin: str | None, host: str | None) -> bool:
    """An Origin header, if any, names the host the request was sent to."""
    if origin is None:
        return True
    parts = urllib.parse.urlsplit(origin)
    return bool(host) and parts.scheme in ("http", "https") and parts.netloc == host


def handle_post(handler: Any) -> None:
    """``do_POST`` of ``fastsched.http``'s handler, once it has checked the token."""
    server = handler.server
    path = urllib.parse.urlsplit(handler.path).path
    if not path.startswith(PREFIX):
        handler._json(404, {"error": "not found: POST goes to /actions/<name>"})
        return
    actions: Actions = server.actions
    if not actions.enabled:
        handler._json(403, {"error": NO_TOKEN})
        return
    if handler.headers.get_content_type() != "application/json":
        handler._json(415, {"error": "an action's body must be JSON (Content-Type: application/json)"})
        return
    if not same_origin(handler.headers.get("Origin"), handler.headers.get("Host")):
        handler._json(403, {"error": "an action must come from this server's own page (Origin)"})
        return
    try:
        length = int(handler.headers.get("Content-Length", "0"))
    except ValueError:
        length = -1
    if not 0 <= length <= MAX_BODY:
        handler._json(413, {"error": f"an action's body is at most {MAX_BODY} bytes"})
        return
    try:
        body = json.loads(handler.rfile.read(length) or b"{}")
    except ValueError:
        handler._json(400, {"error": "the body is not valid JSON"})
        return
    actor = f"dashboard ({handler.client_address[0]})"
    code, answer = actions.run(path[len(PREFIX):], body, actor)
    if code == 200:
        log.info("http: %s %s: %s", actor, path, answer.get("message"))
    handler._json(code, answer)
