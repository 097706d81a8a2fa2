"""The registry: command name -> callable, with each command's policy. Only registered commands run.

    import fastsched

    @fastsched.task                      # command "notify": the function's __name__
    def notify(user_id): ...

    @fastsched.task("RemoveContact", priority=fastsched.PRIORITY_HIGH, retry_limit=3, queue="mail")
    def remove_contact(contact_id): ...

    remove_contact(7)                    # runs inline, here (handy in tests)
    job_id = remove_contact.add(7)       # queued with the task's priority and queue

    @fastsched.periodic(300)             # "Cron": one master in the cluster enqueues it every 300 s
    def Cron(): ...

    @fastsched.periodic(cron="*/5 * * * *", tz="Europe/Berlin")
    def Report(): ...                    # at every slot of a cron expression, in a time zone

    @fastsched.on_child_start            # each new child runs it before its first job
    def close_inherited_connections(): ...

The pool looks commands up by name in this registry and nowhere else: it never imports a module
or resolves a dotted path named by a database row, so a row whose command says ``os.system`` or
``builtins.eval`` is never run. The modules that register tasks are the operator's choice
(``PoolSettings.imports``), imported by the master before it forks its children.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, Generic, ParamSpec, TypeVar, Union, overload

from fastsched.errors import TaskError
from fastsched.priority import Priority, validate_priority
from fastsched.validation import DEFAULT_QUEUE, TASK_QUEUES, is_command_name, queue_error
from fastsched.validation import MAX_COMMAND_LENGTH as MAX_NAME_LENGTH

__all__ = [
    "DEFAULT_QUEUE",
    "MAX_NAME_LENGTH",
    "AppliedPolicy",
    "PeriodicTask",
    "Registry",
    "Task",
    "TaskPolicy",
    "applied_policy",
    "child_start_hooks",
    "default_registry",
    "get",
    "names",
    "on_child_start",
    "periodic",
    "periodic_tasks",
    "policy",
    "task",
]


_UTC = dt.timezone.utc

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")

RetryDelay = Union[str, float, Callable[[int], float]]  # noqa: UP007 - an alias evaluated at run time on 3.10
"""A task's ``retry_delay``: "friendica", seconds, or a callable of the new retrial number -> seconds."""


@dataclasses.dataclass(frozen=True)
class TaskPolicy:
    """What ``@fastsched.task(...)`` says about its command; None means "the pool's own"."""

    priority: Priority | None = None  # the default priority of Task.add()
    retry_limit: int | None = None
    retry_delay: RetryDelay | None = None  # "friendica", seconds, or a callable of the new retrial
    timeout: float | None = None  # seconds: this command's run-time limit, instead of the priority's
    no_retry: tuple[type[BaseException], ...] = ()  # such exceptions fail the job at once
    queue: str | None = None  # the default queue of Task.add()

    def describe(self) -> dict[str, Any]:
        """The options that were given, as JSON-friendly values (``status``, ``explain``)."""
        shown: dict[str, Any] = {}
        if self.priority is not None:
            shown["priority"] = int(self.priority)
        if self.retry_limit is not None:
            shown["retry_limit"] = self.retry_limit
        if self.retry_delay is not None:
            delay = self.retry_delay
            shown["retry_delay"] = delay if isinstance(delay, (str, int, float)) else _describe(delay)
        if self.timeout is not None:
            shown["timeout"] = self.timeout
        if self.no_retry:
            shown["no_retry"] = [cls.__name__ for cls in self.no_retry]
        if self.queue is not None:
            shown["queue"] = self.queue
        return shown


DEFAULT_POLICY = TaskPolicy()

TASK = "task"  # AppliedPolicy.sources: the task's decorator set it
POOL = "pool"  # ... the pool's settings (--retry-limit, --retry-delay, --max-duration)


