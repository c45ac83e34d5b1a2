"""The data sweep: nested subsets best first and at random, real (tiny) trainings, the headline comparison."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from distill.measure import data_sweep, sweep_report
from distill.params import SelectParams, SweepParams
from distill.student import load_tokenizer
from distill.transfer import data as train_data
from stages import select, train


def selected_rows(deduped_rows) -> pl.DataFrame:
    """12 generated rows, 10 clean; the selection keeps 6 (half the generated rows)."""
    return select.select(deduped_rows(10, bad1="reverse qqq", bad2="reverse www"),
                         SelectParams(max_fraction=0.5, diversity={"clusters": 1}))


def by_policy(points: list[dict]) -> dict[tuple[str, int], pl.Series]:
    return {(p["policy"], p["rows"]): p["mask"] for p in points}


def ids(rows: pl.DataFrame, mask: pl.Series) -> set[str]:
    return set(rows.filter(mask)["id"])


def test_plan_nests_each_order_and_always_has_the_selection_and_all_rows(deduped_rows) -> None:
    rows = selected_rows(deduped_rows)
    points = data_sweep.plan(rows, SweepParams(fractions=[0.25]))
    masks = by_policy(points)
    assert list(masks) == [("selected", 3), ("random", 3), ("selected", 6), ("random", 6), ("all", 12)]
    assert [p["is_selection"] for p in points] == [False, False, True, False, False]
    assert ids(rows, masks["selected", 3]) < ids(rows, masks["selected", 6])  # nested
    assert ids(rows, masks["random", 3]) < ids(rows, masks["random", 6])
    assert ids(rows, masks["selected", 6]) == ids(rows, rows["keep"])  # exactly the select stage's rows
    assert masks["all", 12].all()
    assert ids(rows, masks["random", 6]) != ids(rows, masks["selected", 6])
    best_first = data_sweep.orders(rows, 0)["selected"].to_list()
    assert {rows["id"][i] for i in best_first[-2:]} == {"bad1", "bad2"}  # rows that failed a check come last
    assert [p["rows"] for p in data_sweep.plan(rows, SweepParams(fractions=[0.25], random=False))] == [3, 6, 12]


def test_comparison_picks_the_selection_all_rows_and_the_random_twin() -> None:
    points = [
        {"policy": "selected", "rows": 6, "fraction": 0.5, "teacher_tokens": 90, "score": 0.9, "is_selection": True,
         "final_loss": None},
        {"policy": "random", "rows": 6, "fraction": 0.5, "teacher_tokens": 95, "score": 0.7, "is_selection": False,
         "final_loss": 0.5},
        {"policy": "all", "rows": 12, "fraction": 1.0, "teacher_tokens": 190, "score": 0.8, "is_selection": False,
         "final_loss": 0.4},
    ]
    head = data_sweep.comparison(points)
    assert (head["selected"]["score"], head["all"]["score"], head["random"]["score"]) == (0.9, 0.8, 0.7)
    assert head["selected_minus_all"] == 0.1 and head["selected_minus_random"] == 0.2
    curves = data_sweep.curves(points)
    assert curves["selected"]["rows"].to_list() == [6, 12] and curves["random"]["score"].to_list() == [0.7, 0.8]
    assert "| selected | 6 | 90 | 0.900 |" in sweep_report.report({"enabled": True, "steps": 5, "generated_rows": 12,
                                                           "eval_rows": 3, "comparison": head, "points": points})


def test_points_are_trained_and_scored_and_the_train_stage_model_is_reused(
    tiny_student: Path,
    tmp_path: Path,
    deduped_rows,
    base_params,
    train_params,
) -> None:
    rows = selected_rows(deduped_rows)
    params = base_params
    params = params.model_copy(update={"train": train_params(tiny_student, max_steps=2, batch_size=4),
                                       "sweep": SweepParams(fractions=[], random=True)})
    template = Path(params.train.prompt_template).read_text()
    model_dir = tmp_path / "model"
    train.train(train_data.training_pairs(rows, template, load_tokenizer(params.train.student)), params.train,
                model_dir)  # as the train stage does
    evals = pl.DataFrame({"id": ["e1", "e2"], "instruction": ["reverse cat", "upper dog"], "input": ["", ""],
                          "reference": ["tac", "DOG"]})
    points = data_sweep.run_points(rows, evals, params, trained_models=(model_dir,))
    assert [(p["policy"], p["rows"], p["reused_train_model"]) for p in points] == [
        ("selected", 6, True), ("random", 6, False), ("all", 12, False)]
    assert all(0.0 <= p["score"] <= 1.0 for p in points)
    assert points[1]["final_loss"] > 0 and points[0]["final_loss"] is None
    tokens = {p["policy"]: p["teacher_tokens"] for p in points}
    assert 0 < tokens["selected"] < tokens["all"] and tokens["random"] < tokens["all"]
