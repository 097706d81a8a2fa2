-- fastsched queries for SQLite 3.24+ through the stdlib sqlite3 (paramstyle ? / :name).
-- Every block starts with "-- name: <query_name>"; mysql/queries.sql defines the same names.
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
PRAGMA journal_mode = WAL
;
PRAGMA synchronous = FULL

-- name: schema_version
SELECT value FROM fastsched_meta WHERE name = 'schema_version'

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

-- name: clear_hashes
UPDATE workerqueue SET dedup_hash = NULL WHERE id IN ({ids})

-- name: running_by_hash
-- Running duplicates (claimed: pid <> 0), read before a caller's upsert so that it never meets them.
SELECT id, dedup_hash FROM workerqueue WHERE dedup_hash IN ({ids}) AND done = 0 AND pid <> 0

-- name: hand_over_hashes
-- dedup="waiting": a running job (claimed: pid <> 0) gives its dedup key up, so the identical add
-- after this is queued instead of absorbed; an unclaimed duplicate keeps its key and absorbs it.
UPDATE workerqueue SET failed_hash = dedup_hash, dedup_hash = NULL
WHERE dedup_hash IN ({ids}) AND done = 0 AND pid <> 0

-- name: get_job
SELECT id, command, parameter, priority, created, next_try, executed, finished, retrial, crashes,
       pid, COALESCE((SELECT name FROM fastsched_host WHERE fastsched_host.id = host_id), ''),
       last_error, done, failed_hash, queue
FROM workerqueue WHERE id = :id

-- name: lock_job
SELECT id, command, parameter, priority, created, next_try, executed, finished, retrial, crashes,
       pid, COALESCE((SELECT name FROM fastsched_host WHERE fastsched_host.id = host_id), ''),
       last_error, done, failed_hash, queue
FROM workerqueue WHERE id = :id

-- name: lock_pending_by_hash
SELECT id FROM workerqueue WHERE dedup_hash = :hash

-- name: delete_job
DELETE FROM workerqueue WHERE id = :id

-- name: requeue_failed
-- IGNORE: when the restored dedup_hash collides (an identical job was added meanwhile), skip the
-- row (0 affected) instead of failing; the caller then finds that job and merges into it.
UPDATE OR IGNORE workerqueue
SET done = 0, pid = 0, host_id = 0, executed = NULL, finished = NULL, next_try = :now,
    retrial = 0, crashes = 0, dedup_hash = failed_hash, failed_hash = NULL
WHERE id = :id AND done = 2

-- name: failed_ids
SELECT id FROM workerqueue WHERE done = 2 AND id > :after ORDER BY id LIMIT :limit

-- name: failed_jobs
SELECT id, command, parameter, priority, created, next_try, executed, finished, retrial, crashes,
       pid, COALESCE((SELECT name FROM fastsched_host WHERE fastsched_host.id = host_id), ''),
       last_error, done, failed_hash, queue
FROM workerqueue WHERE done = 2 ORDER BY finished DESC, id DESC LIMIT :limit

-- name: purge_window
-- The next rows in rowid order: whether any is old enough to purge, and whether every one was
-- created after the cutoff (ids grow with time, so past such a window no row can have finished
-- before it: "nothing old enough yet" costs one window, not a walk over every done row).
SELECT COUNT(*), MAX(id), MIN(created) >= :before,
       COALESCE(SUM(done >= 1 AND done <= :max_done AND finished < :before), 0)
FROM (SELECT id, created, done, finished FROM workerqueue
      WHERE id > :after ORDER BY id LIMIT :window) AS w

-- name: purge
-- SQLite's DELETE takes no LIMIT (without a compile-time option): a rowid range instead.
DELETE FROM workerqueue WHERE id IN (
    SELECT id FROM workerqueue
    WHERE id > :after AND id <= :last AND done >= 1 AND done <= :max_done AND finished < :before
    ORDER BY id LIMIT :limit)

