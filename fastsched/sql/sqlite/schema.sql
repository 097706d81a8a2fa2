-- fastsched schema, version 3, for SQLite 3.24+ (the embedded default). The same tables and
-- columns as mysql/schema.sql. Statements are separated by lines holding only ';'.
-- Times are UTC text of fixed width, 'YYYY-MM-DD HH:MM:SS.ffffff', so that they sort as text.

CREATE TABLE IF NOT EXISTS workerqueue (
    -- AUTOINCREMENT: an id is never reused after the newest job is purged or cancelled.
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    command     TEXT NOT NULL,
    parameter   TEXT NOT NULL,
    priority    INTEGER NOT NULL DEFAULT 30,
    created     TEXT NOT NULL,
    pid         INTEGER NOT NULL DEFAULT 0,
    host_id     INTEGER NOT NULL DEFAULT 0,
    executed    TEXT NULL,
    finished    TEXT NULL,
    next_try    TEXT NOT NULL,
    retrial     INTEGER NOT NULL DEFAULT 0,
    crashes     INTEGER NOT NULL DEFAULT 0,
    done        INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT NULL,
    dedup_hash  BLOB NULL,
    failed_hash BLOB NULL,
    -- Last, where ALTER TABLE ADD COLUMN puts it: migrated databases look like fresh ones.
    queue       TEXT NOT NULL DEFAULT 'default'
)
;
-- The claim: WHERE done=0 AND pid=0 AND host_id=0 AND priority=? AND next_try<=?
-- ORDER BY next_try, id LIMIT k (the rowid is the last column of every index, so the order is the
-- index order; unclaimed rows always have host_id 0). Running workers are counted from it alone.
CREATE INDEX IF NOT EXISTS workerqueue_claim ON workerqueue (done, pid, host_id, priority, next_try)
;
-- Dedup is atomic: INSERT ... ON CONFLICT(dedup_hash) WHERE dedup_hash IS NOT NULL. Partial, so
-- finished rows (dedup_hash NULL) cost no index entry.
CREATE UNIQUE INDEX IF NOT EXISTS workerqueue_dedup ON workerqueue (dedup_hash) WHERE dedup_hash IS NOT NULL
;
-- The claim of a pool started with --queues, one range per queue (see mysql/schema.sql);
-- after the dedup index, in the order the migration creates them.
CREATE INDEX IF NOT EXISTS workerqueue_claim_queue ON workerqueue (done, queue, priority, next_try)
;
CREATE TABLE IF NOT EXISTS fastsched_host (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE
)
;
CREATE TABLE IF NOT EXISTS process (
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    role        TEXT NOT NULL,
    master_pid  INTEGER NOT NULL DEFAULT 0,
    workers     INTEGER NOT NULL DEFAULT 0,
    started     TEXT NOT NULL,
    heartbeat   TEXT NOT NULL,
    -- For a master: the queues it claims from (--queues), '' = all. Last, as ADD COLUMN puts it.
    queues      TEXT NOT NULL DEFAULT '',
    -- For a master: one per `start` (its claims belong to the fastsched_host row '<host>#<instance>'),
    -- and where its pid means something (boot id and PID namespace). Last, as ADD COLUMN puts them.
    instance    TEXT NOT NULL DEFAULT '',
    machine     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (host, pid)
)
;
CREATE TABLE IF NOT EXISTS fastsched_meta (
    name        TEXT NOT NULL PRIMARY KEY,
    value       TEXT NOT NULL DEFAULT '',
    due         TEXT NULL
)
;
-- Operators' pauses (fastsched-pool pause): no master claims pending work that matches every set
-- part of a row; 0 and '' match anything. Work already running is never touched.
CREATE TABLE IF NOT EXISTS fastsched_pause (
    priority    INTEGER NOT NULL DEFAULT 0,
    command     TEXT NOT NULL DEFAULT '',
    queue       TEXT NOT NULL DEFAULT '',
    paused_by   TEXT NOT NULL,
    paused_at   TEXT NOT NULL,
    PRIMARY KEY (priority, command, queue)
)
;
-- Requests to stop a running job: the master holding the claim reads them with its heartbeat.
CREATE TABLE IF NOT EXISTS fastsched_cancel (
    job_id       INTEGER NOT NULL PRIMARY KEY,
    requested_by TEXT NOT NULL,
    requested_at TEXT NOT NULL
)
;
-- What operators did (pause, resume, retry, cancel, purge): who, when, what, how many jobs.
CREATE TABLE IF NOT EXISTS fastsched_action (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    jobs        INTEGER NOT NULL DEFAULT 0
)
