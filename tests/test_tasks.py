"""The task registry, and what a task sees when a child runs it (current_job, defer, the notes)."""
from __future__ import annotations

import sys

import pytest

import fastsched
from fastsched import child_process, context, protocol, tasks
from fastsched.errors import NotInJob, TaskError
from fastsched.priority import Priority


@pytest.fixture
def registry() -> tasks.Registry:
    return tasks.Registry()


# --- registering ---------------------------------------------------------------------------------


def test_task_registers_under_the_function_name_or_a_given_one(registry):
    @registry.task
    def notify(user):
        return user

    @registry.task("RemoveContact")
    def remove_contact(contact_id):
        return contact_id

    @registry.task()
    def with_parentheses():
        return None

    assert registry.get("notify") is notify
    assert registry.get("RemoveContact") is remove_contact
    assert registry.get("remove_contact") is None
    assert registry.get("with_parentheses") is with_parentheses
    assert registry.names() == {"notify", "RemoveContact", "with_parentheses"}


def test_registering_the_same_callable_twice_is_harmless(registry):
    def job():
        return None

    registry.register("Job", job)
    registry.register("Job", job)
    assert registry.get("Job") is job


def test_two_callables_under_one_name_are_refused_naming_it(registry):
    registry.task("Delivery")(lambda: 1)

    def other():
        return 2

    with pytest.raises(TaskError, match="'Delivery' is registered already.*other"):
        registry.task("Delivery")(other)


@pytest.mark.parametrize("name", ["", "has space", "x" * 101, "semi;colon", "ünicode"])
def test_invalid_names_are_refused(registry, name):
    with pytest.raises(TaskError):
        registry.task(name)


def test_non_callables_are_refused(registry):
    with pytest.raises(TaskError, match="not callable"):
        registry.register("Thing", 42)  # type: ignore[arg-type]


def test_lookup_never_imports_anything(registry):
    assert registry.get("os.system") is None
    assert registry.get("builtins.eval") is None
    assert registry.get("fastsched_not_a_module.run") is None
    assert "fastsched_not_a_module" not in sys.modules


def test_periodic_registers_a_task_and_its_period(registry):
    @registry.periodic(300, priority=Priority.HIGH, name="Cron")
    def cron():
        return None

    @registry.periodic(60)
    def hourly_cleanup():
        return None

    assert registry.get("Cron") is cron and registry.get("hourly_cleanup") is hourly_cleanup
    assert registry.periodic_tasks() == [
        tasks.PeriodicTask("Cron", 300.0, Priority.HIGH),
        tasks.PeriodicTask("hourly_cleanup", 60.0, Priority.MEDIUM),
    ]


@pytest.mark.parametrize(("seconds", "priority"), [(0, 30), (-1, 30), (float("inf"), 30), ("60", 30), (60, 35)])
def test_periodic_refuses_bad_periods_and_priorities(registry, seconds, priority):
    with pytest.raises(TaskError):
        registry.periodic(seconds, priority=priority)


def test_the_public_decorators_fill_the_default_registry():
    @fastsched.task("TestTasksPublicName")
    def public():
        return None

    assert tasks.get("TestTasksPublicName") is public
    assert "TestTasksPublicName" in tasks.default_registry


# --- inside and outside a job ------------------------------------------------------------------


def test_current_job_and_defer_outside_a_job_raise_not_in_job():
    with pytest.raises(NotInJob):
        fastsched.current_job()
    with pytest.raises(NotInJob):
        fastsched.defer()


class Sent(list):
    def __call__(self, message):
        self.append(message)


def run(jobs, registry, stop=0):
    """Run a batch the way a child does, in this process; return (processed, notes, progress)."""
    sent = Sent()
    progress = [-1.0, -1.0, 0.0, 0.0, -1.0]
    processed = child_process.run_batch(5, jobs, registry.as_dict(), progress, [stop], sent)
    assert all(message[0] == protocol.NOTE and message[1] == 5 for message in sent)
    return processed, [message[2:] for message in sent], progress


