"""The storage side of the operators' controls (``fastsched.controls``): pauses, cancel requests,
bulk actions by filter and the history of actions, on each dialect's named queries.

Bulk actions walk the table in windows of at most ``BULK_WINDOW`` rows in id order, up to the
highest id when they began (jobs added later are not theirs): each window is one short
transaction that reads the rows of the window matching the filter and changes them by id,
re-checking their state, so no statement scans or locks more than a window, whatever the size of
the table. A dry run reads the same windows and changes nothing.
"""
from __future__ import annotations

import datetime as dt
import functools
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from fastsched.backends.connection import Connection
from fastsched.backends.inserts import IN_CHUNK, chunks
from fastsched.backends.sqlfiles import expand_in
from fastsched.controls import CANCEL, PURGE, RETRY, Action, BulkResult, JobFilter, Pause
from fastsched.errors import InvalidInput, InvalidState, JobNotFound
from fastsched.jobs import DONE_CANCELLED, DONE_FAILED, DONE_OK, DONE_PENDING

BULK_WINDOW = 10_000  # rows a bulk action reads (and at most changes) per transaction
# The host_id of pending jobs a pause has set aside: the claims, the waiting counts and the plan
# read host_id = 0 only, so these cost them nothing (an index range they never enter). No host
# gets this number (fastsched_host ids count up from 1). repair_unclaimed (the queries) leaves it.
PARKED_HOST_ID = 4294967295
STATE_NAMES = {DONE_PENDING: "pending", DONE_OK: "done", DONE_FAILED: "failed", DONE_CANCELLED: "cancelled"}
RUNNING = "running"


def _state_name(done: int, pid: int) -> str:
    return RUNNING if done == DONE_PENDING and pid else STATE_NAMES.get(int(done), str(done))


