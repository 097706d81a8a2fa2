-- fastsched queries written once for every dialect (fastsched.backends.sqlfiles.load_queries reads
-- this file first, then the dialect's queries.sql, which adds the queries that differ).
-- Parameters are named, :name, as SQLite takes them; for pymysql the loader writes them %(name)s.
-- A query here holds no positional ? and no %, and no colon inside a quoted literal (the loader
-- refuses them), so that conversion is exact.
-- {ids} is replaced by a validated list of ids or hashes (fastsched.backends.sqlfiles.expand_in).

-- ---------------------------------------------------------------------------------- connection

-- name: schema_version
SELECT value FROM fastsched_meta WHERE name = 'schema_version'

-- ------------------------------------------------------------------------------------ producer

-- name: claim_columns
-- A claimed row (fastsched.jobs.ClaimedJob, in this order), as every claim query selects it:
-- inlined where {claim_columns} stands when the queries load.
id, command, parameter, priority, retrial, crashes

-- name: claimable_condition
-- A row a claim of one priority may take: pending, unclaimed and not held aside, runnable now.
-- Its columns in the claim index's order.
done = 0 AND pid = 0 AND host_id = 0 AND priority = :priority AND next_try <= :now

-- name: priority_unpaused_condition
-- Paused work (fastsched_pause; fastsched.controls) is not claimed. A pause of the whole priority
-- makes a claim's WHERE impossible before any row is read (the test is constant).
NOT EXISTS (SELECT 1 FROM fastsched_pause AS whole
            WHERE whole.priority IN (0, :priority) AND whole.command = '' AND whole.queue = '')

-- name: row_unpaused_condition
-- A pause narrowed to a command or a queue, checked per row. It costs little: the pause set the
-- jobs it held aside (PARKED_HOST_ID), so only the few added since are read here.
NOT EXISTS (SELECT 1 FROM fastsched_pause AS p
            WHERE p.priority IN (0, :priority) AND p.command IN ('', workerqueue.command)
              AND p.queue IN ('', workerqueue.queue))

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
SELECT {job_columns}
FROM workerqueue WHERE id = :id

-- name: delete_job
DELETE FROM workerqueue WHERE id = :id

-- name: failed_ids
SELECT id FROM workerqueue WHERE done = 2 AND id > :after ORDER BY id LIMIT :limit

-- name: failed_jobs
SELECT {job_columns}
FROM workerqueue WHERE done = 2 ORDER BY finished DESC, id DESC LIMIT :limit

-- name: purge_window
-- The next rows in id order, through the primary key (MySQL: a consistent read, no locks): whether
-- any is old enough to purge, and whether every one was created after the cutoff. Ids grow with
-- time, so past such a window no row can have finished before the cutoff (created <= finished);
-- "nothing old enough yet" then costs one window, not a walk over every done row (finished has no
-- index, and the claim index orders done rows by pid first).
SELECT COUNT(*), MAX(id), MIN(created) >= :before,
       COALESCE(SUM(done >= 1 AND done <= :max_done AND finished < :before), 0)
FROM (SELECT id, created, done, finished FROM workerqueue
      WHERE id > :after ORDER BY id LIMIT :window) AS w

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

-- name: claim_batch
-- Only fixed-size columns change: InnoDB updates the row in place (mysql/schema.sql).
UPDATE workerqueue SET pid = :pid, host_id = :host_id, executed = :now WHERE id IN ({ids})

-- name: claim_job
-- claim_batch for a batch of one job (an idle pool's claim of the job just added): one fixed text,
-- which SQLite prepares once per connection, where an inlined IN list is a statement to prepare at
-- every claim (50 us of the 0.12 ms that UPDATE took, measured on the enqueue-to-start path).
UPDATE workerqueue SET pid = :pid, host_id = :host_id, executed = :now WHERE id = :id

-- name: claim_batches
-- claim_batch for several small batches at once: {pid_cases} is one "WHEN id IN (...) THEN pid"
-- per batch, inlined from validated ints.
UPDATE workerqueue SET pid = CASE {pid_cases} END, host_id = :host_id, executed = :now
WHERE id IN ({ids})

-- name: fail_job
-- failed_hash takes the old dedup_hash in both dialects: MySQL assigns left to right, SQLite
-- reads every right-hand side before assigning.
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

-- ---------------------------------------------------------------------------- process registry

-- name: delete_other_children
DELETE FROM process
WHERE host = :host AND master_pid = :master_pid AND role = 'child' AND pid NOT IN ({ids})

-- name: delete_children
DELETE FROM process WHERE host = :host AND master_pid = :master_pid AND role = 'child'

-- name: master_exists
SELECT 1 FROM process WHERE host = :host AND pid = :master_pid AND role = 'master' AND instance = :instance

-- name: unregister
DELETE FROM process
WHERE host = :host AND ((role = 'master' AND pid = :master_pid)
                           OR (role = 'child' AND master_pid = :master_pid))

-- name: processes
SELECT host, pid, role, master_pid, workers, started, heartbeat, queues, instance, machine FROM process
ORDER BY CASE WHEN role = 'master' THEN 0 ELSE 1 END, host, pid

-- name: host_id
SELECT id FROM fastsched_host WHERE name = :host

-- name: expired_masters
SELECT host, pid, machine FROM process WHERE role = 'master' AND heartbeat < :alive_after ORDER BY host, pid

-- ------------------------------------------------------------------------------- periodic leases

-- name: move_lease
UPDATE fastsched_meta SET due = :due, value = :schedule WHERE name = :name

-- name: advance_lease
UPDATE fastsched_meta SET due = :due WHERE name = :name AND due <= :now

-- ------------------------------------------------------------------------- operators' controls

-- name: pause_remove
DELETE FROM fastsched_pause WHERE priority = :priority AND command = :command AND queue = :queue

-- name: pause_remove_all
DELETE FROM fastsched_pause

-- name: pauses
SELECT priority, command, queue, paused_by, paused_at FROM fastsched_pause ORDER BY priority, command, queue

-- name: actions_recent
SELECT id, at, actor, action, target, jobs FROM fastsched_action ORDER BY id DESC LIMIT :limit

-- name: cancel_request_of_job
SELECT requested_by, requested_at FROM fastsched_cancel WHERE job_id = :id

-- name: cancel_requests_of_host
-- Driven by the (nearly always empty) request table: a primary-key lookup per request.
SELECT c.job_id, c.requested_by FROM fastsched_cancel AS c JOIN workerqueue AS w ON w.id = c.job_id
WHERE w.done = 0 AND w.pid > 0 AND w.host_id = :host_id

-- name: cancel_requests_stale
-- Requests whose job is no longer pending (it ended before its master stopped it, or was deleted).
DELETE FROM fastsched_cancel
WHERE NOT EXISTS (SELECT 1 FROM workerqueue AS w WHERE w.id = fastsched_cancel.job_id AND w.done = 0)

-- name: cancel_requests_delete
DELETE FROM fastsched_cancel WHERE job_id IN ({ids})

-- name: bulk_last_id
SELECT COALESCE(MAX(id), 0) FROM workerqueue

-- name: bulk_window
-- The end of the next window of at most ``window`` rows in id order, and how many it holds.
SELECT MAX(id), COUNT(*) FROM (SELECT id FROM workerqueue WHERE id > :after AND id <= :upto
                               ORDER BY id LIMIT :window) AS w

-- name: bulk_match
-- One window of the primary key (MySQL: a consistent read, no locks): the rows a bulk action's
-- filter matches. A filter part given as NULL matches every row (pymysql sends the values inline,
-- so MySQL folds those parts away). --older-than means created for pending jobs, finished otherwise.
SELECT id, done, pid FROM workerqueue
WHERE id > :after AND id <= :upto AND done IN (:state_1, :state_2, :state_3)
  AND (:command IS NULL OR command = :command)
  AND (:priority IS NULL OR priority = :priority)
  AND (:queue IS NULL OR queue = :queue)
  AND (:error IS NULL OR INSTR(COALESCE(last_error, ''), :error) > 0)
  AND (:before IS NULL OR (CASE WHEN done = 0 THEN created ELSE finished END) < :before)

-- name: bulk_still_failed
SELECT id FROM workerqueue WHERE id IN ({ids}) AND done = 2

-- name: bulk_delete
-- The rows of one state (cancel: waiting, deferred, failed; purge: done, failed, cancelled),
-- re-checked: a pending row claimed meanwhile is left to its cancel request.
DELETE FROM workerqueue WHERE id IN ({ids}) AND done = :done AND (done <> 0 OR pid = 0)

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
