"""Operators' controls through the Python API, on both backends (real servers): pauses, bulk
retry/cancel/purge by filter (in bounded windows, with dry runs), cancelling a running job (the
request its master reads), the cancelled state, and the history of actions."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from test_queue import HOUR, T0, Clock, mark_done, mark_failed, mark_running, sql, stored

import fastsched
import fastsched.backends.controls
from fastsched.controls import JobFilter, Pause, paused_by_any
from fastsched.errors import InvalidInput, InvalidState, JobNotFound
from fastsched.jobs import JobState
from fastsched.priority import Priority
from tests.conftest import fail_jobs


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def q(dsn: str, clock: Clock) -> Iterator[fastsched.Queue]:
    queue = fastsched.connect(dsn, clock=clock)
    try:
        yield queue
    finally:
        queue.close()


# --- pauses --------------------------------------------------------------------------------------


def test_pause_is_stored_listed_and_resumed_by_the_same_parts(q: fastsched.Queue, dsn: str, clock: Clock) -> None:
    low = q.pause(priority="LOW", by="alice")
    assert (low.priority, low.command, low.queue, low.paused_by, low.paused_at) == (40, None, None, "alice", T0)
    clock.advance(5)
    q.pause(command="SendMail", priority=Priority.HIGH, by="bob")
    assert q.pause(priority=40, by="carol").paused_by == "alice"  # pausing twice keeps the first
    other = fastsched.connect(dsn)  # another process, another host: the pauses are in the database
    try:
        assert [(p.priority, p.command, p.paused_by) for p in other.paused()] == [
            (20, "SendMail", "bob"), (40, None, "alice")
        ]
    finally:
        other.close()
    assert q.resume(priority="HIGH") == 0  # not a pause: HIGH alone was never paused
    assert q.resume(priority="HIGH", command="SendMail", by="dave") == 1
    assert [p.describe() for p in q.paused()] == ["priority LOW"]
    assert q.resume(everything=True) == 1 and q.paused() == []
    history = [(a.action, a.target, a.actor) for a in q.actions()]
    assert history[:3] == [
        ("resume", "every pause", history[0][2]),
        ("resume", "priority HIGH, command SendMail", "dave"),
        ("pause", "priority HIGH, command SendMail", "bob"),
    ]
    assert ("pause", "priority LOW", "alice") in history
    assert not any(a[2] == "carol" for a in history)  # the repeated pause changed nothing


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "a pause needs a priority, a command or a queue"),
        ({"priority": "URGENT"}, "priority must be one of CRITICAL"),
        ({"priority": 35}, "priority must be one of 10, 20"),
        ({"command": "rm -rf"}, "contains ' '"),
        ({"queue": ""}, "queue must not be empty"),
        ({"queue": "x" * 101}, "queue is 101 characters long"),
    ],
)
def test_pause_refuses_bad_parts_and_stores_nothing(q: fastsched.Queue, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        q.pause(**kwargs)  # type: ignore[arg-type]
    assert q.paused() == [] and q.actions() == []


def test_a_narrow_pause_sets_its_jobs_aside_and_resume_hands_them_back(
    q: fastsched.Queue, dsn: str, clock: Clock
) -> None:
    mail = [q.add(40, "SendMail", i) for i in range(3)]
    other = q.add(40, "Index", 1)
    running = q.add(40, "SendMail", 99)
    mark_running(dsn, running)
    q.pause(command="SendMail")
    low = {s.priority: s for s in q.stats()}[40]
    assert (low.waiting, low.running, low.paused) == (1, 1, 3)  # the paused ones are neither waiting nor claimable
    assert {q.get(i).state for i in mail} == {JobState.WAITING}  # still pending, still theirs to run later
    assert q.get(running).state is JobState.RUNNING and q.get(running).pid == 4242  # running work is not touched
    q.backend.fail_malformed(clock())  # the maintenance's repair of hand-released rows leaves them aside
    assert {s.priority: s for s in q.stats()}[40].paused == 3
    q.pause(priority="LOW", command="SendMail")  # a second pause holding them too
    assert q.resume(command="SendMail") == 1
    assert {s.priority: s for s in q.stats()}[40].paused == 3  # still held
    assert q.resume(priority="LOW", command="SendMail") == 1
    low = {s.priority: s for s in q.stats()}[40]
    assert (low.waiting, low.paused) == (4, 0)
    assert q.get(other).state is JobState.WAITING


def test_the_sweep_sets_aside_jobs_added_after_a_narrow_pause(
    q: fastsched.Queue, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastsched.backends.controls, "BULK_WINDOW", 4)
    before = q.add(30, "Early", 1)
    mark = q.backend.park_added(0)
    assert mark == (before, 0)  # no narrow pause: nothing to do, the place moves on
    q.pause(priority="LOW")  # a whole priority: the claims skip it, nothing to set aside
    assert q.backend.park_added(mark[0]) == (before, 0)
    q.pause(command="SendMail", queue="mail")
    added = q.add_many([({"queue": "mail"}, "SendMail", i) for i in range(6)] + [({"queue": "x"}, "SendMail", 9)])
    after, parked = q.backend.park_added(before)
    assert (after, parked) == (before + 4, 4)  # a bounded step
    assert q.backend.park_added(after) == (added[-1], 2)
    assert {s.priority: s for s in q.stats()}[30].paused == 6
    assert q.resume(command="SendMail", queue="mail") == 1
    assert {s.priority: s for s in q.stats()}[30].paused == 0


def test_a_pause_matches_every_part_it_sets() -> None:
    pauses = [Pause.of(priority="LOW"), Pause.of(command="SendMail", queue="mail")]
    assert paused_by_any(pauses, 40, "Anything") is pauses[0]
    assert paused_by_any(pauses, 20, "SendMail", "mail") is pauses[1]
    assert paused_by_any(pauses, 20, "SendMail", "default") is None
    assert paused_by_any(pauses, 20, "Other", "mail") is None
    assert pauses[0].whole_priority and not pauses[1].whole_priority


# --- bulk actions ---------------------------------------------------------------------------------


def _failed(q: fastsched.Queue, command: str, error: str, when: dt.datetime, priority: int = 30) -> int:
    job_id = q.add(priority, command, error, when.isoformat())
    mark_failed(q, job_id, when, error)
    return job_id


def test_retry_by_filter_with_a_dry_run_first(q: fastsched.Queue, dsn: str, clock: Clock) -> None:
    old_mail = _failed(q, "SendMail", "smtp: connection timed out", T0 - 3 * HOUR)
    new_mail = _failed(q, "SendMail", "smtp: connection timed out", T0)
    refused = _failed(q, "SendMail", "smtp: 550 mailbox full", T0 - 3 * HOUR)
    other = _failed(q, "Notify", "smtp: connection timed out", T0 - 3 * HOUR, priority=20)
    waiting = q.add(30, "SendMail", "not failed")
    assert q.retry_all(command="SendMail", error="timed out", dry_run=True) == 2
    assert {q.get(i).state for i in (old_mail, new_mail, refused, other)} == {JobState.FAILED}  # nothing changed
    assert q.actions() == []  # a dry run is not an action
    assert q.retry_all(command="SendMail", error="timed out", older_than=3600, by="alice") == 1
    assert q.get(old_mail).state is JobState.WAITING and q.get(old_mail).retrial == 0
    assert q.get(new_mail).state is JobState.FAILED and q.get(refused).state is JobState.FAILED
    assert q.retry_all(priority="HIGH") == 1 and q.get(other).state is JobState.WAITING
    assert q.get(waiting).state is JobState.WAITING
    (latest, first) = q.actions()[:2]
    assert (first.action, first.actor, first.jobs, first.at) == ("retry", "alice", 1, T0)
    assert first.target == "command SendMail, error 'timed out', older than 3600 s"
    assert (latest.target, latest.jobs) == ("priority HIGH", 1)


def test_retry_by_filter_merges_into_an_identical_pending_job(q: fastsched.Queue) -> None:
    failed = q.add(30, "Twin", 1)
    mark_failed(q, failed, T0)
    pending = q.add(30, "Twin", 1)  # the failed job holds no dedup key, so this is a new job
    assert pending != failed
    assert q.retry_all(command="Twin") == 1  # back in the queue: as the identical pending job
    with pytest.raises(JobNotFound):
        q.get(failed)
    assert q.get(pending).state is JobState.WAITING


def test_cancel_by_filter_deletes_pending_and_failed_and_asks_for_the_running(
    q: fastsched.Queue, dsn: str, clock: Clock
) -> None:
    waiting = q.add(40, "Crawl", 1)
    deferred = q.add({"priority": 40, "delay": 600}, "Crawl", 2)
    failed = _failed(q, "Crawl", "404", T0, priority=40)
    running = q.add(40, "Crawl", 3)
    mark_running(dsn, running)
    keep = [q.add(40, "Index", 1), q.add(30, "Crawl", 4)]
    done = q.add(40, "Crawl", 5)
    mark_done(dsn, done)
    result = q.bulk("cancel", JobFilter.of(command="Crawl", priority="LOW"), dry_run=True)
    assert result.counts == {"pending": 2, "running": 1, "failed": 1} and result.total == 4
    assert len(stored(dsn)) == 7
    result = q.bulk("cancel", JobFilter.of(command="Crawl", priority="LOW"), by="ops")
    assert result.counts == {"pending": 2, "running": 1, "failed": 1}, result
    for gone in (waiting, deferred, failed):
        with pytest.raises(JobNotFound):
            q.get(gone)
    assert q.get(running).state is JobState.RUNNING  # its master stops it
    assert q.backend.cancel_request(running) == ("ops", T0)
    assert [q.get(i).state for i in keep] == [JobState.WAITING, JobState.WAITING]
    assert q.get(done).state is JobState.DONE
    assert q.cancel_all(command="Crawl", priority="LOW") == 0  # asked already: nothing more to do
    action = q.actions()[1]
    assert (action.action, action.target, action.jobs) == ("cancel", "command Crawl, priority LOW", 4)


def test_purge_by_filter_and_dry_run(q: fastsched.Queue, dsn: str) -> None:
    ids = [q.add({"created": T0 - 2 * HOUR}, command, i) for i, command in enumerate(["A", "A", "B", "A"])]
    for job_id in ids[:3]:
        mark_done(dsn, job_id)
    mark_failed(q, ids[3], T0 - 2 * HOUR)
    assert q.purge(command="A", dry_run=True) == 2
    assert len(stored(dsn)) == 4
    assert q.purge(command="A") == 2
    assert [row[1] for row in stored(dsn)] == ["B", "A"]
    assert q.purge(command="A", include_failed=True, error="boom") == 1
    assert [row[1] for row in stored(dsn)] == ["B"]


def test_bulk_actions_by_queue(q: fastsched.Queue, dsn: str) -> None:
    mail = [q.add({"queue": "mail"}, "Send", i) for i in range(3)]
    other = q.add(30, "Send", 99)
    fail_jobs(q.backend, [*mail, other], "boom", T0)
    assert q.retry_all(queue="mail", dry_run=True) == 3
    assert q.retry_all(queue="mail") == 3
    assert {q.get(i).state for i in mail} == {JobState.WAITING} and q.get(other).state is JobState.FAILED
    assert q.cancel_all(queue="mail", command="Send") == 3 and q.get(other).state is JobState.FAILED
    assert q.actions()[0].target == "command Send, queue mail"


def test_bulk_actions_work_window_by_window(
    q: fastsched.Queue, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastsched.backends.controls, "BULK_WINDOW", 7)
    ids = q.add_many((30, "Bulk", i) for i in range(50))
    fail_jobs(q.backend, ids[::2], "bad", T0)  # 25 failed among 50, spread over every window
    sql(dsn, "DELETE FROM workerqueue WHERE id IN (?, ?, ?)", (ids[1], ids[2], ids[3]))  # holes in the ids
    assert q.retry_all(dry_run=True) == 24
    assert q.retry_all() == 24
    assert {q.get(i).state for i in ids[::2] if i != ids[2]} == {JobState.WAITING}
    assert q.cancel_all(command="Bulk") == 47 and stored(dsn) == []


def test_bulk_filters_are_checked_before_anything_changes(q: fastsched.Queue) -> None:
    failed = _failed(q, "X", "e", T0)
    for kwargs, message in [
        ({"command": "a b"}, "contains ' '"),
        ({"priority": 99}, "priority must be one of"),
        ({"error": ""}, "error must be a text"),
        ({"older_than": -1}, "older_than must not be negative"),
        ({"older_than": "1h"}, "older_than must be a timedelta"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            q.retry_all(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="bulk action must be"):
        q.bulk("delete", JobFilter())
    assert q.get(failed).state is JobState.FAILED and q.actions() == []


# --- cancelled jobs -------------------------------------------------------------------------------


def _cancel_running(q: fastsched.Queue, dsn: str, job_id: int, by: str) -> None:
    """What the master does with a request once the job's child is stopped (pool side: test_pool_controls)."""
    sql(dsn, "INSERT INTO fastsched_host (name) VALUES ('h1')")
    (host_id,) = sql(dsn, "SELECT id FROM fastsched_host WHERE name = 'h1'")[0]
    sql(dsn, "UPDATE workerqueue SET pid = 99, host_id = ? WHERE id = ?", (host_id, job_id))
    q.cancel(job_id, by=by)
    q.backend.write_outcomes("h1", T0, fastsched.jobs.Outcomes(cancelled=[job_id]))


