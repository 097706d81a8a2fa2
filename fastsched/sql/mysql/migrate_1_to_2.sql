-- fastsched schema migration from version 1 to version 2, MariaDB 10.6+ / MySQL 8.0+.
-- Run by `fastsched-pool init` (connection.Connection.upgrade_schema) with no pool running on the database.
-- Each "-- name: <step>" block runs in a transaction of its own, in file order; a step with a
-- "<step>_done" block is skipped when that query returns a non-zero first column. DDL commits
-- implicitly here, so an interrupted run leaves some steps done: the guards (what exists, read from
-- information_schema) and the idempotent statements let `init` simply run again. The version is
-- recorded by the last step only, so until then every other command refuses the database.
-- The DDL below is a frozen copy of version 2, not a reference to schema.sql, which later
-- versions will change.

-- name: create_host_table
CREATE TABLE IF NOT EXISTS fastsched_host (
    id          INT UNSIGNED NOT NULL AUTO_INCREMENT,
    name        VARCHAR(255) NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin

-- name: add_host_id
-- AFTER host: once host is dropped the column order is that of a fresh version-2 table.
ALTER TABLE workerqueue ADD COLUMN host_id INT UNSIGNED NOT NULL DEFAULT 0 AFTER host

-- name: add_host_id_done
SELECT COUNT(*) FROM information_schema.columns
WHERE table_schema = DATABASE() AND table_name = 'workerqueue' AND column_name = 'host_id'

-- name: fill_host_id
-- Done and failed rows keep their host too (get() shows who ran them). Pending unclaimed rows get
-- 0 even with a host name left over (Friendica's hand release "SET pid = 0"): version-2 claims
-- only take rows with pid = 0 AND host_id = 0.
INSERT IGNORE INTO fastsched_host (name) SELECT DISTINCT host FROM workerqueue WHERE host <> ''
;
UPDATE workerqueue JOIN fastsched_host ON fastsched_host.name = workerqueue.host
SET workerqueue.host_id = fastsched_host.id
WHERE NOT (workerqueue.done = 0 AND workerqueue.pid = 0) AND workerqueue.host_id <> fastsched_host.id

-- name: fill_host_id_done
-- The host column goes in the last ALTER: once it is gone, host_id was filled.
SELECT COUNT(*) = 0 FROM information_schema.columns
WHERE table_schema = DATABASE() AND table_name = 'workerqueue' AND column_name = 'host'

-- name: fill_never
-- NOT NULL would refuse the NULLs (strict mode) or turn them into '0000-00-00' (not strict).
UPDATE workerqueue
SET executed = COALESCE(executed, '1000-01-01 00:00:00'), finished = COALESCE(finished, '1000-01-01 00:00:00')
WHERE executed IS NULL OR finished IS NULL

-- name: fill_never_done
SELECT COUNT(*) FROM information_schema.columns
WHERE table_schema = DATABASE() AND table_name = 'workerqueue' AND column_name = 'executed'
  AND is_nullable = 'NO'

-- name: alter_workerqueue
-- One statement, so one copy of the table, and atomic: either all of it is done or none.
ALTER TABLE workerqueue
    MODIFY executed DATETIME(6) NOT NULL DEFAULT '1000-01-01 00:00:00',
    MODIFY finished DATETIME(6) NOT NULL DEFAULT '1000-01-01 00:00:00',
    DROP INDEX claim,
    ADD KEY claim (done, pid, host_id, priority, next_try),
    DROP COLUMN host

-- name: alter_workerqueue_done
SELECT COUNT(*) = 0 FROM information_schema.columns
WHERE table_schema = DATABASE() AND table_name = 'workerqueue' AND column_name = 'host'

-- name: record_version
UPDATE fastsched_meta SET value = '2' WHERE name = 'schema_version' AND value = '1'
