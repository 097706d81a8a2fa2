-- fastsched schema migration from version 2 to version 3, SQLite.
-- Run by `fastsched-pool init` (connection.Connection.upgrade_schema) with no pool running on the database.
-- DDL is transactional here, so the whole migration is ONE step (see migrate_1_to_2.sql): done
-- entirely or not at all. The DDL below is a frozen copy of version 3, not a reference to
-- schema.sql. Version 3 is shared by several changes; each adds its statements to this step.

-- name: migrate_to_3
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

;
-- Every job so far is of the queue 'default'. A constant default: ADD COLUMN rewrites no row, and
-- puts the column last, where a fresh version-3 table has it.
ALTER TABLE workerqueue ADD COLUMN queue TEXT NOT NULL DEFAULT 'default'
;
-- The queues a master claims from ('' = all), for the counts per queue set.
ALTER TABLE process ADD COLUMN queues TEXT NOT NULL DEFAULT ''
;
-- The claim index of pools started with --queues (see schema.sql).
CREATE INDEX IF NOT EXISTS workerqueue_claim_queue ON workerqueue (done, queue, priority, next_try)
;
-- A master's instance (one per `start`, owner of its claims) and machine (where its pid means something).
ALTER TABLE process ADD COLUMN instance TEXT NOT NULL DEFAULT ''
;
ALTER TABLE process ADD COLUMN machine TEXT NOT NULL DEFAULT ''
;
UPDATE fastsched_meta SET value = '3' WHERE name = 'schema_version' AND value = '2'