@dataclasses.dataclass(frozen=True)
class AppliedPolicy:
    """The retry and time-limit policy that applies to a command's jobs: the task's own options,
    else the pool's settings (``applied_policy``). One home for "task first, then pool"."""

    retry_limit: int
    retry_delay: RetryDelay  # "friendica", seconds, or a callable of the new retrial number
    timeout: float | None  # seconds; None: no limit
    no_retry: tuple[type[BaseException], ...]
    sources: Mapping[str, str]  # retry_limit, retry_delay, timeout -> TASK or POOL

    def describe(self) -> dict[str, Any]:
        """JSON-friendly, for ``status``, ``explain`` and the dashboard."""
        delay = self.retry_delay
        return {
            "retry_limit": self.retry_limit,
            "retry_delay": delay if isinstance(delay, (str, int, float)) else _describe(delay),
            "timeout_seconds": self.timeout,
            "no_retry": [cls.__name__ for cls in self.no_retry],
            "sources": dict(self.sources),
        }

    def text(self) -> str:
        """``retry limit 3 (task), retry delay friendica (pool), time limit 90 s (pool)``."""
        shown = self.describe()
        delay = shown["retry_delay"]
        parts = [
            f"retry limit {self.retry_limit} ({self.sources['retry_limit']})",
            f"retry delay {delay if isinstance(delay, str) else f'{delay:g} s'} ({self.sources['retry_delay']})",
            "no time limit" if self.timeout is None else f"time limit {self.timeout:g} s ({self.sources['timeout']})",
        ]
        if self.no_retry:
            parts.append("failed at once on " + ", ".join(shown["no_retry"]))
        return ", ".join(parts)


def applied_policy(
    policy: TaskPolicy | None,
    *,
    retry_limit: int,
    retry_delay: RetryDelay,
    timeout: float | None,
) -> AppliedPolicy:
    """The policy for a command whose task says ``policy`` (None: no options), in a pool whose own
    settings are ``retry_limit``, ``retry_delay`` and the run-time limit ``timeout`` (seconds, of
    the job's priority; None for none)."""
    own = policy or DEFAULT_POLICY
    return AppliedPolicy(
        retry_limit=retry_limit if own.retry_limit is None else own.retry_limit,
        retry_delay=retry_delay if own.retry_delay is None else own.retry_delay,
        timeout=timeout if own.timeout is None else own.timeout,
        no_retry=own.no_retry,
        sources={
            "retry_limit": POOL if own.retry_limit is None else TASK,
            "retry_delay": POOL if own.retry_delay is None else TASK,
            "timeout": POOL if own.timeout is None else TASK,
        },
    )


class Task(Generic[P, R]):
    """A registered task: call it to run it here, inline; ``.add(*args)`` queues it.

    ``.add`` uses the default queue connection (``fastsched.queue.default_queue``: ``$FASTSCHED_DSN``)
    with the task's own priority and queue, and returns the job's id.
    """

    def __init__(self, name: str, function: Callable[P, R], policy: TaskPolicy) -> None:
        self.name = name
        self.function = function
        self.policy = policy
        functools.update_wrapper(self, function)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.function(*args, **kwargs)

    def add(self, *args: Any) -> int:
        """Queue ``name(*args)`` with the task's defaults; the job's id."""
        from fastsched.queue import default_queue  # the producer API, opened at first use

        return default_queue().add(self.options(), self.name, *args)

    def options(self) -> dict[str, Any]:
        """The add() options this task's defaults stand for."""
        policy = self.policy
        return {
            "priority": policy.priority if policy.priority is not None else Priority.MEDIUM,
            "queue": policy.queue if policy.queue is not None else DEFAULT_QUEUE,
        }

    def __repr__(self) -> str:
        return f"<fastsched.Task {self.name} {_describe(self.function)}>"


@dataclasses.dataclass(frozen=True)
class PeriodicTask:
    """A command that exactly one master in the cluster enqueues, with no args, once per period
    (``seconds``) or at each slot of a ``cron`` expression in the time zone ``tz``.

    Slots missed while no pool ran are not made up one by one: the first master to look after
    them enqueues the command once, and the schedule goes on from the next slot after now.
    """

    name: str
    seconds: float | None  # the period; None for a cron schedule
    priority: Priority
    cron: str | None = None
    tz: str | None = None  # an IANA zone name; None: UTC
    queue: str = DEFAULT_QUEUE

    @property
    def schedule(self) -> str:
        """The schedule as text, kept beside the lease (a changed cron schedule moves the lease)."""
        if self.cron is None:
            return f"every {self.seconds:g}s"
        return f"cron {self.cron} {self.tz or 'UTC'}"

    def next_due(self, after: dt.datetime) -> dt.datetime:
        """The first slot after ``after`` (naive UTC), as naive UTC."""
        if self.cron is None:
            return after + dt.timedelta(seconds=self.seconds or 0.0)
        return _next_cron_slot(self.cron, _zone(self.tz), after)


def _zone_name(tz: object) -> str | None:
    """``tz=`` as the IANA name kept with the schedule: a name, or a zoneinfo.ZoneInfo's key."""
    import zoneinfo

    if tz is None or isinstance(tz, str):
        return tz
    if isinstance(tz, zoneinfo.ZoneInfo) and tz.key:
        return str(tz.key)
    raise TaskError(f"periodic: tz must be an IANA time zone name such as 'Europe/Berlin', got {tz!r}")


