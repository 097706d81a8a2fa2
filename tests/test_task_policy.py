"""Tasks that carry their own policy (issue 13): the decorator's options, Fail and Retry, ``.add``,
``async def`` tasks, on_child_start, queues on a job and dedup="waiting"; on real servers."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fastsched
from fastsched import child_process, protocol, tasks
from fastsched.backends import open_backend
from fastsched.backends.base import PlanCounts, QueueStats
from fastsched.backends.sqlfiles import expand_queues
from fastsched.errors import InvalidInput, TaskError
from fastsched.jobs import JobState, Outcomes
from fastsched.priority import Priority
from fastsched.queue import reset_default
from tests.test_pool import all_done, pools, wait_for  # noqa: F401 - pools is a fixture

NOW = dt.datetime(2030, 1, 2, 3, 4, 5)


@pytest.fixture
def registry() -> tasks.Registry:
    return tasks.Registry()


@pytest.fixture
def q(dsn: str) -> Iterator[fastsched.Queue]:
    queue = fastsched.connect(dsn)
    yield queue
    queue.close()


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- the decorator -------------------------------------------------------------------------------


def test_the_decorator_keeps_both_forms_and_records_the_options(registry):
    @registry.task
    def plain(x):
        return x * 2

    class Gone(Exception):
        pass

    @registry.task("SendMail", priority=fastsched.PRIORITY_HIGH, retry_limit=3, retry_delay=30,
                   timeout=2.5, no_retry=(Gone, KeyError), queue="mail")
    def send_mail(to):
        return f"sent to {to}"

    assert plain(21) == 42 and send_mail("ann") == "sent to ann"  # callable directly: runs inline
    assert isinstance(send_mail, fastsched.Task) and send_mail.__name__ == "send_mail"
    assert registry.get("SendMail") is send_mail and registry.as_dict()["SendMail"] is send_mail.function
    assert registry.policy("plain") is None
    policy = registry.policy("SendMail")
    assert policy == fastsched.TaskPolicy(priority=Priority.HIGH, retry_limit=3, retry_delay=30.0,
                                          timeout=2.5, no_retry=(Gone, KeyError), queue="mail")
    assert policy.describe() == {"priority": 20, "retry_limit": 3, "retry_delay": 30.0, "timeout": 2.5,
                                 "no_retry": ["Gone", "KeyError"], "queue": "mail"}


def test_retry_delay_takes_friendica_seconds_or_a_callable(registry):
    def backoff(retrial: int) -> float:
        return 10.0 * retrial

    assert registry.task("A", retry_delay="friendica")(lambda: None).policy.retry_delay == "friendica"
    assert registry.task("B", retry_delay=0)(lambda: None).policy.retry_delay == 0.0
    assert registry.task("C", retry_delay=backoff)(lambda: None).policy.retry_delay is backoff


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"priority": 35}, "priority"),
        ({"retry_limit": -1}, "retry_limit must be an int >= 0"),
        ({"retry_limit": True}, "retry_limit must be an int >= 0"),
        ({"retry_delay": "soon"}, "retry_delay must be 'friendica'"),
        ({"retry_delay": -5}, "retry_delay must be >= 0"),
        ({"retry_delay": float("nan")}, "retry_delay must be a finite number"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"timeout": "10"}, "timeout must be a finite number"),
        ({"no_retry": ValueError("x")}, "no_retry must be an exception class"),
        ({"no_retry": (ValueError, int)}, "no_retry must be an exception class"),
        ({"queue": "mail box"}, "queue 'mail box' contains ' '"),
        ({"queue": ""}, "queue must not be empty"),
    ],
)
def test_bad_options_are_refused_naming_the_task_and_the_option(registry, options, message):
    with pytest.raises(TaskError, match=message) as info:
        registry.task("Bad", **options)
    assert "'Bad'" in str(info.value)
    assert "Bad" not in registry


def test_a_generator_function_is_refused_its_body_would_never_run(registry):
    def lines_of(path):
        yield from path.splitlines()

    async def events():
        yield 1

    with pytest.raises(TaskError, match="task 'lines_of': .*is a generator function: calling it would not run"):
        registry.task(lines_of)
    with pytest.raises(TaskError, match="task 'Events': .*is an async generator function"):
        registry.task("Events", priority=20)(events)
    with pytest.raises(TaskError, match="is a generator function"):
        registry.periodic(60)(lines_of)
    with pytest.raises(TaskError, match="is a generator function"):
        registry.register("Lines", lines_of)
    assert len(registry) == 0


def test_an_unknown_option_is_a_type_error_naming_the_task_and_the_options(registry):
    with pytest.raises(TypeError, match="task 'Bad': unknown option 'retries': the options are priority, "):
        registry.task("Bad", retries=3)

    def send(): ...

    with pytest.raises(TypeError, match="task 'send': unknown option 'max_retries'"):
        registry.task(send, max_retries=3)
    assert "Bad" not in registry and "send" not in registry


def test_add_queues_the_task_with_its_defaults_on_the_default_queue(dsn, monkeypatch, registry):
    monkeypatch.setenv("FASTSCHED_DSN", dsn)
    reset_default()

    @fastsched.task("TestPolicyAddMail", priority=fastsched.PRIORITY_LOW, queue="mail")
    def mail(to, subject):
        return None

    @fastsched.task
    def test_policy_add_plain(n):
        return None

    try:
        mail_id = mail.add("ann@example.org", "hello")
        plain_id = test_policy_add_plain.add(5)
        job = fastsched.get(mail_id)
        assert (job.command, job.args, job.priority, job.queue, job.state) == (
            "TestPolicyAddMail", ["ann@example.org", "hello"], 40, "mail", JobState.WAITING)
        plain = fastsched.get(plain_id)
        assert (plain.command, plain.args, plain.priority, plain.queue) == (
            "test_policy_add_plain", [5], 30, "default")
        assert mail.add("ann@example.org", "hello") == mail_id  # dedup as for any add
        with pytest.raises(InvalidInput, match="JSON-serializable"):
            mail.add(object(), "x")
    finally:
        reset_default()


# --- in the child: Fail, Retry, no_retry and async def -------------------------------------------


class Sent(list):
    def __call__(self, message):
        self.append(message)


def run(jobs, registry):
    sent = Sent()
    processed = child_process.run_batch(3, jobs, registry.as_dict(), [-1.0, -1.0, 0.0, 0.0, -1.0], [0], sent, registry.policies())
    return processed, [message[2:] for message in sent]


def test_fail_retry_and_no_retry_say_how_the_job_ends(registry):
    class Permanent(Exception):
        pass

    @registry.task
    def fails():
        raise fastsched.Fail("no such recipient")

    @registry.task
    def retries(delay):
        raise fastsched.Retry(delay=delay)

    @registry.task(no_retry=Permanent)
    def permanent():
        raise Permanent("the account is gone")

    @registry.task
    def ordinary():
        raise Permanent("not in this task's no_retry")

    jobs = [(1, "fails", "[]", 30, 0), (2, "retries", "[7.5]", 30, 0), (3, "retries", "[null]", 30, 0),
            (4, "permanent", "[]", 30, 0), (5, "ordinary", "[]", 30, 0)]
    processed, notes = run(jobs, registry)
    assert processed == 5
    assert notes[:3] == [(0, protocol.FATAL, "no such recipient"), (1, protocol.DEFER, 7.5), (2, protocol.DEFER, None)]
    assert notes[3][:2] == (3, protocol.FATAL) and notes[3][2].startswith("Permanent: the account is gone")
    assert notes[4][:2] == (4, protocol.ERROR) and "Traceback" in notes[4][2]


def test_retry_checks_its_delay():
    with pytest.raises(InvalidInput, match="Retry: delay must not be negative"):
        fastsched.Retry(delay=-1)
    with pytest.raises(InvalidInput, match="Retry: delay must be None or a finite number"):
        fastsched.Retry(delay=float("inf"))


def test_an_async_task_runs_to_completion_on_one_loop_per_child(registry):
    ran: list[tuple[int, int]] = []

    @registry.task
    async def fetch(n):
        await asyncio.sleep(0)
        ran.append((n, id(asyncio.get_running_loop())))

    @registry.task
    async def broken():
        await asyncio.sleep(0)
        raise ValueError("inside the coroutine")

    processed, notes = run([(1, "fetch", "[1]", 30, 0), (2, "broken", "[]", 30, 0), (3, "fetch", "[2]", 30, 0)],
                           registry)
    assert processed == 3
    assert [n for n, _ in ran] == [1, 2], "every coroutine ran its body"
    assert ran[0][1] == ran[1][1], "the child's loop is reused"
    assert len(notes) == 1 and notes[0][:2] == (1, protocol.ERROR) and "inside the coroutine" in notes[0][2]


# --- in a real pool ------------------------------------------------------------------------------


def test_async_fail_and_no_retry_jobs_in_a_pool_on_child_start_first(dsn, q, tmp_path, pools):  # noqa: F811
    out = tmp_path / "out.jsonl"
    hooks = tmp_path / "hooks.jsonl"
    async_ids = [q.add(30, "async_record", str(out), n) for n in range(6)]
    failing = q.add(30, "async_fail", str(out))
    fail_id = q.add(30, "fail_at_once", str(out))
    permanent_id = q.add(30, "permanent", str(out))
    ids = [*async_ids, failing, fail_id, permanent_id]
    pool = pools(dsn, imports=["tests.taskjobs"], retry_limit=0, env={"TASKJOBS_HOOK_FILE": str(hooks)})
    try:
        wait_for(lambda: all_done(q, ids), what="every job to end")
    finally:
        pool.stop()
    records = lines(out)
    ran = sorted(r["n"] for r in records if r["event"] == "async")
    assert ran == list(range(6)), "no async job is done without its body having run"
    assert all(q.get(i).state == JobState.DONE for i in async_ids)
    assert all(r["hook_ran"] for r in records if r["event"] == "async"), "on_child_start runs before the jobs"
    assert {r["pid"] for r in lines(hooks)} >= {r["pid"] for r in records}
    assert q.get(failing).state == JobState.FAILED and "async body failed" in (q.get(failing).last_error or "")
    for job_id, reason in ((fail_id, "no such recipient"), (permanent_id, "Permanent: the account is gone")):
        job = q.get(job_id)
        assert job.state == JobState.FAILED and reason in (job.last_error or ""), job
        assert job.retrial == 0
    assert [r["event"] for r in records].count("fail") == 1 and [r["event"] for r in records].count("permanent") == 1


# --- queues and dedup="waiting" on the backends --------------------------------------------------


def test_a_job_belongs_to_the_queue_its_add_names(q):
    mail = q.add({"priority": fastsched.PRIORITY_HIGH, "queue": "mail"}, "SendMail", "ann")
    plain = q.add(30, "SendMail", "bob")
    assert q.get(mail).queue == "mail" and q.get(plain).queue == "default"
    assert q.add_many([({"queue": "a.b:c/d-e_f"}, "X", 1), (30, "X", 2)]) == [plain + 1, plain + 2]
    assert [q.get(i).queue for i in (plain + 1, plain + 2)] == ["a.b:c/d-e_f", "default"]
    assert q.add({"queue": "mail"}, "SendMail", "ann") == mail, "dedup is on command, args and queue"
    assert q.add({"queue": "other"}, "SendMail", "ann") not in (mail, plain), "another queue's twin is a job"


def claim_all(q: fastsched.Queue) -> list[int]:
    backend = q.backend
    claimed = []
    for rank in range(5):
        wanted = [0] * 5
        wanted[rank] = 100
        for batch in backend.claim(wanted, [4242] * 100, "policy-host", 100, fastsched.queue.utcnow()):
            claimed += [job.id for job in batch.jobs]
    return claimed


def test_dedup_waiting_is_absorbed_only_by_a_job_that_has_not_started(q):
    first = q.add(30, "Sync", 1)
    assert q.add({"dedup": "waiting"}, "Sync", 1) == first, "an identical waiting job absorbs it"
    assert claim_all(q) == [first]  # now running
    assert q.add(30, "Sync", 1) == first, "the default still returns the running job"
    second = q.add({"dedup": "waiting"}, "Sync", 1)
    assert second != first and q.get(second).state == JobState.WAITING
    assert q.add({"dedup": "waiting"}, "Sync", 1) == second
    assert q.add(30, "Sync", 1) == second
    assert q.add_many([({"dedup": "waiting"}, "Sync", 1), ({"dedup": "waiting"}, "Sync", 2)])[0] == second
    assert q.get(first).state == JobState.RUNNING
    # The running one fails: a retry of it merges into the pending twin (dedup still holds).
    from fastsched.jobs import Failure, Outcomes

    q.backend.write_outcomes("policy-host", fastsched.queue.utcnow(), Outcomes(failed=[Failure(first, 0, 0, "x")]))
    assert q.retry(first).id == second


def test_on_child_start_registers_each_function_once(registry):
    def hook():
        return None

    assert registry.on_child_start(hook) is hook
    registry.on_child_start(hook)
    assert registry.child_start_hooks() == [hook]
    with pytest.raises(TaskError, match="not callable"):
        registry.on_child_start(42)  # type: ignore[arg-type]


def test_the_test_module_is_importable_in_a_pool(tmp_path):
    # The pool imports tests.taskjobs by name: it must register what the tests above add jobs for.
    import tests.taskjobs

    for name in ("async_record", "async_fail", "fail_at_once", "permanent", "retry_twice"):
        assert name in tasks.default_registry
    assert os.path.exists(tests.taskjobs.__file__)


# --- queue counts on the backends ----------------------------------------------------------------

SECOND = dt.timedelta(seconds=1)


@pytest.fixture
def backend(dsn: str) -> Iterator[Any]:
    b = open_backend(dsn)
    yield b
    b.close()


def add_jobs(q: fastsched.Queue, queue: str, priority: int, count: int, **options: Any) -> list[int]:
    return q.add_many([({"priority": priority, "queue": queue, **options}, "Cmd", queue, priority, n)
                       for n in range(count)])


def test_plan_counts_and_queue_stats_per_queue_set(dsn, backend):
    now = fastsched.queue.utcnow()
    q = fastsched.connect(dsn, clock=lambda: now)
    try:
        add_jobs(q, "mail", 20, 4)
        add_jobs(q, "mail", 30, 3)
        add_jobs(q, "default", 30, 5)
        add_jobs(q, "reports", 10, 2)
        add_jobs(q, "reports", 40, 2, delay=3600)
    finally:
        q.close()
    backend.claim([0, 1, 0, 0, 0], [7], "host-a", 5, now)  # priority 20: a mail job runs
    backend.register_master("host-a", 100, 3, now, queues=["mail"])
    backend.register_master("host-b", 100, 5, now)
    backend.register_master("host-c", 100, 2, now, queues=["mail", "reports"])
    alive = now - 30 * SECOND
    everything = backend.plan_counts(now, 100, alive)
    assert everything == PlanCounts([2, 3, 8, 0, 0], [0, 1, 0, 0, 0], 10)
    mail = backend.plan_counts(now, 100, alive, ["mail"])
    assert mail == PlanCounts([0, 3, 3, 0, 0], [0, 1, 0, 0, 0], 3), "CRITICAL reports are not mail's"
    assert backend.plan_counts(now, 2, alive, ["reports", "mail"]) == PlanCounts([2, 2, 2, 0, 0], [0, 1, 0, 0, 0], 2)
    assert backend.plan_counts(now, 100, alive, ["nothing.here"]) == PlanCounts([0] * 5, [0] * 5, 0)
    assert backend.queue_stats(now) == [
        QueueStats("default", 5, 0, 0, 0),
        QueueStats("mail", 6, 0, 1, 0),
        QueueStats("reports", 2, 2, 0, 0),
    ]
    masters = {p.host: p.queues for p in backend.processes() if p.role == "master"}
    assert masters == {"host-a": ("mail",), "host-b": (), "host-c": ("mail", "reports")}


def test_expand_queues_inlines_only_valid_queue_names():
    assert expand_queues("queue IN ({queues}) OR q IN ({queues})", ["a", "b.c"]) == (
        "queue IN ('a', 'b.c') OR q IN ('a', 'b.c')")
    for bad in (["x'; DROP TABLE workerqueue; --"], ["a b"], [""], []):
        with pytest.raises(ValueError):
            expand_queues("queue IN ({queues})", bad)


def test_per_queue_claims_and_counts_read_the_claim_queue_index_on_mariadb(mysql_dsn):
    """EXPLAIN on a backlog of another queue: the per-queue claim is one range of claim_queue in
    index order (no filesort), and its counts read LIMITed ranges of it (no full scan)."""
    now = fastsched.queue.utcnow()
    q = fastsched.connect(mysql_dsn, clock=lambda: now)
    backend = q.backend
    try:
        q.add_many([({"priority": 30, "queue": "bulk"}, "Cmd", n) for n in range(20_000)])
        q.add_many([({"priority": 30, "queue": "mail"}, "Cmd", "m", n) for n in range(50)])

        def explain(sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
            def work(cursor: Any) -> list[dict[str, Any]]:
                cursor.execute("ANALYZE TABLE workerqueue")
                cursor.fetchall()
                cursor.execute("EXPLAIN " + sql, params)
                names = [d[0] for d in cursor.description]
                return [dict(zip(names, row)) for row in cursor.fetchall()]

            return backend._transaction(work, "explain", write=False)  # type: ignore[no-any-return]

        claim = explain(backend._q["claim_priority_queue"],
                        {"queue": "mail", "priority": 30, "now": now, "limit": 10})
        # (the other rows read fastsched_pause: the claim skips paused jobs)
        read = [r for r in claim if r["table"] == "workerqueue"]
        assert [(r["key"], r["type"]) for r in read] == [("claim_queue", "range")], claim
        assert "filesort" not in (read[0]["Extra"] or "")
        plan = explain(expand_queues(backend._q["plan_counts_queues"], ["mail"]),
                       {"now": now, "cap": 100, "alive_after": now, "queues": "mail"})
        on_workerqueue = [r for r in plan if r["table"] == "workerqueue"]
        assert on_workerqueue and all(r["type"] != "ALL" for r in on_workerqueue), plan
        assert {r["key"] for r in on_workerqueue} <= {"claim_queue", "claim"}, plan
    finally:
        q.close()


# --- what status and explain show ----------------------------------------------------------------


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    from fastsched import cli

    code = cli.main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_status_and_explain_show_queues_and_the_policy_that_applies(dsn, backend, capsys):
    now = fastsched.queue.utcnow()
    q = fastsched.connect(dsn)
    try:
        mail = q.add({"queue": "mail"}, "retry_twice", "x")
        plain = q.add(30, "permanent", "y")
        unknown = q.add(20, "NotRegisteredAnywhere")
    finally:
        q.close()
    backend.register_master("host-a", 100, 3, now, queues=["reports"])

    shown = cli_json(capsys, "status", "--dsn", dsn, "--import", "tests.taskjobs")
    assert {(e["queue"], e["waiting"]) for e in shown["queues"]} == {("mail", 1), ("default", 2)}
    assert shown["hosts"][0]["masters"][0]["queues"] == ["reports"]
    policies = {t["command"]: t["policy"] for t in shown["tasks"]}
    assert policies["retry_twice"] == {"retry_limit": 2}
    assert policies["permanent"] == {"no_retry": ["Permanent"]}
    assert policies["async_record"] == {}

    facts = cli_json(capsys, "explain", str(mail), "--dsn", dsn, "--import", "tests.taskjobs", "--retry-delay", "7")
    assert facts["job"]["queue"] == "mail"
    assert facts["policy"]["retry_limit"] == 2 and facts["policy"]["sources"]["retry_limit"] == "task"
    assert facts["policy"]["retry_delay"] == 7.0 and facts["policy"]["sources"]["retry_delay"] == "pool"
    assert facts["queue"] == {"name": "mail", "masters": []}
    text = " ".join(facts["lines"])
    assert "retry limit 2 (task)" in text and "retry delay 7 s (pool)" in text
    assert "no live master claims from it" in text and "--queues mail" in text

    facts = cli_json(capsys, "explain", str(plain), "--dsn", dsn, "--import", "tests.taskjobs")
    assert facts["policy"]["no_retry"] == ["Permanent"] and facts["policy"]["sources"]["retry_limit"] == "pool"
    facts = cli_json(capsys, "explain", str(unknown), "--dsn", dsn)
    assert facts["policy"]["registered_here"] is False
    assert "not registered in the modules imported here" in " ".join(facts["lines"])


def test_explain_text_names_the_job_s_queue_whatever_the_masters_claim(dsn, backend, capsys):
    from fastsched import cli

    q = fastsched.connect(dsn)
    try:
        mail = q.add({"queue": "mail"}, "SendMail", "ann@example.org")
        done = q.add({"queue": "reports"}, "Report")
    finally:
        q.close()
    now = fastsched.queue.utcnow()
    backend.register_master("host-a", 100, 1, now)
    (batch,) = backend.claim([0, 0, 1, 0, 0], [101], "host-a", 1, now, queues=["reports"])
    assert [job.id for job in batch.jobs] == [done]
    backend.write_outcomes("host-a", now, Outcomes(done=[done]))
    backend.unregister("host-a", 100)

    assert cli.main(["explain", str(mail), "--dsn", dsn]) == 0
    assert "It belongs to the queue 'mail'." in capsys.readouterr().out
    backend.register_master("host-a", 100, 3, fastsched.queue.utcnow())
    assert cli.main(["explain", str(mail), "--dsn", dsn]) == 0
    assert "It belongs to the queue 'mail', which every live master claims from." in capsys.readouterr().out
    facts = cli_json(capsys, "explain", str(done), "--dsn", dsn)
    assert facts["state"] == "done" and facts["queue"]["name"] == "reports"
    assert "It was in the queue 'reports'." in facts["lines"]


def test_status_text_has_a_queue_table_and_the_task_policies(dsn, backend, capsys):
    from fastsched import cli

    q = fastsched.connect(dsn)
    try:
        q.add({"queue": "mail", "delay": 60}, "retry_twice", "x")
    finally:
        q.close()
    backend.register_master("host-a", 100, 3, fastsched.queue.utcnow(), queues=["mail", "default"])
    assert cli.main(["status", "--dsn", dsn, "--import", "tests.taskjobs"]) == 0
    out = capsys.readouterr().out
    assert any(line.split() == ["mail", "0", "1", "0", "0"] for line in out.splitlines()), out
    assert "3 workers on default, mail" in out
    assert "  retry_twice: retry_limit 2" in out and "  permanent: no_retry Permanent" in out


# --- periodic tasks: cron schedules and their leases ---------------------------------------------


def test_periodic_takes_a_cron_expression_in_a_time_zone(registry):
    @registry.periodic(cron="*/5 * * * *", tz="Europe/Berlin", queue="reports")
    def report():
        return None

    @registry.periodic(300)
    def every_five_minutes():
        return None

    interval, entry = registry.periodic_tasks()  # by name
    assert (entry.name, entry.cron, entry.tz, entry.seconds, entry.queue) == (
        "report", "*/5 * * * *", "Europe/Berlin", None, "reports")
    assert entry.next_due(dt.datetime(2030, 1, 2, 3, 4, 5)) == dt.datetime(2030, 1, 2, 3, 5)
    assert entry.next_due(dt.datetime(2030, 1, 2, 3, 5)) == dt.datetime(2030, 1, 2, 3, 10), "a slot is due once"
    assert interval.next_due(NOW) == NOW + dt.timedelta(seconds=300)
    assert isinstance(report, fastsched.Task) and report() is None
    assert report.options() == {"priority": Priority.MEDIUM, "queue": "reports"}


def test_periodic_takes_a_zoneinfo_as_its_zone(registry):
    import zoneinfo

    @registry.periodic(cron="30 2 * * *", tz=zoneinfo.ZoneInfo("Europe/Berlin"))
    def nightly():
        return None

    (entry,) = registry.periodic_tasks()
    assert entry.tz == "Europe/Berlin" and entry.schedule == "cron 30 2 * * * Europe/Berlin"
    assert entry.next_due(dt.datetime(2030, 1, 10, 12)) == dt.datetime(2030, 1, 11, 1, 30)


def test_a_cron_slot_follows_the_time_zone_across_daylight_saving(registry):
    @registry.periodic(cron="30 2 * * *", tz="Europe/Berlin")
    def nightly():
        return None

    (entry,) = registry.periodic_tasks()
    # 02:30 Berlin is 01:30 UTC in winter and 00:30 UTC in summer.
    assert entry.next_due(dt.datetime(2030, 1, 10, 12)) == dt.datetime(2030, 1, 11, 1, 30)
    assert entry.next_due(dt.datetime(2030, 7, 10, 12)) == dt.datetime(2030, 7, 11, 0, 30)


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        ((), {}, "either seconds"),
        ((60,), {"cron": "* * * * *"}, "either seconds"),
        ((), {"cron": "61 * * * *"}, "cron expression '61 \\* \\* \\* \\*' is invalid"),
        ((), {"cron": "* * *"}, "must have 5 fields .*got 3"),
        ((), {"cron": "*/5 * * * * *"}, "must have 5 fields .*got 6"),  # cronsim's seconds: not crontab's
        ((), {"cron": "* * * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ((60,), {"tz": "Europe/Berlin"}, "tz= goes with cron="),
        ((), {"cron": "* * * * *", "tz": 1}, "tz must be an IANA time zone name such as 'Europe/Berlin', got 1"),
        ((), {"cron": "* * * * *", "tz": dt.timezone.utc}, "tz must be an IANA time zone name"),
        ((), {"cron": "* * * * *", "queue": "bad queue"}, "queue 'bad queue'"),
    ],
)
def test_periodic_refuses_bad_schedules(registry, args, options, message):
    with pytest.raises(TaskError, match=message):
        registry.periodic(*args, **options)


def at(hour: int, minute: int, second: int = 0) -> dt.datetime:
    return dt.datetime(2030, 1, 2, hour, minute, second)


def test_a_cron_task_is_queued_once_per_slot_and_missed_slots_once(backend, registry):
    @registry.periodic(cron="*/5 * * * *", queue="reports")
    def report():
        return None

    (entry,) = registry.periodic_tasks()
    assert backend.run_periodic(entry, at(10, 2)) is None, "a cron task first runs at its next slot"
    assert backend.run_periodic(entry, at(10, 4, 59)) is None
    first = backend.run_periodic(entry, at(10, 5))
    assert first is not None
    job = backend.get(first, at(10, 5))
    assert (job.command, job.args, job.queue, job.created) == ("report", [], "reports", at(10, 5))
    assert backend.run_periodic(entry, at(10, 5)) is None and backend.run_periodic(entry, at(10, 9)) is None
    # No pool from 10:09 to 10:31: the slots 10:10 ... 10:30 come to one job, then 10:35 is next.
    assert backend.run_periodic(entry, at(10, 31)) == first, "still pending: dedup keeps one job"
    assert backend.run_periodic(entry, at(10, 34)) is None
    assert backend.run_periodic(entry, at(10, 35)) == first


def test_a_new_cron_expression_starts_at_its_own_next_slot(backend, registry):
    daily = tasks.PeriodicTask("Digest", None, Priority.LOW, "0 6 * * *", None)
    hourly = tasks.PeriodicTask("Digest", None, Priority.LOW, "0 * * * *", None)
    assert backend.run_periodic(daily, at(10, 0)) is None  # due tomorrow 06:00
    assert backend.run_periodic(hourly, at(10, 30)) is None  # the new schedule: due 11:00
    assert backend.run_periodic(hourly, at(11, 0)) is not None


def test_two_releases_with_different_cron_expressions_still_run_the_task(backend):
    """A rolling deploy: masters of the old release (every 5 min) and the new one (every 10 min)
    take turns at the lease. Each slot of either runs once; neither holds the task off."""
    old = tasks.PeriodicTask("Report", None, Priority.MEDIUM, "*/5 * * * *", None)
    new = tasks.PeriodicTask("Report", None, Priority.MEDIUM, "*/10 * * * *", None)
    when, queued = at(10, 0, 30), []
    for turn in range(120):  # an hour, one master or the other every 30 s
        job_id = backend.run_periodic(old if turn % 2 else new, when)
        if job_id is not None:
            queued.append(when)
            backend.cancel(job_id)  # done: the next slot is a new job
        when += dt.timedelta(seconds=30)
    assert [(t.hour, t.minute) for t in queued] == [(10 + m // 60, m % 60) for m in range(5, 61, 5)], queued
    # Once every master runs the new release: the old schedule's pending slot (11:05), then the
    # new one's own slots only.
    ran = []
    for minute in (5, 10, 15, 20, 25, 30):
        job_id = backend.run_periodic(new, at(11, minute))
        if job_id is not None:
            ran.append(minute)
            backend.cancel(job_id)
    assert ran == [5, 10, 20, 30]


def test_a_period_in_seconds_runs_at_once_then_once_a_period(backend):
    entry = tasks.PeriodicTask("Cron", 300.0, Priority.MEDIUM)
    first = backend.run_periodic(entry, at(10, 0))
    assert first is not None
    assert backend.run_periodic(entry, at(10, 4, 59)) is None
    backend.cancel(first)  # no longer pending: the next period is a new job
    second = backend.run_periodic(entry, at(10, 5))
    assert second is not None and second != first


def test_a_crash_between_the_lease_and_the_enqueue_does_not_skip_the_slot(backend, monkeypatch):
    entry = tasks.PeriodicTask("Cron", 300.0, Priority.MEDIUM)
    first = backend.run_periodic(entry, at(10, 0))
    assert first is not None
    backend.cancel(first)

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the master died right after moving the lease")

    monkeypatch.setattr(backend._inserts, "insert", crash)
    with pytest.raises(RuntimeError):
        backend.run_periodic(entry, at(10, 5))
    monkeypatch.undo()
    assert backend.run_periodic(entry, at(10, 5, 1)) is not None, "the slot is still due"


def test_masters_racing_for_a_slot_queue_it_exactly_once(dsn):
    import threading

    entry = tasks.PeriodicTask("Race", None, Priority.MEDIUM, "*/5 * * * *", None)
    backends = [open_backend(dsn) for _ in range(6)]
    try:
        assert backends[0].run_periodic(entry, at(10, 1)) is None
        results: list[Any] = []
        barrier = threading.Barrier(len(backends))

        def race(b: Any) -> None:
            barrier.wait()
            results.append(b.run_periodic(entry, at(10, 5, 30)))

        threads = [threading.Thread(target=race, args=(b,)) for b in backends]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == len(backends)
        assert len([r for r in results if r is not None]) == 1, results
    finally:
        for b in backends:
            b.close()


def test_an_add_that_names_no_queue_goes_to_its_task_s_queue(q):
    @fastsched.task("TestPolicyQueueDefault", queue="reports")
    def report(n):
        return None

    assert q.get(q.add(30, "TestPolicyQueueDefault", 1)).queue == "reports"
    assert q.get(q.add({"queue": "mail"}, "TestPolicyQueueDefault", 2)).queue == "mail", "the add's own wins"
    assert q.get(q.add(30, "NoTaskHere", 3)).queue == "default"