-- name: stats
-- (kind, priority, jobs, oldest) rows, each part an index range (never a full scan): the counts of
-- pending and failed jobs read only the claim index; done jobs of the last hour read the done rows;
-- "oldest" is the created time of the job a claim would take next (the head of the queue).
SELECT 'waiting' AS kind, priority, COUNT(*) AS jobs, NULL AS oldest FROM workerqueue
WHERE done = 0 AND pid = 0 AND host_id = 0 AND next_try <= :now GROUP BY priority
UNION ALL SELECT 'deferred', priority, COUNT(*), NULL FROM workerqueue
WHERE done = 0 AND pid = 0 AND host_id = 0 AND next_try > :now GROUP BY priority
UNION ALL SELECT 'running', priority, COUNT(*), NULL FROM workerqueue
WHERE done = 0 AND pid > 0 GROUP BY priority
UNION ALL SELECT 'failed', priority, COUNT(*), NULL FROM workerqueue
WHERE done = 2 GROUP BY priority
UNION ALL SELECT 'cancelled', priority, COUNT(*), NULL FROM workerqueue
WHERE done = 3 GROUP BY priority
UNION ALL SELECT 'paused', priority, COUNT(*), NULL FROM workerqueue
WHERE done = 0 AND pid = 0 AND host_id = 4294967295 GROUP BY priority
UNION ALL SELECT 'done', priority, COUNT(*), NULL FROM workerqueue
WHERE done = 1 AND finished >= :hour_ago GROUP BY priority
UNION ALL SELECT * FROM (SELECT 'oldest', priority, 0, created FROM workerqueue
                         WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority = 10 AND next_try <= :now
                         ORDER BY next_try, id LIMIT 1) AS o10
UNION ALL SELECT * FROM (SELECT 'oldest', priority, 0, created FROM workerqueue
                         WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority = 20 AND next_try <= :now
                         ORDER BY next_try, id LIMIT 1) AS o20
UNION ALL SELECT * FROM (SELECT 'oldest', priority, 0, created FROM workerqueue
                         WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority = 30 AND next_try <= :now
                         ORDER BY next_try, id LIMIT 1) AS o30
UNION ALL SELECT * FROM (SELECT 'oldest', priority, 0, created FROM workerqueue
                         WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority = 40 AND next_try <= :now
                         ORDER BY next_try, id LIMIT 1) AS o40
UNION ALL SELECT * FROM (SELECT 'oldest', priority, 0, created FROM workerqueue
                         WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority = 50 AND next_try <= :now
                         ORDER BY next_try, id LIMIT 1) AS o50

-- name: queue_counts
-- (queue, pending, due, failed) from the claim_queue index alone, and (queue, running) from the
-- claimed rows: per queue, waiting = due - running (a claimed row's next_try has passed) and
-- deferred = pending - due.
SELECT queue, SUM(done = 0), SUM(done = 0 AND next_try <= :now), SUM(done = 2), 0 FROM workerqueue
WHERE done = 0 OR done = 2 GROUP BY queue
UNION ALL
SELECT queue, 0, 0, 0, COUNT(*) FROM workerqueue WHERE done = 0 AND pid > 0 GROUP BY queue

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

-- name: finished_since
SELECT COUNT(*) FROM workerqueue WHERE done = 1 AND finished >= :since

-- name: jobs_ahead
-- The claim order is (next_try, id): one range of the claim index.
SELECT COUNT(*) FROM workerqueue
WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority = :priority
  AND next_try <= :next_try AND (next_try < :next_try OR id < :id)

-- name: prefetched_by_priority
-- status: per priority, the claimed rows in batches claimed ahead (their child holds rows claimed
-- earlier, its running batch); each claimed row probes the claim index's (done, pid, host_id) range.
SELECT job.priority, COUNT(*) FROM workerqueue AS job
WHERE job.done = 0 AND job.pid <> 0 AND EXISTS (
  SELECT 1 FROM workerqueue AS held
  WHERE held.done = 0 AND held.pid = job.pid AND held.host_id = job.host_id AND held.executed < job.executed)
GROUP BY job.priority

-- name: claimed_before
-- explain: the rows its child holds that were claimed before this job's batch (a prefetched batch
-- waits for the batch its child is running); a range of the claim index's (done, pid, host_id).
SELECT COUNT(*) FROM workerqueue AS job JOIN workerqueue AS held
  ON held.done = 0 AND held.pid = job.pid AND held.host_id = job.host_id AND held.executed < job.executed
