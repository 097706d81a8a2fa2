"""The producer API: add jobs, look at them, retry, cancel and purge them.

``add()`` is shaped like Friendica's ``Worker::add``::

    q = fastsched.connect("mysql://user:password@db:3306/app")
    job_id = q.add(fastsched.PRIORITY_HIGH, "Notifier", "like", 42)
    job_id = q.add({"priority": fastsched.PRIORITY_LOW, "delay": 60}, "Cleanup")

Validation happens before anything touches the database: invalid input raises
``fastsched.errors.InvalidInput`` (also a ``ValueError``) whose message names what was wrong,
and nothing is stored. ``add()`` is one statement on the backend (dedup is atomic there) and
then a wake-up datagram to the masters on this host; keep it that way, it is benchmarked
against a raw single-row INSERT.

Commands may contain ASCII letters, digits and ``_ . : - /`` (1 to 100 characters): enough
for ``Notifier``, ``app.tasks:send`` and ``addon/bluesky/bluesky_feed.php``.

A ``Queue`` holds one database connection. Its methods serialize on a lock, so a queue may be
shared by threads (they take turns); the module-level functions use a default queue per
process, created at first use from ``$FASTSCHED_DSN``. Tests reset it with
:func:`reset_default`.
"""
from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fastsched import controls, validation, wakeup
from fastsched.aio import AsyncWorkers
from fastsched.dbclock import utcnow
from fastsched.dsn import DSN, parse_dsn
from fastsched.errors import ConfigError, FastschedError, InvalidInput
from fastsched.jobs import Job, JobState, NewJob

if TYPE_CHECKING:
    from fastsched.backends.contracts import Backend, ProducerStore

from fastsched.validation import (
    DEFAULT_MAX_PARAMETER_BYTES,
    MAX_PARAMETER_BYTES_LIMIT,
    as_job_id,
    as_timedelta,
    canonical_parameter,
    dedup_hash,
    short,
)

__all__ = [
    "DEFAULT_PURGE_AGE",
    "Queue",
    "actions",
    "add",
    "add_async",
    "add_many",
    "add_many_async",
    "cancel",
    "cancel_all",
    "canonical_parameter",
    "connect",
    "dedup_hash",
    "default_queue",
    "failed",
    "get",
    "pause",
    "paused",
    "purge",
    "reset_default",
    "resume",
    "retry",
    "retry_all",
    "stats",
    "utcnow",
]

DEFAULT_PURGE_AGE = dt.timedelta(hours=1)  # done jobs are kept this long (Friendica: one hour)


def _runnable(job: NewJob, now: dt.datetime | None) -> bool:
    """Whether a job just added may run at once (worth a wake-up)."""
    if job.next_try is None:
        return job.delay_us == 0
    return job.next_try <= (utcnow() if now is None else now)


