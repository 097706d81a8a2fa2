"""The five priorities, as in Friendica: a lower number runs first."""
from __future__ import annotations

import enum


class Priority(enum.IntEnum):
    CRITICAL = 10
    HIGH = 20
    MEDIUM = 30
    LOW = 40
    NEGLIGIBLE = 50


PRIORITY_CRITICAL = Priority.CRITICAL
PRIORITY_HIGH = Priority.HIGH
PRIORITY_MEDIUM = Priority.MEDIUM
PRIORITY_LOW = Priority.LOW
PRIORITY_NEGLIGIBLE = Priority.NEGLIGIBLE

ALL_PRIORITIES: tuple[Priority, ...] = tuple(Priority)


def validate_priority(value: object, *, what: str = "priority") -> Priority:
    """Return ``value`` as a Priority, or raise InvalidInput naming it.

    Friendica silently turned an unknown priority into MEDIUM; that hides bugs in the caller,
    so fastsched refuses it instead.
    """
    from fastsched.errors import InvalidInput

    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be one of 10, 20, 30, 40, 50 (fastsched.Priority), got {value!r}")
    try:
        return Priority(value)
    except ValueError:
        raise InvalidInput(f"{what} must be one of 10, 20, 30, 40, 50 (fastsched.Priority), got {value!r}") from None
