"""Operators' controls: pauses, filters for bulk actions, and the record of what was done.

What they mean, in one place (the backends store them, the CLI, the API and the dashboard take
them):

- A :class:`Pause` holds a priority, a command and a queue, each possibly unset (``None``).
  Pending work that matches every set part is claimed by no master until it is resumed; what
  runs already is never touched. ``Pause(priority=40)`` pauses LOW; ``Pause(command="SendMail",
  queue="mail")`` pauses SendMail jobs of the mail queue at every priority.
- A :class:`JobFilter` picks the jobs of a bulk ``retry``, ``cancel`` or ``purge``: by command,
  priority, queue, a text found in the last error, and an age (``older_than``: since a pending
  job was created, since any other finished).
- An :class:`Action` is one line of the history (``fastsched_action``): who did what to which
  jobs, when, and how many jobs changed. Every control writes one; dry runs write none.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import os
import socket
from collections.abc import Iterable
from typing import Any

from fastsched import validation
from fastsched.errors import InvalidInput
from fastsched.priority import Priority, validate_priority
from fastsched.status import iso, priority_name
from fastsched.validation import (
    DEFAULT_QUEUE,
    MAX_COMMAND_LENGTH,
    as_timedelta,
    command_error,
    is_command_name,
    short,
)

MAX_ERROR_FILTER = 1000  # characters of an --error filter
MAX_ACTOR_LENGTH = 255  # characters: the width of fastsched_action.actor
MAX_TARGET_LENGTH = 1000  # characters: the width of fastsched_action.target

# Action names, as stored and shown.
PAUSE = "pause"
RESUME = "resume"
RETRY = "retry"
CANCEL = "cancel"
PURGE = "purge"


def default_actor() -> str:
    """Who is acting, for the history: ``user@host`` of this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, no $USER: a container's uid
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"[:MAX_ACTOR_LENGTH]


def as_actor(value: object) -> str:
    if value is None:
        return default_actor()
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"by must be a non-empty str naming who acts, got {short(value)}")
    return value.strip()[:MAX_ACTOR_LENGTH]


