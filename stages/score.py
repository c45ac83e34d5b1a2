"""Quality scoring: per-row checks, a quality score, and a keep/drop mark with a reason.

Reads:   data/generate/rows.parquet, data/store/score.jsonl (the judge's answers)
Writes:  data/score/rows.parquet (SCORED: every row, marked), the judge's request store, metrics/score.json,
         logs/score.json (wall time)
Params:  score, task, student (IFD, reward), teacher and judge (score.judge), budget

The checks and the quality score are distill/curate/checks.py; the task's verifier comes from
``task`` (distill/task.py). The costly signals (the teacher's judge rating, IFD, a reward model;
distill/curate/signals.py) are computed only for the rows that passed the checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from distill import params as params_module
from distill import paths, run_log
from distill.curate.checks import score, summarise
from distill.curate.signals import model_signals
from distill.entry import guarded
from distill.io import write_json, write_parquet
from distill.task import load as load_task
from distill.teacher.engine import Ledger


def run(params: params_module.Params, rows: pl.DataFrame, store_path: Path, send: Callable[..., Ledger]
        ) -> tuple[pl.DataFrame, dict]:
    """The scored rows and the metrics. ``store_path`` is the judge's request store; ``send`` sends its
    requests (the Prefect teacher flow, handed in by main)."""
    store_path.parent.mkdir(parents=True, exist_ok=True)
    store_path.touch()  # a DVC out even when no judge is asked: the ratings paid for survive every run
    verify = load_task(params.task).verify
    checked = score(rows, params.score, verify=verify)
    signals, quarantined = model_signals(checked.filter(pl.col("keep")).select(rows.columns), params, store_path, send)
    scored = score(rows, params.score, signals, verify) if signals is not None else checked
    return scored, summarise(scored) | {"store_lines_quarantined": quarantined}


def main() -> None:
    from flows.teacher import run_plan  # the orchestrator, handed to the library

    started = time.monotonic()
    scored, metrics = run(params_module.load(), pl.read_parquet(paths.GENERATE_ROWS), paths.SCORE_STORE, run_plan)
    write_parquet(scored, paths.SCORE_ROWS)
    write_json(metrics, paths.metrics("score"))
    run_log.record("score", started)
    print(f"score: kept {metrics['kept']} of {metrics['rows']} rows; dropped {metrics['dropped_by_reason']}")


if __name__ == "__main__":
    guarded("score", main)
