"""What the producer API accepts: input checked and turned into rows, or InvalidInput saying why.

Everything here runs before the database is touched, on the path of every ``add()``: keep it
cheap (``add()`` is benchmarked against a raw single-row INSERT). ``canonical_parameter`` and
``dedup_hash`` define what is stored and the key duplicates are found by; ``fastsched.queue``
re-exports them.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import json.encoder
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from fastsched.dbclock import MICROSECOND as _MICROSECOND
from fastsched.dbclock import utcnow as _utcnow
from fastsched.errors import InvalidInput, JobNotFound
from fastsched.jobs import NewJob
from fastsched.priority import Priority, validate_priority

DEFAULT_MAX_PARAMETER_BYTES = 1024 * 1024  # bytes of UTF-8 JSON per job's args
MAX_PARAMETER_BYTES_LIMIT = 16 * 1024 * 1024 - 1  # bytes: what a MEDIUMTEXT column holds
MAX_COMMAND_LENGTH = 100  # characters: the width of workerqueue.command
MIN_DATETIME = dt.datetime(1000, 1, 1)  # the smallest DATETIME MySQL documents
MAX_JOB_ID = 2**63 - 1  # SQLite's INTEGER range; MySQL's BIGINT UNSIGNED holds it too

OPTION_KEYS = ("priority", "created", "delay", "force_priority", "dedup", "queue")
DEFAULT_QUEUE = "default"  # the queue of a job whose add names none
# command -> the queue= of its task, for the tasks registered in this process (fastsched.tasks
# fills it from the default registry): an add that names no queue goes there.
TASK_QUEUES: dict[str, str] = {}
DEDUP_WAITING = "waiting"  # dedup="waiting": only a job that has not started absorbs an identical add
_OPTION_HINTS = {"delayed": "delay", "prio": "priority", "force": "force_priority"}

_PRIORITY_BY_VALUE: dict[int, Priority] = {int(p): p for p in Priority}
_MEDIUM = Priority.MEDIUM
# The one rule for a command name (and a queue name): a task registers under one, a producer adds
# a job with one, a control names one.
is_command_name = re.compile(rf"[A-Za-z0-9_.:/-]{{1,{MAX_COMMAND_LENGTH}}}").fullmatch
# The canonical parameter: json.dumps(list(args), separators=(",", ":"), ensure_ascii=False,
# sort_keys=True, allow_nan=False). json.dumps builds an encoder per call (3 us); the C encoder is
# built once here, without a circular-reference memo (a cycle ends in RecursionError instead).
_PROBE: tuple[object, ...] = ("é\x00", 1, 2.5, True, None, {"b": [1], "a": {}}, [])


def _make_encoder() -> Callable[[object], str]:
    python_encode = json.JSONEncoder(
        separators=(",", ":"), ensure_ascii=False, sort_keys=True, allow_nan=False
    ).encode
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)  # private: checked below
    if c_make_encoder is None:
        return python_encode
    try:
        c_encode = c_make_encoder(
            None, json.JSONEncoder().default, json.encoder.encode_basestring, None, ":", ",", True, False, False
        )

        def encode(value: object) -> str:
            return "".join(c_encode(value, 0))

        reference = json.dumps(list(_PROBE), separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        if encode(_PROBE) != reference:
            return python_encode
        for bad in ((math.nan,), (object(),)):
            try:
                encode(bad)
            except (TypeError, ValueError):
                continue
            return python_encode
    except Exception:  # noqa: BLE001 - another Python's private API: use the public one
        return python_encode
    return encode


_encode_args = _make_encoder()
_sha1 = hashlib.sha1
_tuple_new = tuple.__new__


def canonical_parameter(args: Iterable[object]) -> str:
    """The JSON text stored for ``args`` (the dedup key with the command)."""
    return _encode_args(list(args))


def dedup_hash(command: str, parameter: str, queue: str = DEFAULT_QUEUE) -> bytes:
    """The unique key of a pending job: sha1(command NUL parameter), with NUL queue after it for a
    queue other than the default. Identical jobs of two queues are two jobs (each queue's masters
    must find its own), and the keys of the default queue's jobs stay those stored before queues."""
    return _dedup_key(command, parameter.encode(), queue)


def _dedup_key(command: str, encoded: bytes, queue: str) -> bytes:
    key = command.encode() + b"\0" + encoded
    if queue != DEFAULT_QUEUE:
        key += b"\0" + queue.encode()
    return _sha1(key).digest()


