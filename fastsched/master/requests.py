"""The operators' requests a master acts on (``fastsched.controls``): cancel a running job, and set
aside the jobs added since a pause of their command or queue.

Both live in the database, so they reach the master that holds the work on whichever host: every
heartbeat interval this duty reads the cancel requests for this host's claims (a join driven by
the request table, empty nearly always: one cheap statement) and asks the children to stop those
jobs, and sweeps the jobs added since its last sweep (a bounded primary-key step; one small read
while no narrow pause exists). Now and then it drops the requests whose job ended first.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable

from fastsched.errors import DatabaseError
from fastsched.master.childset import ChildSet
from fastsched.master.dblink import DbLink
from fastsched.master.metrics import DbKind

log = logging.getLogger("fastsched.pool")

STALE_SWEEP_RUNS = 30  # runs between deletions of the requests whose job ended before it was stopped


class OperatorRequests:
    """Every ``interval`` while the database answers and the pool is not stopping."""

    def __init__(
        self, link: DbLink, children: ChildSet, owner: str, interval: float, stopping: Callable[[], bool]
    ) -> None:
        self._link = link
        self._children = children
        self._owner = owner  # claims name the instance, not the host id
        self._interval = interval
        self._stopping = stopping
        self._next = 0.0
        self._swept_to = 0  # the sweep's place: the highest job id it has read
        self._runs = 0

    def next_due(self) -> float:
        # Also while the pool stops: a job that holds up a stop is what an operator cancels then.
        return math.inf if self._link.down else self._next

    def run(self, mono: float) -> None:
        self._next = mono + self._interval
        self._runs += 1
        backend = self._link.backend
        try:
            for job_id, by in self._link.call(DbKind.OTHER, backend.cancel_requests, self._owner):
                self._children.cancel_job(job_id, by)
            if self._stopping():
                return  # nothing is claimed any more: no sweep for the pauses
            self._swept_to, parked = self._link.call(DbKind.WRITE, backend.park_added, self._swept_to)
            if parked:
                log.info("set aside %d job(s) added since for a pause of their command or queue", parked)
            if self._runs % STALE_SWEEP_RUNS == 0:
                self._link.call(DbKind.WRITE, backend.drop_stale_cancel_requests)
        except DatabaseError:
            return
