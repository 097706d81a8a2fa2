"""The tasks benchmark pools run (``fastsched-pool start --import bench.jobs``, repo root on the path).

They report to the benchmark process over UDP on 127.0.0.1 (``bench.harness.PingCollector``):
one datagram per job, stamped with ``time.monotonic()``, which is one clock for every process
of a Linux host.
"""
from __future__ import annotations

import os
import socket
import time

import fastsched

_socket: socket.socket | None = None
_socket_pid = 0


def _send(port: int, text: str) -> None:
    global _socket, _socket_pid
    if _socket is None or _socket_pid != os.getpid():  # one socket per (forked) child
        _socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _socket_pid = os.getpid()
    _socket.sendto(text.encode(), ("127.0.0.1", port))


@fastsched.task
def BenchNoop(*args: object) -> None:
    """Does nothing: the drain and memory benchmarks measure the queue, not the work."""


@fastsched.task
def BenchPing(port: int, seq: int) -> None:
    """Reports the moment it started: ``seq start pid``."""
    started = time.monotonic()
    _send(port, f"{seq} {started!r} {os.getpid()}")


@fastsched.task
def BenchWork(port: int, seq: int, sleep_ms: float) -> None:
    """Sleeps ``sleep_ms`` milliseconds, then reports ``seq start end pid``."""
    started = time.monotonic()
    time.sleep(sleep_ms / 1000.0)
    _send(port, f"{seq} {started!r} {time.monotonic()!r} {os.getpid()}")
