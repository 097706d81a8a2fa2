-- fastsched queries for SQLite 3.24+ through the stdlib sqlite3 (paramstyle ? / :name).
-- Every block starts with "-- name: <query_name>". The queries that are the same in every dialect
-- are in common/queries.sql (loaded first); these are the ones that differ, and with the common ones
-- mysql/queries.sql defines the same names.
-- Write transactions run under BEGIN IMMEDIATE (one writer at a time): no FOR UPDATE, no SKIP LOCKED.
-- {ids} is replaced by a validated list of ids or hashes (fastsched.backends.sqlfiles.expand_in).
-- Times are fixed-width UTC text passed in by the caller: SQLite is one host, whose clock the backend
-- reads where MySQL's queries take the server's (fastsched.dbclock).

-- ---------------------------------------------------------------------------------- connection

-- name: server_info
-- The second column: whether ids of one multi-row insert are consecutive (always, under BEGIN IMMEDIATE).
SELECT sqlite_version(), 1

-- name: session_setup
-- WAL: readers never block the writer; FULL: a committed job survives a power loss.
-- A 16 MiB page cache (SQLite's default is 2 MiB): a drain's claims and completions touch the
-- claim and dedup indexes all over, and re-reading those pages took a fifth of the master's CPU.
-- A checkpoint every 4,000 WAL pages (16 MiB; SQLite's default is 1,000): a drain's commit of a
-- thousand completions writes some 600 pages of the dedup index alone, so at 1,000 nearly every
-- commit checkpointed, copying the same pages again each time. Durability is the WAL's either way.
PRAGMA journal_mode = WAL
;
PRAGMA synchronous = FULL
;
PRAGMA cache_size = -16384
;
PRAGMA wal_autocheckpoint = 4000

-- name: set_schema_version
INSERT INTO fastsched_meta (name, value) VALUES ('schema_version', :version)
ON CONFLICT (name) DO NOTHING

-- name: server_now
-- SQLite is one host: its clock is this host's, read by the backend (SQLite's own 'now' has
-- milliseconds only, the stored times microseconds).
SELECT :now

-- name: last_insert_id
-- The LAST id of the rows just inserted (executemany leaves cursor.lastrowid unset).
SELECT last_insert_rowid()

-- ------------------------------------------------------------------------------------ producer

-- name: add_jobs
-- Run with executemany inside the write transaction. A duplicate of a pending job is a no-op (no
-- change counted), so "changes == rows sent" means none collided.
INSERT INTO workerqueue (command, parameter, priority, created, next_try, dedup_hash, queue)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (dedup_hash) WHERE dedup_hash IS NOT NULL DO NOTHING

-- name: add_jobs_force_priority
INSERT INTO workerqueue (command, parameter, priority, created, next_try, dedup_hash, queue)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (dedup_hash) WHERE dedup_hash IS NOT NULL
DO UPDATE SET priority = excluded.priority WHERE pid = 0

-- name: ids_by_hash
SELECT id, dedup_hash FROM workerqueue WHERE dedup_hash IN ({ids})

-- name: job_columns
-- The job row (fastsched.backends.rows.JobRow, in this order) that get_job, lock_job and
-- failed_jobs select: written once, inlined where {job_columns} stands when the queries load.
id, command, parameter, priority, created, next_try, executed, finished, retrial, crashes,
       pid, COALESCE((SELECT name FROM fastsched_host WHERE fastsched_host.id = host_id), ''),
       last_error, done, failed_hash, queue

-- name: lock_job
SELECT {job_columns}
FROM workerqueue WHERE id = :id

-- name: lock_pending_by_hash
SELECT id FROM workerqueue WHERE dedup_hash = :hash

-- name: requeue_failed
-- IGNORE: when the restored dedup_hash collides (an identical job was added meanwhile), skip the
-- row (0 affected) instead of failing; the caller then finds that job and merges into it.
UPDATE OR IGNORE workerqueue
SET done = 0, pid = 0, host_id = 0, executed = NULL, finished = NULL, next_try = :now,
    retrial = 0, crashes = 0, dedup_hash = failed_hash, failed_hash = NULL
WHERE id = :id AND done = 2

-- name: purge
-- SQLite's DELETE takes no LIMIT (without a compile-time option): a rowid range instead.
DELETE FROM workerqueue WHERE id IN (
    SELECT id FROM workerqueue
    WHERE id > :after AND id <= :last AND done >= 1 AND done <= :max_done AND finished < :before
    ORDER BY id LIMIT :limit)

-- name: handed_back
-- Jobs handed back because the pool that claimed them had no task of their command, per command:
-- among the first ``cap`` waiting and the first ``cap`` deferred jobs of each priority (LIMITed
-- ranges of the claim index), so a million pending jobs cost no more than 10 x cap row reads.
SELECT command, COUNT(*) FROM (
  SELECT command, last_error FROM (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 10 AND next_try <= :now LIMIT :cap)
  UNION ALL
  SELECT command, last_error FROM (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 10 AND next_try > :now LIMIT :cap)
  UNION ALL
  SELECT command, last_error FROM (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 20 AND next_try <= :now LIMIT :cap)
  UNION ALL
  SELECT command, last_error FROM (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 20 AND next_try > :now LIMIT :cap)
  UNION ALL
  SELECT command, last_error FROM (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 30 AND next_try <= :now LIMIT :cap)
  UNION ALL
  SELECT command, last_error FROM (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 30 AND next_try > :now LIMIT :cap)
  UNION ALL
  SELECT command, last_error FROM (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 40 AND next_try <= :now LIMIT :cap)
  UNION ALL
  SELECT command, last_error FROM (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 40 AND next_try > :now LIMIT :cap)
  UNION ALL
  SELECT command, last_error FROM (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 50 AND next_try <= :now LIMIT :cap)
  UNION ALL
  SELECT command, last_error FROM (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 50 AND next_try > :now LIMIT :cap)
) AS pending WHERE last_error LIKE 'unknown command:%' GROUP BY command ORDER BY command

-- ------------------------------------------------------------------------------------ the pool

-- name: plan_counts
-- One statement, rows of (kind, priority, count): 'waiting' per priority, each a LIMITed range
-- scan of the claim index (a million waiting rows cost no more than ``cap``), counted over one
-- derived table; 'running' workers (distinct host_id, pid) per priority from ONE index-only scan of
-- the claimed rows; 'active' workers of the live masters. A priority paused whole counts no
-- waiting job: its WHERE is impossible, no row is read. Five derived counts cost twice as much.
SELECT 'waiting', priority, COUNT(*) FROM (
  SELECT priority FROM (SELECT priority FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
                        AND priority = 10 AND next_try <= :now AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 10) AND command = '' AND queue = '') LIMIT :cap)
  UNION ALL
  SELECT priority FROM (SELECT priority FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
                        AND priority = 20 AND next_try <= :now AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 20) AND command = '' AND queue = '') LIMIT :cap)
  UNION ALL
  SELECT priority FROM (SELECT priority FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
                        AND priority = 30 AND next_try <= :now AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 30) AND command = '' AND queue = '') LIMIT :cap)
  UNION ALL
  SELECT priority FROM (SELECT priority FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
                        AND priority = 40 AND next_try <= :now AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 40) AND command = '' AND queue = '') LIMIT :cap)
  UNION ALL
  SELECT priority FROM (SELECT priority FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
                        AND priority = 50 AND next_try <= :now AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 50) AND command = '' AND queue = '') LIMIT :cap)
) AS waiting GROUP BY priority
UNION ALL
SELECT 'running', priority, COUNT(DISTINCT (host_id << 32) | pid) FROM workerqueue
WHERE done = 0 AND pid > 0 GROUP BY priority
UNION ALL
SELECT 'active', 0, COALESCE(SUM(workers), 0) FROM process WHERE role = 'master' AND heartbeat >= :alive_after

