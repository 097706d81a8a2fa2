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

# Friendica's worker_fetch_limit rule: CRITICAL, HIGH and MEDIUM go to a child up to fetch_limit
# at a time, LOW and NEGLIGIBLE one by one (the compiled core and its twin carry it as BATCHED_UP_TO).
BATCHED_UP_TO = Priority.MEDIUM

RANK: dict[int, int] = {int(p): rank for rank, p in enumerate(ALL_PRIORITIES)}
"""Priority number -> rank (0 = CRITICAL ... 4 = NEGLIGIBLE), the index of every per-priority list."""


def rank_or_medium(priority: int) -> int:
    """The rank of ``priority``; MEDIUM's for a number outside the five (a claimed row that bad is
    the database's to fix, and must not stop a batch from being tracked)."""
    return RANK.get(priority, RANK[Priority.MEDIUM])


def batch_size(priority: int, fetch_limit: int) -> int:
    """How many jobs of ``priority`` one child takes at once."""
    return fetch_limit if priority <= BATCHED_UP_TO else 1


MAX_SHOWN = 60  # characters of a bad value shown in an error message


def _shown(value: object) -> str:
    """``repr(value)`` for a message: cut short, and never an error of its own (a 5,000-digit int
    or a broken ``__repr__`` would otherwise replace the InvalidInput with another exception)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001
        text = f"<{type(value).__name__}>"
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def validate_priority(value: object, *, what: str = "priority") -> Priority:
    """Return ``value`` as a Priority, or raise InvalidInput naming it.

    Friendica silently turned an unknown priority into MEDIUM; that hides bugs in the caller,
    so fastsched refuses it instead.
    """
    from fastsched.errors import InvalidInput

    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be one of 10, 20, 30, 40, 50 (fastsched.Priority), got {_shown(value)}")
    try:
        return Priority(value)
    except ValueError:
        raise InvalidInput(
            f"{what} must be one of 10, 20, 30, 40, 50 (fastsched.Priority), got {_shown(value)}"
        ) from None
