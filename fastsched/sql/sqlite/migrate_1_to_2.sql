-- fastsched schema migration from version 1 to version 2, SQLite 3.24+.
-- Run by `fastsched-pool init` (connection.Connection.upgrade_schema); see mysql/migrate_1_to_2.sql for
-- the format. Here DDL is transactional, so the whole migration is ONE step: it is done entirely
-- or not at all, and needs no guards.
--
-- workerqueue is rebuilt (SQLite's documented create-copy-drop-rename) rather than given an extra
-- column next to the old one: DROP COLUMN needs SQLite 3.35 and fastsched supports 3.24, and a
-- kept "host" column would leave migrated databases with another shape than fresh ones, which
-- every later migration would then have to handle. SQLite rewrites a whole row on any update
-- anyway, so the copy costs about what the UPDATE filling host_id would.
-- The DDL below is a frozen copy of version 2, not a reference to schema.sql.

-- name: rebuild_workerqueue
CREATE TABLE IF NOT EXISTS fastsched_host (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE
)
;
INSERT OR IGNORE INTO fastsched_host (name) SELECT DISTINCT host FROM workerqueue WHERE host <> ''
;
DROP TABLE IF EXISTS workerqueue_v2
;
CREATE TABLE workerqueue_v2 (
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
    failed_hash BLOB NULL
)
;
-- Done and failed rows keep their host (get() shows who ran them); pending unclaimed rows get 0
-- even with a host name left over (Friendica's hand release "SET pid = 0"): version-2 claims only
-- take rows with pid = 0 AND host_id = 0.
INSERT INTO workerqueue_v2 (id, command, parameter, priority, created, pid, host_id, executed, finished,
                            next_try, retrial, crashes, done, last_error, dedup_hash, failed_hash)
SELECT id, command, parameter, priority, created, pid,
       CASE WHEN done = 0 AND pid = 0 THEN 0
            ELSE COALESCE((SELECT fastsched_host.id FROM fastsched_host WHERE fastsched_host.name = host), 0) END,
       executed, finished, next_try, retrial, crashes, done, last_error, dedup_hash, failed_hash
FROM workerqueue
;
-- AUTOINCREMENT's high-water mark moves with the table (the rename carries it over): ids of
-- purged or cancelled newest jobs are never reused.
DELETE FROM sqlite_sequence WHERE name = 'workerqueue_v2'
;
INSERT INTO sqlite_sequence (name, seq) SELECT 'workerqueue_v2', seq FROM sqlite_sequence WHERE name = 'workerqueue'
;
DROP TABLE workerqueue
;
ALTER TABLE workerqueue_v2 RENAME TO workerqueue
;
CREATE INDEX workerqueue_claim ON workerqueue (done, pid, host_id, priority, next_try)
;
CREATE UNIQUE INDEX workerqueue_dedup ON workerqueue (dedup_hash) WHERE dedup_hash IS NOT NULL
;
UPDATE fastsched_meta SET value = '2' WHERE name = 'schema_version' AND value = '1'