def _zone(name: str | None) -> dt.tzinfo:
    if name is None:
        return _UTC
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise TaskError(f"periodic: unknown time zone {name!r} ({exc})") from None


def _next_cron_slot(expression: str, zone: dt.tzinfo, after: dt.datetime) -> dt.datetime:
    import cronsim

    local = after.replace(tzinfo=_UTC).astimezone(zone)
    # cronsim yields slots at or after the start: start one microsecond later so that a slot
    # equal to ``after`` (the one just enqueued) is not due again.
    slot = next(cronsim.CronSim(expression, local + dt.timedelta(microseconds=1)))
    return slot.astimezone(_UTC).replace(tzinfo=None)


def _same_function(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    """The same object, or the same definition seen twice (a module reloaded)."""
    a, b = _unwrap(a), _unwrap(b)
    if a is b:
        return True
    a_id = (getattr(a, "__module__", None), getattr(a, "__qualname__", None))
    return a_id[1] is not None and a_id == (getattr(b, "__module__", None), getattr(b, "__qualname__", None))


def _unwrap(function: Callable[..., Any]) -> Callable[..., Any]:
    return function.function if isinstance(function, Task) else function


def _check_runs_its_body(name: str, function: Callable[..., Any]) -> None:
    """A generator function's call returns at once without running its body: such a job would be
    recorded done although nothing ran."""
    if inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function):
        kind = "an async generator" if inspect.isasyncgenfunction(function) else "a generator"
        raise TaskError(
            f"task {name!r}: {_describe(function)} is {kind} function: calling it would not run its body "
            f"(use a plain def or an async def that does not yield)"
        )


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TaskError(f"a task name must be a str, got {type(name).__name__}")
    if not is_command_name(name):
        raise TaskError(
            f"task name {name[:40]!r} is not a valid command: 1 to {MAX_NAME_LENGTH} ASCII letters, "
            f"digits and _ . : - /"
        )
    return name