class Queue:
    """A connection to one fastsched database, for producers (and for looking at jobs).

    ``dsn``: ``mysql://user:password@host:port/db`` (also ``mariadb://``) or ``sqlite:///path``;
    None means ``$FASTSCHED_DSN``, else ``sqlite:///fastsched.sqlite3``. ``clock``: None (the
    default) takes every time from the database server's clock, so that a producer whose clock is
    off neither delays its jobs nor jumps the line; or a callable returning now as a naive UTC
    datetime, used instead (tests inject one). ``max_parameter_bytes``: the
    largest JSON of a job's args, in bytes of UTF-8.

    Opening connects and creates the tables if they are missing: a database that cannot be
    reached raises ``DatabaseUnavailable`` here, not at the first ``add()``. With ``lazy=True``
    nothing connects until an operation needs the queue's own connection. Adding on a
    ``connection`` of your own needs it only on MySQL, for jobs with dedup (their running
    duplicates are looked up there, so that your transaction never locks a claimed row).
    """

    def __init__(
        self,
        dsn: str | DSN | None = None,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        max_parameter_bytes: int = DEFAULT_MAX_PARAMETER_BYTES,
        lazy: bool = False,
    ) -> None:
        self._dsn = parse_dsn(dsn)
        if clock is not None and not callable(clock):
            raise ConfigError(f"clock must be a callable returning a naive UTC datetime, got {clock!r}")
        if (
            isinstance(max_parameter_bytes, bool)
            or not isinstance(max_parameter_bytes, int)
            or not 2 <= max_parameter_bytes <= MAX_PARAMETER_BYTES_LIMIT
        ):
            raise ConfigError(
                f"max_parameter_bytes must be an int from 2 to {MAX_PARAMETER_BYTES_LIMIT}, "
                f"got {short(max_parameter_bytes)}"
            )
        self._clock: Callable[[], dt.datetime] | None = clock
        self.max_parameter_bytes = max_parameter_bytes
        self._identity = self._dsn.identity
        self._lock = threading.Lock()
        self._opened = self._open(connect=not lazy)
        self._backend: ProducerStore = self._opened  # what a producer may use of it
        self._async = AsyncWorkers(self._dsn)  # add_async's threads: none until its first call

    def _open(self, *, connect: bool) -> Backend:
        from fastsched.backends import open_backend  # the drivers load on first connect, not on import

        try:
            backend = open_backend(self._dsn)
            if not connect:
                return backend
            try:
                backend.init_schema()
            except BaseException:
                backend.close()
                raise
        except FastschedError as exc:
            # Backends mask the password already; make sure of it, since this is where it would show.
            password = self._dsn.password
            if password and password in str(exc):
                raise type(exc)(str(exc).replace(password, "***")) from None
            raise
        return backend

    # --- life cycle ----------------------------------------------------------------------------
    @property
    def dsn(self) -> DSN:
        """The parsed DSN (its str and repr mask the password)."""
        return self._dsn

    @property
    def backend(self) -> Backend:
        """The storage backend (every contract of ``fastsched.backends.contracts``), for the pool
        and for tests."""
        return self._opened

    def close(self) -> None:
        """Close the connection (and add_async's, after the calls under way); the queue
        reconnects if it is used again."""
        self._async.close()
        with self._lock:
            self._backend.close()

    def __enter__(self) -> Queue:  # noqa: PYI034 - Self needs Python 3.11 or typing_extensions
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<fastsched.Queue {self._dsn.masked()}>"

    # --- producing -----------------------------------------------------------------------------
    def _now(self) -> dt.datetime:
        """Now for reading states: the injected clock, else the database server's."""
        if self._clock is not None:
            return self._clock()
        with self._lock:
            now: dt.datetime = self._backend.server_now()
        return now

    def _new_job(self, first: object, command: object, args: tuple[object, ...], now: dt.datetime | None) -> NewJob:
        """Validate one add() call and build the row to store. Raises InvalidInput."""
        return validation.new_job(first, command, args, now, self.max_parameter_bytes)

    def add(self, priority_or_options: object, command: str, *args: object, connection: Any = None) -> int:
        """Queue ``command(*args)``; return the job's id.

        ``priority_or_options``: a Priority (or its int), or a dict of options:

        - ``priority``: default ``PRIORITY_MEDIUM``.
        - ``created``: a datetime (naive = UTC, aware is converted); jobs run oldest first, so a
          follow-up job can take its parent's place in line. Also its next_try unless delayed.
        - ``delay``: seconds (int/float), a timedelta, or a datetime to run at (naive = UTC);
          next_try becomes now + delay. 0 means no delay.
        - ``force_priority``: with dedup, set the pending duplicate's priority to this one if no
          worker has claimed it yet.
        - ``dedup`` (default True): if an identical job (same command and args) is pending
          (waiting, deferred or running), add nothing and return that job's id. ``"waiting"``:
          only an identical job that has not started (waiting or deferred) absorbs the add; if
          the identical job is running, a new job is queued, so a change made while it runs is
          processed too. False: always queue a new job.
        - ``queue`` (default ``"default"``): the queue the job belongs to; a pool started with
          ``--queues`` claims only from its queues. Named like a command: ASCII letters, digits
          and ``_ . : - /``, 1 to 100 characters.

        ``connection``: your own open connection to the queue's database: the job is inserted
        inside your transaction and commits or rolls back with it. For MySQL/MariaDB one of
        pymysql, mysqlclient (``MySQLdb``) or mysql-connector-python; for SQLite a
        ``sqlite3.Connection``; for either a Django connection (``django.db.connection``). The
        fastsched tables must exist in that database (they are never created on your connection).
        Masters find the job at their next poll (no wake-up is sent for it).
        """
        now = self._clock() if self._clock is not None else None
        job = self._new_job(priority_or_options, command, args, now)
        if connection is not None:
            self._check_connection(connection)
        job_id = self._store((job,), connection)[0]
        if connection is None and _runnable(job, now):
            wakeup.notify(self._identity, job.priority)
        return job_id

    def add_many(self, jobs: Iterable[Any], *, connection: Any = None) -> list[int]:
        """Queue many jobs in few statements; return their ids in input order.

        Each job is a tuple or list shaped like ``add``'s positional arguments:
        ``(priority_or_options, command, *args)``. Dedup applies as in ``add``, within the batch
        too. Every job is validated first: if one is invalid, InvalidInput names its index and
        nothing is stored.
        """
        now = self._clock() if self._clock is not None else None
        new_job = self._new_job
        batch: list[NewJob] = []
        append = batch.append
        if isinstance(jobs, (str, bytes, dict)):
            raise InvalidInput(f"jobs must be an iterable of tuples, got {type(jobs).__name__}")
        try:
            iterator = iter(jobs)
        except TypeError:
            raise InvalidInput(f"jobs must be an iterable of tuples, got {type(jobs).__name__}") from None
        for index, spec in enumerate(iterator):
            if type(spec) is not tuple and not isinstance(spec, (tuple, list)):
                raise InvalidInput(
                    f"jobs[{index}]: must be a tuple (priority_or_options, command, *args), "
                    f"got {type(spec).__name__}"
                )
            if len(spec) < 2:
                raise InvalidInput(f"jobs[{index}]: needs at least a priority (or options) and a command")
            try:
                append(new_job(spec[0], spec[1], tuple(spec[2:]), now))
            except InvalidInput as exc:
                raise InvalidInput(f"jobs[{index}]: {exc}") from None
        if not batch:
            return []
        if connection is not None:
            self._check_connection(connection)
        ids = self._store(batch, connection)
        if connection is None and any(_runnable(job, now) for job in batch):
            wakeup.notify(self._identity)
        return ids

    def _store(self, batch: Sequence[NewJob], connection: Any) -> list[int]:
        backend = self._async.backend()  # on one of add_async's threads: its own connection
        if backend is not None:
            ids: list[int] = backend.add_many(batch, connection=connection)
            return ids
        with self._lock:
            ids = self._backend.add_many(batch, connection=connection)
        return ids

    async def add_async(
        self, priority_or_options: object, command: str, *args: object, connection: Any = None
    ) -> int:
        """``add`` for asyncio code: the same arguments, dedup, errors and result, and the event
        loop runs on meanwhile (see ``fastsched.aio``). Safe for many concurrent callers. A
        ``connection`` is used from a worker thread (so a sqlite3 one needs
        ``check_same_thread=False``); a cancelled await may still have added the job."""
        return await self._async.run(self.add, priority_or_options, command, *args, connection=connection)

    async def add_many_async(self, jobs: Iterable[Any], *, connection: Any = None) -> list[int]:
        """``add_many`` for asyncio code, as :meth:`add_async` is ``add``'s (the batch is
        validated on the worker thread too, so a big one does not hold up the loop)."""
        return await self._async.run(self.add_many, jobs, connection=connection)

    def _check_connection(self, connection: Any) -> None:
        """A caller's connection must be of a driver (or Django vendor) of this queue's database."""
        from fastsched.backends import callers

        callers.check(connection, self._dsn.dialect)

    # --- looking and managing ------------------------------------------------------------------
    def get(self, job_id: int) -> Job:
        """The job with this id (JobNotFound if there is none: purged, or cancelled before it ran; a job
        cancelled while it ran is kept, in state ``cancelled``)."""
        job_id = as_job_id(job_id)
        now = self._now()
        with self._lock:
            job: Job = self._backend.get(job_id, now)
        return job

    def stats(self) -> list[Any]:
        """One ``fastsched.backends.base.PriorityStats`` per priority, CRITICAL first, all five.

        Each has ``priority``, ``waiting``, ``deferred``, ``running``, ``failed``,
        ``done_last_hour`` and ``oldest_waiting_seconds`` (None when nothing waits).
        """
        now = self._now()
        with self._lock:
            return list(self._backend.stats(now))

    def cancel(self, job_id: int, *, by: str | None = None) -> Job:
        """Cancel a job; return it as it was.

        A waiting, deferred or failed job is deleted. A running job is stopped by the master that
        runs it, on whichever host: the request goes through the database, the master sends its
        child SIGTERM (SIGKILL after the grace: ``kill_grace``, 5 s, or ``shutdown_grace`` if
        shorter), the job ends ``cancelled`` (kept like a failed job, its last_error naming ``by``,
        never retried) and the rest of that child's batch goes back to the queue. InvalidState if it is done or cancelled; JobNotFound if there is no
        such job. ``by``: who cancels, for the history (default ``user@host``).
        """
        job_id = as_job_id(job_id)
        actor = controls.as_actor(by)
        now = self._now()
        with self._lock:
            job: Job = self._backend.cancel(job_id, actor, now)
            what = "asked its master to stop it" if job.state is JobState.RUNNING else "deleted"
            self._backend.record_action(actor, controls.CANCEL, f"job {job_id} ({job.state.value}: {what})", 1, now)
        return job

    def retry(self, job_id: int, *, by: str | None = None) -> Job:
        """Put a failed job back to waiting, with its retry counters reset; return it.

        If an identical job is pending meanwhile, the failed one is dropped and the pending one
        is returned. InvalidState if the job is not failed (a cancelled job is never retried).
        """
        job_id = as_job_id(job_id)
        actor = controls.as_actor(by)
        now = self._now()
        with self._lock:
            job: Job = self._backend.retry(job_id, now)
            self._backend.record_action(actor, controls.RETRY, f"job {job_id}", 1, now)
        if job.next_try <= now:
            wakeup.notify(self._identity)
        return job

    def retry_all(
        self,
        *,
        command: str | None = None,
        priority: int | str | None = None,
        queue: str | None = None,
        error: str | None = None,
        older_than: dt.timedelta | float | None = None,
        dry_run: bool = False,
        by: str | None = None,
    ) -> int:
        """Retry every failed job matching the filter (all of them without one); return how many
        went back to the queue, or with ``dry_run`` how many would. See :meth:`bulk`."""
        job_filter = controls.JobFilter.of(
            command=command, priority=priority, queue=queue, error=error, older_than=older_than
        )
        return self.bulk(controls.RETRY, job_filter, dry_run=dry_run, by=by).total

    def cancel_all(
        self,
        *,
        command: str | None = None,
        priority: int | str | None = None,
        queue: str | None = None,
        error: str | None = None,
        older_than: dt.timedelta | float | None = None,
        dry_run: bool = False,
        by: str | None = None,
    ) -> int:
        """Cancel every waiting, deferred, failed and running job matching the filter (see
        :meth:`cancel`); return how many, or with ``dry_run`` how many would be. See :meth:`bulk`."""
        job_filter = controls.JobFilter.of(
            command=command, priority=priority, queue=queue, error=error, older_than=older_than
        )
        return self.bulk(controls.CANCEL, job_filter, dry_run=dry_run, by=by).total

    def bulk(
        self,
        action: str,
        job_filter: controls.JobFilter,
        *,
        dry_run: bool = False,
        include_failed: bool = False,
        failed_only: bool = False,
        by: str | None = None,
    ) -> controls.BulkResult:
        """``retry``, ``cancel`` or ``purge`` the jobs ``job_filter`` matches, by state.

        It works through the table in windows of ``backends.controls.BULK_WINDOW`` rows, each a
        short transaction, so a million matching rows never hold long locks; jobs added after it
        began are not taken. ``dry_run``: count what would change, change nothing. Every real run
        is recorded in the history (:meth:`actions`). ``include_failed`` (purge): failed and
        cancelled jobs too; ``failed_only`` (cancel): failed jobs only.
        """
        for name, flag in (("dry_run", dry_run), ("include_failed", include_failed), ("failed_only", failed_only)):
            if type(flag) is not bool:
                raise InvalidInput(f"{name} must be True or False, got {short(flag)}")
        if not isinstance(job_filter, controls.JobFilter):
            raise InvalidInput(f"job_filter must be a fastsched.controls.JobFilter, got {short(job_filter)}")
        actor = controls.as_actor(by)
        now = self._now()
        with self._lock:
            result: controls.BulkResult = self._backend.bulk(
                action, job_filter, now, by=actor, dry_run=dry_run, include_failed=include_failed,
                failed_only=failed_only,
            )
            if not dry_run:
                target = job_filter.describe() + (" (failed and cancelled too)" if include_failed else "")
                target += " (failed jobs only)" if failed_only and action == controls.CANCEL else ""
                self._backend.record_action(actor, action, target, result.total, now)
        if action == controls.RETRY and result.total and not dry_run:
            wakeup.notify(self._identity)
        return result

    # --- pauses and the history ----------------------------------------------------------------
    def pause(
        self,
        priority: int | str | None = None,
        command: str | None = None,
        queue: str | None = None,
        *,
        by: str | None = None,
    ) -> controls.Pause:
        """Pause pending work, cluster-wide: no master claims a job matching every part given
        (a priority, a command, a queue: any combination, at least one) until :meth:`resume`.
        Running jobs are not touched. Stored in the database; pausing twice is harmless.
        Return the pause as stored (who made it and when)."""
        pause = controls.Pause.of(priority, command, queue)
        actor = controls.as_actor(by)
        now = self._now()
        with self._lock:
            if self._backend.pause(pause, actor, now):
                self._backend.record_action(actor, controls.PAUSE, pause.describe(), 0, now)
            stored = [p for p in self._backend.pauses() if p.key() == pause.key()]
        return stored[0] if stored else pause

    def resume(
        self,
        priority: int | str | None = None,
        command: str | None = None,
        queue: str | None = None,
        *,
        everything: bool = False,
        by: str | None = None,
    ) -> int:
        """Remove the pause of exactly these parts (as given to :meth:`pause`), or with
        ``everything`` every pause; return how many were removed (0: there was no such pause)."""
        if type(everything) is not bool:
            raise InvalidInput(f"everything must be True or False, got {short(everything)}")
        if everything and (priority is not None or command is not None or queue is not None):
            raise InvalidInput("resume everything, or one pause by its parts: not both")
        if not everything and priority is None and command is None and queue is None:
            raise InvalidInput(
                "resume needs the parts of the pause to end (priority, command, queue: a pause needs a priority, "
                "a command or a queue), or everything=True to end every pause"
            )
        pause = None if everything else controls.Pause.of(priority, command, queue)
        actor = controls.as_actor(by)
        now = self._now()
        with self._lock:
            removed: int = self._backend.resume(pause)
            if removed:
                target = "every pause" if pause is None else pause.describe()
                self._backend.record_action(actor, controls.RESUME, target, 0, now)
        if removed:
            wakeup.notify(self._identity)
        return removed

    def paused(self) -> list[controls.Pause]:
        """Every pause in force, with who made it and when."""
        with self._lock:
            return list(self._backend.pauses())

    def actions(self, limit: int = 20) -> list[controls.Action]:
        """The history of operators' actions (pause, resume, retry, cancel, purge), newest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidInput(f"limit must be an int >= 0, got {short(limit)}")
        with self._lock:
            return list(self._backend.actions(limit)) if limit else []

    def failed(self, limit: int = 100) -> list[Job]:
        """Failed jobs, newest first, at most ``limit``."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidInput(f"limit must be an int >= 0, got {short(limit)}")
        if limit == 0:
            return []
        with self._lock:
            return list(self._backend.failed(limit))

    def purge(
        self,
        older_than: dt.timedelta | float = DEFAULT_PURGE_AGE,
        include_failed: bool = False,
        *,
        command: str | None = None,
        priority: int | str | None = None,
        queue: str | None = None,
        error: str | None = None,
        dry_run: bool = False,
        by: str | None = None,
    ) -> int:
        """Delete done jobs (and with ``include_failed``, failed and cancelled ones) that finished
        more than ``older_than`` (a timedelta or seconds) ago and match the filter; return how
        many (with ``dry_run``, how many would go). Runs in bounded batches (see :meth:`bulk`)."""
        if type(include_failed) is not bool:
            raise InvalidInput(f"include_failed must be True or False, got {short(include_failed)}")
        job_filter = controls.JobFilter.of(
            command=command, priority=priority, queue=queue, error=error,
            older_than=as_timedelta(older_than, "older_than"),  # None too: a purge needs an age
        )
        return self.bulk(controls.PURGE, job_filter, dry_run=dry_run, include_failed=include_failed, by=by).total


