"""Score signals that need the teacher or a model: the judge's rating (over HTTP), IFD and reward."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from distill.io import write_parquet
from distill.params import DedupeParams, SelectParams
from distill.records import SCORED
from flows.teacher import run_plan
from stages import dedupe, score, select


def rows_file(tmp_path: Path, generated) -> Path:
    path = tmp_path / "generate/rows.parquet"
    write_parquet(generated(("right", "reverse planet", "tenalp"), ("close", "upper cat", "CTA"),
                            ("story", "Tell me a story", "Once upon a time."),
                            ("cut", "reverse stone", "en", "length")), path)
    return path


@pytest.fixture
def run_score(generated):
    """``run_score(params, tmp_path)``: the score stage on four literal rows, in tmp_path; the scored rows."""

    def scored_rows(params, tmp_path: Path) -> pl.DataFrame:
        store = tmp_path / "store/score.jsonl"
        scored, metrics = score.run(params, pl.read_parquet(rows_file(tmp_path, generated)), store, run_plan)
        assert metrics["store_lines_quarantined"] == 0
        return scored

    return scored_rows


def test_judge_rates_rows_that_passed_the_checks_and_can_drop_low_ones(
    tmp_path: Path,
    run_score,
    load_params,
    with_standin,
) -> None:
    params = with_standin(load_params(), error_rate=0.0, rate_limit_rate=0.0, wrong_rate=0.0, malformed_rate=0.0,
                          refusal_rate=0.0)
    params = params.model_copy(update={"score": params.score.model_copy(update={"judge": True, "verify": False})})
    scored = run_score(params, tmp_path)
    assert scored.schema == pl.Schema(SCORED)
    ratings = dict(scored.select("id", "judge_rating").iter_rows())
    assert ratings["right"] == 1.0 and ratings["close"] < 1.0
    assert ratings["cut"] is None  # dropped by a check first: never sent to the judge
    assert ratings["story"] is None  # off-skill: the stand-in refuses to grade, so it is not rated
    assert scored.filter(pl.col("id") == "story")["judge_critique"][0].startswith("not rated: ")
    assert scored["keep"].to_list() == [True, True, True, False]  # the score stage rates; select drops
    store = tmp_path / "store/score.jsonl"
    sent = len(store.read_text().splitlines())
    assert sent == 3
    assert run_score(params, tmp_path).equals(scored)
    assert len(store.read_text().splitlines()) == sent  # the same ratings, from the store

    strict = SelectParams(min={"judge_rating": 0.9}, max_fraction=None, diversity={"clusters": 1})
    selected = select.select(dedupe.dedupe(scored, DedupeParams()), strict)
    reasons = dict(selected.select("id", "drop_reason").iter_rows())
    assert reasons["close"] == "below_min_judge_rating"
    assert reasons["story"] == "below_min_judge_rating"  # not rated: a missing signal fails its threshold
    assert reasons["right"] is None


def test_without_signals_the_store_is_created_empty_and_columns_are_null(
    tmp_path: Path,
    run_score,
    load_params,
) -> None:
    scored = run_score(load_params(), tmp_path)
    assert (tmp_path / "store/score.jsonl").read_text() == ""
    assert scored.select("judge_rating", "ifd", "reward").null_count().row(0) == (4, 4, 4)


def test_ifd_signal_and_its_threshold(tmp_path: Path, run_score, load_params) -> None:
    params = load_params()
    params = params.model_copy(update={"score": params.score.model_copy(update={"ifd": True, "verify": False})})
    scored = run_score(params, tmp_path)
    ifd = dict(scored.select("id", "ifd").iter_rows())
    assert all(isinstance(ifd[i], float) and ifd[i] > 0 for i in ("right", "close", "story")) and ifd["cut"] is None
    capped = SelectParams(max={"ifd": 0.0}, max_fraction=None, diversity={"clusters": 1})
    selected = select.select(dedupe.dedupe(scored, DedupeParams()), capped)
    assert set(selected.filter(pl.col("id") != "cut")["drop_reason"]) == {"above_max_ifd"}


def test_reward_model_scores_every_row_that_passed_the_checks(
    tmp_path: Path,
    tiny_reward: Path,
    run_score,
    load_params,
) -> None:
    params = load_params()
    params = params.model_copy(update={"score": params.score.model_copy(update={"reward_model": str(tiny_reward),
                                                                                "verify": False})})
    scored = run_score(params, tmp_path)
    rewards = dict(scored.select("id", "reward").iter_rows())
    assert all(isinstance(rewards[i], float) for i in ("right", "close", "story")) and rewards["cut"] is None
    assert score.summarise(scored)["mean_reward"] is not None
