"""Tests of the evaluate gate (``stages/gates/evaluate.py``): good predictions pass, broken ones fail naming the
expectation and the failing ids, and min_rows holds for every system."""

from __future__ import annotations

from typing import Any

from distill.gate import validate
from distill.params import EvaluateGate
from distill.records import PREDICTION, SYSTEMS

EVALUATE = EvaluateGate(min_rows=3)


def prediction_rows(n: int) -> list[dict[str, Any]]:
    return [{"id": f"eval-{i}", "system": system, "instruction": f"add {i} and 1", "reference": f"{i + 1}",
             "prediction": f"{i + 1}", "score": 1.0} for system in SYSTEMS for i in range(n)]


def test_evaluate_good_passes(suite, frame, assert_passes) -> None:
    assert_passes(validate(suite("evaluate"), EVALUATE, {"predictions": frame(prediction_rows(3), PREDICTION)}))


def test_evaluate_bad_rows_fail_with_ids(suite, frame, failed) -> None:
    rows = prediction_rows(4)
    rows[0]["score"] = 2.0
    rows[1]["system"] = "student_middle"
    fails = failed(validate(suite("evaluate"), EVALUATE, {"predictions": frame(rows, PREDICTION)}))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "predictions: expect_column_values_to_be_between(score)": ["eval-0"],
        "predictions: expect_column_values_to_be_in_set(system)": ["eval-1"],
    }


def test_evaluate_min_rows_is_per_system(suite, frame, failed, never) -> None:
    rows = [row for row in prediction_rows(4) if row["system"] != "teacher"]  # 8 rows, no teacher
    fails = failed(validate(suite("evaluate"), EVALUATE, {"predictions": frame(rows, PREDICTION)}))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "predictions.per_system: expect_column_values_to_be_between(rows)": ["teacher"]}
    gate = EvaluateGate(min_rows=never)
    fails = failed(validate(suite("evaluate"), gate, {"predictions": frame(prediction_rows(3), PREDICTION)}))
    per_system = fails["predictions.per_system: expect_column_values_to_be_between(rows)"]
    assert per_system.failing_ids == list(SYSTEMS)
