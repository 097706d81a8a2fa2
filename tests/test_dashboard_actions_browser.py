"""The dashboard's buttons in a real headless Chromium, driven as a person would (real clicks, typed
text, the modal confirmation) through the DevTools protocol (tests/cdp.py), on MariaDB.

With the token: retry of one failed job (first backed out of, then confirmed), retry of a filter
(the confirmation says the dry run's count), pause and resume of a priority, each showing what
changed and recorded in the history table. Without a token the page is read-only and the server
refuses an action the page is made to send anyway. Without a browser the test fails: it never skips.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from cdp import Browser

import fastsched
from fastsched.dsn import parse_dsn
from fastsched.http import HTTPServer, Monitor
from fastsched.jobs import JobState
from fastsched.queue import utcnow
from tests.conftest import fail_jobs

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (as .ci/run does)", pytrace=False)
    profile = tempfile.mkdtemp(prefix="fscdp")
    started = Browser(CHROMIUM, profile)
    try:
        yield started
    finally:
        started.close()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def serve(mysql_dsn: str) -> Iterator[Any]:
    started: list[HTTPServer] = []

    def start(token: str | None) -> HTTPServer:
        server = HTTPServer("127.0.0.1:0", Monitor(parse_dsn(mysql_dsn)), token=token)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _failed(q: fastsched.Queue, command: str, error: str) -> int:
    job_id = q.add(30, command, error)
    assert fail_jobs(q.backend, [job_id], error, utcnow()) == 1
    return job_id


def confirm_says(browser: Browser) -> str:
    browser.wait("document.getElementById('confirm').open", "the confirmation dialog")
    return browser.text("#confirm-text")


def result(browser: Browser, before: str) -> str:
    """The result line once it has changed from ``before``."""
    return str(browser.wait(
        f"(() => {{ const t = document.getElementById('action-result').textContent;"
        f" return t && t !== {json.dumps(before)} ? t : null; }})()", "the action's result"))


def test_the_dashboard_acts_with_the_token_after_confirmation(browser: Browser, serve: Any, mysql_dsn: str) -> None:
    token = "tok-" + secrets.token_hex(8)
    server = serve(token)
    q = fastsched.connect(mysql_dsn)
    mail = [_failed(q, "SendMail", f"smtp {i}: timed out") for i in range(2)]
    notify = _failed(q, "Notify", "refused")
    waiting = q.add(40, "Crawl", 1)

    browser.open(server.url + "?token=" + token)  # the token becomes a cookie; the page loads without it in the URL
    assert browser.evaluate("location.search") == ""
    browser.wait("document.querySelectorAll('#failed tr.failed-job').length === 3", "the three failed jobs")
    browser.wait("document.getElementById('controls-mode').getAttribute('data-enabled') === 'true'", "actions on")

    # One failed job: backed out of first, then confirmed.
    browser.click(f'#failed button[data-action="retry-job"][data-id="{notify}"]')
    assert confirm_says(browser) == f"Retry failed job #{notify}?"
    browser.click("#confirm-no")
    assert result(browser, "") == "Nothing was changed."
    assert q.get(notify).state is JobState.FAILED
    browser.click(f'#failed button[data-action="retry-job"][data-id="{notify}"]')
    confirm_says(browser)
    browser.click("#confirm-yes")
    assert result(browser, "Nothing was changed.") == f"Done: job {notify} is back in the queue."
    assert q.get(notify).state is JobState.WAITING

    # A filter: the confirmation gives the dry run's count.
    browser.type_into("#f-command", "SendMail")
    browser.type_into("#f-error", "timed out")
    browser.click('button[data-action="retry-filter"]')
    assert confirm_says(browser) == "Retry 2 failed jobs matching command SendMail, error 'timed out'?"
    assert {q.get(i).state for i in mail} == {JobState.FAILED}  # the dry run changed nothing
    shown = browser.text("#action-result")
    browser.click("#confirm-yes")
    assert result(browser, shown) == (
        "Done: 2 failed jobs matching command SendMail, error 'timed out' put back in the queue."
    )
    assert {q.get(i).state for i in mail} == {JobState.WAITING}
    browser.wait("document.querySelectorAll('#failed tr.failed-job').length === 0", "no failed job left")

    # Pause and resume a priority.
    for field in ("#f-command", "#f-error"):
        browser.type_into(field, "")
    browser.evaluate("(() => { const s = document.getElementById('f-priority'); s.focus(); return true; })()")
    browser.evaluate("(() => { const s = document.getElementById('f-priority'); s.value = 'LOW';"
                     " s.dispatchEvent(new Event('change')); return s.value; })()")
    browser.click('button[data-action="pause"]')
    assert confirm_says(browser).startswith("Pause priority LOW? No master claims that work")
    shown = browser.text("#action-result")
    browser.click("#confirm-yes")
    assert result(browser, shown).startswith("Done: paused priority LOW")
    browser.wait("document.querySelector('#priorities tr[data-priority=\"LOW\"]').getAttribute('data-paused')"
                 " === 'true'", "LOW shown as paused")
    assert "PAUSED priority LOW" in browser.text("#pauses")
    assert [(p.priority, p.paused_by) for p in q.paused()] == [(40, "dashboard (127.0.0.1)")]
    assert q.get(waiting).state is JobState.WAITING  # pausing touches no job
    browser.click('#pauses button[data-action="resume"]')
    assert confirm_says(browser) == "Resume priority LOW?"
    shown = browser.text("#action-result")
    browser.click("#confirm-yes")
    assert result(browser, shown) == "Done: resumed priority LOW."
    assert q.paused() == []

    history = browser.wait(
        "(() => { const rows = [...document.querySelectorAll('#history tr.action')];"
        " return rows.length === 4 ? rows.map(r => [r.getAttribute('data-action'), r.getAttribute('data-jobs')]) : null; })()",
        "four actions in the history table",
    )
    assert history == [["resume", "0"], ["pause", "0"], ["retry", "2"], ["retry", "1"]]
    q.close()


def test_without_a_token_the_dashboard_is_read_only_and_the_server_refuses(
    browser: Browser, serve: Any, mysql_dsn: str
) -> None:
    server = serve(None)
    q = fastsched.connect(mysql_dsn)
    failed = _failed(q, "Notify", "refused")
    browser.open(server.url)
    browser.wait("document.querySelectorAll('#failed tr.failed-job').length === 1", "the failed job")
    mode = browser.wait(
        "document.getElementById('controls-mode').getAttribute('data-enabled') === 'false'"
        " && document.getElementById('controls-mode').textContent", "read-only mode")
    assert "read-only" in mode and "--http-token" in mode
    assert browser.evaluate("[...document.querySelectorAll('button.act')].every(b => b.disabled)") is True
    # The page made to send one anyway: the server refuses it.
    answer = browser.evaluate(
        f"fetch('/actions/retry', {{method: 'POST', headers: {{'Content-Type': 'application/json'}},"
        f" body: JSON.stringify({{id: {failed}}})}}).then(async r => [r.status, (await r.json()).error])"
    )
    assert answer[0] == 403 and "need the HTTP token" in answer[1]
    assert q.get(failed).state is JobState.FAILED and q.actions() == []
    q.close()
