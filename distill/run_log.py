"""What one run of a stage did, kept apart from what it produced: ``logs/<stage>.json``.

A stage's metrics (``metrics/<stage>.json``, in git and in ``dvc.lock``) describe its result, so that rerunning it
from the same inputs and request stores writes the same bytes (tests/test_reproducible.py). What one run did
differs from run to run even then: its wall time, training throughput, the teacher requests it sent and those a
store served. That goes here instead: one JSON file per stage, overwritten atomically by each successful run,
gitignored and no DVC output, so it never makes DVC rerun anything. The generate stage is the exception: its
metrics keep the requests it sent and its cost this run (the one stage whose output may legitimately differ);
only its wall time and finish time are logged here.

A stage's ``run()`` returns its run's own facts under its metrics' ``RUN`` key; ``main()`` takes them out before
writing the metrics and ends with ``record``. Read them with ``cat logs/<stage>.json``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from distill.io import write_json

LOGS = Path("logs")
RUN = "run"  # the key of a stage's metrics, as its run() returns them, that holds what this run did


def path(stage: str) -> Path:
    return LOGS / f"{stage}.json"


def record(stage: str, started: float, facts: dict | None = None) -> Path:
    """Write ``facts`` with the wall time since ``started`` (``time.monotonic()`` when main began) and the time
    the run finished to logs/<stage>.json; its path."""
    target = path(stage)
    write_json((facts or {}) | {"wall_s": round(time.monotonic() - started, 2),
                                "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}, target)
    return target
