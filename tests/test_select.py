"""The selection policy on literal DEDUPED rows: thresholds, rank, diversity clusters, budget, reasons."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from distill.curate import selection
from distill.entry import StageError
from distill.params import SelectParams
from distill.records import SELECTED
from stages import select

PLAIN = {"clusters": 1}  # no embeddings: the rank order alone


def kept_ids(selected: pl.DataFrame) -> list[str]:
    return selected.filter(pl.col("keep")).sort("select_rank")["id"].to_list()


def test_budget_is_a_share_of_the_generated_rows_and_the_rest_are_over_budget(deduped_rows) -> None:
    rows = deduped_rows(10, bad1="reverse qqq", bad2="reverse www")  # 12 generated, 10 clean
    selected = select.select(rows, SelectParams(max_fraction=0.5, diversity=PLAIN))
    assert selected.schema == pl.Schema(SELECTED)
    assert selected["id"].to_list() == rows["id"].to_list()  # every row, in the input's order
    assert selected["keep"].sum() == 6  # floor(0.5 * 12)
    reasons = dict(selected.filter(~pl.col("keep"))["drop_reason"].value_counts().iter_rows())
    assert reasons == {"over_budget": 4, "verifier_failed": 2}  # earlier reasons are kept
    assert sorted(selected["select_rank"].drop_nulls().to_list()) == list(range(1, 11))
    assert selected.filter(pl.col("keep"))["select_rank"].max() == 6
    assert selected.filter(pl.col("id").str.starts_with("bad"))["select_rank"].null_count() == 2
    assert select.select(rows, SelectParams(max_fraction=0.5, max_rows=3, diversity=PLAIN))["keep"].sum() == 3
    assert select.select(rows, SelectParams(max_fraction=None, diversity=PLAIN))["keep"].sum() == 10


def test_order_is_higher_first_and_ties_follow_a_seeded_hash(deduped_rows) -> None:
    rows = deduped_rows(8, {"reward": [0.1, 0.9, 0.5, 0.7, 0.3, 0.2, 0.8, 0.4]})
    by_reward = select.select(rows, SelectParams(order_by=["reward"], max_rows=3, max_fraction=None, diversity=PLAIN))
    assert kept_ids(by_reward) == ["r01", "r06", "r03"]
    tied = [kept_ids(select.select(rows, SelectParams(order_by=[], max_fraction=None, seed=seed, diversity=PLAIN)))
            for seed in (0, 0, 1)]
    assert tied[0] == tied[1] != tied[2]  # reproducible, and the seed changes it
    assert sorted(tied[0]) == sorted(rows["id"].to_list())


def test_thresholds_drop_with_the_first_failing_reason_and_a_missing_signal_fails(deduped_rows) -> None:
    rows = deduped_rows(5, {"judge_rating": [0.9, 0.5, None, 0.8, 0.95], "ifd": [0.5, 0.5, 0.5, 1.2, 0.9]})
    params = SelectParams(min={"judge_rating": 0.7}, max={"ifd": 1.0}, max_fraction=None, diversity=PLAIN)
    reasons = dict(select.select(rows, params).select("id", "drop_reason").iter_rows())
    assert reasons == {"r00": None, "r01": "below_min_judge_rating", "r02": "below_min_judge_rating",
                       "r03": "above_max_ifd", "r04": None}


def test_a_signal_nobody_computed_is_a_clear_error(deduped_rows) -> None:
    with pytest.raises(StageError, match="select uses judge_rating, but no row has it: turn on score.judge"):
        select.select(deduped_rows(3), SelectParams(min={"judge_rating": 0.5}, diversity=PLAIN))


def test_round_robin_takes_each_clusters_best_row_in_turn() -> None:
    ranked = pl.DataFrame({"id": [f"x{i}" for i in range(7)]})  # already best first
    labels = np.array([2, 2, 2, 0, 1, 0, 2])
    ordered = selection.round_robin(ranked, labels)
    assert ordered["id"].to_list() == ["x0", "x3", "x4", "x1", "x5", "x2", "x6"]
    assert ordered["select_cluster"].to_list() == [2, 0, 1, 2, 0, 2, 2]


def test_diversity_brings_a_rare_kind_of_task_into_a_small_budget(deduped_rows) -> None:
    """Real embeddings: 12 reversal tasks rank above 4 capital-city questions; 2 clusters keep both kinds."""
    rows = deduped_rows(12, {"reward": [1.0] * 12 + [0.1] * 4},
                        c1="What is the capital of France?", c2="What is the capital of Peru?",
                        c3="Name the capital city of Japan.", c4="Which city is the capital of Kenya?")
    rows = rows.with_columns(keep=True, drop_reason=None)  # keep the questions eligible
    ranked_only = select.select(rows, SelectParams(order_by=["reward"], max_rows=4, max_fraction=None,
                                                   diversity=PLAIN))
    assert all(row_id.startswith("r") for row_id in kept_ids(ranked_only))
    diverse = select.select(rows, SelectParams(order_by=["reward"], max_rows=4, max_fraction=None,
                                               diversity={"clusters": 2}))
    picked = kept_ids(diverse)
    assert sum(row_id.startswith("c") for row_id in picked) == 2  # one of each kind, then one of each again
    assert picked[0] in {"r00", "r01", "r02", "r03", "r04", "r05", "r06", "r07", "r08", "r09", "r10", "r11"}
    assert diverse.filter(pl.col("keep"))["select_cluster"].n_unique() == 2
    assert diverse.equals(select.select(rows, SelectParams(order_by=["reward"], max_rows=4, max_fraction=None,
                                                           diversity={"clusters": 2})))  # reproducible


def test_summary_counts_reasons_tokens_and_clusters(deduped_rows) -> None:
    rows = deduped_rows(10, bad1="reverse qqq")
    params = SelectParams(max_fraction=0.5, diversity=PLAIN)
    summary = select.summarise(select.select(rows, params), params)
    assert summary["rows_in"] == 11 and summary["eligible"] == 10 and summary["selected"] == 5
    assert summary["budget_rows"] == 5 and summary["selected_fraction"] == round(5 / 11, 4)
    assert summary["dropped_by_reason"] == {"over_budget": 5, "verifier_failed": 1}
    assert 0 < summary["teacher_tokens_selected"] < summary["teacher_tokens_all"]
    assert summary["clusters"] == 1 and summary["order_by"] == ["quality"]
