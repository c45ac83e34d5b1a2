"""Tests of the data-quality gates (``distill/gate.py``, ``stages/gates/<stage>.py``).

For every stage: a good frame passes, a broken one fails naming the expectation and the
failing row ids, and an unreachable ``min_rows`` fails. Two subprocess runs check the CLI
(``python -m stages.gates.ingest``): exit code, stderr message and the JSON report.
Great Expectations is imported once per test session (by the first ``validate`` call).

    GX_ANALYTICS_ENABLED=false .venv/bin/python -m pytest tests/test_gates.py -q
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from demo import words
from distill.gate import GateResult, Outcome, validate  # sets GX_ANALYTICS_ENABLED=false
from distill.params import (
    DedupeGate,
    EvaluateGate,
    GenerateGate,
    IngestGate,
    ScoreGate,
    SelectGate,
    SweepGate,
    TrainGate,
)
from distill.records import (
    DEDUPED,
    FEATURES,
    GENERATED,
    PREDICTION,
    PREFERENCE,
    SCORED,
    SEED,
    SELECTED,
    SWEEP_POINT,
    SYSTEMS,
    TRAIN_LOG,
)

REPO = Path(__file__).resolve().parents[1]
SUITES = {stage: importlib.import_module(f"stages.gates.{stage}") for stage in
          ("ingest", "generate", "score", "dedupe", "select", "train", "evaluate", "sweep")}
NEVER = 10**9  # a row threshold no test data can meet

INGEST = IngestGate(min_rows=3, min_eval_rows=2, max_instruction_chars=100)
GENERATE = GenerateGate(min_rows=3, max_response_chars=50)
SCORE = ScoreGate(min_rows=3, min_kept_fraction=0.5)
DEDUPE = DedupeGate(min_rows=3)
SELECT = SelectGate(min_rows=2)
TRAIN = TrainGate(min_steps=10, max_final_loss=1.0)
EVALUATE = EvaluateGate(min_rows=3)


# --- good rows, one list of dicts per table; tests break a field and build the frame ---------------

def seed_rows(n: int, split: str) -> list[dict[str, Any]]:
    return [{
        "id": f"{split}-{i}", "instruction": f"add {i} and 1", "input": "",
        "reference": f"{i + 1}" if split == "eval" else None, "split": split,
        "source_file": f"data/seeds/{split}.jsonl", "source_line": i + 1, "source_hash": "abc",
    } for i in range(n)]


def generated_rows(n: int) -> list[dict[str, Any]]:
    return [{
        "id": f"g{i}", "seed_id": f"train-{i}", "source_file": "data/seeds/train.jsonl", "source_line": i + 1,
        "method": "labelling", "teacher": "standin", "model_requested": "m", "model_answered": "m",
        "template_hash": "t", "sampling_hash": "s", "request_key": f"k{i}", "response_id": f"r{i}",
        "choice_index": 0, "created_at": "2024-01-01T00:00:00Z", "prompt_tokens": 12, "completion_tokens": 3,
        "finish_reason": "stop", "instruction": f"add {i} and 1", "input": "", "response": f"{i + 1}",
    } for i in range(n)]


def feature_rows(n: int, k: int = 2) -> list[dict[str, Any]]:
    """Features of generated_rows(n): two tokens each, k alternatives per token."""
    return [{
        "id": f"g{i}", "tokenizer": "tok@abc", "k": k, "token_ids": [5, 6], "top_ids": [5, 7] * k,
        "top_logprobs": [-0.1, -3.0] * k, "tail_mass": [0.05, 0.0],
    } for i in range(n)]


def preference_rows(n: int) -> list[dict[str, Any]]:
    return [{
        "id": f"p{i}", "seed_id": f"train-{i}", "instruction": f"add {i} and 1", "input": "", "chosen": f"{i + 1}",
        "rejected": f"{i + 2}", "score_chosen": 1.0, "score_rejected": 0.3, "critique": "Off by one.",
        "teacher": "standin", "student": "tiny", "student_confidence": -1.5, "request_key": f"j{i}",
    } for i in range(n)]


def generated_frames(rows: list[dict[str, Any]], features: list[dict[str, Any]] | None = None,
                     preferences: list[dict[str, Any]] | None = None) -> dict:
    return {"rows": frame(rows, GENERATED), "features": frame(features or [], FEATURES),
            "preferences": frame(preferences or [], PREFERENCE)}


def scored_rows(n: int) -> list[dict[str, Any]]:
    rows = [row | {"length_ok": True, "truncated": False, "refusal": False, "verified": True,
                   "repetition": 0.0, "charset_ok": True, "quality": 0.9, "keep": True, "drop_reason": None}
            for row in generated_rows(n)]
    rows[-1] |= {"refusal": True, "quality": 0.1, "keep": False, "drop_reason": "refusal"}
    return rows


def deduped_rows(n: int) -> list[dict[str, Any]]:
    rows = [row | {"norm_hash": f"n{i}", "dup_of": None} for i, row in enumerate(scored_rows(n))]
    # the last row repeats the first one's instruction and is dropped as its duplicate
    rows[-1] |= {"norm_hash": "n0", "keep": False, "drop_reason": "duplicate", "dup_of": "g0",
                 "refusal": False}
    return rows


def selected_rows(n: int) -> list[dict[str, Any]]:
    """Deduplicated rows; the selection keeps the first n - 2 and cuts the one before the duplicate."""
    rows = [row | {"select_rank": i + 1 if row["keep"] else None, "select_cluster": i % 2 if row["keep"] else None}
            for i, row in enumerate(deduped_rows(n))]
    rows[-2] |= {"keep": False, "drop_reason": "over_budget"}
    return rows


def log_rows(n: int) -> list[dict[str, Any]]:
    return [{"step": i + 1, "loss": 3.0 / (i + 1), "learning_rate": 1e-3, "grad_norm": 1.0, "objective": "loss"}
            for i in range(n)]


def prediction_rows(n: int) -> list[dict[str, Any]]:
    return [{"id": f"eval-{i}", "system": system, "instruction": f"add {i} and 1", "reference": f"{i + 1}",
             "prediction": f"{i + 1}", "score": 1.0} for system in SYSTEMS for i in range(n)]


def frame(rows: list[dict[str, Any]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=schema, orient="row")


def ingest_frames(
    train: list[dict[str, Any]] | None = None, eval_: list[dict[str, Any]] | None = None
) -> dict[str, pl.DataFrame]:
    return {"train": frame(train or seed_rows(4, "train"), SEED),
            "eval": frame(eval_ or seed_rows(3, "eval"), SEED)}


def failed(result: GateResult) -> dict[str, Outcome]:
    """Failed outcomes keyed by ``table: type(column)[ where ...]``."""
    return {f"{outcome.table}: {outcome.label()}": outcome for outcome in result.failures}


def assert_passes(result: GateResult) -> None:
    assert result.success, result.message(Path("report.json"))
    assert result.outcomes and all(outcome.error is None for outcome in result.outcomes)


# --- ingest ------------------------------------------------------------------------------------

def test_ingest_good_passes() -> None:
    result = validate(SUITES["ingest"], INGEST, ingest_frames())
    assert_passes(result)
    assert result.rows == {"train": 4, "eval": 3}


def test_ingest_bad_rows_fail_with_ids() -> None:
    train = seed_rows(4, "train")
    train[1]["id"] = train[2]["id"] = "dup"
    train[3]["instruction"] = "x" * 101
    eval_ = seed_rows(3, "eval")
    eval_[0]["reference"] = None
    eval_[2]["split"] = "train"
    fails = failed(validate(SUITES["ingest"], INGEST, ingest_frames(train, eval_)))
    assert set(fails) == {
        "train: expect_column_values_to_be_unique(id)",
        "train: expect_column_value_lengths_to_be_between(instruction)",
        "eval: expect_column_values_to_not_be_null(reference)",
        "eval: expect_column_values_to_be_in_set(split)",
    }
    assert fails["train: expect_column_values_to_be_unique(id)"].failing_ids == ["dup"]
    assert fails["train: expect_column_value_lengths_to_be_between(instruction)"].failing_ids == ["train-3"]
    assert fails["eval: expect_column_values_to_not_be_null(reference)"].failing_ids == ["eval-0"]
    assert fails["eval: expect_column_values_to_be_in_set(split)"].failing_ids == ["eval-2"]


def test_ingest_min_rows_fails() -> None:
    gate = IngestGate(min_rows=NEVER, min_eval_rows=NEVER, max_instruction_chars=100)
    fails = failed(validate(SUITES["ingest"], gate, ingest_frames()))
    assert set(fails) == {"train: expect_table_row_count_to_be_between()",
                          "eval: expect_table_row_count_to_be_between()"}
    assert fails["eval: expect_table_row_count_to_be_between()"].observed == 3


def test_schema_mismatch_skips_content_checks() -> None:
    frames = ingest_frames()
    frames["train"] = frames["train"].drop("source_hash")
    frames["eval"] = frames["eval"].with_columns(pl.col("source_line").cast(pl.String))
    result = validate(SUITES["ingest"], INGEST, frames)
    fails = failed(result)
    columns, dtypes = ("train: expect_table_columns_to_match_set()",
                       "eval.dtypes: expect_column_pair_values_to_be_equal(dtype, expected)")
    assert set(fails) == {columns, dtypes}
    assert fails[columns].details == {"mismatched": {"missing": ["source_hash"]}}
    assert fails[dtypes].failing_ids == ["source_line"] and fails[dtypes].sample == [["String", "Int64"]]
    assert result.skipped and not result.success


# --- generate ----------------------------------------------------------------------------------

def test_generate_good_passes() -> None:
    assert_passes(validate(SUITES["generate"], GENERATE, generated_frames(generated_rows(4))))  # no features asked
    assert_passes(validate(SUITES["generate"], GENERATE, generated_frames(generated_rows(4), feature_rows(3))))


def test_generate_bad_features_fail_with_ids() -> None:
    features = feature_rows(5)
    features[0]["id"] = "not-a-row"
    features[1]["k"] = 21
    features[2]["top_ids"] = [5]  # not len(token_ids) * k
    features[3]["tail_mass"] = [0.5, 1.5]
    features[4]["id"] = features[3]["id"]
    fails = failed(validate(SUITES["generate"], GENERATE, generated_frames(generated_rows(5), features)))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "features.shapes: expect_column_values_to_be_in_set(in_rows)": ["not-a-row"],
        "features: expect_column_values_to_be_between(k)": ["g1"],
        "features.shapes: expect_column_values_to_be_in_set(shape_ok)": ["g1", "g2"],  # g1: k no longer fits
        "features.tail_mass: expect_column_values_to_be_between(tail_mass)": ["g3"],
        "features: expect_column_values_to_be_unique(id)": ["g3"],
    }


def test_generate_preferences_good_passes_and_bad_fail_with_ids() -> None:
    frames = generated_frames(generated_rows(4), preferences=preference_rows(3))
    assert_passes(validate(SUITES["generate"], GENERATE, frames))
    pairs = preference_rows(4)
    pairs[0]["rejected"] = pairs[0]["chosen"]  # no preference at all
    pairs[1]["score_rejected"] = 7.0  # a 0-10 grade not scaled to [0, 1]
    pairs[2]["chosen"] = ""
    pairs[3]["id"] = "p2"
    fails = failed(validate(SUITES["generate"], GENERATE, generated_frames(generated_rows(4), preferences=pairs)))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "preferences.pairs: expect_column_values_to_be_in_set(differs)": ["p0"],
        "preferences: expect_column_values_to_be_between(score_rejected)": ["p1"],
        "preferences: expect_column_value_lengths_to_be_between(chosen)": ["p2"],
        "preferences: expect_column_values_to_be_unique(id)": ["p2"],
    }


def test_generate_bad_rows_fail_with_ids() -> None:
    rows = generated_rows(5)
    rows[0]["response"] = None
    rows[1]["response"] = "y" * 51
    rows[2]["finish_reason"] = "eos"
    rows[3]["completion_tokens"] = -1
    rows[4]["id"] = rows[3]["id"]
    fails = failed(validate(SUITES["generate"], GENERATE, generated_frames(rows)))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "rows: expect_column_values_to_not_be_null(response)": ["g0"],
        "rows: expect_column_value_lengths_to_be_between(response)": ["g1"],
        "rows: expect_column_values_to_be_in_set(finish_reason)": ["g2"],
        "rows: expect_column_values_to_be_between(completion_tokens)": ["g3"],
        "rows: expect_column_values_to_be_unique(id)": ["g3"],
    }


def test_generate_min_rows_fails() -> None:
    gate = GenerateGate(min_rows=NEVER, max_response_chars=50)
    fails = failed(validate(SUITES["generate"], gate, generated_frames(generated_rows(4))))
    assert set(fails) == {"rows: expect_table_row_count_to_be_between()"}


# --- score -------------------------------------------------------------------------------------

def test_score_good_passes() -> None:
    assert_passes(validate(SUITES["score"], SCORE, {"rows": frame(scored_rows(4), SCORED)}))


def test_score_bad_rows_fail_with_ids() -> None:
    rows = scored_rows(4)
    rows[0]["quality"] = 1.5
    rows[1]["drop_reason"] = "refusal"  # kept, yet a drop reason
    rows[3]["drop_reason"] = None  # dropped without a reason
    rows[2]["repetition"] = -0.2
    fails = failed(validate(SUITES["score"], SCORE, {"rows": frame(rows, SCORED)}))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "rows: expect_column_values_to_be_between(quality)": ["g0"],
        "rows: expect_column_values_to_be_between(repetition)": ["g2"],
        "rows: expect_column_values_to_be_null(drop_reason) where keep == True": ["g1"],
        "rows: expect_column_values_to_not_be_null(drop_reason) where keep == False": ["g3"],
    }
    assert fails["rows: expect_column_values_to_be_between(quality)"].sample == [1.5]


def test_score_kept_fraction_and_min_rows_fail() -> None:
    rows = scored_rows(4)
    for row in rows[:2]:
        row |= {"keep": False, "drop_reason": "truncated"}
    gate = ScoreGate(min_rows=NEVER, min_kept_fraction=0.5)
    fails = failed(validate(SUITES["score"], gate, {"rows": frame(rows, SCORED)}))
    assert set(fails) == {"rows: expect_table_row_count_to_be_between()",
                          "rows: expect_column_mean_to_be_between(keep)"}
    assert fails["rows: expect_column_mean_to_be_between(keep)"].observed == pytest.approx(0.25)


# --- dedupe ------------------------------------------------------------------------------------

def test_dedupe_good_passes() -> None:
    assert_passes(validate(SUITES["dedupe"], DEDUPE, {"rows": frame(deduped_rows(5), DEDUPED)}))


def test_dedupe_bad_rows_fail_with_ids() -> None:
    rows = deduped_rows(5)
    rows[2]["norm_hash"] = rows[1]["norm_hash"]  # two kept rows with the same normalised text
    rows[4]["dup_of"] = None  # a duplicate that does not name its twin
    fails = failed(validate(SUITES["dedupe"], DEDUPE, {"rows": frame(rows, DEDUPED)}))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "rows: expect_column_values_to_be_unique(norm_hash) where keep == True": ["g1", "g2"],
        "rows: expect_column_values_to_not_be_null(dup_of) where drop_reason == 'duplicate'": ["g4"],
    }


def test_dedupe_contamination_fails_naming_the_kept_rows_that_copy_eval_rows() -> None:
    rows = deduped_rows(5)
    rows[1] |= {"contaminated_by": "eval-7", "contamination_similarity": 1.0}
    rows[3] |= {"contaminated_by": "eval-2", "contamination_similarity": 0.85}
    rows[4] |= {"contaminated_by": "eval-9", "contamination_similarity": 0.9}  # dropped anyway: not training data
    fails = failed(validate(SUITES["dedupe"], DEDUPE, {"rows": frame(rows, DEDUPED)}))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "rows: expect_column_values_to_be_null(contaminated_by) where keep == True": ["g1", "g3"],
    }


def test_dedupe_min_rows_counts_kept_rows() -> None:
    fails = failed(validate(SUITES["dedupe"], DedupeGate(min_rows=5), {"rows": frame(deduped_rows(5), DEDUPED)}))
    assert set(fails) == {"rows: expect_column_sum_to_be_between(keep)"}
    assert fails["rows: expect_column_sum_to_be_between(keep)"].observed == 4  # 5 rows, 4 kept


# --- select ------------------------------------------------------------------------------------

def test_select_good_passes() -> None:
    assert_passes(validate(SUITES["select"], SELECT, {"rows": frame(selected_rows(5), SELECTED)}))


def test_select_bad_rows_fail_with_ids() -> None:
    rows = selected_rows(5)
    rows[0]["select_rank"] = None  # a kept row with no place in the order
    rows[2]["select_rank"] = 2  # two rows with one rank
    rows[1]["contaminated_by"] = "eval-3"  # a selected row copying an eval row
    rows[3]["drop_reason"] = None  # cut by the budget without saying so
    fails = failed(validate(SUITES["select"], SELECT, {"rows": frame(rows, SELECTED)}))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "rows: expect_column_values_to_not_be_null(select_rank) where keep == True": ["g0"],
        "rows: expect_column_values_to_be_unique(select_rank)": ["g1", "g2"],
        "rows: expect_column_values_to_be_null(contaminated_by) where keep == True": ["g1"],
        "rows: expect_column_values_to_not_be_null(drop_reason) where keep == False": ["g3"],
    }


def test_select_min_rows_counts_selected_rows() -> None:
    fails = failed(validate(SUITES["select"], SelectGate(min_rows=4), {"rows": frame(selected_rows(5), SELECTED)}))
    assert set(fails) == {"rows: expect_column_sum_to_be_between(keep)"}
    assert fails["rows: expect_column_sum_to_be_between(keep)"].observed == 3


# --- train -------------------------------------------------------------------------------------

def test_train_good_passes() -> None:
    assert_passes(validate(SUITES["train"], TRAIN, {"log": frame(log_rows(20), TRAIN_LOG)}))


def test_train_bad_loss_fails_with_steps() -> None:
    rows = log_rows(20)
    rows[4]["loss"] = float("nan")
    rows[6]["loss"] = float("inf")
    rows[8]["step"] = rows[7]["step"]
    fails = failed(validate(SUITES["train"], TRAIN, {"log": frame(rows, TRAIN_LOG)}))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "log: expect_column_values_to_not_be_null(loss)": [5],
        "log: expect_column_values_to_be_between(loss)": [7],
        "log: expect_column_values_to_be_unique(step)": [8],
    }


def test_train_negative_loss_fails_except_for_rl_policy_objective() -> None:
    rows = log_rows(20)
    rows[3]["loss"] = -0.5
    fails = failed(validate(SUITES["train"], TRAIN, {"log": frame(rows, TRAIN_LOG)}))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "log.losses: expect_column_values_to_be_between(loss)": [4]}
    policy = [row | {"objective": "policy"} for row in rows]
    assert_passes(validate(SUITES["train"], TRAIN, {"log": frame(policy, TRAIN_LOG)}))


def test_train_final_loss_and_min_steps_fail() -> None:
    rows = [row | {"loss": 2.0} for row in log_rows(20)]
    gate = TrainGate(min_steps=NEVER, max_final_loss=1.0)
    fails = failed(validate(SUITES["train"], gate, {"log": frame(rows, TRAIN_LOG)}))
    assert set(fails) == {"log: expect_column_max_to_be_between(step)",
                          "log.tail: expect_column_mean_to_be_between(loss)"}
    assert fails["log: expect_column_max_to_be_between(step)"].observed == 20
    assert fails["log.tail: expect_column_mean_to_be_between(loss)"].observed == 2.0


def test_train_empty_log_fails() -> None:
    fails = failed(validate(SUITES["train"], TRAIN, {"log": frame([], TRAIN_LOG)}))
    assert "log: expect_table_row_count_to_be_between()" in fails


# --- evaluate ----------------------------------------------------------------------------------

def test_evaluate_good_passes() -> None:
    assert_passes(validate(SUITES["evaluate"], EVALUATE, {"predictions": frame(prediction_rows(3), PREDICTION)}))


def test_evaluate_bad_rows_fail_with_ids() -> None:
    rows = prediction_rows(4)
    rows[0]["score"] = 2.0
    rows[1]["system"] = "student_middle"
    fails = failed(validate(SUITES["evaluate"], EVALUATE, {"predictions": frame(rows, PREDICTION)}))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "predictions: expect_column_values_to_be_between(score)": ["eval-0"],
        "predictions: expect_column_values_to_be_in_set(system)": ["eval-1"],
    }


def test_evaluate_min_rows_is_per_system() -> None:
    rows = [row for row in prediction_rows(4) if row["system"] != "teacher"]  # 8 rows, no teacher
    fails = failed(validate(SUITES["evaluate"], EVALUATE, {"predictions": frame(rows, PREDICTION)}))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "predictions.per_system: expect_column_values_to_be_between(rows)": ["teacher"]}
    gate = EvaluateGate(min_rows=NEVER)
    fails = failed(validate(SUITES["evaluate"], gate, {"predictions": frame(prediction_rows(3), PREDICTION)}))
    per_system = fails["predictions.per_system: expect_column_values_to_be_between(rows)"]
    assert per_system.failing_ids == list(SYSTEMS)


def sweep_frames(selected: list[tuple], random: list[tuple] | None = None) -> dict[str, pl.DataFrame]:
    """Curves of (teacher_tokens, rows, fraction, score) points, as the sweep stage writes them."""
    def curve(points: list[tuple]) -> pl.DataFrame:
        return pl.DataFrame(points, schema=SWEEP_POINT, orient="row")
    return {"selected": curve(selected), "random": curve(selected if random is None else random)}


SWEEP_GOOD = [(1000, 40, 0.5, 0.95), (2000, 80, 1.0, 0.875)]


def test_sweep_good_passes_and_a_missing_random_curve_is_allowed() -> None:
    assert_passes(validate(SUITES["sweep"], SweepGate(min_points=2), sweep_frames(SWEEP_GOOD)))
    assert_passes(validate(SUITES["sweep"], SweepGate(min_points=2), sweep_frames(SWEEP_GOOD, [])))
    assert_passes(validate(SUITES["sweep"], SweepGate(min_points=2), sweep_frames([], [])))  # sweep.enabled: false


def test_sweep_bad_points_fail_naming_the_subset() -> None:
    bad = [(1000, 40, 0.5, 1.5), (2000, 80, 1.0, 0.875), (-1, 80, 0.0, 0.5)]
    fails = failed(validate(SUITES["sweep"], SweepGate(min_points=2), sweep_frames(bad, SWEEP_GOOD[:1])))
    assert fails["selected: expect_column_values_to_be_between(score)"].failing_ids == [40]
    assert fails["selected: expect_column_values_to_be_unique(rows)"].failing_ids == [80]
    assert fails["selected: expect_column_values_to_be_between(fraction)"].failing_ids == [80]
    assert fails["selected: expect_column_values_to_be_between(teacher_tokens)"].failing_ids == [80]
    assert "ends: expect_column_distinct_values_to_equal_set(rows)" in fails
    fails = failed(validate(SUITES["sweep"], SweepGate(min_points=NEVER), sweep_frames(SWEEP_GOOD)))
    assert list(fails) == ["selected: expect_table_row_count_to_be_between()"]


def test_failing_ids_are_capped() -> None:
    rows = generated_rows(30)
    for row in rows:
        row["response"] = None
    outcome = failed(validate(SUITES["generate"], GENERATE, generated_frames(rows)))[
        "rows: expect_column_values_to_not_be_null(response)"]
    assert outcome.failing_ids == [f"g{i}" for i in range(20)] and outcome.more_ids == 10
    assert outcome.line("generate", Path("r.json")).endswith("'g19'] (+10 more) (report: r.json)")


# --- the command line --------------------------------------------------------------------------

def run_gate(workdir: Path, stage: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(REPO), "GX_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1"}
    return subprocess.run([sys.executable, "-m", f"stages.gates.{stage}"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "data/ingest").mkdir(parents=True)
    return tmp_path


def write_ingest(workdir: Path, train: list[dict[str, Any]], eval_: list[dict[str, Any]]) -> None:
    frame(train, SEED).write_parquet(workdir / "data/ingest/train.parquet")
    frame(eval_, SEED).write_parquet(workdir / "data/ingest/eval.parquet")


def test_cli_fails_with_message_and_report(workdir: Path) -> None:
    train = seed_rows(100, "train")  # params.yaml: gates.ingest.min_rows = 100, min_eval_rows = 50
    train[7]["id"] = train[3]["id"]
    write_ingest(workdir, train, seed_rows(50, "eval"))
    proc = run_gate(workdir, "ingest")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines()[0] == (
        "gate ingest failed: train: expect_column_values_to_be_unique(id): 2 of 100 rows unexpected, "
        "e.g. ['train-3', 'train-3']; failing ids: ['train-3'] (report: reports/gates/ingest.json)")
    report = json.loads((workdir / "reports/gates/ingest.json").read_text())
    assert report["success"] is False and report["failed"] == 1
    [failure] = [item for item in report["expectations"] if not item["success"]]
    assert failure["type"] == "expect_column_values_to_be_unique" and failure["failing_ids"] == ["train-3"]


def test_cli_passes(workdir: Path) -> None:
    write_ingest(workdir, seed_rows(100, "train"), seed_rows(50, "eval"))
    proc = run_gate(workdir, "ingest")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gate ingest OK: ")
    report = json.loads((workdir / "reports/gates/ingest.json").read_text())
    assert report["success"] is True and report["rows"] == {"train": 100, "eval": 50}


def test_cli_missing_input_names_the_file(workdir: Path) -> None:
    proc = run_gate(workdir, "ingest")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "gate ingest failed: missing input data/ingest/train.parquet "
        "(table 'train'; run the ingest stage first) (report: reports/gates/ingest.json)")
    assert json.loads((workdir / "reports/gates/ingest.json").read_text())["success"] is False


def test_cli_reads_the_sweep_curves_from_csv(workdir: Path) -> None:
    plots = workdir / "reports/plots"
    plots.mkdir(parents=True)
    for name, frame_ in sweep_frames(SWEEP_GOOD).items():
        frame_.write_csv(plots / f"sweep_{name}.csv")
    proc = run_gate(workdir, "sweep")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gate sweep OK:") and "selected (2 rows), random (2 rows)" in proc.stdout
    frame_ = sweep_frames(SWEEP_GOOD[:1])["selected"]  # params.yaml: gates.sweep.min_points = 2
    frame_.write_csv(plots / "sweep_selected.csv")
    proc = run_gate(workdir, "sweep")
    assert proc.returncode == 1 and "gate sweep failed: selected: expect_table_row_count_to_be_between()" in proc.stderr


def test_planted_eval_rows_make_the_contamination_gate_fail_naming_them(workdir: Path) -> None:
    """The dedupe stage marks training rows that copy eval rows; its gate stops the pipeline."""
    from distill.params import DedupeParams, ScoreParams
    from stages import dedupe, score

    train, evals = seed_rows(150, "train"), seed_rows(50, "eval")
    for row in train:
        row["instruction"] = f"write {row['instruction']} in words"  # distinct from every eval row
    rows = generated_rows(150)
    for i, row in enumerate(rows):
        row["instruction"] = train[i]["instruction"]
    for i, j in ((10, 3), (20, 4), (30, 5)):  # plant three eval rows, one with other spacing and case
        rows[i]["instruction"] = evals[j]["instruction"] if i != 30 else evals[j]["instruction"].upper() + "  "
    write_ingest(workdir, train, evals)
    scored = score.score(frame(rows, GENERATED), ScoreParams(min_response_chars=1, max_response_chars=50),
                         verify=words.verify)
    deduped = dedupe.dedupe(scored, DedupeParams(), frame(evals, SEED))
    (workdir / "data/dedupe").mkdir(parents=True)
    deduped.write_parquet(workdir / "data/dedupe/rows.parquet")
    proc = run_gate(workdir, "dedupe")
    assert proc.returncode == 1
    assert "expect_column_values_to_be_null(contaminated_by) where keep == True" in proc.stderr
    assert "['g10', 'g20', 'g30']" in proc.stderr
    assert dict(deduped.filter(pl.col("contaminated_by").is_not_null()).select("id", "contaminated_by")
                .iter_rows()) == {"g10": "eval-3", "g20": "eval-4", "g30": "eval-5"}