-- name: plan_counts_queues
-- plan_counts among the jobs of some queues (a pool started with --queues): 'waiting' per priority
-- from LIMITed ranges of the claim_queue index, one per queue (the claimed rows, a few per worker,
-- are told apart by reading the row); 'running' workers per priority among those queues, from
-- the claimed rows of the claim index; 'active' workers of the live masters of the same queue set.
-- A priority paused whole counts no waiting job, as in plan_counts.
SELECT 'waiting', priority, COUNT(*) FROM (
  SELECT priority FROM (SELECT priority FROM workerqueue INDEXED BY workerqueue_claim_queue WHERE done = 0 AND queue IN ({queues}) AND priority = 10
   AND next_try <= :now AND pid = 0 AND host_id = 0
   AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 10) AND command = '' AND queue = '') LIMIT :cap)
  UNION ALL
  SELECT priority FROM (SELECT priority FROM workerqueue INDEXED BY workerqueue_claim_queue WHERE done = 0 AND queue IN ({queues}) AND priority = 20
   AND next_try <= :now AND pid = 0 AND host_id = 0
   AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 20) AND command = '' AND queue = '') LIMIT :cap)
  UNION ALL
  SELECT priority FROM (SELECT priority FROM workerqueue INDEXED BY workerqueue_claim_queue WHERE done = 0 AND queue IN ({queues}) AND priority = 30
   AND next_try <= :now AND pid = 0 AND host_id = 0
   AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 30) AND command = '' AND queue = '') LIMIT :cap)
  UNION ALL
  SELECT priority FROM (SELECT priority FROM workerqueue INDEXED BY workerqueue_claim_queue WHERE done = 0 AND queue IN ({queues}) AND priority = 40
   AND next_try <= :now AND pid = 0 AND host_id = 0
   AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 40) AND command = '' AND queue = '') LIMIT :cap)
  UNION ALL
  SELECT priority FROM (SELECT priority FROM workerqueue INDEXED BY workerqueue_claim_queue WHERE done = 0 AND queue IN ({queues}) AND priority = 50
   AND next_try <= :now AND pid = 0 AND host_id = 0
   AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 50) AND command = '' AND queue = '') LIMIT :cap)
) AS waiting GROUP BY priority
UNION ALL
SELECT 'running', priority, COUNT(DISTINCT (host_id << 32) | pid) FROM workerqueue
WHERE done = 0 AND pid > 0 AND queue IN ({queues}) GROUP BY priority
UNION ALL
SELECT 'active', 0, COALESCE(SUM(workers), 0) FROM process
WHERE role = 'master' AND heartbeat >= :alive_after AND queues = :queues

