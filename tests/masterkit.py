"""A ChildSet without processes, for the master's in-process tests: a stand-in for multiprocessing's
fork context whose processes never start, with pids no process can have (above Linux's pid_max),
so that a signal the master sends by mistake can reach nothing."""
from __future__ import annotations

import itertools
import multiprocessing
from typing import Any

PID_BASE = 2**30  # above /proc/sys/kernel/pid_max (at most 2**22)


class FakeProcess:
    pids = itertools.count(PID_BASE)

    def __init__(self, target: Any, args: Any, name: str) -> None:
        self.pid = next(self.pids)
        self.sentinel = -self.pid
        self.exitcode: int | None = None

    def start(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass


class FakeContext:
    """multiprocessing's fork context, without the fork."""

    Process = FakeProcess

    @staticmethod
    def RawArray(kind: str, size: int) -> list[float]:
        return [0.0] * size

    @staticmethod
    def Pipe(duplex: bool = True) -> Any:
        return multiprocessing.Pipe(duplex)


class FakeTime:
    """A monotonic clock that moves only when a test moves it (``now``), and a sleep that moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def mono(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