WHERE job.id = :id AND job.done = 0 AND job.pid <> 0

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
SELECT 'waiting', priority, COUNT(*) FROM (
  SELECT priority FROM (SELECT priority FROM workerqueue INDEXED BY workerqueue_claim_queue WHERE done = 0 AND queue IN ({queues}) AND priority = 10
   AND next_try <= :now AND pid = 0 AND host_id = 0 LIMIT :cap)
  UNION ALL
  SELECT priority FROM (SELECT priority FROM workerqueue INDEXED BY workerqueue_claim_queue WHERE done = 0 AND queue IN ({queues}) AND priority = 20
   AND next_try <= :now AND pid = 0 AND host_id = 0 LIMIT :cap)
  UNION ALL
  SELECT priority FROM (SELECT priority FROM workerqueue INDEXED BY workerqueue_claim_queue WHERE done = 0 AND queue IN ({queues}) AND priority = 30
   AND next_try <= :now AND pid = 0 AND host_id = 0 LIMIT :cap)
  UNION ALL
  SELECT priority FROM (SELECT priority FROM workerqueue INDEXED BY workerqueue_claim_queue WHERE done = 0 AND queue IN ({queues}) AND priority = 40
   AND next_try <= :now AND pid = 0 AND host_id = 0 LIMIT :cap)
  UNION ALL
  SELECT priority FROM (SELECT priority FROM workerqueue INDEXED BY workerqueue_claim_queue WHERE done = 0 AND queue IN ({queues}) AND priority = 50
   AND next_try <= :now AND pid = 0 AND host_id = 0 LIMIT :cap)
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
SELECT id, command, parameter, priority, retrial, crashes, next_try
FROM workerqueue INDEXED BY workerqueue_claim_queue 
WHERE done = 0 AND queue = :queue AND priority = :priority AND next_try <= :now
  AND pid = 0 AND host_id = 0
ORDER BY next_try, id
LIMIT :limit

-- name: claim_priority
-- Oldest next_try first, in claim-index order. BEGIN IMMEDIATE makes the claimer the only writer.
SELECT id, command, parameter, priority, retrial, crashes
FROM workerqueue
WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority = :priority AND next_try <= :now
  -- Paused work (fastsched_pause; fastsched.controls) is not claimed. A pause of the whole priority
  -- makes the WHERE impossible before any row is read (the first test is constant); a narrower one
  -- is checked per row, and costs little: the pause set the jobs it held aside (PARKED_HOST_ID),
  -- so only the few added since are read here.
  AND NOT EXISTS (SELECT 1 FROM fastsched_pause AS whole
                  WHERE whole.priority IN (0, :priority) AND whole.command = '' AND whole.queue = '')
  AND NOT EXISTS (SELECT 1 FROM fastsched_pause AS p
                  WHERE p.priority IN (0, :priority) AND p.command IN ('', workerqueue.command)
                    AND p.queue IN ('', workerqueue.queue))
ORDER BY next_try, id
LIMIT :limit

-- name: lock_claimable
-- MySQL's claim on Galera (SQLBackend._claim_rows); unused here: SQLite has one writer, no nodes.
SELECT id, command, parameter, priority, retrial, crashes, next_try
FROM workerqueue
WHERE id IN ({ids}) AND done = 0 AND pid = 0 AND host_id = 0 AND priority = :priority AND next_try <= :now
ORDER BY next_try, id

-- name: claim_batch
UPDATE workerqueue SET pid = :pid, host_id = :host_id, executed = :now WHERE id IN ({ids})

-- name: claim_batches
-- claim_batch for several small batches at once: {pid_cases} is one "WHEN id IN (...) THEN pid"
-- per batch, inlined from validated ints.
UPDATE workerqueue SET pid = CASE {pid_cases} END, host_id = :host_id, executed = :now
WHERE id IN ({ids})

-- name: complete_jobs
-- "+done": a unary plus keeps the planner off the claim index (done = ?), which would scan every
-- pending row; the id list is looked up by rowid instead (7x faster at 100,000 pending).
UPDATE workerqueue SET done = 1, finished = :now, dedup_hash = NULL
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

-- name: fail_job
-- SQLite reads every right-hand side before assigning: failed_hash takes the old dedup_hash.
-- COALESCE: a running job that gave its dedup key to a newer one (add with dedup="waiting")
-- keeps it in failed_hash; a retry then finds the newer one.
UPDATE workerqueue
SET done = 2, finished = :now, failed_hash = COALESCE(dedup_hash, failed_hash), dedup_hash = NULL,
    retrial = :retrial, crashes = :crashes, last_error = :error
WHERE id = :id AND host_id = :host_id AND done = 0

-- name: repair_unclaimed
-- pid = 0 with a host_id left over: only a hand-written UPDATE (Friendica's operators release a job
-- with "SET pid = 0") makes one, and the claims, which read host_id = 0, would never take it.
-- 4294967295 is PARKED_HOST_ID (backends/controls.py): jobs a pause set aside stay aside.
UPDATE workerqueue SET host_id = 0 WHERE done = 0 AND pid = 0 AND host_id > 0 AND host_id <> 4294967295

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

-- name: delete_other_children
DELETE FROM process
WHERE host = :host AND master_pid = :master_pid AND role = 'child' AND pid NOT IN ({ids})

-- name: delete_children
DELETE FROM process WHERE host = :host AND master_pid = :master_pid AND role = 'child'

-- name: heartbeat_master
UPDATE process SET heartbeat = :now, workers = :workers
WHERE host = :host AND pid = :master_pid AND role = 'master' AND instance = :instance

-- name: master_exists
SELECT 1 FROM process WHERE host = :host AND pid = :master_pid AND role = 'master' AND instance = :instance

-- name: heartbeat_children
UPDATE process SET heartbeat = :now
WHERE host = :host AND master_pid = :master_pid AND role = 'child'

-- name: unregister
DELETE FROM process
WHERE host = :host AND ((role = 'master' AND pid = :master_pid)
                           OR (role = 'child' AND master_pid = :master_pid))

-- name: processes
SELECT host, pid, role, master_pid, workers, started, heartbeat, queues, instance, machine FROM process
ORDER BY CASE WHEN role = 'master' THEN 0 ELSE 1 END, host, pid

-- name: release_host
UPDATE workerqueue SET pid = 0, host_id = 0, executed = NULL WHERE done = 0 AND pid > 0 AND host_id = :host_id

-- name: host_id
SELECT id FROM fastsched_host WHERE name = :host

-- name: add_host
INSERT OR IGNORE INTO fastsched_host (name) VALUES (:host)

-- name: delete_host_processes
DELETE FROM process WHERE host = :host

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

-- name: expired_masters
SELECT host, pid, machine FROM process WHERE role = 'master' AND heartbeat < :alive_after ORDER BY host, pid

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

-- name: move_lease
UPDATE fastsched_meta SET due = :due, value = :schedule WHERE name = :name

-- name: advance_lease
UPDATE fastsched_meta SET due = :due WHERE name = :name AND due <= :now

-- name: create_lease
INSERT INTO fastsched_meta (name, value, due) VALUES (:name, '', :due)
ON CONFLICT (name) DO NOTHING

-- ------------------------------------------------------------------------- operators' controls

-- name: pause_add
-- A pause that exists already keeps who made it and when (0 affected rows says so).
INSERT OR IGNORE INTO fastsched_pause (priority, command, queue, paused_by, paused_at)
VALUES (:priority, :command, :queue, :by, :now)

-- name: pause_remove
DELETE FROM fastsched_pause WHERE priority = :priority AND command = :command AND queue = :queue

-- name: pause_remove_all
DELETE FROM fastsched_pause

-- name: pauses
SELECT priority, command, queue, paused_by, paused_at FROM fastsched_pause ORDER BY priority, command, queue

-- name: action_add
INSERT INTO fastsched_action (at, actor, action, target, jobs) VALUES (:now, :by, :action, :target, :jobs)

-- name: actions_recent
SELECT id, at, actor, action, target, jobs FROM fastsched_action ORDER BY id DESC LIMIT :limit

-- name: cancel_request
-- The first request of a job is kept (who asked first is who stopped it).
INSERT OR IGNORE INTO fastsched_cancel (job_id, requested_by, requested_at) VALUES (:id, :by, :now)

-- name: cancel_request_of_job
SELECT requested_by, requested_at FROM fastsched_cancel WHERE job_id = :id

-- name: cancel_requests_of_host
SELECT c.job_id, c.requested_by FROM fastsched_cancel AS c JOIN workerqueue AS w ON w.id = c.job_id
WHERE w.done = 0 AND w.pid > 0 AND w.host_id = :host_id

-- name: cancel_requests_stale
DELETE FROM fastsched_cancel
WHERE NOT EXISTS (SELECT 1 FROM workerqueue AS w WHERE w.id = fastsched_cancel.job_id AND w.done = 0)

-- name: cancel_jobs
UPDATE workerqueue
SET done = 3, finished = :now, dedup_hash = NULL, failed_hash = NULL,
    last_error = 'cancelled by ' || COALESCE(
        (SELECT requested_by FROM fastsched_cancel WHERE fastsched_cancel.job_id = workerqueue.id), 'an operator')
WHERE id IN ({ids}) AND host_id = :host_id AND done = 0

-- name: cancel_requests_delete
DELETE FROM fastsched_cancel WHERE job_id IN ({ids})

-- name: bulk_last_id
SELECT COALESCE(MAX(id), 0) FROM workerqueue

-- name: bulk_window
-- The end of the next window of at most ``window`` rows in id order, and how many it holds.
SELECT MAX(id), COUNT(*) FROM (SELECT id FROM workerqueue WHERE id > :after AND id <= :upto
                               ORDER BY id LIMIT :window) AS w

-- name: bulk_match
-- One window of the rowid: the rows a bulk action's filter matches (a part given as NULL matches
-- every row). --older-than means created for pending jobs, finished otherwise.
SELECT id, done, pid FROM workerqueue
WHERE id > :after AND id <= :upto AND done IN (:state_1, :state_2, :state_3)
  AND (:command IS NULL OR command = :command)
  AND (:priority IS NULL OR priority = :priority)
  AND (:queue IS NULL OR queue = :queue)
  AND (:error IS NULL OR INSTR(COALESCE(last_error, ''), :error) > 0)
  AND (:before IS NULL OR (CASE WHEN done = 0 THEN created ELSE finished END) < :before)

