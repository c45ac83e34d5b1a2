"""Tests of the score gate (``stages/gates/score.py``): good scored rows pass, broken ones fail naming the
expectation and the failing ids, and too few or too few kept rows fail."""

from __future__ import annotations

import pytest

from distill.gate import validate
from distill.params import ScoreGate
from distill.records import SCORED

SCORE = ScoreGate(min_rows=3, min_kept_fraction=0.5)


def test_score_good_passes(suite, frame, good_scored_rows, assert_passes) -> None:
    assert_passes(validate(suite("score"), SCORE, {"rows": frame(good_scored_rows(4), SCORED)}))


def test_score_bad_rows_fail_with_ids(suite, frame, good_scored_rows, failed) -> None:
    rows = good_scored_rows(4)
    rows[0]["quality"] = 1.5
    rows[1]["drop_reason"] = "refusal"  # kept, yet a drop reason
    rows[3]["drop_reason"] = None  # dropped without a reason
    rows[2]["repetition"] = -0.2
    fails = failed(validate(suite("score"), SCORE, {"rows": frame(rows, SCORED)}))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "rows: expect_column_values_to_be_between(quality)": ["g0"],
        "rows: expect_column_values_to_be_between(repetition)": ["g2"],
        "rows: expect_column_values_to_be_null(drop_reason) where keep == True": ["g1"],
        "rows: expect_column_values_to_not_be_null(drop_reason) where keep == False": ["g3"],
    }
    assert fails["rows: expect_column_values_to_be_between(quality)"].sample == [1.5]


def test_score_kept_fraction_and_min_rows_fail(suite, frame, good_scored_rows, failed, never) -> None:
    rows = good_scored_rows(4)
    for row in rows[:2]:
        row |= {"keep": False, "drop_reason": "truncated"}
    gate = ScoreGate(min_rows=never, min_kept_fraction=0.5)
    fails = failed(validate(suite("score"), gate, {"rows": frame(rows, SCORED)}))
    assert set(fails) == {"rows: expect_table_row_count_to_be_between()",
                          "rows: expect_column_mean_to_be_between(keep)"}
    assert fails["rows: expect_column_mean_to_be_between(keep)"].observed == pytest.approx(0.25)
