"""The child's side of the guarantees (issue 11, items 4 and 11), with real forked children.

Fencing: a child whose master has not renewed its fence (the monotonic time until which the
master's lease is good) kills its job's process group, the job's subprocesses included, and dies;
it starts no job while the fence has passed. Signals: a child stops on its master's word only: a
SIGTERM to it without that word (systemd's control-group kill, a signal to the whole group)
lets the job finish; with the word, the job is interrupted.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultkit import is_alive, wait_until

from fastsched import child_process, protocol

CTX = multiprocessing.get_context("fork")
WAIT = 20.0  # seconds anything below may take on a loaded machine (events are awaited, not slept on)


def _spawn_sleeper(marker: str) -> None:
    """A job that starts a subprocess, writes its pid, then waits for a file that never comes."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(marker).write_text(str(sleeper.pid))
    while not os.path.exists(marker + ".go"):
        time.sleep(0.01)


def _wait_for_go(marker: str) -> None:
    """A job that says it started, then ends when the test creates ``marker``.go."""
    Path(marker + ".started").write_text(str(os.getpid()))
    while not os.path.exists(marker + ".go"):
        time.sleep(0.01)
    Path(marker + ".ended").write_text("")


TASKS = {"spawn_sleeper": _spawn_sleeper, "wait_for_go": _wait_for_go}


class Child:
    """A real pool child (child_process.child_main) forked by the test standing in for its master."""

    def __init__(self, fence_seconds: float | None) -> None:
        self.progress: Any = CTX.RawArray("d", protocol.PROGRESS_SLOTS)
        self.progress[protocol.PROGRESS_SEQ] = -1.0
        self.stop: Any = CTX.RawArray("i", 1)
        self.fence: Any = None
        if fence_seconds is not None:
            self.fence = CTX.RawArray("d", 1)
            self.fence[0] = time.monotonic() + fence_seconds
        self.conn, child_conn = CTX.Pipe(duplex=True)
        self.process = CTX.Process(
            target=child_process.child_main,
            args=(child_conn, self.progress, self.stop, os.getpid(), 3, TASKS, self.fence),
        )
        self.process.start()
        child_conn.close()

    def send(self, seq: int, *jobs: tuple[Any, ...]) -> None:
        self.conn.send((seq, list(jobs)))

    def close(self) -> None:
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(WAIT)
        self.conn.close()


@pytest.fixture
def make_child() -> Iterator[Any]:
    made: list[Child] = []

    def make(fence_seconds: float | None = None) -> Child:
        made.append(Child(fence_seconds))
        return made[-1]

    yield make
    for child in made:
        child.close()


def _job(job_id: int, command: str, *args: object) -> tuple[Any, ...]:
    import json

    return (job_id, command, json.dumps(list(args)), 30, 0)


def test_a_child_whose_fence_passes_kills_its_job_and_the_jobs_subprocesses(
    make_child: Any, tmp_path: Path
) -> None:
    marker = str(tmp_path / "sleeper")
    child = make_child(fence_seconds=WAIT)
    child.send(1, _job(1, "spawn_sleeper", marker))
    wait_until(lambda: os.path.exists(marker) and Path(marker).read_text() != "", WAIT, "the job's subprocess")
    sleeper = int(Path(marker).read_text())
    assert child.process.is_alive() and is_alive(sleeper)
    child.fence[0] = time.monotonic() - 1.0  # the master did not renew: its lease may run out
    child.process.join(WAIT)
    assert child.process.exitcode == -signal.SIGKILL
    wait_until(lambda: not is_alive(sleeper), WAIT, "the job's subprocess to die with the child")


def test_a_renewed_fence_lets_the_job_run_to_its_end(make_child: Any, tmp_path: Path) -> None:
    marker = str(tmp_path / "job")
    child = make_child(fence_seconds=1.0)
    child.send(1, _job(1, "wait_for_go", marker))
    wait_until(lambda: os.path.exists(marker + ".started"), WAIT, "the job to start")
    deadline = time.monotonic() + 2.5  # longer than the fence, renewed all along
    while time.monotonic() < deadline:
        child.fence[0] = time.monotonic() + 1.0
        time.sleep(0.05)
    assert child.process.is_alive()
    Path(marker + ".go").write_text("")
    assert child.conn.poll(WAIT)
    assert child.conn.recv()[:3] == (protocol.DONE, 1, 1)
    assert os.path.exists(marker + ".ended")


