-- fastsched schema, version 3, for MariaDB 10.6+ / MySQL 8.0+ (InnoDB).
-- Statements are separated by lines holding only ';'.
-- Every time is UTC with microseconds. Columns keep Friendica's names and meaning where it had them.

CREATE TABLE IF NOT EXISTS workerqueue (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    command     VARCHAR(100) NOT NULL,                   -- a registered task name, e.g. 'RemoveContact'
    queue       VARCHAR(100) NOT NULL DEFAULT 'default', -- pools started with --queues claim only theirs
    parameter   MEDIUMTEXT NOT NULL,                     -- the args as a JSON array
    priority    TINYINT UNSIGNED NOT NULL DEFAULT 30,    -- 10 CRITICAL .. 50 NEGLIGIBLE
    created     DATETIME(6) NOT NULL,
    pid         INT UNSIGNED NOT NULL DEFAULT 0,         -- the child process running it; 0 = unclaimed
    host_id     INT UNSIGNED NOT NULL DEFAULT 0,         -- fastsched_host.id of the master owning the claim (pids collide across hosts)
    -- NEVER ('1000-01-01') instead of NULL: a claim then changes only fixed-size columns, which
    -- InnoDB rewrites in place; NULL -> value (or a longer host name) moves the whole record, and
    -- that made the claim's UPDATE twice as expensive. The queries read NEVER back as NULL.
    executed    DATETIME(6) NOT NULL DEFAULT '1000-01-01 00:00:00',  -- when the current (or last) claim started
    finished    DATETIME(6) NOT NULL DEFAULT '1000-01-01 00:00:00',  -- when it was done or failed
    next_try    DATETIME(6) NOT NULL,                    -- runnable from then on; claims take the oldest first
    retrial     TINYINT NOT NULL DEFAULT 0,              -- attempts deferred so far
    crashes     TINYINT UNSIGNED NOT NULL DEFAULT 0,     -- children that died running it (poison-pill counter)
    done        TINYINT UNSIGNED NOT NULL DEFAULT 0,     -- 0 pending, 1 done, 2 failed (so NOT done = pending, as in Friendica)
    last_error  TEXT NULL,
    dedup_hash  BINARY(20) NULL,                         -- sha1(command, parameter) while pending; NULL once finished or without dedup
    failed_hash BINARY(20) NULL,                         -- a failed job's dedup_hash, kept out of the unique index; retry restores it
    PRIMARY KEY (id),
    -- The claim: WHERE done=0 AND pid=0 AND host_id=0 AND priority=? AND next_try<=?
    -- ORDER BY next_try, id LIMIT k is one range scan in index order (InnoDB appends id): unclaimed
    -- rows always have host_id 0. The same index counts waiting and deferred jobs per priority,
    -- and the running workers (distinct host_id, pid of done=0 AND pid<>0) from the index alone.
    KEY claim (done, pid, host_id, priority, next_try),
    -- The claim of a pool started with --queues: WHERE done=0 AND queue=? AND priority=? AND
    -- next_try<=? (AND pid=0 AND host_id=0, read from the row) ORDER BY next_try, id LIMIT k, one
    -- range in index order per queue. Without pid, a claim (which sets pid) never moves an entry
    -- of this index: only completions do. The claimed rows it reads past are the running ones, a
    -- few per worker. It also counts pending and failed jobs per queue from the index alone.
    KEY claim_queue (done, queue, priority, next_try),
    -- Dedup is atomic: an identical pending job collides here and INSERT ... ON DUPLICATE KEY
    -- returns the existing id (Friendica checked an unindexed text column, then inserted: racy).
    UNIQUE KEY dedup (dedup_hash)
    -- No index on host_id: recovery (WHERE done=0 AND pid<>0 AND host_id=?) scans the few claimed
    -- rows through the claim index, and every index more costs a write on each claim.
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
CREATE TABLE IF NOT EXISTS fastsched_host (
    -- Host ids (hostname or --host-id) by number: a claim writes the number, a fixed-size column,
    -- so that the row is updated in place (see workerqueue.executed). Rows are never deleted.
    id          INT UNSIGNED NOT NULL AUTO_INCREMENT,
    name        VARCHAR(320) NOT NULL,                   -- a claim owner: '<host id>#<instance>'
    PRIMARY KEY (id),
    UNIQUE KEY name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
CREATE TABLE IF NOT EXISTS process (
    host        VARCHAR(255) NOT NULL,                   -- the master's host id (hostname or --host-id)
    pid         INT UNSIGNED NOT NULL,
    role        VARCHAR(16) NOT NULL,                    -- 'master' or 'child'
    master_pid  INT UNSIGNED NOT NULL DEFAULT 0,         -- for a child: its master
    workers     INT UNSIGNED NOT NULL DEFAULT 0,         -- for a master: its children (the cluster's active workers sum these)
    started     DATETIME(6) NOT NULL,
    heartbeat   DATETIME(6) NOT NULL,                    -- a master whose heartbeat is older than the lease is dead
    queues      VARCHAR(1000) NOT NULL DEFAULT '',       -- for a master: the queues it claims from (--queues), '' = all
    -- For a master: one per `start`; its claims belong to the fastsched_host row '<host>#<instance>'.
    instance    VARCHAR(32) NOT NULL DEFAULT '',
    -- For a master: where its pid means something (boot id and PID namespace): only a master on the
    -- same machine may tell by its pid that a twin with a fresh heartbeat is dead.
    machine     VARCHAR(128) NOT NULL DEFAULT '',
    PRIMARY KEY (host, pid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
CREATE TABLE IF NOT EXISTS fastsched_meta (
    name        VARCHAR(191) NOT NULL,                   -- 'schema_version', 'periodic:<command>'
    value       VARCHAR(255) NOT NULL DEFAULT '',
    due         DATETIME(6) NULL,                        -- periodic: enqueued by whichever master moves this forward first
    PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
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
;
CREATE TABLE IF NOT EXISTS fastsched_cancel (
    -- Requests to stop a running job (fastsched-pool cancel ID): the master holding the claim
    -- reads them with its heartbeat, stops the job's child and deletes the row with the outcome.
    job_id       BIGINT UNSIGNED NOT NULL,
    requested_by VARCHAR(255) NOT NULL,
    requested_at DATETIME(6) NOT NULL,
    PRIMARY KEY (job_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
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
