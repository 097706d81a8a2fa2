"""fastsched: a durable, priority-fair background job queue on MySQL/MariaDB (SQLite embedded).

    import fastsched
    job_id = fastsched.add(fastsched.PRIORITY_HIGH, "Notifier", "like", 42)

Importing does no I/O: the module-level functions open a default queue from ``$FASTSCHED_DSN``
(else ``sqlite:///fastsched.sqlite3``) at their first call; ``fastsched.connect(dsn)`` opens one
explicitly.
"""
from __future__ import annotations

from fastsched.context import Fail, Retry, current_job, defer  # the pool's API: what a running job may do
from fastsched.errors import (
    ConfigError,
    DatabaseError,
    DatabaseUnavailable,
    FastschedError,
    InvalidInput,
    InvalidState,
    JobNotFound,
    NotInJob,
    PoolAlreadyRunning,
    SchemaError,
    TaskError,
    UnsupportedServer,
)
from fastsched.jobs import Job, JobState
from fastsched.priority import (
    PRIORITY_CRITICAL,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_MEDIUM,
    PRIORITY_NEGLIGIBLE,
    Priority,
)
from fastsched.queue import (
    Queue,
    actions,
    add,
    add_async,
    add_many,
    add_many_async,
    cancel,
    cancel_all,
    connect,
    failed,
    get,
    pause,
    paused,
    purge,
    resume,
    retry,
    retry_all,
    stats,
)
from fastsched.tasks import (  # the pool's API: registering tasks
    Task,
    TaskPolicy,
    on_child_start,
    periodic,
    task,
)

__version__ = "0.1.0"  # keep equal to pyproject.toml's version (tests/test_queue.py checks)

__all__ = [
    "PRIORITY_CRITICAL",
    "PRIORITY_HIGH",
    "PRIORITY_LOW",
    "PRIORITY_MEDIUM",
    "PRIORITY_NEGLIGIBLE",
    "ConfigError",
    "DatabaseError",
    "DatabaseUnavailable",
    "Fail",
    "FastschedError",
    "InvalidInput",
    "InvalidState",
    "Job",
    "JobNotFound",
    "JobState",
    "NotInJob",
    "PoolAlreadyRunning",
    "Priority",
    "Queue",
    "Retry",
    "SchemaError",
    "Task",
    "TaskError",
    "TaskPolicy",
    "UnsupportedServer",
    "__version__",
    "actions",
    "add",
    "add_async",
    "add_many",
    "add_many_async",
    "cancel",
    "cancel_all",
    "connect",
    "current_job",
    "defer",
    "failed",
    "get",
    "on_child_start",
    "pause",
    "paused",
    "periodic",
    "purge",
    "resume",
    "retry",
    "retry_all",
    "stats",
    "task",
]