def connect(
    dsn: str | DSN | None = None,
    *,
    clock: Callable[[], dt.datetime] | None = None,
    max_parameter_bytes: int = DEFAULT_MAX_PARAMETER_BYTES,
) -> Queue:
    """Open a queue: see :class:`Queue`."""
    return Queue(dsn, clock=clock, max_parameter_bytes=max_parameter_bytes)


# --- the default queue of the module-level functions -----------------------------------------

_default: Queue | None = None
_default_pid = 0
_default_lock = threading.Lock()


def default_queue() -> Queue:
    """The queue the module-level functions use: opened from ``$FASTSCHED_DSN`` at first use.

    A forked child gets a queue of its own (a connection must never be shared across processes).
    """
    queue = _default
    if queue is not None and _default_pid == os.getpid():
        return queue
    return _open_default()


def _open_default() -> Queue:
    global _default, _default_pid
    with _default_lock:
        pid = os.getpid()
        if _default is None or _default_pid != pid:
            # After a fork the parent's queue is dropped without closing: closing would talk on
            # the parent's socket.
            _default = Queue()
            _default_pid = pid
        return _default


def reset_default() -> None:
    """Close and forget the default queue; the next module-level call opens a new one from
    ``$FASTSCHED_DSN`` (tests call this after changing the environment)."""
    global _default, _default_pid
    with _default_lock:
        queue, _default = _default, None
        if queue is not None and _default_pid == os.getpid():
            queue.close()
        _default_pid = 0


