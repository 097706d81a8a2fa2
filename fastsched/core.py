"""The scheduling math, from the compiled core when it is built, else from the pure-Python twin.

This is the one module that chooses. The environment variable ``FASTSCHED_IMPL`` decides:

* unset (or empty): the compiled ``fastsched._core``, falling back to ``fastsched._core_py`` only when the
  extension cannot be imported;
* ``python``: the pure-Python twin, always;
* ``c``: the compiled core, and ``ImportError`` when it is not built. CI sets this, so a broken build can
  never pass as "tested twice in Python".

``IMPLEMENTATION`` says which one was loaded ("c" or "python"). Both return equal values and raise the
same exceptions; ``fastsched._core_py`` documents every function.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import TYPE_CHECKING

__all__ = [
    "BATCHED_UP_TO",
    "BUDGET_SLACK",
    "IMPLEMENTATION",
    "MAX_COUNT",
    "PRIORITIES",
    "allowed_workers",
    "batch_ids",
    "choose_priority",
    "plan",
    "plan_sized",
    "quadratic_limits",
    "rank_of",
    "round_half_up",
    "time_batches",
]

IMPL_ENV = "FASTSCHED_IMPL"
_CHOICES = ("c", "python")
_COMPILED = "fastsched._core"
_REFERENCE = "fastsched._core_py"


def _load(requested: str) -> tuple[ModuleType, str]:
    """The core module for a FASTSCHED_IMPL value, and its implementation name."""
    if requested == "python":
        return importlib.import_module(_REFERENCE), "python"
    if requested == "c":
        try:
            return importlib.import_module(_COMPILED), "c"
        except ImportError as exc:
            raise ImportError(
                f"{IMPL_ENV}=c but the compiled extension {_COMPILED} is not built: pip install . "
                f"(needs a C compiler), or python setup.py build_ext --inplace in a checkout; "
                f"unset {IMPL_ENV} or set {IMPL_ENV}=python to use the pure-Python core ({exc})"
            ) from exc
    if requested == "":
        try:
            return importlib.import_module(_COMPILED), "c"
        except ImportError:
            return importlib.import_module(_REFERENCE), "python"
    raise ValueError(f"{IMPL_ENV} must be one of {', '.join(_CHOICES)} (or unset), got {requested!r}")


_module, IMPLEMENTATION = _load(os.environ.get(IMPL_ENV, ""))

if TYPE_CHECKING:
    from fastsched._core_py import (
        BATCHED_UP_TO,
        BUDGET_SLACK,
        MAX_COUNT,
        PRIORITIES,
        allowed_workers,
        batch_ids,
        choose_priority,
        plan,
        plan_sized,
        quadratic_limits,
        rank_of,
        round_half_up,
        time_batches,
    )
else:
    PRIORITIES = _module.PRIORITIES
    BATCHED_UP_TO = _module.BATCHED_UP_TO
    BUDGET_SLACK = _module.BUDGET_SLACK
    MAX_COUNT = _module.MAX_COUNT
    round_half_up = _module.round_half_up
    quadratic_limits = _module.quadratic_limits
    rank_of = _module.rank_of
    choose_priority = _module.choose_priority
    plan = _module.plan
    plan_sized = _module.plan_sized
    time_batches = _module.time_batches
    batch_ids = _module.batch_ids
    allowed_workers = _module.allowed_workers

del _module
