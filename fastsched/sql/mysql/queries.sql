-- fastsched queries for MariaDB 10.6+ / MySQL 8.0+ through pymysql (paramstyle %s / %(name)s).
-- Every block starts with "-- name: <query_name>". The queries that are the same in every dialect
-- are in common/queries.sql (loaded first); these are the ones that differ, and with the common ones
-- sqlite/queries.sql defines the same names.
-- {ids} is replaced by a validated list of ids or hashes (fastsched.backends.sqlfiles.expand_in).
-- Times are naive UTC DATETIME(6). Where several hosts compare them (job times, heartbeats, leases)
-- the server's clock decides: COALESCE(%(now)s, UTC_TIMESTAMP(6)), with now None but in tests, which
-- pass a time of their own (fastsched.dbclock).

-- ---------------------------------------------------------------------------------- connection

-- name: server_info
-- The ids of one multi-row INSERT are consecutive only with lock mode 0 or 1 AND an increment of 1
-- (Galera sets auto_increment_increment to the cluster's size, and needs lock mode 2).
SELECT VERSION(), @@innodb_autoinc_lock_mode, @@auto_increment_increment

-- name: session_setup
-- READ COMMITTED: SKIP LOCKED claims then take no gap locks.
SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED
;
SET time_zone = '+00:00'
;
-- A claim's rows come as one JSON_ARRAYAGG (claim_priority_packed), which this caps (1 MB by default).
SET SESSION group_concat_max_len = @@max_allowed_packet

-- name: set_schema_version
INSERT INTO fastsched_meta (name, value) VALUES ('schema_version', %(version)s)
ON DUPLICATE KEY UPDATE name = name

-- name: server_now
SELECT COALESCE(CAST(%(now)s AS DATETIME(6)), UTC_TIMESTAMP(6))

-- name: last_insert_id
-- Unused here: pymysql reads the first id of a multi-row INSERT from the OK packet (cursor.lastrowid).
SELECT LAST_INSERT_ID()

-- ------------------------------------------------------------------------------------ producer

-- name: add_jobs
-- One row here; pymysql's executemany sends a chunk as ONE multi-row INSERT. A duplicate of a
-- pending job is a no-op (0 affected rows), so "affected == rows sent" means none collided.
-- created and next_try: the given times, else the server's clock (next_try plus the delay in
-- microseconds): a producer whose clock is off neither delays its jobs nor jumps the line.
INSERT INTO workerqueue (command, parameter, priority, dedup_hash, queue, created, next_try)
VALUES (%s, %s, %s, %s, %s, COALESCE(CAST(%s AS DATETIME(6)), UTC_TIMESTAMP(6)),
        COALESCE(CAST(%s AS DATETIME(6)), UTC_TIMESTAMP(6) + INTERVAL %s MICROSECOND))
ON DUPLICATE KEY UPDATE id = id

-- name: add_jobs_force_priority
INSERT INTO workerqueue (command, parameter, priority, dedup_hash, queue, created, next_try)
VALUES (%s, %s, %s, %s, %s, COALESCE(CAST(%s AS DATETIME(6)), UTC_TIMESTAMP(6)),
        COALESCE(CAST(%s AS DATETIME(6)), UTC_TIMESTAMP(6) + INTERVAL %s MICROSECOND))
ON DUPLICATE KEY UPDATE priority = IF(pid = 0, VALUES(priority), priority)

-- name: ids_by_hash
-- A locking read sees the latest committed rows, even in a caller's REPEATABLE READ transaction
-- whose snapshot predates the pending duplicate its upsert just met. It waits for nothing new: the
-- upsert holds these rows locked already (the duplicates and the rows it inserted).
SELECT id, dedup_hash FROM workerqueue WHERE dedup_hash IN ({ids}) LOCK IN SHARE MODE

-- name: job_columns
-- The job row (fastsched.backends.rows.JobRow, in this order) that get_job, lock_job and
-- failed_jobs select: written once, inlined where {job_columns} stands when the queries load.
-- executed and finished: NULL for the never of the schema ('1000-01-01 00:00:00').
id, command, parameter, priority, created, next_try,
       NULLIF(executed, '1000-01-01 00:00:00'), NULLIF(finished, '1000-01-01 00:00:00'), retrial, crashes,
       pid, COALESCE((SELECT name FROM fastsched_host WHERE fastsched_host.id = host_id), ''),
       last_error, done, failed_hash, queue