def add(priority_or_options: object, command: str, *args: object, connection: Any = None) -> int:
    """``Queue.add`` on the default queue."""
    return default_queue().add(priority_or_options, command, *args, connection=connection)


def add_many(jobs: Iterable[Any], *, connection: Any = None) -> list[int]:
    """``Queue.add_many`` on the default queue."""
    return default_queue().add_many(jobs, connection=connection)


async def add_async(priority_or_options: object, command: str, *args: object, connection: Any = None) -> int:
    """``Queue.add_async`` on the default queue (opened on a worker thread the first time)."""
    queue = await _default_queue_async()
    return await queue.add_async(priority_or_options, command, *args, connection=connection)


async def add_many_async(jobs: Iterable[Any], *, connection: Any = None) -> list[int]:
    """``Queue.add_many_async`` on the default queue."""
    queue = await _default_queue_async()
    return await queue.add_many_async(jobs, connection=connection)


async def _default_queue_async() -> Queue:
    queue = _default
    if queue is not None and _default_pid == os.getpid():
        return queue
    import asyncio

    return await asyncio.to_thread(default_queue)  # opening connects: not on the loop


def get(job_id: int) -> Job:
    """``Queue.get`` on the default queue."""
    return default_queue().get(job_id)


def stats() -> list[Any]:
    """``Queue.stats`` on the default queue."""
    return default_queue().stats()


