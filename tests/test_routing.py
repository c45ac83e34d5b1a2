"""Several teachers: routing rows across stand-in teachers over HTTP, each row attributed to its writer."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from demo import words
from distill import params as params_module
from distill.elicit.answering import by_price, round_robin
from distill.entry import StageError


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILL_TEACHER_MAX_ATTEMPTS", "2")


def teacher(params: params_module.Params, name: str, quiet: dict, price: tuple[float, float] = (0.15, 0.60),
            **standin: float) -> params_module.TeacherParams:
    return params.teacher.model_copy(update={
        "name": name, "settings": params.teacher.settings | quiet | standin,
        "price": params_module.PriceParams(prompt_per_mtok=price[0], completion_per_mtok=price[1])})


@pytest.fixture
def with_teachers(params_for, quiet: dict):
    """``with_teachers(routing, primary, second)``: labelling params with two quiet stand-in teachers, alpha (the
    primary) and beta, with those settings each, routed so."""

    def params_with(routing: str, primary: dict, second: dict) -> params_module.Params:
        params = params_for(["labelling"])
        params = params.model_copy(update={"generate": params.generate.model_copy(update={"routing": routing})})
        return params.model_copy(update={"teacher": teacher(params, "alpha", quiet, **primary),
                                         "teachers": [teacher(params, "beta", quiet, **second)]})

    return params_with


def test_round_robin_spreads_rows_and_attributes_each(
    tmp_path: Path,
    forty_seeds: Path,
    with_teachers,
    run_stage,
    outputs,
) -> None:
    params = with_teachers("round_robin", {}, {})
    metrics = run_stage(params, tmp_path, forty_seeds)
    rows, _, _ = outputs(tmp_path)
    counts = dict(rows["teacher"].value_counts().iter_rows())
    assert set(counts) == {"alpha", "beta"} and min(counts.values()) >= 10
    assert metrics["rows_by_teacher"] == counts
    assert {name: t["requests_sent"] for name, t in metrics["by_teacher"].items()} == counts
    # The assignment is by a hash of the input id: the same split as the pure function gives.
    items = list(pl.read_parquet(forty_seeds).iter_rows(named=True))
    alpha_ids = {item["id"] for item in round_robin(items, params.all_teachers)[0]}
    assert set(rows.filter(pl.col("teacher") == "alpha")["seed_id"]) == alpha_ids
    again = run_stage(params, tmp_path, forty_seeds)
    assert again["requests_sent"] == 0


def test_cheapest_first_and_failures_go_to_the_next(
    tmp_path: Path,
    forty_seeds: Path,
    with_teachers,
    run_stage,
    outputs,
) -> None:
    params = with_teachers("cheapest", {}, {"error_rate": 1.0})
    params = params.model_copy(update={"teachers": [params.teachers[0].model_copy(update={
        "price": params_module.PriceParams(prompt_per_mtok=0.01, completion_per_mtok=0.02)})]})
    assert [t.name for t in by_price(params.all_teachers, params.generate)] == ["beta", "alpha"]
    metrics = run_stage(params, tmp_path, forty_seeds)
    rows, rejects, _ = outputs(tmp_path)
    assert set(rows["teacher"]) == {"alpha"} and rows.height == 40  # beta failed every request
    assert metrics["by_teacher"]["beta"]["requests_sent"] == 40 and metrics["failures_by_class"]
    assert rejects.filter(pl.col("reason") == "teacher_error").is_empty()  # retried elsewhere, not lost


def test_judge_keeps_the_best_answer_of_all_teachers(
    tmp_path: Path,
    forty_seeds: Path,
    with_teachers,
    run_stage,
    outputs,
) -> None:
    params = with_teachers("judge", {}, {"wrong_rate": 1.0})  # beta is always a little wrong
    metrics = run_stage(params, tmp_path, forty_seeds)
    rows, rejects, _ = outputs(tmp_path)
    assert rows.height == 40 and set(rows["teacher"]) == {"alpha"}
    assert (rows["judge_score"] == 1.0).all()
    assert all(words.is_correct(r["instruction"], r["response"]) for r in rows.iter_rows(named=True))
    lost = rejects.filter(pl.col("reason") == "not_best")
    assert lost.height == 40 and lost["detail"][0].startswith("beta scored ")
    assert metrics["failed_fraction"] == 0.0  # losing answers are a choice, not a failure
    # 40 answers each + 80 judgements by the primary teacher.
    assert metrics["by_teacher"]["beta"]["requests_sent"] == 40
    assert metrics["by_teacher"]["alpha"]["requests_sent"] == 120


def test_teacher_names_must_be_unique() -> None:
    raw = json.loads(json.dumps(params_module.load().model_dump()))
    raw["teachers"] = [dict(raw["teacher"])]
    with pytest.raises(params_module.ParamsError, match="names must be unique"):
        params_module.parse(raw)


def test_a_teacher_that_lacks_a_capability_stops_the_run_before_any_request(
    tmp_path: Path,
    forty_seeds: Path,
    with_teachers,
    run_stage,
) -> None:
    params = with_teachers("round_robin", {}, {})
    real = params.teachers[0].model_copy(update={
        "provider": "openai", "base_url": "http://127.0.0.1:9/v1",
        "capabilities": params_module.CapabilityParams(logprobs=False)})
    gen = params.generate.model_copy(update={"elicit": ["labelling", "feature"], "top_logprobs": 5,
                                             "feature_tokenizer": "data/students/tiny-char"})
    params = params.model_copy(update={"teachers": [real], "generate": gen})
    with pytest.raises(StageError, match=r"teacher\.capabilities\.logprobs is false for beta"):
        run_stage(params, tmp_path, forty_seeds)
    assert not (tmp_path / "store/generate.jsonl").exists()