-- name: claim_priority_queue
-- claim_priority within one queue: one range of claim_queue in (next_try, id) order, the running
-- rows in it skipped by the row's pid. next_try comes last, to merge the claims of several queues.
SELECT {claim_columns}, next_try
FROM workerqueue INDEXED BY workerqueue_claim_queue 
WHERE done = 0 AND queue = :queue AND priority = :priority AND next_try <= :now
  AND pid = 0 AND host_id = 0
  -- Paused work is not claimed, as in claim_priority (a master with --queues claims through here).
  AND {priority_unpaused_condition}
  AND {row_unpaused_condition}
ORDER BY next_try, id
LIMIT :limit

-- name: claim_priority
-- Oldest next_try first, in claim-index order. BEGIN IMMEDIATE makes the claimer the only writer.
SELECT {claim_columns}
FROM workerqueue
WHERE {claimable_condition}
  -- Paused work is not claimed (what each check costs: at the conditions, in common/queries.sql).
  AND {priority_unpaused_condition}
  AND {row_unpaused_condition}
ORDER BY next_try, id
LIMIT :limit

-- name: claim_priority_packed
-- MariaDB's one-row form of a claim; unused here: sqlite3 builds each row in C, for less than the
-- JSON would cost to decode.
SELECT 0, NULL FROM workerqueue WHERE 1 = 0

-- name: claim_priority_unnarrowed
-- claim_priority when no pause names a command or a queue (narrow_pause_exists, read in the same
-- write transaction: no pause can be added in between): the per-row check is left out. It cost
-- more than the claim's own read (3 µs a job of 4).
SELECT {claim_columns}
FROM workerqueue
WHERE {claimable_condition}
  AND {priority_unpaused_condition}
ORDER BY next_try, id
LIMIT :limit