def _as_command(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not is_command_name(value):
        raise InvalidInput(command_error(value))
    return value


def _as_queue(value: object) -> str | None:
    return None if value is None else validation.as_queue(value)


def _as_priority(value: object) -> Priority | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return Priority[value.strip().upper()]
        except KeyError:
            if value.strip().isdigit():
                return validate_priority(int(value.strip()))
            raise InvalidInput(
                f"priority must be one of CRITICAL, HIGH, MEDIUM, LOW, NEGLIGIBLE (or 10 ... 50), "
                f"got {short(value)}"
            ) from None
    return validate_priority(value)


@dataclasses.dataclass(frozen=True)
class Pause:
    """Work matching every set part is not claimed. ``paused_by``/``paused_at`` say who paused it
    and when (set when read back from the database)."""

    priority: int | None = None
    command: str | None = None
    queue: str | None = None
    paused_by: str = ""
    paused_at: dt.datetime | None = None

    @classmethod
    def of(cls, priority: object = None, command: object = None, queue: object = None) -> Pause:
        """A validated pause; InvalidInput naming the bad part, or when no part is given."""
        pause = cls(_as_priority(priority), _as_command(command), _as_queue(queue))
        if pause.priority is None and pause.command is None and pause.queue is None:
            raise InvalidInput("a pause needs a priority, a command or a queue (any combination)")
        return pause

    def matches(self, priority: int, command: str, queue: str = DEFAULT_QUEUE) -> bool:
        return (
            (self.priority is None or self.priority == priority)
            and (self.command is None or self.command == command)
            and (self.queue is None or self.queue == queue)
        )

    @property
    def whole_priority(self) -> bool:
        """It pauses every job of its priority (no command or queue narrows it)."""
        return self.priority is not None and self.command is None and self.queue is None

    def describe(self) -> str:
        """``priority LOW, command SendMail``."""
        parts = []
        if self.priority is not None:
            parts.append(f"priority {priority_name(self.priority)}")
        if self.command is not None:
            parts.append(f"command {self.command}")
        if self.queue is not None:
            parts.append(f"queue {self.queue}")
        return ", ".join(parts) or "everything"

    def key(self) -> dict[str, Any]:
        """The stored form: 0 and '' for an unset part."""
        return {"priority": int(self.priority or 0), "command": self.command or "", "queue": self.queue or ""}

    @classmethod
    def from_row(cls, priority: int, command: str, queue: str, paused_by: str, paused_at: dt.datetime) -> Pause:
        return cls(int(priority) or None, command or None, queue or None, paused_by, paused_at)

    def as_dict(self) -> dict[str, Any]:
        return {
            "priority": None if self.priority is None else priority_name(self.priority),
            "command": self.command,
            "queue": self.queue,
            "paused_by": self.paused_by,
            "paused_at": iso(self.paused_at),
        }


def pause_flags(pause: Pause) -> str:
    """The command-line flags naming this pause: ``--priority LOW --command SendMail``."""
    flags = []
    if pause.priority is not None:
        flags.append(f"--priority {priority_name(pause.priority)}")
    if pause.command is not None:
        flags.append(f"--command {pause.command}")
    if pause.queue is not None:
        flags.append(f"--queue {pause.queue}")
    return " ".join(flags)


def paused_by_any(pauses: Iterable[Pause], priority: int, command: str, queue: str = DEFAULT_QUEUE) -> Pause | None:
    """The first pause that holds a job of this priority, command and queue; None if none does."""
    return next((p for p in pauses if p.matches(priority, command, queue)), None)


@dataclasses.dataclass(frozen=True)
class JobFilter:
    """Which jobs a bulk action takes: every set part must match (None matches anything)."""

    command: str | None = None
    priority: int | None = None
    queue: str | None = None
    error: str | None = None  # a text found in last_error (case-sensitive)
    older_than: dt.timedelta | None = None  # since created (pending) or finished (the others)

    @classmethod
    def of(
        cls,
        *,
        command: object = None,
        priority: object = None,
        queue: object = None,
        error: object = None,
        older_than: object = None,
    ) -> JobFilter:
        """A validated filter; InvalidInput naming the bad part."""
        if error is not None and (not isinstance(error, str) or not error or len(error) > MAX_ERROR_FILTER):
            raise InvalidInput(f"error must be a text of 1 to {MAX_ERROR_FILTER} characters, got {short(error)}")
        return cls(
            command=_as_command(command),
            priority=_as_priority(priority),
            queue=_as_queue(queue),
            error=error,
            older_than=None if older_than is None else as_timedelta(older_than, "older_than"),
        )

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) is not None for f in dataclasses.fields(self))

    def describe(self) -> str:
        """``command SendMail, error 'timed out', older than 3600 s``; ``every job`` when empty."""
        parts = []
        if self.command is not None:
            parts.append(f"command {self.command}")
        if self.priority is not None:
            parts.append(f"priority {priority_name(self.priority)}")
        if self.queue is not None:
            parts.append(f"queue {self.queue}")
        if self.error is not None:
            parts.append(f"error {self.error!r}")
        if self.older_than is not None:
            parts.append(f"older than {self.older_than.total_seconds():g} s")
        return ", ".join(parts) or "every job"

    def cutoff(self, now: dt.datetime) -> dt.datetime | None:
        if self.older_than is None:
            return None
        try:
            return now - self.older_than
        except OverflowError:
            return dt.datetime(1000, 1, 1)


@dataclasses.dataclass(frozen=True)
class BulkResult:
    """What a bulk action changed (or, with ``dry_run``, would change), by the jobs' states."""

    action: str
    dry_run: bool
    counts: dict[str, int]  # state -> jobs: waiting or deferred ("pending"), running, failed, done, cancelled

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        """``3 jobs (2 failed, 1 pending)``, or ``2 failed jobs`` when all are of one state."""
        jobs = f"job{'s' if self.total != 1 else ''}"
        if len(self.counts) == 1:
            return f"{self.total} {next(iter(self.counts))} {jobs}"
        parts = ", ".join(f"{n} {state}" for state, n in self.counts.items())
        return f"{self.total} {jobs}" + (f" ({parts})" if parts else "")


@dataclasses.dataclass(frozen=True)
class Action:
    """One line of the history of operators' actions."""

    id: int
    at: dt.datetime
    actor: str
    action: str
    target: str
    jobs: int

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": iso(self.at), "by": self.actor, "action": self.action, "target": self.target,
                "jobs": self.jobs}


__all__ = [
    "CANCEL",
    "DEFAULT_QUEUE",
    "MAX_COMMAND_LENGTH",
    "PAUSE",
    "PURGE",
    "RESUME",
    "RETRY",
    "Action",
    "BulkResult",
    "JobFilter",
    "Pause",
    "as_actor",
    "default_actor",
    "paused_by_any",
]
