"""The short form of the guarantees soak (tests/soak_faults.py): about 40 seconds of two masters
draining a stream of jobs while each kind of fault strikes at least once (a child SIGKILLed, a
master frozen for 1.5 leases, a lost COMMIT answer, a master SIGKILLed, the database restarted,
a group SIGTERM, a twin master), then the checks: every job ended done, failed or deferred, no two
runs of a job overlapped, no claim is left, every twin was refused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from faultkit import record_figures
from soak_faults import FAULTS, Soak


def test_the_short_soak_breaks_no_guarantee(tmp_path: Path) -> None:
    soak = Soak(tmp_path / "soak", seconds=len(FAULTS) * 4.0 + 8.0, fault_every=4.0, seed=7)
    figures = soak.run()
    record_figures(tmp_path, dataclasses.asdict(figures))
    assert all(figures.faults[kind] >= 1 for kind in FAULTS), figures.faults
    assert figures.jobs > 0 and figures.runs >= figures.jobs
    assert soak.verdict() == [], json.dumps(dataclasses.asdict(figures), indent=2)
