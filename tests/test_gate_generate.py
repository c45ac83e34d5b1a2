"""Tests of the generate gate (``stages/gates/generate.py``): good rows, features and preference pairs pass,
broken ones fail naming the expectation and the failing ids (capped in the report line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distill.gate import validate
from distill.params import GenerateGate
from distill.records import FEATURES, GENERATED, PREFERENCE

GENERATE = GenerateGate(min_rows=3, max_response_chars=50)


def feature_rows(n: int, k: int = 2) -> list[dict[str, Any]]:
    """Features of good_generated_rows(n): two tokens each, k alternatives per token."""
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


@pytest.fixture(scope="module")
def generated_frames(frame):
    """``generated_frames(rows, features=None, preferences=None)``: the rows, features and preferences frames."""
    def build(rows: list[dict[str, Any]], features: list[dict[str, Any]] | None = None,
              preferences: list[dict[str, Any]] | None = None) -> dict:
        return {"rows": frame(rows, GENERATED), "features": frame(features or [], FEATURES),
                "preferences": frame(preferences or [], PREFERENCE)}
    return build


def test_generate_good_passes(suite, generated_frames, good_generated_rows, assert_passes) -> None:
    assert_passes(validate(suite("generate"), GENERATE, generated_frames(good_generated_rows(4))))  # no features asked
    assert_passes(validate(suite("generate"), GENERATE, generated_frames(good_generated_rows(4), feature_rows(3))))


def test_generate_bad_features_fail_with_ids(suite, generated_frames, good_generated_rows, failed) -> None:
    features = feature_rows(5)
    features[0]["id"] = "not-a-row"
    features[1]["k"] = 21
    features[2]["top_ids"] = [5]  # not len(token_ids) * k
    features[3]["tail_mass"] = [0.5, 1.5]
    features[4]["id"] = features[3]["id"]
    fails = failed(validate(suite("generate"), GENERATE, generated_frames(good_generated_rows(5), features)))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "features.shapes: expect_column_values_to_be_in_set(in_rows)": ["not-a-row"],
        "features: expect_column_values_to_be_between(k)": ["g1"],
        "features.shapes: expect_column_values_to_be_in_set(shape_ok)": ["g1", "g2"],  # g1: k no longer fits
        "features.tail_mass: expect_column_values_to_be_between(tail_mass)": ["g3"],
        "features: expect_column_values_to_be_unique(id)": ["g3"],
    }


def test_generate_preferences_good_passes_and_bad_fail_with_ids(suite, generated_frames, good_generated_rows,
                                                                 failed, assert_passes) -> None:
    frames = generated_frames(good_generated_rows(4), preferences=preference_rows(3))
    assert_passes(validate(suite("generate"), GENERATE, frames))
    pairs = preference_rows(4)
    pairs[0]["rejected"] = pairs[0]["chosen"]  # no preference at all
    pairs[1]["score_rejected"] = 7.0  # a 0-10 grade not scaled to [0, 1]
    pairs[2]["chosen"] = ""
    pairs[3]["id"] = "p2"
    fails = failed(validate(suite("generate"), GENERATE,
                            generated_frames(good_generated_rows(4), preferences=pairs)))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "preferences.pairs: expect_column_values_to_be_in_set(differs)": ["p0"],
        "preferences: expect_column_values_to_be_between(score_rejected)": ["p1"],
        "preferences: expect_column_value_lengths_to_be_between(chosen)": ["p2"],
        "preferences: expect_column_values_to_be_unique(id)": ["p2"],
    }


def test_generate_bad_rows_fail_with_ids(suite, generated_frames, good_generated_rows, failed) -> None:
    rows = good_generated_rows(5)
    rows[0]["response"] = None
    rows[1]["response"] = "y" * 51
    rows[2]["finish_reason"] = "eos"
    rows[3]["completion_tokens"] = -1
    rows[4]["id"] = rows[3]["id"]
    fails = failed(validate(suite("generate"), GENERATE, generated_frames(rows)))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "rows: expect_column_values_to_not_be_null(response)": ["g0"],
        "rows: expect_column_value_lengths_to_be_between(response)": ["g1"],
        "rows: expect_column_values_to_be_in_set(finish_reason)": ["g2"],
        "rows: expect_column_values_to_be_between(completion_tokens)": ["g3"],
        "rows: expect_column_values_to_be_unique(id)": ["g3"],
    }


def test_generate_min_rows_fails(suite, generated_frames, good_generated_rows, failed, never) -> None:
    gate = GenerateGate(min_rows=never, max_response_chars=50)
    fails = failed(validate(suite("generate"), gate, generated_frames(good_generated_rows(4))))
    assert set(fails) == {"rows: expect_table_row_count_to_be_between()"}


def test_failing_ids_are_capped(suite, generated_frames, good_generated_rows, failed) -> None:
    rows = good_generated_rows(30)
    for row in rows:
        row["response"] = None
    outcome = failed(validate(suite("generate"), GENERATE, generated_frames(rows)))[
        "rows: expect_column_values_to_not_be_null(response)"]
    assert outcome.failing_ids == [f"g{i}" for i in range(20)] and outcome.more_ids == 10
    assert outcome.line("generate", Path("r.json")).endswith("'g19'] (+10 more) (report: r.json)")