-- name: bulk_requeue_failed
UPDATE OR IGNORE workerqueue
SET done = 0, pid = 0, host_id = 0, executed = NULL, finished = NULL, next_try = :now,
    retrial = 0, crashes = 0, dedup_hash = failed_hash, failed_hash = NULL
WHERE id IN ({ids}) AND done = 2

-- name: bulk_still_failed
SELECT id FROM workerqueue WHERE id IN ({ids}) AND done = 2

-- name: bulk_delete
-- The rows of one state (cancel: waiting, deferred, failed; purge: done, failed, cancelled),
-- re-checked: a pending row claimed meanwhile is left to its cancel request.
DELETE FROM workerqueue WHERE id IN ({ids}) AND done = :done AND (done <> 0 OR pid = 0)

-- name: bulk_request_cancel
INSERT OR IGNORE INTO fastsched_cancel (job_id, requested_by, requested_at)
SELECT id, :by, :now FROM workerqueue WHERE id IN ({ids}) AND done = 0 AND pid > 0

-- name: park_jobs
-- Pending jobs a pause holds, set aside (backends/controls.py, PARKED_HOST_ID): out of the claims' range.
UPDATE workerqueue SET host_id = :parked WHERE id IN ({ids}) AND done = 0 AND pid = 0 AND host_id = 0

