"""Tests of the select gate (``stages/gates/select.py``): a good selection passes, a broken one fails naming the
expectation and the failing ids, and too few selected rows fail."""

from __future__ import annotations

from typing import Any

import pytest

from distill.gate import validate
from distill.params import SelectGate
from distill.records import SELECTED

SELECT = SelectGate(min_rows=2)


@pytest.fixture(scope="module")
def good_selected_rows(good_deduped_rows):
    """``good_selected_rows(n)``: good_deduped_rows(n); the selection keeps the first n - 2 and cuts the one
    before the duplicate."""
    def build(n: int) -> list[dict[str, Any]]:
        rows = [row | {"select_rank": i + 1 if row["keep"] else None,
                       "select_cluster": i % 2 if row["keep"] else None}
                for i, row in enumerate(good_deduped_rows(n))]
        rows[-2] |= {"keep": False, "drop_reason": "over_budget"}
        return rows
    return build


def test_select_good_passes(suite, frame, good_selected_rows, assert_passes) -> None:
    assert_passes(validate(suite("select"), SELECT, {"rows": frame(good_selected_rows(5), SELECTED)}))


def test_select_bad_rows_fail_with_ids(suite, frame, good_selected_rows, failed) -> None:
    rows = good_selected_rows(5)
    rows[0]["select_rank"] = None  # a kept row with no place in the order
    rows[2]["select_rank"] = 2  # two rows with one rank
    rows[1]["contaminated_by"] = "eval-3"  # a selected row copying an eval row
    rows[3]["drop_reason"] = None  # cut by the budget without saying so
    fails = failed(validate(suite("select"), SELECT, {"rows": frame(rows, SELECTED)}))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "rows: expect_column_values_to_not_be_null(select_rank) where keep == True": ["g0"],
        "rows: expect_column_values_to_be_unique(select_rank)": ["g1", "g2"],
        "rows: expect_column_values_to_be_null(contaminated_by) where keep == True": ["g1"],
        "rows: expect_column_values_to_not_be_null(drop_reason) where keep == False": ["g3"],
    }


def test_select_min_rows_counts_selected_rows(suite, frame, good_selected_rows, failed) -> None:
    fails = failed(validate(suite("select"), SelectGate(min_rows=4),
                            {"rows": frame(good_selected_rows(5), SELECTED)}))
    assert set(fails) == {"rows: expect_column_sum_to_be_between(keep)"}
    assert fails["rows: expect_column_sum_to_be_between(keep)"].observed == 3
