"""Waking an idle master on this host the moment a job is added.

Each master binds a Unix datagram socket in a directory named after its database (never after
the DSN's secrets); ``add()`` sends one byte to every socket there. It never blocks and never
fails the add: a lost wake-up only means the master finds the job at its next poll.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
import tempfile

WAKEUP_BYTE = b"!"


@functools.lru_cache(maxsize=64)
def socket_dir(identity: str) -> str:
    """The directory of the wake-up sockets of masters serving the database ``identity``."""
    digest = hashlib.sha1(identity.encode()).hexdigest()[:16]
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, f"fastsched-{os.getuid()}", digest)


# add() is benchmarked against a bare INSERT, so the directory is listed again only when its
# mtime says a master came or went, and one sending socket serves every call.
_listings: dict[str, tuple[int, tuple[str, ...]]] = {}
_sender: socket.socket | None = None


def _sockets(directory: str) -> tuple[str, ...]:
    mtime = os.stat(directory).st_mtime_ns
    cached = _listings.get(directory)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    paths = tuple(os.path.join(directory, name) for name in os.listdir(directory) if name.endswith(".sock"))
    _listings[directory] = (mtime, paths)
    return paths


def notify(identity: str) -> None:
    """Wake every master on this host that serves ``identity``. Never raises."""
    global _sender
    try:
        paths = _sockets(socket_dir(identity))
        if not paths:
            return
        if _sender is None:
            _sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            _sender.setblocking(False)
    except OSError:
        return
    for path in paths:
        with contextlib.suppress(OSError):  # a full buffer already means "wake up"; a gone master, nothing
            _sender.sendto(WAKEUP_BYTE, path)


class Listener:
    """The master's end: a socket to ``select()`` on alongside its children's pipes."""

    def __init__(self, identity: str, host_id: str) -> None:
        directory = socket_dir(identity)
        # 0700: only this user may wake (or flood) the master.
        os.makedirs(os.path.dirname(directory), mode=0o700, exist_ok=True)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        safe_host = "".join(c if c.isalnum() or c in "-_." else "_" for c in host_id)
        self.path = os.path.join(directory, f"{safe_host}-{os.getpid()}.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._socket.bind(self.path)
        os.chmod(self.path, 0o600)

    def fileno(self) -> int:
        return self._socket.fileno()

    def drain(self) -> int:
        """Read every pending wake-up; return how many there were."""
        count = 0
        while True:
            try:
                self._socket.recv(64)
            except (BlockingIOError, InterruptedError):
                return count
            count += 1

    def close(self) -> None:
        self._socket.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