-- name: lock_job
SELECT {job_columns}
FROM workerqueue WHERE id = %(id)s FOR UPDATE

-- name: lock_pending_by_hash
SELECT id FROM workerqueue WHERE dedup_hash = %(hash)s FOR UPDATE

-- name: requeue_failed
-- IGNORE: when the restored dedup_hash collides (an identical job was added meanwhile), skip the
-- row (0 affected) instead of failing; the caller then finds that job and merges into it.
UPDATE IGNORE workerqueue
SET done = 0, pid = 0, host_id = 0, executed = DEFAULT, finished = DEFAULT, next_try = %(now)s,
    retrial = 0, crashes = 0, dedup_hash = failed_hash, failed_hash = NULL
WHERE id = %(id)s AND done = 2

-- name: purge
-- One window's old rows, a primary-key range. Under READ COMMITTED the locks it keeps are on the
-- done rows it deletes, which nobody else writes; the others it reads are let go at once.
DELETE FROM workerqueue
WHERE id > %(after)s AND id <= %(last)s AND done >= 1 AND done <= %(max_done)s AND finished < %(before)s
ORDER BY id LIMIT %(limit)s

-- name: handed_back
-- Jobs handed back because the pool that claimed them had no task of their command, per command:
-- among the first ``cap`` waiting and the first ``cap`` deferred jobs of each priority (LIMITed
-- ranges of the claim index), so a million pending jobs cost no more than 10 x cap row reads.
SELECT command, COUNT(*) FROM (
  (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 10 AND next_try <= %(now)s LIMIT %(cap)s)
  UNION ALL
  (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 10 AND next_try > %(now)s LIMIT %(cap)s)
  UNION ALL
  (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 20 AND next_try <= %(now)s LIMIT %(cap)s)
  UNION ALL
  (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 20 AND next_try > %(now)s LIMIT %(cap)s)
  UNION ALL
  (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 30 AND next_try <= %(now)s LIMIT %(cap)s)
  UNION ALL
  (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 30 AND next_try > %(now)s LIMIT %(cap)s)
  UNION ALL
  (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 40 AND next_try <= %(now)s LIMIT %(cap)s)
  UNION ALL
  (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 40 AND next_try > %(now)s LIMIT %(cap)s)
  UNION ALL
  (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 50 AND next_try <= %(now)s LIMIT %(cap)s)
  UNION ALL
  (SELECT command, last_error FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0
   AND priority = 50 AND next_try > %(now)s LIMIT %(cap)s)
) AS pending WHERE last_error LIKE 'unknown command:%%' GROUP BY command ORDER BY command

-- ------------------------------------------------------------------------------------ the pool

-- name: plan_counts
-- One statement, rows of (kind, priority, count): 'waiting' per priority, each a LIMITed range
-- scan of the claim index (a million waiting rows cost no more than ``cap``), counted over one
-- derived table; 'running' workers (distinct host_id, pid) per priority from ONE loose scan of the
-- claimed rows' index entries (the claim index orders them by pid, host_id, priority: one entry
-- read per worker and priority, not one per claimed row, which with batches of a thousand cost a
-- millisecond a read); 'active' workers of the live masters. A priority paused whole counts no
-- waiting job: its WHERE is impossible, no row is read. Five derived counts cost twice as much.
SELECT 'waiting', priority, COUNT(*) FROM (
  (SELECT priority FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority = 10
   AND next_try <= %(now)s
   AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 10) AND command = '' AND queue = '') LIMIT %(cap)s)
  UNION ALL
  (SELECT priority FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority = 20
   AND next_try <= %(now)s
   AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 20) AND command = '' AND queue = '') LIMIT %(cap)s)
  UNION ALL
  (SELECT priority FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority = 30
   AND next_try <= %(now)s
   AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 30) AND command = '' AND queue = '') LIMIT %(cap)s)
  UNION ALL
  (SELECT priority FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority = 40
   AND next_try <= %(now)s
   AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 40) AND command = '' AND queue = '') LIMIT %(cap)s)
  UNION ALL
  (SELECT priority FROM workerqueue WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority = 50
   AND next_try <= %(now)s
   AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 50) AND command = '' AND queue = '') LIMIT %(cap)s)
) AS waiting GROUP BY priority
UNION ALL
SELECT 'running', priority, COUNT(*) FROM (
  SELECT priority FROM workerqueue FORCE INDEX (claim) WHERE done = 0 AND pid > 0 GROUP BY done, pid, host_id, priority
) AS running GROUP BY priority
UNION ALL
SELECT 'active', 0, COALESCE(SUM(workers), 0) FROM process WHERE role = 'master' AND heartbeat >= %(alive_after)s

