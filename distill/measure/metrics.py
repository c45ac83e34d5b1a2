"""Scores on the held-out split: each system's predictions by the task's metric, pass@k when several answers
were drawn per prompt, and the teacher gap closed (on whatever metric the task uses).

A student's prediction is its whole text (its reasoning readable in predictions.parquet); the metric scores only its
answer, what follows the think block (``distill.reasoning.answer_of``; an unclosed block, cut by max_new_tokens,
is an empty answer). The teacher's answers come without their reasoning already (``distill.prompts.parse_choice``)."""

from __future__ import annotations

import polars as pl

from distill.measure.scorers import pass_at_k
from distill.reasoning import answer_of
from distill.records import PREDICTION, conform
from distill.task import Task


def scored_part(prediction: str | None, think_tags: tuple[str, str] | None) -> str | None:
    """What the metric scores of a prediction: the answer after its think block (``think_tags``; None: all of it).
    A text with neither tag is scored as it is."""
    if prediction is None or think_tags is None or not any(tag in prediction for tag in think_tags):
        return prediction
    return answer_of(prediction, think_tags)


def score_system(evals: pl.DataFrame, system: str, predictions: list[list[str | None]], task: Task,
                 think_tags: tuple[str, str] | None = None) -> pl.DataFrame:
    """Each eval row's predictions by ``system`` (one or more samples per row) and their scores by the task's
    metric on the answer part (``scored_part``); one PREDICTION row per sample, with the whole prediction."""
    rows = [{"id": row["id"], "system": system, "instruction": row["instruction"], "reference": row["reference"],
             "sample": sample, "prediction": prediction,
             "score": float(task.metric(scored_part(prediction, think_tags), row["reference"]))}
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