def test_a_cancelled_job_is_kept_like_a_failed_one_and_never_retried(
    q: fastsched.Queue, dsn: str, clock: Clock
) -> None:
    job_id = q.add(30, "Long", 1)
    _cancel_running(q, dsn, job_id, "alice@ops")
    job = q.get(job_id)
    assert job.state is JobState.CANCELLED and job.finished == T0 and job.last_error == "cancelled by alice@ops"
    assert q.backend.cancel_request(job_id) is None  # the request went with the outcome
    with pytest.raises(InvalidState, match="cancelled"):
        q.retry(job_id)
    with pytest.raises(InvalidState, match="cancelled"):
        q.cancel(job_id)
    assert q.retry_all() == 0
    assert q.add(30, "Long", 1) != job_id  # it holds no dedup key
    by = {s.priority: s for s in q.stats()}
    assert by[30].cancelled == 1 and by[30].failed == 0
    clock.advance(1)
    assert q.purge(older_than=0) == 0  # kept like failed jobs
    assert q.purge(older_than=0, include_failed=True) == 1


def test_a_claim_of_a_priority_paused_whole_reads_no_row_and_narrow_pauses_keep_the_claim_index(
    mysql_dsn: str,
) -> None:
    import pymysql

    from fastsched.backends.sqlfiles import expand_queues, load_queries
    from fastsched.dsn import parse_dsn

    queries = load_queries("mysql")
    with fastsched.connect(mysql_dsn) as queue:
        queue.add_many([(40, "SendMail", i) for i in range(50)])
        # enough rows of other priorities that the planner's choice is the index's, not a tiny table's scan
        queue.add_many([(p, "Other", i) for p in (10, 20, 30, 50) for i in range(1500)])
        queue.pause(command="SendMail")
        queue.pause(priority="LOW")
    d = parse_dsn(mysql_dsn)
    conn = pymysql.connect(host=d.host, port=d.port, user=d.user, password=d.password or "", database=d.database)
    try:
        cur = conn.cursor(pymysql.cursors.DictCursor)
        cur.execute("ANALYZE TABLE workerqueue")
        cur.fetchall()
        params = {"now": T0, "limit": 50, "cap": 100, "alive_after": T0}
        cur.execute("EXPLAIN " + queries["claim_priority"], {**params, "priority": 40})
        assert [r["Extra"] for r in cur.fetchall() if r["id"] == 1] == ["Impossible WHERE"]
        cur.execute("EXPLAIN " + queries["claim_priority"], {**params, "priority": 30})
        (row,) = [r for r in cur.fetchall() if r["table"] == "workerqueue"]
        assert row["key"] == "claim" and "filesort" not in (row["Extra"] or ""), row
        cur.execute("EXPLAIN " + queries["plan_counts"], params)
        rows = [r for r in cur.fetchall() if r["table"] == "workerqueue"]
        assert len(rows) == 5 and {r["key"] for r in rows} == {"claim"}, rows  # LOW's count reads nothing
        # The same for a master with --queues, whose claims read one claim_queue range per queue.
        cur.execute("EXPLAIN " + queries["claim_priority_queue"], {**params, "priority": 40, "queue": "default"})
        assert [r["Extra"] for r in cur.fetchall() if r["id"] == 1] == ["Impossible WHERE"]
        cur.execute("EXPLAIN " + queries["claim_priority_queue"], {**params, "priority": 30, "queue": "default"})
        (row,) = [r for r in cur.fetchall() if r["table"] == "workerqueue"]
        assert row["key"] == "claim_queue" and "filesort" not in (row["Extra"] or ""), row
        cur.execute("EXPLAIN " + expand_queues(queries["plan_counts_queues"], ("default",)),
                    {**params, "queues": "default"})
        rows = [r for r in cur.fetchall() if r["table"] == "workerqueue"]
        assert len(rows) == 5 and {r["key"] for r in rows} == {"claim_queue", "claim"}, rows
    finally:
        conn.close()