-- name: plan_counts_queues
-- plan_counts among the jobs of some queues (a pool started with --queues): 'waiting' per priority
-- from LIMITed ranges of the claim_queue index, one per queue (the claimed rows, a few per worker,
-- are told apart by reading the row); 'running' workers per priority among those queues, from
-- the claimed rows of the claim index; 'active' workers of the live masters of the same queue set.
-- A priority paused whole counts no waiting job, as in plan_counts.
SELECT 'waiting', priority, COUNT(*) FROM (
  (SELECT priority FROM workerqueue FORCE INDEX (claim_queue) WHERE done = 0 AND queue IN ({queues}) AND priority = 10
   AND next_try <= %(now)s AND pid = 0 AND host_id = 0
   AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 10) AND command = '' AND queue = '') LIMIT %(cap)s)
  UNION ALL
  (SELECT priority FROM workerqueue FORCE INDEX (claim_queue) WHERE done = 0 AND queue IN ({queues}) AND priority = 20
   AND next_try <= %(now)s AND pid = 0 AND host_id = 0
   AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 20) AND command = '' AND queue = '') LIMIT %(cap)s)
  UNION ALL
  (SELECT priority FROM workerqueue FORCE INDEX (claim_queue) WHERE done = 0 AND queue IN ({queues}) AND priority = 30
   AND next_try <= %(now)s AND pid = 0 AND host_id = 0
   AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 30) AND command = '' AND queue = '') LIMIT %(cap)s)
  UNION ALL
  (SELECT priority FROM workerqueue FORCE INDEX (claim_queue) WHERE done = 0 AND queue IN ({queues}) AND priority = 40
   AND next_try <= %(now)s AND pid = 0 AND host_id = 0
   AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 40) AND command = '' AND queue = '') LIMIT %(cap)s)
  UNION ALL
  (SELECT priority FROM workerqueue FORCE INDEX (claim_queue) WHERE done = 0 AND queue IN ({queues}) AND priority = 50
   AND next_try <= %(now)s AND pid = 0 AND host_id = 0
   AND NOT EXISTS (SELECT 1 FROM fastsched_pause WHERE priority IN (0, 50) AND command = '' AND queue = '') LIMIT %(cap)s)
) AS waiting GROUP BY priority
UNION ALL
SELECT 'running', priority, COUNT(DISTINCT (host_id << 32) | pid) FROM workerqueue
WHERE done = 0 AND pid > 0 AND queue IN ({queues}) GROUP BY priority
UNION ALL
SELECT 'active', 0, COALESCE(SUM(workers), 0) FROM process
WHERE role = 'master' AND heartbeat >= %(alive_after)s AND queues = %(queues)s

-- name: claim_priority_queue
-- claim_priority within one queue: one range of claim_queue in (next_try, id) order, the running
-- rows in it skipped by the row's pid. next_try comes last, to merge the claims of several queues.
SELECT {claim_columns}, next_try
FROM workerqueue FORCE INDEX (claim_queue) 
WHERE done = 0 AND queue = %(queue)s AND priority = %(priority)s AND next_try <= %(now)s
  AND pid = 0 AND host_id = 0 /* spread */
  -- Paused work is not claimed, as in claim_priority (a master with --queues claims through here).
  AND {priority_unpaused_condition}
  AND {row_unpaused_condition}
ORDER BY next_try, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: claim_priority
-- Oldest next_try first, in claim-index order; rows other masters hold are skipped, not waited for.
-- next_try comes last, for the order of claim_priority_packed (a row read takes the claim columns).
SELECT {claim_columns}, next_try
-- Forced: with claim_queue beside it, stale statistics on a small or just-emptied table can make
-- the optimizer pick a scan, which a big backlog then pays for on every claim.
FROM workerqueue FORCE INDEX (claim)
WHERE {claimable_condition}
  -- Paused work is not claimed (what each check costs: at the conditions, in common/queries.sql).
  AND {priority_unpaused_condition}
  AND {row_unpaused_condition}
