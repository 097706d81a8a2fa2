"""Waking an idle master on this host the moment a job is added.

Each master binds a Unix datagram socket in a directory named after its database (never after
the DSN's secrets); ``add()`` sends one byte to every socket there. It never blocks and never
fails the add: a lost wake-up only means the master finds the job at its next poll.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile

WAKEUP_BYTE = b"!"


def socket_dir(identity: str) -> str:
    """The directory of the wake-up sockets of masters serving the database ``identity``."""
    digest = hashlib.sha1(identity.encode()).hexdigest()[:16]
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, f"fastsched-{os.getuid()}", digest)


def notify(identity: str) -> None:
    """Wake every master on this host that serves ``identity``. Never raises."""
    directory = socket_dir(identity)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for name in names:
            if name.endswith(".sock"):
                with contextlib.suppress(OSError):  # a full buffer already means "wake up"
                    sender.sendto(WAKEUP_BYTE, os.path.join(directory, name))


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