def test_a_task_sees_its_job_and_may_defer(registry):
    seen = []

    @registry.task("Delivery")
    def delivery(target, attempt):
        seen.append(fastsched.current_job())
        if attempt == "again":
            fastsched.defer(12.5)

    jobs = [(11, "Delivery", '["inbox", "once"]', 20, 0), (12, "Delivery", '["inbox", "again"]', 30, 4)]
    processed, notes, progress = run(jobs, registry)
    assert processed == 2
    assert notes == [(1, protocol.DEFER, 12.5)]  # success needs no note
    assert seen == [
        context.JobContext(11, "Delivery", 20, 0, ("inbox", "once")),
        context.JobContext(12, "Delivery", 30, 4, ("inbox", "again")),
    ]
    assert progress[:2] == [5, 1]  # the batch and the index of the last job started
    with pytest.raises(NotInJob):
        fastsched.current_job()  # cleared after the batch


def test_defer_says_whether_another_attempt_comes_and_checks_its_delay(registry):
    answers = []

    @registry.task
    def deferring(delay):
        answers.append(fastsched.defer(delay))

    context.set_retry_limits(3, {})  # what child_main sets from PoolSettings.retry_limit
    try:
        run([(1, "deferring", "[null]", 30, 2), (2, "deferring", "[0]", 30, 3)], registry)
    finally:
        context.set_retry_limits(-1, {})
    assert answers == [True, False]  # retrial 3 -> 4 is past the limit of 3: the job will fail


def test_defer_with_a_negative_delay_is_an_error_of_the_job(registry):
    @registry.task
    def bad_defer():
        fastsched.defer(-1)

    _, notes, _ = run([(1, "bad_defer", "[]", 30, 0)], registry)
    assert len(notes) == 1 and notes[0][1] == protocol.ERROR and "InvalidInput" in notes[0][2]


def test_exceptions_become_error_notes_with_the_traceback(registry):
    @registry.task
    def broken(value):
        raise ValueError(f"bad value {value}")

    @registry.task
    def exits():
        raise SystemExit(3)

    processed, notes, _ = run([(1, "broken", "[42]", 30, 0), (2, "exits", "[]", 30, 0)], registry)
    assert processed == 2
    assert [(index, kind) for index, kind, _ in notes] == [(0, protocol.ERROR), (1, protocol.ERROR)]
    assert "Traceback" in notes[0][2] and notes[0][2].rstrip().endswith("ValueError: bad value 42")
    assert "SystemExit: 3" in notes[1][2]


def test_jobs_that_can_never_run_get_fatal_notes(registry):
    @registry.task
    def two(a, b):
        return a + b

    @registry.task
    def raises_type_error(a):
        raise TypeError("inside the task")

    jobs = [
        (1, "two", "not json", 30, 0),
        (2, "two", '{"a": 1}', 30, 0),
        (3, "two", "[1]", 30, 0),
        (4, "Nope", "[]", 30, 0),
        (5, "raises_type_error", "[1]", 30, 0),
        (6, "two", "[1, 2]", 30, 0),
    ]
    processed, notes, _ = run(jobs, registry)
    assert processed == 6
    kinds = {index: (kind, text) for index, kind, text in notes}
    assert kinds[0][0] == protocol.FATAL and "not valid JSON" in kinds[0][1]
    assert kinds[1][0] == protocol.FATAL and "JSON array" in kinds[1][1]
    assert kinds[2][0] == protocol.FATAL and "do not match" in kinds[2][1]
    assert kinds[3] == (protocol.FATAL, "unknown command: Nope")
    assert kinds[4][0] == protocol.ERROR and "inside the task" in kinds[4][1]  # a TypeError from inside: retried
    assert 5 not in kinds


def test_the_stop_flag_stops_before_the_next_job(registry):
    ran = []
    registry.task("Mark")(ran.append)
    processed, notes, _ = run([(1, "Mark", "[1]", 30, 0), (2, "Mark", "[2]", 30, 0)], registry, stop=1)
    assert processed == 0 and notes == [] and ran == []