def cancel(job_id: int, *, by: str | None = None) -> Job:
    """``Queue.cancel`` on the default queue."""
    return default_queue().cancel(job_id, by=by)


def retry(job_id: int, *, by: str | None = None) -> Job:
    """``Queue.retry`` on the default queue."""
    return default_queue().retry(job_id, by=by)


def retry_all(**filters: Any) -> int:
    """``Queue.retry_all`` on the default queue."""
    return default_queue().retry_all(**filters)


def cancel_all(**filters: Any) -> int:
    """``Queue.cancel_all`` on the default queue."""
    return default_queue().cancel_all(**filters)


def pause(
    priority: int | str | None = None, command: str | None = None, queue: str | None = None, *, by: str | None = None
) -> controls.Pause:
    """``Queue.pause`` on the default queue."""
    return default_queue().pause(priority, command, queue, by=by)


def resume(
    priority: int | str | None = None,
    command: str | None = None,
    queue: str | None = None,
    *,
    everything: bool = False,
    by: str | None = None,
) -> int:
    """``Queue.resume`` on the default queue."""
    return default_queue().resume(priority, command, queue, everything=everything, by=by)


def paused() -> list[controls.Pause]:
    """``Queue.paused`` on the default queue."""
    return default_queue().paused()


def actions(limit: int = 20) -> list[controls.Action]:
    """``Queue.actions`` on the default queue."""
    return default_queue().actions(limit)


def failed(limit: int = 100) -> list[Job]:
    """``Queue.failed`` on the default queue."""
    return default_queue().failed(limit)


def purge(older_than: dt.timedelta | float = DEFAULT_PURGE_AGE, include_failed: bool = False, **filters: Any) -> int:
    """``Queue.purge`` on the default queue."""
    return default_queue().purge(older_than, include_failed, **filters)
