"""The pool master's pidfile: one running pool per host id and database, and how ``stop`` finds it.

The file holds the master's pid. The master keeps it open with an exclusive ``flock`` for as long
as it runs, so "is a pool running?" is answered by the lock, not by guessing from a pid that the
system may have reused: a file left by a killed master is stale the moment its lock is gone, and
the next ``start`` simply takes it over. The default place is next to the wake-up sockets of the
database (``wakeup.socket_dir``), in a directory only this user may enter.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat

from fastsched.errors import FastschedError, PoolAlreadyRunning
from fastsched.wakeup import check_directory, make_private_dir, runtime_dir, safe_name, socket_dir

DIR_MODE = 0o700
FILE_MODE = 0o600


def default_path(identity: str, host_id: str) -> str:
    """``<socket_dir(identity)>/<host_id>.pid``."""
    return os.path.join(socket_dir(identity), safe_name(host_id) + ".pid")


def _make_dirs(path: str) -> None:
    """Create the missing directories above ``path``, each 0700 (makedirs gives the mode to the last only)."""
    missing = []
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, DIR_MODE)


def read_pid(path: str) -> int | None:
    """The pid written in ``path``; None if the file is missing, empty or not a pid."""
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            text = handle.read(32).strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def is_locked(path: str) -> bool:
    """True while a running master holds ``path`` (False if there is no such file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)  # closing drops our shared lock, if we got it
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def machine_identity() -> str:
    """Where a pid means something: this boot of this machine, and this PID namespace. Two
    processes with the same identity can tell by ``pid_alive`` whether the other lives."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            boot = handle.read().strip()
    except OSError:
        boot = ""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{boot}/{namespace}" if boot else ""


class PidFile:
    """Held by the running master: ``acquire()`` at start, ``release()`` at exit."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._owner = 0  # the pid that acquired it: a forked child never removes it

    def acquire(self) -> None:
        """Create or take over the file, lock it and write our pid.

        Raise PoolAlreadyRunning if another live master holds it, FastschedError if the file
        cannot be written.
        """
        try:
            directory = os.path.dirname(os.path.abspath(self.path))
            if os.path.dirname(directory) == runtime_dir():
                make_private_dir(directory)  # the default place: the sockets' directory, and their rule
            else:
                _make_dirs(self.path)
                check_directory(directory, private=False)
            # O_NOFOLLOW: a symlink planted in our place would have us truncate its target.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        except PermissionError as exc:
            raise FastschedError(f"cannot create the pidfile {self.path}: {exc.strerror or exc}") from exc
        except OSError as exc:
            reason = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise FastschedError(f"cannot create the pidfile {self.path}: {reason}") from exc
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            os.close(fd)
            raise FastschedError(
                f"cannot use the pidfile {self.path}: it is not a regular file of this user (uid {info.st_uid})"
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise FastschedError(f"cannot lock the pidfile {self.path}: {exc.strerror}") from exc
            pid = read_pid(self.path)
            raise PoolAlreadyRunning(
                f"a pool is already running (pid {pid if pid else 'unknown'}): pidfile {self.path} is locked"
            ) from None
        os.fchmod(fd, FILE_MODE)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        self._owner = os.getpid()

    def release(self) -> None:
        """Remove the file (if it is still ours) and drop the lock. Safe to call twice."""
        if self._fd is None or self._owner != os.getpid():
            return
        with contextlib.suppress(OSError):
            if read_pid(self.path) == os.getpid() and os.path.samestat(os.fstat(self._fd), os.stat(self.path)):
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None
