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
import stat
import tempfile

WAKEUP_BYTE = b"!"  # something was added: read the counts again


def runtime_dir() -> str:
    """fastsched's own directory for this user: ``$XDG_RUNTIME_DIR/fastsched-<uid>`` (else under /tmp)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, f"fastsched-{os.getuid()}")


def socket_dir(identity: str) -> str:
    """The directory of the wake-up sockets of masters serving the database ``identity``."""
    return _socket_dir(identity, runtime_dir())


@functools.lru_cache(maxsize=64)
def _socket_dir(identity: str, runtime: str) -> str:
    return os.path.join(runtime, hashlib.sha1(identity.encode()).hexdigest()[:16])


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


def safe_name(host_id: str) -> str:
    """``host_id`` as a file name: anything but letters, digits, '-', '_' and '.' becomes '_'."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in host_id)
    return name if name.strip(".") else "_" + name


def notify(identity: str, priority: int | None = None) -> None:
    """Wake every master on this host that serves ``identity``. Never raises.

    ``priority``: the one job added was of this priority (its decimal digits are the datagram), so a
    busy master counts it without reading the database; else the master reads its counts again."""
    global _sender
    payload = WAKEUP_BYTE if priority is None else str(int(priority)).encode()
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
            _sender.sendto(payload, path)


def check_directory(path: str, *, private: bool) -> None:
    """PermissionError naming ``path`` unless another user cannot tamper with what is in it.

    ``private``: a directory of our own (the runtime directories fastsched makes): not a symlink,
    owned by this user, writable by nobody else. Otherwise (where an operator put a pidfile):
    owned by this user or root, and writable by nobody else unless sticky (like /tmp), so that
    nobody else can replace or plant the file we open there.
    """
    info = os.lstat(path) if private else os.stat(path)
    mode = stat.S_IMODE(info.st_mode)
    if private and not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{path} is not a directory (a symlink?): refusing to use it")
    if info.st_uid not in ((os.geteuid(),) if private else (os.geteuid(), 0)):
        raise PermissionError(f"{path} belongs to another user (uid {info.st_uid}): refusing to use it")
    if mode & 0o022 and (private or not mode & stat.S_ISVTX):
        raise PermissionError(f"{path} may be written by other users (mode {mode:04o}): refusing to use it")


def make_private_dir(directory: str) -> None:
    """Create ``directory`` and its parent (``fastsched-<uid>``) with mode 0700 if missing; check
    both (check_directory, private) either way: a directory another user made before us, in a
    shared /tmp, must not receive our sockets or pidfile."""
    for path in (os.path.dirname(directory), directory):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        check_directory(path, private=True)


class Listener:
    """The master's end: a socket to ``select()`` on alongside its children's pipes."""

    def __init__(self, identity: str, host_id: str) -> None:
        directory = socket_dir(identity)
        # 0700: only this user may wake (or flood) the master.
        os.makedirs(os.path.dirname(os.path.dirname(directory)), exist_ok=True)
        make_private_dir(directory)
        self.path = os.path.join(directory, f"{safe_name(host_id)}-{os.getpid()}.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._socket.bind(self.path)
        os.chmod(self.path, 0o600)
        self._added: list[int] | None = []

    def fileno(self) -> int:
        return self._socket.fileno()

    def drain(self) -> int:
        """Read every pending wake-up; return how many there were. The priorities they name pile
        up for ``take_added``."""
        count = 0
        while True:
            try:
                payload = self._socket.recv(64)
            except (BlockingIOError, InterruptedError):
                return count
            count += 1
            if self._added is not None:
                if payload.isdigit() and len(payload) <= 3:
                    self._added.append(int(payload))
                else:
                    self._added = None

    def take_added(self) -> list[int] | None:
        """The priorities of the single jobs added since the last call, or None when some wake-up
        named none (add_many, retry, an older sender): then only the database knows."""
        added, self._added = self._added, []
        return added

    def close(self) -> None:
        self._socket.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
