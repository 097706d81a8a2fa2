"""A claim that fails with an error that is not the database's (a thread that cannot start,
MemoryError, a bug) drops no outcome (issue 11, item 3): the outcomes it carried are written
later, the claim's result is settled as after a lost COMMIT answer, and the pool goes on. On the
real MariaDB, with a pool in a subprocess whose backend raises once inside the claim.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from faultkit import TESTS, load_runs, pool_env, short_tempdir, sql

import fastsched

POOL = r"""
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
import faultkit  # noqa: F401 - registers fault.rec
from fastsched.backends import open_backend
from fastsched.config import PoolSettings
from fastsched.dsn import parse_dsn
from fastsched.pool import Pool

dsn = parse_dsn(sys.argv[1])
backend = open_backend(dsn)
real = backend.write_outcomes_and_claim
failed = []

def write_outcomes_and_claim(outcomes, *args, **kwargs):
    if outcomes.done and not failed:  # once, inside the claim that carries the first completions
        failed.append(1)
        raise RuntimeError("can't start new thread")
    return real(outcomes, *args, **kwargs)

backend.write_outcomes_and_claim = write_outcomes_and_claim
settings = PoolSettings(dsn=dsn, host_id="claim-errors", workers=1, until_empty=True, imports=("faultkit",))
code = Pool(settings, backend=backend).run()
assert failed, "the claim never failed: the test proved nothing"
sys.exit(code)
"""


def test_a_claim_that_fails_outside_the_database_drops_no_outcome(mysql_dsn: str, tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    with fastsched.connect(mysql_dsn) as queue:
        ids = queue.add_many([(30, "fault.rec", str(runs_dir), i, 1.0) for i in range(20)])
    done = subprocess.run(
        [sys.executable, "-c", POOL, mysql_dsn], cwd=str(TESTS), env=pool_env(short_tempdir()),
        capture_output=True, text=True, timeout=120, check=False,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "a claim failed: its outcomes are kept" in log, log[-3000:]
    states = dict(sql(mysql_dsn, "SELECT id, done FROM workerqueue"))
    assert {states[i] for i in ids} == {1}, log[-3000:]
    runs = load_runs(runs_dir)
    assert sorted(run.job for run in runs) == sorted(ids), "a job ran twice or never: an outcome was lost"
