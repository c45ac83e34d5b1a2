"""Tests of the train gate (``stages/gates/train.py``): a good training log passes, a broken one fails naming the
expectation and the failing steps, and a short run, a high final loss or an empty log fail."""

from __future__ import annotations

from typing import Any

from distill.gate import validate
from distill.params import TrainGate
from distill.records import TRAIN_LOG

TRAIN = TrainGate(min_steps=10, max_final_loss=1.0)


def log_rows(n: int) -> list[dict[str, Any]]:
    return [{"step": i + 1, "loss": 3.0 / (i + 1), "learning_rate": 1e-3, "grad_norm": 1.0, "objective": "loss"}
            for i in range(n)]


def test_train_good_passes(suite, frame, assert_passes) -> None:
    assert_passes(validate(suite("train"), TRAIN, {"log": frame(log_rows(20), TRAIN_LOG)}))


def test_train_bad_loss_fails_with_steps(suite, frame, failed) -> None:
    rows = log_rows(20)
    rows[4]["loss"] = float("nan")
    rows[6]["loss"] = float("inf")
    rows[8]["step"] = rows[7]["step"]
    fails = failed(validate(suite("train"), TRAIN, {"log": frame(rows, TRAIN_LOG)}))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "log: expect_column_values_to_not_be_null(loss)": [5],
        "log: expect_column_values_to_be_between(loss)": [7],
        "log: expect_column_values_to_be_unique(step)": [8],
    }


def test_train_negative_loss_fails_except_for_rl_policy_objective(suite, frame, failed, assert_passes) -> None:
    rows = log_rows(20)
    rows[3]["loss"] = -0.5
    fails = failed(validate(suite("train"), TRAIN, {"log": frame(rows, TRAIN_LOG)}))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "log.losses: expect_column_values_to_be_between(loss)": [4]}
    policy = [row | {"objective": "policy"} for row in rows]
    assert_passes(validate(suite("train"), TRAIN, {"log": frame(policy, TRAIN_LOG)}))


def test_train_final_loss_and_min_steps_fail(suite, frame, failed, never) -> None:
    rows = [row | {"loss": 2.0} for row in log_rows(20)]
    gate = TrainGate(min_steps=never, max_final_loss=1.0)
    fails = failed(validate(suite("train"), gate, {"log": frame(rows, TRAIN_LOG)}))
    assert set(fails) == {"log: expect_column_max_to_be_between(step)",
                          "log.tail: expect_column_mean_to_be_between(loss)"}
    assert fails["log: expect_column_max_to_be_between(step)"].observed == 20
    assert fails["log.tail: expect_column_mean_to_be_between(loss)"].observed == 2.0


def test_train_empty_log_fails(suite, frame, failed) -> None:
    fails = failed(validate(suite("train"), TRAIN, {"log": frame([], TRAIN_LOG)}))
    assert "log: expect_table_row_count_to_be_between()" in fails
