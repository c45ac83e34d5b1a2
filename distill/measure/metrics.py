"""Scores on the held-out split: each system's predictions by the task's metric, and the teacher gap closed."""

from __future__ import annotations

import polars as pl

from distill.records import PREDICTION, conform
from distill.task import Task


def score_system(evals: pl.DataFrame, system: str, predictions: list[str | None], task: Task) -> pl.DataFrame:
    """Each eval row's prediction by ``system`` and its score by the task's metric."""
    frame = evals.select("id", "instruction", "reference").with_columns(
        system=pl.lit(system), prediction=pl.Series(predictions, dtype=pl.String)
    )
    scores = [task.metric(p, r) for p, r in zip(predictions, evals["reference"], strict=True)]
    return conform(frame.with_columns(score=pl.Series(scores, dtype=pl.Float64)), PREDICTION)


def gap_closed(before: float, after: float, teacher: float) -> float | None:
    """Share of the teacher-student gap that training closed (1.0 = reached the teacher)."""
    return None if teacher <= before else round((after - before) / (teacher - before), 4)
