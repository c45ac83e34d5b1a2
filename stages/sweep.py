"""Sweep: how much teacher data is enough? Students trained on nested subsets, best first and at random.

Reads:   data/select/rows.parquet, data/ingest/eval.parquet, data/train/model and baseline (reused where
         they match)
Writes:  metrics/sweep.json, reports/plots/sweep_selected.csv, reports/plots/sweep_random.csv,
         reports/sweep.png, reports/sweep.md, logs/sweep.json (this run's seconds per point)
Params:  sweep, task, student, train

The subsets, the training and the headline comparison (the selection against all rows and against a
random subset of its size, AlpaGasus' experiment) are distill/measure/data_sweep.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from distill import params as params_module
from distill import paths, run_log
from distill.entry import guarded
from distill.io import atomic_path, write_json, write_text
from distill.measure.data_sweep import comparison, curves, run_points
from distill.measure.sweep_report import chart, report
from distill.task import load as load_task


def run(params: params_module.Params, rows: pl.DataFrame, evals: pl.DataFrame, trained_models: tuple[Path, ...]
        ) -> tuple[dict[str, pl.DataFrame], dict]:
    """The two curves (``selected``, ``random``) and the metrics; ``trained_models`` are reused where they match.
    Each point's seconds go to the run log (the metrics' ``run_log.RUN``)."""
    metrics: dict = {"enabled": params.sweep.enabled}
    points = run_points(rows, evals, params, trained_models) if params.sweep.enabled else []
    seconds = [point.pop("seconds") for point in points]
    if points:
        metrics |= {"steps": params.train.max_steps, "eval_rows": evals.height, "generated_rows": rows.height,
                    "metric": load_task(params.task).metric_name, "comparison": comparison(points), "points": points}
    return curves(points), metrics | {run_log.RUN: {"points_seconds": seconds}}


def main() -> None:
    started = time.monotonic()
    lines, metrics = run(params_module.load(), pl.read_parquet(paths.SELECT_ROWS), pl.read_parquet(paths.INGEST_EVAL),
                         (paths.TRAIN_MODEL, paths.TRAIN_BASELINE))
    facts = metrics.pop(run_log.RUN)
    for policy, frame in lines.items():
        with atomic_path(paths.SWEEP_PLOTS[policy]) as tmp:
            frame.select("teacher_tokens", "rows", "fraction", "score").write_csv(tmp)
    with atomic_path(paths.SWEEP_CHART) as tmp:
        chart(lines, tmp)
    write_text(report(metrics), paths.SWEEP_REPORT)
    write_json(metrics, paths.metrics("sweep"))
    run_log.record("sweep", started, facts)
    if metrics.get("comparison"):
        head = metrics["comparison"]
        random_score = f"{head['random']['score']:.3f}" if head["random"] else "n/a"
        print(f"sweep: selected {head['selected']['rows']:,} rows {head['selected']['score']:.3f}; "
              f"all {head['all']['rows']:,} rows {head['all']['score']:.3f}; random same size {random_score}")


if __name__ == "__main__":
    guarded("sweep", main)
