"""The asyncio face of a queue: ``await q.add_async(...)``, ``await q.add_many_async(...)``.

There is one SQL path: the coroutines run the queue's own ``add`` and ``add_many`` (validation,
dedup, errors, wake-ups and all) on worker threads, so the event loop never waits on the database
or on the validation of a big batch. The threads are the queue's own, not the loop's default
executor (which an application's other ``to_thread`` calls share), and each has a connection of
its own: concurrent callers are not serialized on the queue's one connection, and a slow insert
does not hold up the synchronous ``add`` of another thread. On SQLite, which has one writer at a
time, one thread is enough.

An async driver (aiomysql, asyncmy) would be a second storage layer to keep in step with this one;
bench/test_bench_async.py measures what the threads cost against ``add``.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import concurrent.futures

    from fastsched.backends.contracts import ProducerStore

from fastsched.dsn import DSN

T = TypeVar("T")

MYSQL_THREADS = 4  # connections for the async callers of one queue on MariaDB/MySQL


class AsyncWorkers:
    """Threads that each hold a backend (a connection) of their own, started on first use."""

    def __init__(self, dsn: DSN) -> None:
        self._dsn = dsn
        self._threads = MYSQL_THREADS if dsn.dialect == "mysql" else 1
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pid = 0
        self._local = threading.local()
        self._backends: list[ProducerStore] = []

    def backend(self) -> ProducerStore | None:
        """The calling thread's backend if it is one of these workers, else None."""
        found: ProducerStore | None = getattr(self._local, "backend", None)
        return found

    def _start_thread(self) -> None:
        from fastsched.backends import open_backend  # connects at its first operation, on this thread

        backend = open_backend(self._dsn)
        self._local.backend = backend
        with self._lock:
            self._backends.append(backend)

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        import concurrent.futures  # here, not at import: `import fastsched` need not load asyncio's machinery

        with self._lock:
            if self._executor is None or self._pid != os.getpid():
                # A forked child has none of its parent's threads, and must not use its connections.
                self._backends = []
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self._threads, thread_name_prefix="fastsched-async", initializer=self._start_thread
                )
                self._pid = os.getpid()
            return self._executor

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` on a worker thread; the loop runs on meanwhile.

        A cancelled await does not stop the call: the job may have been added all the same."""
        import asyncio

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), functools.partial(function, *args, **kwargs))

    def close(self) -> None:
        """Wait for the calls under way, then close the threads' connections."""
        with self._lock:
            executor, self._executor = self._executor, None
            mine = self._pid == os.getpid()
            backends, self._backends = self._backends, []
        if executor is None or not mine:
            return
        executor.shutdown(wait=True)
        for backend in backends:
            backend.close()