-- name: any_parked
SELECT 1 FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = :parked LIMIT 1

-- name: parked_in_window
SELECT id, done, pid FROM workerqueue
WHERE id > :after AND id <= :upto AND done = 0 AND pid = 0 AND host_id = :parked

-- name: unpark_jobs
-- Back in the claims' range unless a pause still holds them.
UPDATE workerqueue SET host_id = 0
WHERE id IN ({ids}) AND done = 0 AND pid = 0 AND host_id = :parked
  AND NOT EXISTS (SELECT 1 FROM fastsched_pause AS p
                  WHERE p.priority IN (0, workerqueue.priority) AND p.command IN ('', workerqueue.command)
                    AND p.queue IN ('', workerqueue.queue))

-- name: narrow_pause_exists
SELECT 1 FROM fastsched_pause WHERE command <> '' OR queue <> '' LIMIT 1

-- name: park_added
-- Jobs added since the last sweep (ids above :after, up to :upto) that a pause of their
-- command or queue holds, set aside as the pause set aside those there were (a primary-key range).
UPDATE workerqueue SET host_id = :parked
WHERE id > :after AND id <= :upto AND done = 0 AND pid = 0 AND host_id = 0
  AND EXISTS (SELECT 1 FROM fastsched_pause AS p
              WHERE p.priority IN (0, workerqueue.priority) AND p.command IN ('', workerqueue.command)
                AND p.queue IN ('', workerqueue.queue) AND (p.command <> '' OR p.queue <> ''))