class Controls:
    """Pauses, cancel requests, bulk actions and the action history, on a connection.

    ``retry_one(cursor, job_id, now)``: re-queue one failed job in the caller's transaction (the
    producer's retry, which a bulk retry falls back to); ``host_id(host)``: the number claims
    write for a host id."""

    def __init__(
        self,
        db: Connection,
        retry_one: Callable[[Any, int, dt.datetime], int],
        host_id: Callable[[str], int],
    ) -> None:
        self._transaction = db.transaction
        self._q = db.queries
        self._to_db_time = db.dialect.to_db_time
        self._from_db = db.dialect.from_db_time
        self._retry_one = retry_one
        self._host_id = host_id

    # --- pauses ---------------------------------------------------------------------------------
    def pause(self, pause: Pause, by: str, now: dt.datetime) -> bool:
        """Store a pause; False if the same one existed already (it keeps who made it and when).

        A pause of a whole priority costs the claims nothing: they skip the priority. A narrower
        one (a command, a queue) also sets the pending jobs it holds aside (``park``), so that the
        claims of their priority do not read them over and over."""
        params = {**pause.key(), "by": by, "now": self._to_db_time(now)}

        def work(cursor: Any) -> bool:
            cursor.execute(self._q["pause_add"], params)
            return bool(cursor.rowcount)

        added = self._transaction(work, "pause")
        if not pause.whole_priority:
            self.park(pause)
        return added

    def park(self, pause: Pause) -> int:
        """Set aside the unclaimed pending jobs ``pause`` holds, window by window; how many."""
        match = {
            "state_1": DONE_PENDING, "state_2": DONE_PENDING, "state_3": DONE_PENDING,
            "command": pause.command, "priority": pause.priority, "queue": pause.queue, "error": None, "before": None,
        }
        parked = [0]

        def handle(cursor: Any, rows: list[tuple[int, int, int]]) -> None:
            ids = [job_id for job_id, _, pid in rows if not pid]
            for part in chunks(ids, IN_CHUNK):
                cursor.execute(expand_in(self._q["park_jobs"], part), {"parked": PARKED_HOST_ID})
                parked[0] += int(cursor.rowcount)

        self._walk("bulk_match", match, handle, "park")
        return parked[0]

    def unpark(self) -> int:
        """Hand back to the claims the set-aside jobs that no pause holds any more; how many."""

        def any_parked(cursor: Any) -> bool:
            cursor.execute(self._q["any_parked"], {"parked": PARKED_HOST_ID})
            return cursor.fetchone() is not None

        if not self._transaction(any_parked, "unpark", write=False):
            return 0
        unparked = [0]

        def handle(cursor: Any, rows: list[tuple[int, int, int]]) -> None:
            for part in chunks([job_id for job_id, _, _ in rows], IN_CHUNK):
                cursor.execute(expand_in(self._q["unpark_jobs"], part), {"parked": PARKED_HOST_ID})
                unparked[0] += int(cursor.rowcount)

        self._walk("parked_in_window", {"parked": PARKED_HOST_ID}, handle, "unpark")
        return unparked[0]

    def park_added(self, after_id: int) -> tuple[int, int]:
        """The masters' sweep: set aside the jobs added after ``after_id`` (at most BULK_WINDOW
        ids on) that a pause of their command or queue holds; (the id to sweep from next, how
        many). Costs one small read while no such pause exists. Claims never take those jobs in
        the meantime (they check every narrow pause); set aside, the claims no longer read them."""

        def work(cursor: Any) -> tuple[int, int]:
            cursor.execute(self._q["bulk_last_id"])
            last = int(cursor.fetchone()[0])
            cursor.execute(self._q["narrow_pause_exists"])
            if cursor.fetchone() is None or last <= after_id:
                return max(last, after_id), 0
            upto = min(last, after_id + BULK_WINDOW)
            cursor.execute(self._q["park_added"], {"after": after_id, "upto": upto, "parked": PARKED_HOST_ID})
            return upto, int(cursor.rowcount)

        return self._transaction(work, "park_added")

    def resume(self, pause: Pause | None) -> int:
        """Delete this pause (None: every pause); how many were deleted. The jobs it had set aside
        go back to the claims, unless another pause holds them."""

        def work(cursor: Any) -> int:
            if pause is None:
                cursor.execute(self._q["pause_remove_all"])
            else:
                cursor.execute(self._q["pause_remove"], pause.key())
            return int(cursor.rowcount)

        removed = self._transaction(work, "resume")
        if removed:
            self.unpark()
        return removed

    def pauses(self) -> list[Pause]:
        def work(cursor: Any) -> list[Any]:
            cursor.execute(self._q["pauses"])
            return list(cursor.fetchall())

        return [
            Pause.from_row(priority, command, queue, by, self._from_db(at))
            for priority, command, queue, by, at in self._transaction(work, "pauses", write=False)
        ]

    # --- the history ----------------------------------------------------------------------------
    def record_action(self, by: str, action: str, target: str, jobs: int, now: dt.datetime) -> None:
        params = {"by": by, "action": action, "target": target[:1000], "jobs": int(jobs), "now": self._to_db_time(now)}
        self._transaction(lambda cursor: cursor.execute(self._q["action_add"], params), "record_action")

    def actions(self, limit: int = 20) -> list[Action]:
        """The newest actions first."""

        def work(cursor: Any) -> list[Any]:
            cursor.execute(self._q["actions_recent"], {"limit": int(limit)})
            return list(cursor.fetchall())

        return [
            Action(int(i), self._from_db(at), actor, action, target, int(jobs))
            for i, at, actor, action, target, jobs in self._transaction(work, "actions", write=False)
        ]

    # --- cancel requests ------------------------------------------------------------------------
    def request_cancel(self, cursor: Any, job_id: int, by: str, now: dt.datetime) -> None:
        cursor.execute(self._q["cancel_request"], {"id": int(job_id), "by": by, "now": self._to_db_time(now)})

    def cancel_request(self, job_id: int) -> tuple[str, dt.datetime] | None:
        """Who asked to stop this running job, and when; None if nobody did."""

        def work(cursor: Any) -> Any:
            cursor.execute(self._q["cancel_request_of_job"], {"id": int(job_id)})
            return cursor.fetchone()

        row = self._transaction(work, "cancel_request", write=False)
        return None if row is None else (row[0], self._from_db(row[1]))

    def cancel_requests(self, host: str) -> list[tuple[int, str]]:
        """(job id, who asked) of the jobs ``host``'s master runs that someone asked to stop."""
        params = {"host_id": self._host_id(host)}

        def work(cursor: Any) -> list[tuple[int, str]]:
            cursor.execute(self._q["cancel_requests_of_host"], params)
            return [(int(job_id), by) for job_id, by in cursor.fetchall()]

        return self._transaction(work, "cancel_requests", write=False)

    def drop_stale_cancel_requests(self) -> int:
        """Delete requests whose job is no longer pending (it ended first, or was deleted)."""

        def work(cursor: Any) -> int:
            cursor.execute(self._q["cancel_requests_stale"])
            return int(cursor.rowcount)

        return self._transaction(work, "drop_stale_cancel_requests")

    def write_cancelled(self, cursor: Any, host_id: int, db_now: Any, job_ids: Sequence[int]) -> int:
        """The outcome of jobs stopped at a request: cancelled, naming who asked; the requests go."""
        written = 0
        for part in chunks(job_ids, IN_CHUNK):
            cursor.execute(expand_in(self._q["cancel_jobs"], part), {"host_id": host_id, "now": db_now})
            written += int(cursor.rowcount)
            cursor.execute(expand_in(self._q["cancel_requests_delete"], part))
        return written

    # --- bulk actions ---------------------------------------------------------------------------
    def bulk(
        self,
        action: str,
        job_filter: JobFilter,
        now: dt.datetime,
        *,
        by: str = "",
        dry_run: bool = False,
        include_failed: bool = False,
        failed_only: bool = False,
    ) -> BulkResult:
        """Retry failed jobs, cancel pending and failed ones (delete them; ask the masters running
        them to stop the running ones; with ``failed_only`` failed ones only), or purge finished
        ones (done; with ``include_failed`` failed and cancelled too) that match ``job_filter``;
        see the module's docstring."""
        states = {
            RETRY: (DONE_FAILED,),
            CANCEL: (DONE_FAILED,) if failed_only else (DONE_PENDING, DONE_FAILED),
            PURGE: (DONE_OK, DONE_FAILED, DONE_CANCELLED) if include_failed else (DONE_OK,),
        }.get(action)
        if states is None:
            raise InvalidInput(f"bulk action must be {RETRY!r}, {CANCEL!r} or {PURGE!r}, got {action!r}")
        cutoff = job_filter.cutoff(now)
        match: dict[str, Any] = {
            **{f"state_{i + 1}": states[min(i, len(states) - 1)] for i in range(3)},  # done IN (...)
            "command": job_filter.command,
            "priority": None if job_filter.priority is None else int(job_filter.priority),
            "queue": job_filter.queue,
            "error": job_filter.error,
            "before": None if cutoff is None else self._to_db_time(cutoff),
        }

        counts: Counter[str] = Counter()
        change = {"now": self._to_db_time(now), "by": by}

        def handle(cursor: Any, rows: list[tuple[int, int, int]]) -> None:
            if dry_run:
                counts.update(_state_name(done, pid) for _, done, pid in rows)
            else:
                counts.update(self._bulk_change(cursor, action, rows, change, now))

        self._walk("bulk_match", match, handle, "bulk " + action, write=not dry_run)
        order = ("pending", RUNNING, "failed", "done", "cancelled")
        return BulkResult(action, dry_run, {state: counts[state] for state in order if counts[state]})

    def _walk(
        self, query: str, params: dict[str, Any], handle: Callable[[Any, list[tuple[int, int, int]]], None],
        what: str, *, write: bool = True,
    ) -> None:
        """Read the table in windows of at most BULK_WINDOW rows in id order, up to the highest id
        now, one transaction each: ``query`` gives a window's (id, done, pid) rows, ``handle`` acts
        on those in the same transaction."""

        def last_id(cursor: Any) -> int:
            cursor.execute(self._q["bulk_last_id"])
            return int(cursor.fetchone()[0])

        upto = self._transaction(last_id, what, write=False)

        def window(cursor: Any, after: int) -> int | None:
            cursor.execute(self._q["bulk_window"], {"after": after, "upto": upto, "window": BULK_WINDOW})
            end, rows = cursor.fetchone()
            if not rows:
                return None
            cursor.execute(self._q[query], {**params, "after": after, "upto": int(end)})
            found = [(int(i), int(done), int(pid)) for i, done, pid in cursor.fetchall()]
            if found:
                handle(cursor, found)
            return int(end)

        after = 0
        while after < upto:
            end = self._transaction(functools.partial(window, after=after), what, write=write)
            if end is None:
                break
            after = end

    def _bulk_change(
        self, cursor: Any, action: str, matched: Sequence[tuple[int, int, int]], change: dict[str, Any],
        now: dt.datetime,
    ) -> Counter[str]:
        changed: Counter[str] = Counter()
        by_state: dict[tuple[int, bool], list[int]] = {}
        for job_id, done, pid in matched:
            by_state.setdefault((done, bool(pid) and done == DONE_PENDING), []).append(job_id)
        for (done, running), ids in sorted(by_state.items()):
            for part in chunks(ids, IN_CHUNK):
                if action == RETRY:
                    cursor.execute(expand_in(self._q["bulk_requeue_failed"], part), change)
                    changed["failed"] += int(cursor.rowcount)
                    cursor.execute(expand_in(self._q["bulk_still_failed"], part))
                    for (job_id,) in cursor.fetchall():
                        try:  # its dedup hash collided: merge it into the identical pending job
                            self._retry_one(cursor, int(job_id), now)
                            changed["failed"] += 1
                        except (JobNotFound, InvalidState):
                            pass
                elif running:
                    cursor.execute(expand_in(self._q["bulk_request_cancel"], part), change)
                    changed[RUNNING] += int(cursor.rowcount)
                else:
                    cursor.execute(expand_in(self._q["bulk_delete"], part), {"done": done})
                    changed[STATE_NAMES[done]] += int(cursor.rowcount)
                    if action == CANCEL and done == DONE_PENDING:
                        # claimed since the match: it runs now, so its master is asked to stop it
                        cursor.execute(expand_in(self._q["bulk_request_cancel"], part), change)
                        changed[RUNNING] += int(cursor.rowcount)
        return changed