def test_status_gives_a_priority_paused_whole_no_share_and_no_free_worker(q: fastsched.Queue, clock: Clock) -> None:
    from fastsched import status

    def scheduler() -> tuple[dict[str, object], dict[str, object]]:
        current = status.collect(q.backend, clock())
        low = next(p for p in current["priorities"] if p["name"] == "LOW")
        return low, current["scheduler"]

    q.add(Priority.LOW, "Work", 1)
    q.pause(priority="LOW")
    low, sched = scheduler()
    # Its jobs still wait (and show so), but no master claims them: the masters plan without it.
    assert (low["waiting"], low["paused"], low["in_play"], low["limit"]) == (1, True, False, None)
    assert (sched["next_priority"], sched["priorities_in_play"]) == (None, 0)
    assert "the next free worker goes to nobody (nothing claimable waits)" in status.render_text(
        status.collect(q.backend, clock())
    )
    q.add(Priority.MEDIUM, "Work", 2)
    assert scheduler()[1]["next_priority"] == "MEDIUM"
    q.resume(priority="LOW")
    low, sched = scheduler()
    assert (low["in_play"], sched["priorities_in_play"]) == (True, 2)


def test_metrics_show_the_pauses_and_the_jobs_they_hold(q: fastsched.Queue, dsn: str) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from fastsched.dsn import parse_dsn
    from fastsched.metrics import Monitor

    q.add(Priority.LOW, "Work", 1)
    q.add({"priority": Priority.MEDIUM, "queue": "mail"}, "SendMail", 2)
    q.add({"priority": Priority.MEDIUM, "queue": "mail"}, "SendMail", 3)
    q.pause(priority="LOW")
    q.pause(command="SendMail", queue="mail")
    monitor = Monitor(parse_dsn(dsn))
    try:
        text = generate_latest(monitor.registry).decode()
    finally:
        monitor.close()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }
    assert samples[("fastsched_paused", (("command", ""), ("priority", "LOW"), ("queue", "")))] == 1
    assert samples[("fastsched_paused", (("command", "SendMail"), ("priority", ""), ("queue", "mail")))] == 1
    assert samples[("fastsched_priority_paused", (("priority", "LOW"),))] == 1
    assert samples[("fastsched_priority_paused", (("priority", "MEDIUM"),))] == 0
    # The jobs a narrow pause set aside are in no state of fastsched_queue_jobs: they are counted here.
    assert samples[("fastsched_queue_jobs", (("priority", "MEDIUM"), ("state", "waiting")))] == 0
    assert samples[("fastsched_paused_jobs", (("priority", "MEDIUM"),))] == 2
    assert samples[("fastsched_paused_jobs", (("priority", "LOW"),))] == 0  # paused whole: still waiting


def test_the_module_functions_control_the_default_queue(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTSCHED_DSN", dsn)
    fastsched.queue.reset_default()
    try:
        with pytest.raises(InvalidInput, match="or everything=True"):
            fastsched.resume()
        assert fastsched.pause(priority="LOW", by="ops").paused_by == "ops"
        assert [p.describe() for p in fastsched.paused()] == ["priority LOW"]
        assert fastsched.resume("LOW") == 1 and fastsched.paused() == []
        job_id = fastsched.add(Priority.HIGH, "SendMail", 1)
        assert fastsched.cancel_all(command="SendMail", dry_run=True) == 1
        assert fastsched.cancel_all(command="SendMail") == 1
        with pytest.raises(JobNotFound):
            fastsched.get(job_id)
        assert fastsched.retry_all(command="SendMail") == 0 and fastsched.failed() == []
        assert [a.action for a in fastsched.actions(10)] == ["retry", "cancel", "resume", "pause"]
    finally:
        fastsched.queue.reset_default()
