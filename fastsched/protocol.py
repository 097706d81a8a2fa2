"""The pipe between the pool master and a child: what crosses it, named on both ends.

One duplex pipe per child (``multiprocessing`` connections, pickled messages):

    master -> child   BatchMessage(seq, jobs)   jobs: JobToRun field order, as plain tuples
                      None                      exit
    child -> master   Reply(DONE, seq, processed, seconds, timings)   ONE per batch
                      NoteMessage(NOTE, seq, job_index, kind, payload) per job that did not simply succeed

``processed`` is how many jobs of the batch were started (fewer than ``len(jobs)`` only when the
master asked the pool to stop, or revoked the batch: the rest were never started and are
released); ``seconds`` is the batch's run time; ``timings`` is one ``(command, jobs, seconds)`` per
run of consecutive started jobs of one command (one entry for a batch of one command), what the
master's run-time estimates learn from (``fastsched.batching``). Every job in ``jobs[:processed]`` without a note succeeded: success costs nothing
per job. A note is sent as soon as its job ends, so that a crash later in the same batch cannot
lose it (the master would otherwise count the failed job as done). Its ``kind``:

    ERROR  payload = the traceback text         an attempt that failed: retried later
    DEFER  payload = seconds or None            the job called fastsched.defer(delay)
    FATAL  payload = a message                  cannot ever run (args not a JSON list, signature
                                                mismatch, unknown command), or must not be retried
                                                (fastsched.Fail, the task's no_retry): failed at once

``raise fastsched.Retry(delay)`` is a DEFER note, as ``fastsched.defer(delay)`` is. An ``async def``
task's coroutine runs to completion on the child's event loop (one per child, made at its first
coroutine and reused), so a coroutine is never mistaken for a finished job.

Progress, for when the child dies mid-batch: a shared ``RawArray('d', PROGRESS_SLOTS)`` per child
holds ``[seq, index, start, term, revoke, fenced]``: the batch being run, the index of the job being run
and when it started (``time.monotonic()``), and the master's word: the master sets ``term`` just
before it sends SIGTERM (a run-time limit), and a child honours only a SIGTERM with it. ``revoke``
is the seq of a batch the master takes back: a prefetched batch (sent while the child runs another)
that waiting CRITICAL work must not wait behind; the child starts no job of it (its reply says so:
the jobs are released). ``fenced`` is the fence value past which the child killed itself: the
master may have renewed its lease by the time it sees the death, so the fence it reads then no
longer tells. The master reads the
slot after the child's death (jobs before ``index`` succeeded, the job at ``index`` was running, the
rest are released) and while it lives (run-time limits). A shared ``RawArray('i', 1)`` for all
children is the stop flag: when set, a child finishes its current job and reports the rest as
unstarted. A shared ``RawArray('d', 1)``, the fence, holds the monotonic time until which the
master's lease is known good (``fastsched.child_process`` says what a child does past it).
"""
from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "DEFER",
    "DONE",
    "ERROR",
    "EXIT_CHILD_ERROR",
    "EXIT_ORPHANED",
    "EXIT_TERMINATED",
    "FATAL",
    "NOTE",
    "PROGRESS_FENCED",
    "PROGRESS_INDEX",
    "PROGRESS_REVOKE",
    "PROGRESS_SEQ",
    "PROGRESS_SLOTS",
    "PROGRESS_START",
    "PROGRESS_TERM",
    "BatchMessage",
    "JobToRun",
    "Note",
    "NoteMessage",
    "Reply",
]

# Message tags, child -> master.
DONE = 0
NOTE = 1

# Kinds of notes.
ERROR = 1
DEFER = 2
FATAL = 3

# Slots of the progress array.
PROGRESS_SEQ = 0
PROGRESS_INDEX = 1
PROGRESS_START = 2
PROGRESS_TERM = 3  # set by the master just before its SIGTERM: the signal is its word
PROGRESS_REVOKE = 4  # the seq of a batch the master took back: start no job of it
PROGRESS_FENCED = 5  # set by the child just before its fence kills it: not a crash
PROGRESS_SLOTS = 6

# Exit codes of a child (the master only needs "it died"; these make logs readable).
EXIT_TERMINATED = 75  # SIGTERM from the master (a run-time limit): the job was interrupted
EXIT_ORPHANED = 76  # the master was gone before the child got going
EXIT_CHILD_ERROR = 77  # an error outside any job (a broken pipe, a bad message)


class JobToRun(NamedTuple):
    """A job as a child receives it. Sent as a plain tuple in this field order: pickling a
    NamedTuple costs a Python call per job on the master, the busiest process of the pool."""

    id: int
    command: str
    parameter: str  # the stored JSON text of the args
    priority: int
    retrial: int


class BatchMessage(NamedTuple):
    """master -> child: run these jobs in order."""

    seq: int  # the master's number for this batch, unique per master
    jobs: list[tuple[int, str, str, int, int]]  # JobToRun fields


class Reply(NamedTuple):
    """child -> master: the batch ``seq`` ended."""

    tag: int  # DONE
    seq: int
    processed: int  # jobs started
    seconds: float  # the batch's run time, measured by the child
    timings: list[tuple[str, int, float]]  # (command, jobs, seconds) per run of one command


class Note(NamedTuple):
    """What a note says about one job of a batch."""

    job_index: int  # the job's position in its batch
    kind: int  # ERROR, DEFER or FATAL
    payload: Any


class NoteMessage(NamedTuple):
    """child -> master: the job at ``job_index`` of batch ``seq`` did not simply succeed."""

    tag: int  # NOTE
    seq: int
    job_index: int
    kind: int
    payload: Any