-- name: lock_claimable
-- MySQL's claim on Galera (SQLBackend._claim_rows); unused here: SQLite has one writer, no nodes.
SELECT {claim_columns}, next_try
FROM workerqueue
WHERE id IN ({ids}) AND done = 0 AND pid = 0 AND host_id = 0 AND priority = :priority AND next_try <= :now
ORDER BY next_try, id

-- name: find_claimable
-- MySQL's claims on Galera (fastsched.backends.shares), as lock_claimable: unused here.
SELECT id FROM workerqueue WHERE 1 = 0

-- name: share_boundary
SELECT next_try, id FROM workerqueue WHERE 1 = 0

-- name: find_share_tail
SELECT id FROM workerqueue WHERE 1 = 0

-- name: record_node
SELECT 1 WHERE 1 = 0

-- name: member_nodes
SELECT value, 0, 0 FROM fastsched_meta WHERE 1 = 0

-- SQLite: one file's lock, no connection of another process to cut off (Dialect.cuts_off_sessions).
-- name: server_run
SELECT 1 WHERE 1 = 0

-- name: server_uptime
SELECT 1 WHERE 1 = 0

-- name: record_session
SELECT 1 WHERE 1 = 0

-- name: forget_session
SELECT 1 WHERE 1 = 0

-- name: master_sessions
SELECT 1 WHERE 1 = 0

-- name: kill_session
SELECT 1 WHERE 1 = 0

-- name: forget_sessions
SELECT 1 WHERE 1 = 0

-- name: short_lock_waits
SELECT 1 WHERE 1 = 0

-- name: usual_lock_waits
SELECT 1 WHERE 1 = 0

-- name: forget_node
SELECT 1 WHERE 1 = 0