def short(value: object, limit: int = 60) -> str:
    """repr() for an error message, cut to ``limit`` characters."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the real problem
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def command_error(command: object, what: str = "command") -> str:
    """Why ``command`` is not a valid command name (a queue name follows the same rule)."""
    if not isinstance(command, str):
        return f"{what} must be a str, got {type(command).__name__}"
    if not command:
        return f"{what} must not be empty"
    if len(command) > MAX_COMMAND_LENGTH:
        return f"{what} is {len(command)} characters long, the limit is {MAX_COMMAND_LENGTH}"
    bad = next(c for c in command if not is_command_name(c))
    return f"{what} {command[:40]!r} contains {bad!r}: use ASCII letters, digits and _ . : - /"


def queue_error(queue: object) -> str | None:
    """Why ``queue`` is not a valid queue name, or None: the rule of command names."""
    if isinstance(queue, str) and is_command_name(queue):
        return None
    return command_error(queue, "queue")


def queue_set(queues: Iterable[object]) -> tuple[str, ...]:
    """Queue names as a pool serves them: validated, each once, sorted (the empty tuple: every
    queue). InvalidInput names the first bad one."""
    return tuple(sorted({as_queue(name) for name in queues}))


def parse_queues(text: str) -> tuple[str, ...]:
    """A comma-separated list of queue names (``mail,default``) as a queue set; "" is every queue."""
    names = [part.strip() for part in text.split(",")]
    if names == [""]:
        return ()
    for name in names:
        problem = queue_error(name)
        if problem is not None:
            raise InvalidInput(f"{problem} (in the list {text!r}: names separated by commas)")
    return queue_set(names)


def queue_set_text(queues: Iterable[str]) -> str:
    """A queue set as stored in process.queues: the sorted names joined by commas, "" for all."""
    return ",".join(queue_set(queues))


def as_queue(queue: object) -> str:
    """A valid queue name as a plain str; InvalidInput naming what is wrong."""
    problem = queue_error(queue)
    if problem is not None:
        raise InvalidInput(problem)
    return str(queue)


def as_priority(value: object) -> Priority:
    if type(value) is int or type(value) is Priority:
        found = _PRIORITY_BY_VALUE.get(value)
        if found is not None:
            return found
    return validate_priority(value)


def as_utc(value: object, what: str) -> dt.datetime:
    """A datetime as naive UTC: naive means UTC already, aware is converted."""
    if not isinstance(value, dt.datetime):
        raise InvalidInput(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is not None:
        try:
            offset = value.utcoffset()
            value = (value - offset if offset is not None else value).replace(tzinfo=None)
        except OverflowError:
            raise InvalidInput(f"{what} is out of range: {value!r}") from None
    if value < MIN_DATETIME:
        raise InvalidInput(f"{what} must not be before {MIN_DATETIME:%Y-%m-%d}, got {value!r}")
    return value


def next_try_of(delay: object, now: dt.datetime | None) -> dt.datetime | dt.timedelta | None:
    """The next_try a delay asks for; None for no delay (0 seconds). ``now`` None: the delay as
    a timedelta, for the database server to add to its own clock (an absolute time stays one)."""
    if isinstance(delay, dt.datetime):
        return as_utc(delay, "delay")
    if isinstance(delay, dt.timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, (int, float)) and not isinstance(delay, bool):
        try:
            seconds = float(delay)
        except OverflowError:  # an int beyond any float
            raise InvalidInput(f"delay is too large: {short(delay)}") from None
        if not math.isfinite(seconds):
            raise InvalidInput(f"delay must be a finite number of seconds, got {delay!r}")
    else:
        raise InvalidInput(
            f"delay must be seconds (int or float), a timedelta or a datetime, got {type(delay).__name__}"
        )
    if seconds < 0:
        raise InvalidInput(f"delay must not be negative, got {short(delay)}")
    if seconds == 0:
        return None
    try:
        step = delay if isinstance(delay, dt.timedelta) else dt.timedelta(seconds=seconds)
        # The server adds it to its clock: one close to this host's must not overflow either.
        moment = (now or _utcnow()) + step
        return moment if now is not None else step
    except OverflowError:
        raise InvalidInput(f"delay is too large: {short(delay)}") from None


def bool_option(options: dict[Any, Any], key: str, default: bool) -> bool:
    value = options.get(key, default)
    if type(value) is not bool:
        raise InvalidInput(f"option {key!r} must be True or False, got {short(value)}")
    return value


def parameter_error(exc: Exception) -> InvalidInput:
    text = str(exc)
    if isinstance(exc, RecursionError):
        return InvalidInput("args are nested too deeply, or contain themselves, to store as JSON")
    if isinstance(exc, ValueError) and "Out of range float" in text:
        return InvalidInput(f"args must not contain NaN or infinity (JSON has neither): {text}")
    if isinstance(exc, TypeError) and "not supported between" in text:
        return InvalidInput(f"args contain a dict whose keys cannot be sorted (mixed key types): {text}")
    return InvalidInput(f"args are not JSON-serializable: {text}")


def as_timedelta(value: object, what: str) -> dt.timedelta:
    if isinstance(value, dt.timedelta):
        delta = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
        if value < 0:
            raise InvalidInput(f"{what} must not be negative, got {short(value)}")
        try:
            delta = dt.timedelta(seconds=value)
        except OverflowError:
            raise InvalidInput(f"{what} is too large: {short(value)}") from None
    else:
        raise InvalidInput(f"{what} must be a timedelta or a finite number of seconds, got {short(value)}")
    if delta < dt.timedelta(0):
        raise InvalidInput(f"{what} must not be negative, got {short(value)}")
    return delta


def as_job_id(job_id: object) -> int:
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise InvalidInput(f"job id must be an int, got {type(job_id).__name__}")
    if not 1 <= job_id <= MAX_JOB_ID:
        raise JobNotFound(f"no job has id {job_id}")
    return int(job_id)


def new_job(
    first: object, command: object, args: tuple[object, ...], now: dt.datetime | None, max_parameter_bytes: int
) -> NewJob:
    """Validate one add() call and build the row to store. Raises InvalidInput.

    ``now`` None (no injected clock): created and next_try are left to the database server's
    clock, the delay added there; a ``created`` or an absolute ``delay`` given is kept as given.
    """
    created: dt.datetime | None = now
    next_try: dt.datetime | None = now
    delay_us = 0
    force = False
    dedup = True
    waiting_only = False
    queue: str | None = None
    if type(first) is int or type(first) is Priority:
        priority = _PRIORITY_BY_VALUE.get(first)
        if priority is None:
            priority = validate_priority(first)
    elif isinstance(first, dict):
        for key in first:
            if key not in OPTION_KEYS:
                hint = _OPTION_HINTS.get(key) if isinstance(key, str) else None
                raise InvalidInput(
                    f"unknown option {short(key)}"
                    + (f" (did you mean {hint!r}?)" if hint else "")
                    + f": the options are {', '.join(OPTION_KEYS)}"
                )
        priority = as_priority(first.get("priority", _MEDIUM))
        if "created" in first:
            created = next_try = as_utc(first["created"], "created")
        if "delay" in first:
            delayed = next_try_of(first["delay"], now)
            if isinstance(delayed, dt.timedelta):
                next_try = None
                delay_us = delayed // _MICROSECOND
            elif delayed is not None:
                next_try = delayed
        force = bool_option(first, "force_priority", False)
        if "dedup" in first:
            dedup_option = first["dedup"]
            if dedup_option == DEDUP_WAITING and isinstance(dedup_option, str):
                waiting_only = True
            elif type(dedup_option) is not bool:
                raise InvalidInput(
                    f"option 'dedup' must be True, False or {DEDUP_WAITING!r}, got {short(dedup_option)}"
                )
            else:
                dedup = dedup_option
        if "queue" in first:
            queue = as_queue(first["queue"])
    else:
        priority = validate_priority(first, what="the first argument (a priority or a dict of options)")

    if type(command) is not str or not is_command_name(command):
        if not (isinstance(command, str) and is_command_name(command)):
            raise InvalidInput(command_error(command))
        command = str(command)  # a str subclass (a StrEnum member, say): stored as the plain text
    try:
        parameter = _encode_args(args)
        encoded = parameter.encode()
    except UnicodeEncodeError:
        raise InvalidInput("args contain text that is not valid Unicode (a lone surrogate)") from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise parameter_error(exc) from None
    if len(encoded) > max_parameter_bytes:
        raise InvalidInput(
            f"args are {len(encoded)} bytes as JSON, the limit is {max_parameter_bytes} bytes"
        )
    if queue is None:
        queue = TASK_QUEUES.get(command, DEFAULT_QUEUE)
    # tuple.__new__ skips the NamedTuple's Python-level __new__: a microsecond per job.
    return _tuple_new(
        NewJob,
        (
            command,
            parameter,
            priority,
            created,
            next_try,
            _dedup_key(command, encoded, queue) if dedup else None,
            force,
            queue,
            waiting_only,
            delay_us,
        ),
    )
