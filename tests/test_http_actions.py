"""The dashboard's actions over HTTP (POST /actions/<name>) on a real server and both backends:
refused without the token (whatever the client), refused from another origin or as a form, and
with the token: pause/resume, retry/cancel of one job and of a filter (dry run first), each
recorded in the history as the dashboard's."""
from __future__ import annotations

import http.client
import json
import secrets
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

import fastsched
from fastsched.dsn import parse_dsn
from fastsched.http import HTTPServer, Monitor
from fastsched.jobs import JobState
from fastsched.queue import utcnow
from tests.conftest import fail_jobs

TOKEN = "tok-" + secrets.token_hex(8)


def post(server: HTTPServer, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    parts = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        connection.request("POST", path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode()
    finally:
        connection.close()


@pytest.fixture
def serve(dsn: str) -> Iterator[Any]:
    started: list[HTTPServer] = []

    def start(token: str | None) -> HTTPServer:
        server = HTTPServer("127.0.0.1:0", Monitor(parse_dsn(dsn)), token=token)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_without_a_token_nothing_can_change(serve: Any, dsn: str) -> None:
    server = serve(None)
    with fastsched.connect(dsn) as q:
        failed = q.add(30, "F", 1)
        fail_jobs(q.backend, [failed], "boom", utcnow())
        for path, body in [("/actions/pause", {"priority": "LOW"}), ("/actions/retry", {"id": failed}),
                           ("/actions/cancel", {"id": failed}), ("/actions/resume", {"all": True}),
                           ("/actions/retry", {"filter": {}})]:
            code, answer = post(server, path, body)
            assert code == 403 and "need the HTTP token" in answer["error"], (path, code, answer)
            code, answer = post(server, path, body, {"Authorization": "Bearer guess"})
            assert code == 403, (path, code, answer)
        assert q.paused() == [] and q.actions() == [] and q.get(failed).state is JobState.FAILED
    parts = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request("GET", "/actions.json")
    info = json.loads(connection.getresponse().read())
    connection.close()
    assert info["enabled"] is False and "--http-token" in info["reason"]


def test_with_the_token_only_the_servers_own_json_requests_act(serve: Any, dsn: str) -> None:
    server = serve(TOKEN)
    code, _ = post(server, "/actions/pause", {"priority": "LOW"})
    assert code == 401
    code, _ = post(server, "/actions/pause", {"priority": "LOW"}, {"Authorization": "Bearer wrong"})
    assert code == 401
    code, answer = post(server, "/actions/pause", b"priority=LOW",
                        {**AUTH, "Content-Type": "application/x-www-form-urlencoded"})
    assert code == 415, answer
    code, answer = post(server, "/actions/pause", {"priority": "LOW"}, {**AUTH, "Origin": "http://evil.example"})
    assert code == 403 and "Origin" in answer["error"]
    code, answer = post(server, "/actions/pause", b"x" * 20_000, AUTH)
    assert code == 413
    code, answer = post(server, "/actions/pause", {"priority": "URGENT"}, AUTH)
    assert code == 400 and "priority must be one of" in answer["error"]
    code, answer = post(server, "/actions/explode", {}, AUTH)
    assert code == 404
    with fastsched.connect(dsn) as q:
        assert q.paused() == [] and q.actions() == []


def test_pause_resume_retry_cancel_through_the_dashboard_api(serve: Any, dsn: str) -> None:
    server = serve(TOKEN)
    origin = {"Origin": server.url.rstrip("/"), **AUTH}
    code, answer = post(server, "/actions/pause", {"priority": "LOW", "command": "SendMail"}, origin)
    assert code == 200 and answer["message"].startswith("paused priority LOW, command SendMail"), answer
    with fastsched.connect(dsn) as q:
        (pause,) = q.paused()
        assert (pause.priority, pause.command, pause.paused_by) == (40, "SendMail", "dashboard (127.0.0.1)")
        code, answer = post(server, "/actions/resume", {"priority": "LOW"}, AUTH)
        assert code == 400 and "is not paused" in answer["error"]
        code, answer = post(server, "/actions/resume", {"priority": "LOW", "command": "SendMail"}, AUTH)
        assert code == 200 and q.paused() == []

        failed = [q.add(30, "SendMail", i) for i in range(3)]
        fail_jobs(q.backend, failed, "smtp timed out", utcnow())
        code, answer = post(server, "/actions/retry", {"id": failed[0]}, AUTH)
        assert code == 200 and q.get(failed[0]).state is JobState.WAITING, answer
        code, answer = post(server, "/actions/retry", {"id": failed[0]}, AUTH)
        assert code == 400 and "only a failed job" in answer["error"]
        code, answer = post(server, "/actions/cancel", {"id": 10**9}, AUTH)
        assert code == 404

        flt = {"filter": {"command": "SendMail", "error": "timed out", "priority": "", "older_than": None}}
        code, answer = post(server, "/actions/cancel", {**flt, "failed_only": True, "dry_run": True}, AUTH)
        assert code == 200 and (answer["total"], answer["counts"], answer["dry_run"]) == (2, {"failed": 2}, True)
        assert answer["message"] == "2 failed jobs matching command SendMail, error 'timed out' would be cancelled"
        assert {q.get(i).state for i in failed[1:]} == {JobState.FAILED}
        code, answer = post(server, "/actions/cancel", {**flt, "failed_only": True}, AUTH)
        assert code == 200 and answer["total"] == 2
        assert q.get(failed[0]).state is JobState.WAITING  # failed_only: the pending one stays
        code, answer = post(server, "/actions/retry", {"filter": {"bogus": 1}}, AUTH)
        assert code == 400 and "bogus" in answer["error"]
        history = [(a.action, a.target, a.jobs, a.actor) for a in q.actions()]
        assert history[0] == ("cancel", "command SendMail, error 'timed out' (failed jobs only)", 2,
                              "dashboard (127.0.0.1)")
        assert [h[0] for h in history] == ["cancel", "retry", "resume", "pause"]
