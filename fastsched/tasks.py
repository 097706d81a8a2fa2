"""The registry: command name -> callable. Only registered commands ever run.

    import fastsched

    @fastsched.task                      # command "notify": the function's __name__
    def notify(user_id): ...

    @fastsched.task("RemoveContact")     # a Friendica-style command name
    def remove_contact(contact_id): ...

    @fastsched.periodic(300)             # "Cron": one master in the cluster enqueues it every 300 s
    def Cron(): ...

The pool looks commands up by name in this registry and nowhere else: it never imports a module
or resolves a dotted path named by a database row, so a row whose command says ``os.system`` or
``builtins.eval`` is failed as "unknown command", not run. The modules that register tasks are the
operator's choice (``PoolSettings.imports``), imported by the master before it forks its children.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar, overload

from fastsched.errors import TaskError
from fastsched.priority import Priority, validate_priority

__all__ = [
    "MAX_NAME_LENGTH",
    "PeriodicTask",
    "Registry",
    "default_registry",
    "get",
    "names",
    "periodic",
    "periodic_tasks",
    "task",
]

MAX_NAME_LENGTH = 100  # characters: the width of workerqueue.command
# The same characters the producer API accepts in a command (fastsched.queue).
_name_ok = re.compile(rf"[A-Za-z0-9_.:/-]{{1,{MAX_NAME_LENGTH}}}").fullmatch

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class PeriodicTask:
    """A command that exactly one master in the cluster enqueues once per period, with no args."""

    name: str
    seconds: float  # the period
    priority: Priority


def _same_function(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    """The same object, or the same definition seen twice (a module reloaded)."""
    if a is b:
        return True
    a_id = (getattr(a, "__module__", None), getattr(a, "__qualname__", None))
    return a_id[1] is not None and a_id == (getattr(b, "__module__", None), getattr(b, "__qualname__", None))


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TaskError(f"a task name must be a str, got {type(name).__name__}")
    if not _name_ok(name):
        raise TaskError(
            f"task name {name[:40]!r} is not a valid command: 1 to {MAX_NAME_LENGTH} ASCII letters, "
            f"digits and _ . : - /"
        )
    return name


class Registry:
    """Command names and the callables that run them. The pool uses ``default_registry``."""

    def __init__(self) -> None:
        self._tasks: dict[str, Callable[..., Any]] = {}
        self._periodic: dict[str, PeriodicTask] = {}

    # --- registering ---------------------------------------------------------------------------
    def register(self, name: str, function: Callable[..., Any]) -> None:
        """Register ``function`` under ``name``. TaskError if another callable has that name."""
        name = _check_name(name)
        if not callable(function):
            raise TaskError(f"task {name!r}: {function!r} is not callable")
        existing = self._tasks.get(name)
        if existing is not None and not _same_function(existing, function):
            raise TaskError(
                f"task name {name!r} is registered already, to {_describe(existing)}; "
                f"cannot register {_describe(function)} under it too"
            )
        self._tasks[name] = function

    @overload
    def task(self, name: F, /) -> F: ...

    @overload
    def task(self, name: str | None = None, /) -> Callable[[F], F]: ...

    def task(self, name: Any = None, /) -> Any:
        """Decorator: ``@task`` (the command is the function's ``__name__``) or ``@task("Name")``."""
        if callable(name):
            self.register(getattr(name, "__name__", ""), name)
            return name
        if name is not None:
            _check_name(name)

        def decorator(function: F) -> F:
            self.register(name if name is not None else getattr(function, "__name__", ""), function)
            return function

        return decorator

    def periodic(
        self, seconds: float, priority: int = Priority.MEDIUM, name: str | None = None
    ) -> Callable[[F], F]:
        """Decorator: register a task that one master in the cluster enqueues every ``seconds``.

        Like Friendica's Cron job: the masters race for a lease in the database
        (``Backend.take_periodic``) and the winner enqueues the command with no args, deduplicated,
        so a period that is still pending or running is not queued twice.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise TaskError(f"periodic: seconds must be a finite number, got {seconds!r}")
        if seconds <= 0:
            raise TaskError(f"periodic: seconds must be > 0, got {seconds!r}")
        try:
            level = validate_priority(priority)
        except ValueError as exc:
            raise TaskError(f"periodic: {exc}") from None
        if name is not None:
            _check_name(name)

        def decorator(function: F) -> F:
            command = name if name is not None else getattr(function, "__name__", "")
            self.register(command, function)
            self._periodic[command] = PeriodicTask(command, float(seconds), level)
            return function

        return decorator

    # --- looking up ----------------------------------------------------------------------------
    def get(self, name: str) -> Callable[..., Any] | None:
        """The callable registered under ``name``, or None. Never imports anything."""
        return self._tasks.get(name)

    def names(self) -> frozenset[str]:
        """Every registered command name."""
        return frozenset(self._tasks)

    def periodic_tasks(self) -> list[PeriodicTask]:
        """The periodic tasks, by name."""
        return [self._periodic[name] for name in sorted(self._periodic)]

    def as_dict(self) -> dict[str, Callable[..., Any]]:
        """The live name -> callable mapping (the child's hot loop looks commands up in it)."""
        return self._tasks

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)


def _describe(function: Callable[..., Any]) -> str:
    module = getattr(function, "__module__", None) or "?"
    qualname = getattr(function, "__qualname__", None) or repr(function)
    return f"{module}.{qualname}"


default_registry = Registry()
"""The registry ``@fastsched.task`` and ``@fastsched.periodic`` fill, and the pool reads."""

task = default_registry.task
periodic = default_registry.periodic
get = default_registry.get
names = default_registry.names
periodic_tasks = default_registry.periodic_tasks
