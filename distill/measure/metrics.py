"""Scores on the held-out split: each system's predictions by the task's metric, pass@k when several answers
were drawn per prompt, and the teacher gap closed (on whatever metric the task uses)."""

from __future__ import annotations

import polars as pl

from distill.measure.scorers import pass_at_k
from distill.records import PREDICTION, conform
from distill.task import Task


def score_system(evals: pl.DataFrame, system: str, predictions: list[list[str | None]], task: Task) -> pl.DataFrame:
    """Each eval row's predictions by ``system`` (one or more samples per row) and their scores by the task's
    metric; one PREDICTION row per sample."""
    rows = [{"id": row["id"], "system": system, "instruction": row["instruction"], "reference": row["reference"],
             "sample": sample, "prediction": prediction, "score": float(task.metric(prediction, row["reference"]))}
            for row, samples in zip(evals.iter_rows(named=True), predictions, strict=True)
            for sample, prediction in enumerate(samples)]
    return conform(pl.DataFrame(rows, schema=PREDICTION), PREDICTION)


def pass_at(predictions: pl.DataFrame, k: int, threshold: float) -> dict[str, float]:
    """pass@k per system: a sample passes when its score is at least ``threshold`` (the task's min_score);
    the unbiased estimator over the n samples of each prompt, averaged over prompts."""
    counts = predictions.group_by("system", "id").agg(n=pl.len(), c=(pl.col("score") >= threshold).sum())
    return {system: round(sum(pass_at_k(n, c, k) for n, c in zip(group["n"], group["c"], strict=True))
                          / group.height, 4)
            for (system,), group in counts.group_by("system")}


def gap_closed(before: float, after: float, teacher: float) -> float | None:
    """Share of the teacher-student gap that training closed (1.0 = reached the teacher)."""
    return None if teacher <= before else round((after - before) / (teacher - before), 4)