def _finite(value: object, what: str, *, minimum: float, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TaskError(f"{what} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise TaskError(f"{what} must be {'>' if strict else '>='} {minimum:g}, got {value!r}")
    return float(value)


def _check_queue(queue: object, what: str) -> str:
    problem = queue_error(queue)
    if problem is not None:
        raise TaskError(f"{what}: {problem}")
    return str(queue)


TASK_OPTIONS = ("priority", "retry_limit", "retry_delay", "timeout", "no_retry", "queue")


def _check_options(name: str, options: Mapping[str, Any]) -> None:
    unknown = sorted(set(options) - set(TASK_OPTIONS))
    if unknown:
        raise TypeError(f"task {name!r}: unknown option {unknown[0]!r}: the options are {', '.join(TASK_OPTIONS)}")


def make_policy(
    name: str,
    *,
    priority: object = None,
    retry_limit: object = None,
    retry_delay: object = None,
    timeout: object = None,
    no_retry: object = (),
    queue: object = None,
) -> TaskPolicy:
    """A TaskPolicy from the decorator's options; TaskError naming the task and the bad option."""
    what = f"task {name!r}"
    level = None
    if priority is not None:
        try:
            level = validate_priority(priority)
        except ValueError as exc:
            raise TaskError(f"{what}: priority: {exc}") from None
    limit = None
    if retry_limit is not None:
        if isinstance(retry_limit, bool) or not isinstance(retry_limit, int) or retry_limit < 0:
            raise TaskError(f"{what}: retry_limit must be an int >= 0, got {retry_limit!r}")
        limit = int(retry_limit)
    delay: RetryDelay | None = None
    if retry_delay is not None:
        if isinstance(retry_delay, str):
            from fastsched.retry_policy import FRIENDICA_DELAY

            if retry_delay.strip().lower() != FRIENDICA_DELAY:
                raise TaskError(
                    f"{what}: retry_delay must be {FRIENDICA_DELAY!r}, seconds or a callable of the "
                    f"retrial number, got {retry_delay!r}"
                )
            delay = FRIENDICA_DELAY
        elif callable(retry_delay):
            delay = retry_delay
        else:
            from fastsched.retry_policy import MAX_DELAY

            delay = _finite(retry_delay, f"{what}: retry_delay", minimum=0)
            if delay > MAX_DELAY:
                raise TaskError(f"{what}: retry_delay must be at most {MAX_DELAY:g} seconds, got {retry_delay!r}")
    seconds = None if timeout is None else _finite(timeout, f"{what}: timeout", minimum=0, strict=True)
    classes = no_retry if isinstance(no_retry, tuple) else (no_retry,)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TaskError(f"{what}: no_retry must be an exception class or a tuple of them, got {cls!r}")
    return TaskPolicy(
        priority=level,
        retry_limit=limit,
        retry_delay=delay,
        timeout=seconds,
        no_retry=classes,
        queue=None if queue is None else _check_queue(queue, f"{what}: queue"),
    )


class Registry:
    """Command names, the callables that run them and their policies. The pool uses ``default_registry``."""

    def __init__(self, queue_defaults: dict[str, str] | None = None) -> None:
        # command -> its task's queue=, where adds that name no queue look (the default registry's
        # is validation.TASK_QUEUES, read by every add of this process)
        self._queue_defaults: dict[str, str] = {} if queue_defaults is None else queue_defaults
        self._tasks: dict[str, Callable[..., Any]] = {}  # what the child calls: the bare function
        self._registered: dict[str, Callable[..., Any]] = {}  # what was registered (a Task, say)
        self._policies: dict[str, TaskPolicy] = {}
        self._periodic: dict[str, PeriodicTask] = {}
        self._child_start: list[Callable[[], Any]] = []

    # --- registering ---------------------------------------------------------------------------
    def register(self, name: str, function: Callable[..., Any], policy: TaskPolicy | None = None) -> None:
        """Register ``function`` under ``name``. TaskError if another callable has that name."""
        name = _check_name(name)
        if not callable(function):
            raise TaskError(f"task {name!r}: {function!r} is not callable")
        _check_runs_its_body(name, _unwrap(function))
        existing = self._registered.get(name)
        if existing is not None and not _same_function(existing, function):
            raise TaskError(
                f"task name {name!r} is registered already, to {_describe(_unwrap(existing))}; "
                f"cannot register {_describe(_unwrap(function))} under it too"
            )
        self._registered[name] = function
        self._tasks[name] = _unwrap(function)
        if policy is None and isinstance(function, Task):
            policy = function.policy
        if policy is not None and policy != DEFAULT_POLICY:
            self._policies[name] = policy
        else:
            self._policies.pop(name, None)
        if policy is not None and policy.queue is not None:
            self._queue_defaults[name] = policy.queue
        else:
            self._queue_defaults.pop(name, None)

    @overload
    def task(self, name: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        name: str | None = None,
        /,
        *,
        priority: int | None = None,
        retry_limit: int | None = None,
        retry_delay: RetryDelay | None = None,
        timeout: float | None = None,
        no_retry: type[BaseException] | tuple[type[BaseException], ...] = (),
        queue: str | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(self, name: Any = None, /, **options: Any) -> Any:
        """Decorator: ``@task`` (the command is the function's ``__name__``) or ``@task("Name", ...)``
        with the task's options (``priority``, ``retry_limit``, ``retry_delay``, ``timeout``,
        ``no_retry``, ``queue``): see TaskPolicy. Returns a :class:`Task`, callable as the function."""
        if callable(name):
            return self._make_task(getattr(name, "__name__", ""), name, options)
        if name is not None:
            _check_name(name)
        shown = name if isinstance(name, str) else "?"
        _check_options(shown, options)
        make_policy(shown, **options)  # bad options fail at the decorator's line, not at its use

        def decorator(function: Callable[P, R]) -> Task[P, R]:
            return self._make_task(name if name is not None else getattr(function, "__name__", ""), function, options)

        return decorator

    def _make_task(self, name: str, function: Callable[P, R], options: Mapping[str, Any]) -> Task[P, R]:
        name = _check_name(name)
        if not callable(function):
            raise TaskError(f"task {name!r}: {function!r} is not callable")
        bare: Callable[P, R] = function.function if isinstance(function, Task) else function
        _check_options(name, options)
        made = Task(name, bare, make_policy(name, **options))
        self.register(name, made)
        return made

    def periodic(
        self,
        seconds: float | None = None,
        priority: int = Priority.MEDIUM,
        name: str | None = None,
        *,
        cron: str | None = None,
        tz: str | dt.tzinfo | None = None,  # an IANA name, or a zoneinfo.ZoneInfo
        queue: str | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]:
        """Decorator: a task that one master in the cluster enqueues every ``seconds``, or at every
        slot of the cron expression ``cron`` (5 fields, as in crontab) in the time zone ``tz``
        (an IANA name such as "Europe/Berlin"; default UTC). Give one of ``seconds`` and ``cron``.

        The masters race for a lease row in the database; the one that moves it forward enqueues the
        command with no args, deduplicated, in the same transaction (so a crash in between leaves
        the period due, not skipped), and a period that is still pending or running is not queued
        twice. Slots missed while no pool ran are enqueued once, not once each.
        """
        if (seconds is None) == (cron is None):
            raise TaskError("periodic: give either seconds (a period) or cron= (a cron expression), not both")
        if seconds is not None:
            if tz is not None:
                raise TaskError("periodic: tz= goes with cron=; a period in seconds needs no time zone")
            _finite(seconds, "periodic: seconds", minimum=0, strict=True)
        else:
            _check_cron(cron)
            tz = _zone_name(tz)
            _zone(tz)
        try:
            level = validate_priority(priority)
        except ValueError as exc:
            raise TaskError(f"periodic: {exc}") from None
        if name is not None:
            _check_name(name)
        where = DEFAULT_QUEUE if queue is None else _check_queue(queue, "periodic: queue")

        def decorator(function: Callable[P, R]) -> Task[P, R]:
            command = name if name is not None else getattr(function, "__name__", "")
            made = self._make_task(command, function, {"priority": level, "queue": queue})
            self._periodic[command] = PeriodicTask(
                command, None if seconds is None else float(seconds), level, cron, tz, where
            )
            return made

        return decorator

    def on_child_start(self, function: F) -> F:
        """Decorator: ``function()`` runs in each new pool child before its first job (for instance
        to drop database connections inherited from the master). If it raises, that child runs no
        job and exits after ``child_process.CHILD_START_FAILURE_PAUSE``; the master starts another."""
        if not callable(function):
            raise TaskError(f"on_child_start: {function!r} is not callable")
        if not any(_same_function(hook, function) for hook in self._child_start):
            self._child_start.append(function)
        return function

    # --- looking up ----------------------------------------------------------------------------
    def get(self, name: str) -> Callable[..., Any] | None:
        """What was registered under ``name`` (a Task for the decorators), or None. Never imports."""
        return self._registered.get(name)

    def policy(self, name: str) -> TaskPolicy | None:
        """The policy of command ``name``; None for an unregistered one or one with no options."""
        return self._policies.get(name)

    def policies(self) -> Mapping[str, TaskPolicy]:
        """The live name -> policy mapping of the commands that have options."""
        return self._policies

    def names(self) -> frozenset[str]:
        """Every registered command name."""
        return frozenset(self._tasks)

    def periodic_tasks(self) -> list[PeriodicTask]:
        """The periodic tasks, by name."""
        return [self._periodic[name] for name in sorted(self._periodic)]

    def child_start_hooks(self) -> list[Callable[[], Any]]:
        """The ``on_child_start`` functions, in the order they were registered."""
        return list(self._child_start)

    def as_dict(self) -> dict[str, Callable[..., Any]]:
        """The live name -> callable mapping (the child's hot loop looks commands up in it)."""
        return self._tasks

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)


CRON_FIELDS = 5


def _check_cron(expression: object) -> None:
    import cronsim

    if not isinstance(expression, str):
        raise TaskError(f"periodic: cron must be a str such as '*/5 * * * *', got {type(expression).__name__}")
    if len(expression.split()) != CRON_FIELDS:
        # cronsim would also take a sixth, leading field of seconds: the schedule is crontab's, in minutes.
        raise TaskError(
            f"periodic: cron expression {expression!r} must have 5 fields (minute hour day-of-month month "
            f"day-of-week), got {len(expression.split())}"
        )
    try:
        cronsim.CronSim(expression, dt.datetime(2000, 1, 1))
    except cronsim.CronSimError as exc:
        raise TaskError(f"periodic: cron expression {expression!r} is invalid: {exc}") from None


def _describe(function: Callable[..., Any]) -> str:
    module = getattr(function, "__module__", None) or "?"
    qualname = getattr(function, "__qualname__", None) or repr(function)
    return f"{module}.{qualname}"


default_registry = Registry(queue_defaults=TASK_QUEUES)
"""The registry ``@fastsched.task``, ``@fastsched.periodic`` and ``@fastsched.on_child_start`` fill,
and the pool reads."""

task = default_registry.task
periodic = default_registry.periodic
on_child_start = default_registry.on_child_start
get = default_registry.get
policy = default_registry.policy
names = default_registry.names
periodic_tasks = default_registry.periodic_tasks
child_start_hooks = default_registry.child_start_hooks