ORDER BY next_try, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: claim_priority_packed
-- claim_priority's rows (the same ones, locked the same way) as one row: how many, and the rows as
-- one JSON array in claim order (MariaDB; MySQL's JSON_ARRAYAGG takes no ORDER BY). pymysql decodes
-- a row in Python, a column at a time: one value instead of six per job is most of the master's CPU
-- in a drain (MySQLDialect.read_claim).
SELECT COUNT(*), JSON_ARRAYAGG(JSON_ARRAY({claim_columns}) ORDER BY next_try, id)
FROM ({query:claim_priority}) AS claimed

-- name: claim_priority_unnarrowed
-- SQLite's claim when no narrow pause exists; unused here: reading fastsched_pause first would be
-- a round trip more on the way to a job's start, and MariaDB's subquery cache answers the per-row
-- check of claim_priority from one lookup per (command, queue).
SELECT {claim_columns} FROM workerqueue WHERE 1 = 0

-- name: find_claimable
-- On Galera, a claim's rows of one share (fastsched.backends.shares), found by a plain read of the
-- claim index in claim order, ids only; lock_claimable then locks them. The id's hash is read from
-- the index entry (InnoDB appends id), so the other shares cost no row read. Paused work is left
-- out as in claim_priority.
SELECT id
FROM workerqueue FORCE INDEX (claim)
WHERE {claimable_condition}
  /* spread */
  AND {priority_unpaused_condition}
  AND {row_unpaused_condition}
ORDER BY next_try, id
LIMIT %(limit)s

-- name: share_boundary
-- The first row of another master's share past the ``reserve`` oldest (what it claims next): a
-- claim takes from that share only from there on. From the index alone (no pause check: a paused
-- row counted in the reserve only makes the reserve smaller).
SELECT next_try, id
FROM workerqueue FORCE INDEX (claim)
WHERE {claimable_condition}
  /* spread */
ORDER BY next_try, id
LIMIT 1 OFFSET %(reserve)s

-- name: find_share_tail
-- find_claimable from the far end of another master's share: its youngest rows, down to the
-- share_boundary row.
SELECT id
FROM workerqueue FORCE INDEX (claim)
WHERE {claimable_condition}
  /* spread */
  AND (next_try > %(from_try)s OR (next_try = %(from_try)s AND id >= %(from_id)s))
  AND {priority_unpaused_condition}
  AND {row_unpaused_condition}
ORDER BY next_try DESC, id DESC
LIMIT %(limit)s

-- name: lock_claimable
-- The rows of a claim on Galera, found by a plain read (find_claimable, find_share_tail, or
-- claim_priority_queue without its lock), locked by id: only these rows are locked (equalities on
-- the primary key take no gap lock), the ones another transaction holds are skipped, and those no
-- longer runnable are left. A locking read of the claim index would lock every entry it passes,
-- the other shares' too, and a node aborts a local transaction that holds a lock its peers' write
-- sets need. Forced: on a small table the optimizer may pick a range of the claim index.
SELECT {claim_columns}, next_try
FROM workerqueue FORCE INDEX (PRIMARY)
WHERE id IN ({ids}) AND done = 0 AND pid = 0 AND host_id = 0 AND priority = %(priority)s AND next_try <= %(now)s
ORDER BY next_try, id
FOR UPDATE SKIP LOCKED

-- name: record_node
-- A master's node and, on the database's clock, when it last claimed (fastsched.backends.shares).
INSERT INTO fastsched_meta (name, value, due) VALUES (%(name)s, %(node)s, UTC_TIMESTAMP(6))
ON DUPLICATE KEY UPDATE value = VALUES(value), due = VALUES(due)

-- name: member_nodes
-- The nodes of the registered masters that recorded theirs, whether each claimed within the last
-- ``active`` microseconds, and its workers. From the few master rows: their claim owner by the
-- unique name, then the record by its primary key.
SELECT STRAIGHT_JOIN m.value, m.due >= UTC_TIMESTAMP(6) - INTERVAL %(active)s MICROSECOND, p.workers
FROM process AS p
JOIN fastsched_host AS h ON h.name = CASE WHEN p.instance = '' THEN p.host ELSE CONCAT(p.host, '#', p.instance) END
JOIN fastsched_meta AS m ON m.name = CONCAT('galera_node:', h.id)
WHERE p.role = 'master'

-- name: server_run
-- Which server run a connection is on: its address and when it started (the two ids of a
-- connection on another node, or from before a restart, may be another's now). Uptime: server_uptime.
SELECT CONCAT(@@hostname, ':', @@port), UNIX_TIMESTAMP(NOW(6)), CONNECTION_ID()

-- name: server_uptime
SHOW GLOBAL STATUS LIKE 'Uptime'

-- name: record_session
-- One of a master's connections (fastsched.backends.sessions): a recovery of the master kills it.
INSERT INTO fastsched_meta (name, value) VALUES (CONCAT(%(prefix)s, CONNECTION_ID()), %(server)s)
ON DUPLICATE KEY UPDATE value = VALUES(value)

-- name: forget_session
-- The note of a connection of this master that has ended (it reconnected).
DELETE FROM fastsched_meta WHERE name = %(name)s

-- name: master_sessions
-- The connections a master noted, but the one asking (a master that recovers its own rows).
SELECT name, value FROM fastsched_meta
WHERE name LIKE CONCAT(%(prefix)s, '%%') AND name <> CONCAT(%(prefix)s, CONNECTION_ID())

-- name: kill_session
KILL CONNECTION %(connection)s

-- name: forget_sessions
DELETE FROM fastsched_meta WHERE name LIKE CONCAT(%(prefix)s, '%%')

-- name: short_lock_waits
-- A recovery waits this long (seconds) for a row a dead master's connection may hold, then cuts
-- the connection off instead of waiting for as long as it stays open.
SET SESSION innodb_lock_wait_timeout = 1

-- name: usual_lock_waits
SET SESSION innodb_lock_wait_timeout = DEFAULT

-- name: forget_node
-- The record of a master that unregisters or is recovered.
DELETE FROM fastsched_meta WHERE name = CONCAT('galera_node:', (
    SELECT h.id FROM fastsched_host AS h JOIN process AS p
    ON h.name = CASE WHEN p.instance = '' THEN p.host ELSE CONCAT(p.host, '#', p.instance) END
    WHERE p.host = %(host)s AND p.pid = %(master_pid)s AND p.role = 'master'))

-- name: complete_jobs
UPDATE workerqueue SET done = 1, finished = %(now)s, dedup_hash = NULL
WHERE id IN ({ids}) AND host_id = %(host_id)s AND done = 0

-- name: release_jobs
UPDATE workerqueue SET pid = 0, host_id = 0, executed = DEFAULT
WHERE id IN ({ids}) AND host_id = %(host_id)s AND done = 0

-- name: retry_job
UPDATE workerqueue
SET pid = 0, host_id = 0, executed = DEFAULT, next_try = %(next_try)s, priority = %(priority)s,
    retrial = %(retrial)s, crashes = %(crashes)s, last_error = %(error)s
WHERE id = %(id)s AND host_id = %(host_id)s AND done = 0

-- name: fail_malformed
-- Ranges on (done, pid, priority) of the claim index: the unclaimed rows no claim would take.
UPDATE workerqueue
SET done = 2, finished = %(now)s, failed_hash = dedup_hash, dedup_hash = NULL, last_error = %(error)s
WHERE done = 0 AND pid = 0 AND host_id = 0
  AND (priority < 10 OR (priority > 10 AND priority < 20) OR (priority > 20 AND priority < 30)
       OR (priority > 30 AND priority < 40) OR (priority > 40 AND priority < 50) OR priority > 50)

-- ---------------------------------------------------------------------------- process registry

-- name: register_process
INSERT INTO process (host, pid, role, master_pid, workers, started, heartbeat, queues, instance, machine)
VALUES (%s, %s, %s, %s, %s, COALESCE(CAST(%s AS DATETIME(6)), UTC_TIMESTAMP(6)),
        COALESCE(CAST(%s AS DATETIME(6)), UTC_TIMESTAMP(6)), %s, %s, %s)
ON DUPLICATE KEY UPDATE role = VALUES(role), master_pid = VALUES(master_pid), workers = VALUES(workers),
                        started = VALUES(started), heartbeat = VALUES(heartbeat), queues = VALUES(queues),
                        instance = VALUES(instance), machine = VALUES(machine)

-- name: heartbeat_master
UPDATE process SET heartbeat = COALESCE(CAST(%(now)s AS DATETIME(6)), UTC_TIMESTAMP(6)), workers = %(workers)s
WHERE host = %(host)s AND pid = %(master_pid)s AND role = 'master' AND instance = %(instance)s

-- name: heartbeat_children
UPDATE process SET heartbeat = COALESCE(CAST(%(now)s AS DATETIME(6)), UTC_TIMESTAMP(6))
WHERE host = %(host)s AND master_pid = %(master_pid)s AND role = 'child'

-- name: release_host
UPDATE workerqueue SET pid = 0, host_id = 0, executed = DEFAULT WHERE done = 0 AND pid > 0 AND host_id = %(host_id)s

-- name: add_host
INSERT IGNORE INTO fastsched_host (name) VALUES (%(host)s)

-- name: release_owner_except
-- An instance's claims but those of its busy children (it knows what they hold).
UPDATE workerqueue SET pid = 0, host_id = 0, executed = DEFAULT
WHERE done = 0 AND pid > 0 AND host_id = %(host_id)s AND pid NOT IN ({ids})

-- name: lock_host
-- Registrations of one host id take turns: whether a twin is alive is decided under this lock.
SELECT id FROM fastsched_host WHERE id = %(host_id)s FOR UPDATE

-- name: host_masters
SELECT pid, heartbeat, machine, instance, COALESCE(CAST(%(now)s AS DATETIME(6)), UTC_TIMESTAMP(6))
FROM process WHERE host = %(host)s AND role = 'master'

-- name: release_orphans
-- Claims whose owner ('<host>#<instance>') has no registered master: its registration was
-- deleted (declared dead, replaced, stopped) but its claims were not all released with it.
UPDATE workerqueue SET pid = 0, host_id = 0, executed = DEFAULT
WHERE done = 0 AND pid > 0 AND host_id NOT IN (
    SELECT h.id FROM fastsched_host h JOIN process p ON p.role = 'master'
    AND h.name = CASE WHEN p.instance = '' THEN p.host ELSE CONCAT(p.host, '#', p.instance) END)

-- name: lock_expired_master
-- Re-checked under the row lock: a heartbeat that arrived meanwhile keeps the master alive.
SELECT pid FROM process
WHERE host = %(host)s AND pid = %(master_pid)s AND role = 'master' AND heartbeat < %(alive_after)s
FOR UPDATE

-- ------------------------------------------------------------------------------- periodic leases

-- name: lock_lease
-- run_periodic: the lease row, locked until the job is queued in the same transaction.
SELECT due, value FROM fastsched_meta WHERE name = %(name)s
FOR UPDATE

-- name: insert_lease
INSERT INTO fastsched_meta (name, value, due) VALUES (%(name)s, %(schedule)s, %(due)s)
ON DUPLICATE KEY UPDATE name = name

-- name: create_lease
INSERT INTO fastsched_meta (name, value, due) VALUES (%(name)s, '', %(due)s)
ON DUPLICATE KEY UPDATE name = name

-- ------------------------------------------------------------------------- operators' controls

-- name: pause_add
-- A pause that exists already keeps who made it and when (0 affected rows says so).
INSERT INTO fastsched_pause (priority, command, queue, paused_by, paused_at)
VALUES (%(priority)s, %(command)s, %(queue)s, %(by)s, %(now)s)
ON DUPLICATE KEY UPDATE priority = priority

-- name: action_add
INSERT INTO fastsched_action (at, actor, action, target, jobs)
VALUES (%(now)s, %(by)s, %(action)s, %(target)s, %(jobs)s)

-- name: cancel_request
-- The first request of a job is kept (who asked first is who stopped it).
INSERT INTO fastsched_cancel (job_id, requested_by, requested_at) VALUES (%(id)s, %(by)s, %(now)s)
ON DUPLICATE KEY UPDATE job_id = job_id

-- name: cancel_jobs
-- The master's outcome for jobs stopped at a request: kept as cancelled (done = 3), never retried.
UPDATE workerqueue
SET done = 3, finished = %(now)s, dedup_hash = NULL, failed_hash = NULL,
    last_error = CONCAT('cancelled by ', COALESCE(
        (SELECT requested_by FROM fastsched_cancel WHERE fastsched_cancel.job_id = workerqueue.id), 'an operator'))
WHERE id IN ({ids}) AND host_id = %(host_id)s AND done = 0

-- name: bulk_requeue_failed
-- requeue_failed for many; a row whose restored dedup_hash collides is skipped (IGNORE) and
-- re-queued one by one, merging into its identical pending job.
UPDATE IGNORE workerqueue
SET done = 0, pid = 0, host_id = 0, executed = DEFAULT, finished = DEFAULT, next_try = %(now)s,
    retrial = 0, crashes = 0, dedup_hash = failed_hash, failed_hash = NULL
WHERE id IN ({ids}) AND done = 2

-- name: bulk_request_cancel
INSERT IGNORE INTO fastsched_cancel (job_id, requested_by, requested_at)
SELECT id, %(by)s, %(now)s FROM workerqueue WHERE id IN ({ids}) AND done = 0 AND pid > 0