def test_a_child_past_its_fence_starts_no_job(make_child: Any, tmp_path: Path) -> None:
    marker = str(tmp_path / "late")
    child = make_child(fence_seconds=-1.0)
    child.send(7, _job(1, "wait_for_go", marker), _job(2, "wait_for_go", marker))
    assert child.conn.poll(WAIT)
    assert child.conn.recv()[:3] == (protocol.DONE, 7, 0)  # none started: the master releases them
    assert not os.path.exists(marker + ".started")
    assert child.process.is_alive()


def test_a_sigterm_that_is_not_the_masters_word_lets_the_job_finish(make_child: Any, tmp_path: Path) -> None:
    marker = str(tmp_path / "job")
    child = make_child()
    child.send(1, _job(1, "wait_for_go", marker))
    wait_until(lambda: os.path.exists(marker + ".started"), WAIT, "the job to start")
    os.kill(child.process.pid, signal.SIGTERM)  # as systemd's KillMode=control-group sends it
    os.kill(child.process.pid, signal.SIGINT)
    Path(marker + ".go").write_text("")
    assert child.conn.poll(WAIT), "the child died of a SIGTERM its master did not send"
    assert child.conn.recv()[:3] == (protocol.DONE, 1, 1)
    assert child.process.is_alive()


def test_the_masters_sigterm_interrupts_the_job(make_child: Any, tmp_path: Path) -> None:
    marker = str(tmp_path / "job")
    child = make_child()
    child.send(1, _job(1, "wait_for_go", marker))
    wait_until(lambda: os.path.exists(marker + ".started"), WAIT, "the job to start")
    child.progress[protocol.PROGRESS_TERM] = 1.0  # the master's word, then its signal
    os.kill(child.process.pid, signal.SIGTERM)
    child.process.join(WAIT)
    assert child.process.exitcode == protocol.EXIT_TERMINATED
    assert not os.path.exists(marker + ".ended")


def test_a_child_leads_its_own_process_group(make_child: Any, tmp_path: Path) -> None:
    marker = str(tmp_path / "job")
    child = make_child()
    child.send(1, _job(1, "wait_for_go", marker))
    wait_until(lambda: os.path.exists(marker + ".started"), WAIT, "the job to start")
    assert os.getpgid(child.process.pid) == child.process.pid != os.getpgid(0)
    Path(marker + ".go").write_text("")


def test_a_child_that_fenced_itself_is_no_crash_even_once_the_lease_is_renewed(tmp_path: Path) -> None:
    """The master stuck in a statement past half its lease: the child's fence kills it. When the
    statement returns, the heartbeat renews the lease before the master sees the death; the fence
    it reads then has not passed, yet the death was the fence's, not the job's: its job is put
    back with no crash counted (a job with crashes left to spare would lose one, and three such
    outages would fail a job that never crashed)."""
    from fastsched.jobs import ClaimedJob
    from fastsched.master.childset import ChildSet, Ended

    marker = str(tmp_path / "job")
    fence: Any = CTX.RawArray("d", 1)
    fence[0] = time.monotonic() + WAIT
    kids = ChildSet(
        CTX, tasks=TASKS, retry_limit=3, limits={30: None}, max_duration_minutes={30: 60.0},
        kill_grace=1.0, mono=time.monotonic, fence=fence,
    )
    try:
        kids.spawn(1)
        (pid,) = kids.pids()
        kids.send(pid, [ClaimedJob(1, "wait_for_go", f'["{marker}"]', 30, 0, 0)])
        wait_until(lambda: os.path.exists(marker + ".started"), WAIT, "the job to start")
        fence[0] = time.monotonic() - 0.01  # no heartbeat for half a lease: the child fences itself
        wait_until(lambda: not is_alive(pid), WAIT, "the child to kill itself")
        fence[0] = time.monotonic() + WAIT  # the hung statement returned and the heartbeat renewed
        events: list[Any] = []
        deadline = time.monotonic() + WAIT
        while pid in kids.pids() and time.monotonic() < deadline:
            events += kids.collect()
        (ended,) = [event for event in events if hasattr(event, "report")]
        assert ended.report.ended is Ended.KILLED  # the master's doing (released), not CRASHED
        assert not os.path.exists(marker + ".ended")
    finally:
        for pid in kids.pids():
            os.kill(pid, signal.SIGKILL)
