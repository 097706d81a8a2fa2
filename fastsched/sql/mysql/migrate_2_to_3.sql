-- fastsched schema migration from version 2 to version 3, MariaDB 10.6+ / MySQL 8.0+.
-- Run by `fastsched-pool init` (connection.Connection.upgrade_schema) with no pool running on the database.
-- Each "-- name: <step>" block runs in a transaction of its own, in file order (see
-- migrate_1_to_2.sql). The DDL below is a frozen copy of version 3, not a reference to schema.sql.
-- Version 3 is shared by several changes; each adds its steps before record_version.

-- name: create_pause_table
CREATE TABLE IF NOT EXISTS fastsched_pause (
    -- Operators' pauses (fastsched-pool pause): no master claims pending work that matches every
    -- set part of a row; 0 and '' match anything. Work already running is never touched.
    priority    TINYINT UNSIGNED NOT NULL DEFAULT 0,
    command     VARCHAR(100) NOT NULL DEFAULT '',
    queue       VARCHAR(100) NOT NULL DEFAULT '',
    paused_by   VARCHAR(255) NOT NULL,
    paused_at   DATETIME(6) NOT NULL,
    PRIMARY KEY (priority, command, queue)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin

-- name: create_cancel_table
CREATE TABLE IF NOT EXISTS fastsched_cancel (
    -- Requests to stop a running job (fastsched-pool cancel ID): the master holding the claim
    -- reads them with its heartbeat, stops the job's child and deletes the row with the outcome.
    job_id       BIGINT UNSIGNED NOT NULL,
    requested_by VARCHAR(255) NOT NULL,
    requested_at DATETIME(6) NOT NULL,
    PRIMARY KEY (job_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin

-- name: create_action_table
CREATE TABLE IF NOT EXISTS fastsched_action (
    -- What operators did (pause, resume, retry, cancel, purge): who, when, what, how many jobs.
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    at          DATETIME(6) NOT NULL,
    actor       VARCHAR(255) NOT NULL,
    action      VARCHAR(32) NOT NULL,
    target      VARCHAR(1000) NOT NULL,                  -- a job id, or the filter in words
    jobs        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin

-- name: add_queue
-- One statement, so atomic: the column (every job so far is of the queue 'default') and the index
-- of the per-queue claims come together or not at all. The column follows command, as in a fresh
-- version-3 table.
ALTER TABLE workerqueue
    ADD COLUMN queue VARCHAR(100) NOT NULL DEFAULT 'default' AFTER command,
    ADD KEY claim_queue (done, queue, priority, next_try)

-- name: add_queue_done
SELECT COUNT(*) FROM information_schema.columns
WHERE table_schema = DATABASE() AND table_name = 'workerqueue' AND column_name = 'queue'

-- name: add_process_queues
ALTER TABLE process ADD COLUMN queues VARCHAR(1000) NOT NULL DEFAULT '' AFTER heartbeat

-- name: add_process_queues_done
SELECT COUNT(*) FROM information_schema.columns
WHERE table_schema = DATABASE() AND table_name = 'process' AND column_name = 'queues'

-- name: add_process_instance
-- A master's instance (one per `start`, owner of its claims) and machine (where its pid means something).
ALTER TABLE process
    ADD COLUMN instance VARCHAR(32) NOT NULL DEFAULT '' AFTER queues,
    ADD COLUMN machine VARCHAR(128) NOT NULL DEFAULT '' AFTER instance

-- name: add_process_instance_done
SELECT COUNT(*) FROM information_schema.columns
WHERE table_schema = DATABASE() AND table_name = 'process' AND column_name = 'instance'

-- name: widen_owner_name
-- Claim owners are '<host id>#<instance>' now: a host id of 255 characters still fits.
ALTER TABLE fastsched_host MODIFY COLUMN name VARCHAR(320) NOT NULL

-- name: widen_owner_name_done
SELECT COUNT(*) FROM information_schema.columns
WHERE table_schema = DATABASE() AND table_name = 'fastsched_host' AND column_name = 'name'
  AND character_maximum_length = 320

-- name: record_version
UPDATE fastsched_meta SET value = '3' WHERE name = 'schema_version' AND value = '2'