-- name: complete_jobs
-- "+done": a unary plus keeps the planner off the claim index (done = ?), which would scan every
-- pending row; the id list is looked up by rowid instead (7x faster at 100,000 pending).
-- OR FAIL: no statement journal. Under the default ABORT, SQLite copies every page the statement
-- first touches (a thousand completions' dedup entries lie on some 600 index pages) into a journal
-- that spills to a temporary file, only to undo this statement alone on a conflict; none can
-- happen (a NULL dedup_hash is never a duplicate), and any error rolls back the whole transaction
-- (fastsched.backends.connection). About 2 of the 9.5 µs a job this statement took in a drain.
UPDATE OR FAIL workerqueue SET done = 1, finished = :now, dedup_hash = NULL
WHERE id IN ({ids}) AND host_id = :host_id AND +done = 0

-- name: release_jobs
-- "+done": as in complete_jobs, look the ids up by rowid.
UPDATE workerqueue SET pid = 0, host_id = 0, executed = NULL
WHERE id IN ({ids}) AND host_id = :host_id AND +done = 0

-- name: retry_job
UPDATE workerqueue
SET pid = 0, host_id = 0, executed = NULL, next_try = :next_try, priority = :priority,
    retrial = :retrial, crashes = :crashes, last_error = :error
WHERE id = :id AND host_id = :host_id AND done = 0

-- name: fail_malformed
-- The unclaimed rows no claim would take, as six ranges of the claim index: SQLite's planner scans
-- every unclaimed row for one WHERE with ORs (0.2-0.4 s at a million pending, every 5 s).
UPDATE workerqueue
SET done = 2, finished = :now, failed_hash = dedup_hash, dedup_hash = NULL, last_error = :error
WHERE id IN (
    SELECT id FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority < 10
    UNION ALL SELECT id FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority > 10 AND priority < 20
    UNION ALL SELECT id FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority > 20 AND priority < 30
    UNION ALL SELECT id FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority > 30 AND priority < 40
    UNION ALL SELECT id FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority > 40 AND priority < 50
    UNION ALL SELECT id FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority > 50
)

-- ---------------------------------------------------------------------------- process registry

-- name: register_process
INSERT INTO process (host, pid, role, master_pid, workers, started, heartbeat, queues, instance, machine)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (host, pid) DO UPDATE SET role = excluded.role, master_pid = excluded.master_pid,
    workers = excluded.workers, started = excluded.started, heartbeat = excluded.heartbeat,
    queues = excluded.queues, instance = excluded.instance, machine = excluded.machine

-- name: heartbeat_master
UPDATE process SET heartbeat = :now, workers = :workers
WHERE host = :host AND pid = :master_pid AND role = 'master' AND instance = :instance

-- name: heartbeat_children
UPDATE process SET heartbeat = :now
WHERE host = :host AND master_pid = :master_pid AND role = 'child'

-- name: release_host
UPDATE workerqueue SET pid = 0, host_id = 0, executed = NULL WHERE done = 0 AND pid > 0 AND host_id = :host_id

-- name: add_host
INSERT OR IGNORE INTO fastsched_host (name) VALUES (:host)

-- name: release_owner_except
-- An instance's claims but those of its busy children (it knows what they hold).
UPDATE workerqueue SET pid = 0, host_id = 0, executed = NULL
WHERE done = 0 AND pid > 0 AND host_id = :host_id AND pid NOT IN ({ids})

-- name: lock_host
-- Registrations of one host id take turns: whether a twin is alive is decided under this lock.
SELECT id FROM fastsched_host WHERE id = :host_id

-- name: host_masters
SELECT pid, heartbeat, machine, instance, :now
FROM process WHERE host = :host AND role = 'master'

-- name: release_orphans
-- Claims whose owner ('<host>#<instance>') has no registered master: its registration was
-- deleted (declared dead, replaced, stopped) but its claims were not all released with it.
UPDATE workerqueue SET pid = 0, host_id = 0, executed = NULL
WHERE done = 0 AND pid > 0 AND host_id NOT IN (
    SELECT h.id FROM fastsched_host h JOIN process p ON p.role = 'master'
    AND h.name = CASE WHEN p.instance = '' THEN p.host ELSE p.host || '#' || p.instance END)

-- name: lock_expired_master
-- Re-checked inside the write transaction: a heartbeat that arrived meanwhile keeps the master alive.
SELECT pid FROM process
WHERE host = :host AND pid = :master_pid AND role = 'master' AND heartbeat < :alive_after

-- ------------------------------------------------------------------------------- periodic leases

-- name: lock_lease
-- run_periodic: the lease row, locked until the job is queued in the same transaction (BEGIN IMMEDIATE makes this transaction the only writer).
SELECT due, value FROM fastsched_meta WHERE name = :name

-- name: insert_lease
INSERT INTO fastsched_meta (name, value, due) VALUES (:name, :schedule, :due)
ON CONFLICT (name) DO NOTHING

-- name: create_lease
INSERT INTO fastsched_meta (name, value, due) VALUES (:name, '', :due)
ON CONFLICT (name) DO NOTHING

-- ------------------------------------------------------------------------- operators' controls

-- name: pause_add
-- A pause that exists already keeps who made it and when (0 affected rows says so).
INSERT OR IGNORE INTO fastsched_pause (priority, command, queue, paused_by, paused_at)
VALUES (:priority, :command, :queue, :by, :now)

-- name: action_add
INSERT INTO fastsched_action (at, actor, action, target, jobs) VALUES (:now, :by, :action, :target, :jobs)

-- name: cancel_request
-- The first request of a job is kept (who asked first is who stopped it).
INSERT OR IGNORE INTO fastsched_cancel (job_id, requested_by, requested_at) VALUES (:id, :by, :now)

-- name: cancel_jobs
UPDATE workerqueue
SET done = 3, finished = :now, dedup_hash = NULL, failed_hash = NULL,
    last_error = 'cancelled by ' || COALESCE(
        (SELECT requested_by FROM fastsched_cancel WHERE fastsched_cancel.job_id = workerqueue.id), 'an operator')
WHERE id IN ({ids}) AND host_id = :host_id AND done = 0

-- name: bulk_requeue_failed
UPDATE OR IGNORE workerqueue
SET done = 0, pid = 0, host_id = 0, executed = NULL, finished = NULL, next_try = :now,
    retrial = 0, crashes = 0, dedup_hash = failed_hash, failed_hash = NULL
WHERE id IN ({ids}) AND done = 2

-- name: bulk_request_cancel
INSERT OR IGNORE INTO fastsched_cancel (job_id, requested_by, requested_at)
SELECT id, :by, :now FROM workerqueue WHERE id IN ({ids}) AND done = 0 AND pid > 0
