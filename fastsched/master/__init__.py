"""The pool master's parts, each owning one thing; ``fastsched.pool.Pool`` wires them on one thread.

- ``childset``   the children: spawn, send, receive, deaths, run-time limits; reports events
- ``settle``     a pure function: what a child reported -> the outcome of each job of its batch
- ``completer``  the buffer of outcomes and the only path that writes them
- ``dispatch``   the loop's claim step: which children to feed, the plan, the claim, handing out batches
- ``recorder``   a batch that ended: settled into the completer, counted, logged
- ``waiting``    the loop's wait: the self-pipe a stop request writes, the wake-up socket
- ``claimer``    claims, split over connections where the dialect runs transactions in parallel
- ``counts``     the planner's copy of the waiting and running counts ("at least" for capped ones)
- ``coalesce``   whether to wait for a batch about to end before claiming
- ``dblink``     the backend as the master uses it: timing by kind, outage state, back-off; the lease
- ``duties``     heartbeat, maintenance, periodic tasks, limits, log lines: objects with next_due/run
- ``metrics``    the counters and gauges the master keeps (``PoolMetrics``)
- ``registration`` this master's rows in the process table: start-up, heartbeat, starting over, leaving
- ``requests``   the operators' requests a master acts on: cancel a running job, set aside paused jobs
"""
