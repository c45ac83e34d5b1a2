"""Dedupe: normalised twins, near and semantic duplicates, contamination, on literal GENERATED rows (scored)."""

from __future__ import annotations

import polars as pl
import pytest

from demo import words
from distill.params import DedupeParams, ScoreParams
from distill.records import DEDUPED
from stages import dedupe, score

SCORE = ScoreParams(min_response_chars=1, max_response_chars=20)
REFUSAL = "I'm sorry, but as an AI I can't help with that."


@pytest.fixture
def deduped(generated):
    """``deduped(*rows, params=SCORE)``: the literal rows (see ``generated``), scored and deduped."""

    def scored_and_deduped(*rows: tuple, params: ScoreParams = SCORE) -> pl.DataFrame:
        result = dedupe.dedupe(score.score(generated(*rows), params, verify=words.verify), DedupeParams())
        assert result.schema == pl.Schema(DEDUPED)
        return result

    return scored_and_deduped


def marks(frame: pl.DataFrame) -> dict[str, tuple]:
    return {row[0]: row[1:] for row in frame.select("id", "keep", "drop_reason", "dup_of").iter_rows()}


def test_normalised_twins_share_a_hash_and_smaller_id_wins_a_tie(deduped) -> None:
    result = deduped(("b", "reverse planet", "tenalp"), ("a", " Reverse  PLANET", "tenalp"),
                     ("c", "upper cat", "CAT"))
    hashes = dict(result.select("id", "norm_hash").iter_rows())
    assert hashes["a"] == hashes["b"] != hashes["c"]
    assert marks(result) == {
        "b": (False, "duplicate", "a"),
        "a": (True, None, None),
        "c": (True, None, None),
    }
    assert dedupe.summarise(result) == {"rows_in": 3, "kept": 2, "duplicates_dropped": 1,
                                        "duplicates_by_kind": {"exact": 1}, "duplicate_clusters": 1,
                                        "contaminated_rows": 0, "contaminated_ids": [],
                                        "dropped_by_reason": {"duplicate": 1}}


def test_input_is_part_of_the_key(generated) -> None:
    rows = generated(("a", "reverse planet", "tenalp"), ("b", "reverse planet", "tenalp"))
    rows = rows.with_columns(input=pl.Series(["", "context"]))
    result = dedupe.dedupe(score.score(rows, SCORE), DedupeParams())
    assert marks(result) == {"a": (True, None, None), "b": (True, None, None)}


def test_normalisation_switches(generated) -> None:
    rows = score.score(generated(("a", "reverse planet", "tenalp"), ("b", "Reverse planet", "tenalp"),
                                 ("c", "reverse  planet", "tenalp")), SCORE)
    # near-duplicates normalise on their own: off here, to see the exact pass's switches alone
    strict = dedupe.dedupe(rows, DedupeParams(lowercase=False, collapse_whitespace=False, near={"enabled": False}))
    assert strict["norm_hash"].n_unique() == 3
    assert strict["keep"].to_list() == [True, True, True]
    spaces_only = dedupe.dedupe(rows, DedupeParams(lowercase=False, collapse_whitespace=True,
                                                   near={"enabled": False}))
    assert marks(spaces_only) == {"a": (True, None, None), "b": (True, None, None), "c": (False, "duplicate", "a")}


def test_higher_quality_twin_wins_over_smaller_id(deduped) -> None:
    # truncated answers are kept here, with quality 5/6: the full answer ("z") wins
    params = ScoreParams(min_response_chars=1, max_response_chars=20, drop_truncated=False)
    result = deduped(("a", "reverse planet", "tenalp", "length"), ("z", "REVERSE planet", "tenalp"), params=params)
    assert dict(result.select("id", "quality").iter_rows()) == {"a": 5 / 6, "z": 1.0}
    assert marks(result) == {"a": (False, "duplicate", "z"), "z": (True, None, None)}


def test_rows_dropped_by_score_do_not_compete(deduped) -> None:
    result = deduped(
        ("0", "reverse planet", "tenlap"),  # wrong: dropped by score, smallest id
        ("1", "upper cat", REFUSAL),  # refusal, alone in its group
        ("5", "Reverse Planet", "tenalp"),
        ("9", "reverse planet", "tenalp"),
        ("7", "reverse  PLANET", "tenalp"),
    )
    assert marks(result) == {
        "0": (False, "verifier_failed", None),
        "1": (False, "refusal", None),
        "5": (True, None, None),
        "9": (False, "duplicate", "5"),
        "7": (False, "duplicate", "5"),
    }
    assert dedupe.summarise(result) == {
        "rows_in": 5,
        "kept": 1,
        "duplicates_dropped": 2,
        "duplicates_by_kind": {"exact": 2},
        "duplicate_clusters": 1,
        "contaminated_rows": 0,
        "contaminated_ids": [],
        "dropped_by_reason": {"duplicate": 2, "refusal": 1, "verifier_failed": 1},
    }


# --- near and semantic duplicates, contamination ------------------------------------------------

LONG = "Write a short story about a lighthouse keeper who finds a message in a bottle on the shore"
LONG_EDIT = "Write a short story about a lighthouse keeper who finds a message in a bottle on the beach"
OTHER = "Explain how photosynthesis turns sunlight water and carbon dioxide into sugar and oxygen"


@pytest.fixture
def open_rows(generated):
    """``open_rows(*(id, instruction))``: scored rows with an uncheckable skill: every row is kept with quality 1."""

    def scored(*rows: tuple[str, str]) -> pl.DataFrame:
        return score.score(generated(*((row_id, text, "ok") for row_id, text in rows)), SCORE)

    return scored


def test_near_duplicates_join_the_best_rows_cluster_with_their_similarity(open_rows) -> None:
    result = dedupe.dedupe(open_rows(("b", LONG_EDIT), ("a", LONG), ("c", OTHER)), DedupeParams())
    row = result.filter(pl.col("id") == "b").row(0, named=True)
    assert (row["keep"], row["drop_reason"], row["dup_of"], row["dup_kind"]) == (False, "duplicate", "a", "near")
    assert 0.8 <= row["dup_similarity"] < 1.0
    assert result.filter(pl.col("id") != "b")["keep"].to_list() == [True, True]
    off = dedupe.dedupe(open_rows(("b", LONG_EDIT), ("a", LONG)), DedupeParams(near={"enabled": False}))
    assert off["keep"].to_list() == [True, True]
    strict = dedupe.dedupe(open_rows(("b", LONG_EDIT), ("a", LONG)), DedupeParams(near={"threshold": 0.99}))
    assert strict["keep"].to_list() == [True, True]


def test_exact_and_near_links_chain_into_one_cluster(open_rows) -> None:
    result = dedupe.dedupe(open_rows(("a", LONG), ("b", LONG.upper()), ("c", LONG_EDIT)), DedupeParams())
    assert dict(result.select("id", "dup_kind").iter_rows()) == {"a": None, "b": "exact", "c": "near"}
    assert set(result.filter(~pl.col("keep"))["dup_of"]) == {"a"}


def eval_rows(*rows: tuple[str, str]) -> pl.DataFrame:
    return pl.DataFrame([{"id": row_id, "instruction": text, "input": ""} for row_id, text in rows])


def test_contamination_marks_rows_that_copy_the_eval_split(open_rows) -> None:
    evals = eval_rows(("e1", LONG), ("e2", "summarise the plot of hamlet"))
    rows = open_rows(("a", LONG_EDIT), ("b", OTHER), ("c", "Summarise  the plot of Hamlet"))
    marked = dedupe.dedupe(rows, DedupeParams(), evals)
    assert dict(marked.select("id", "contaminated_by").iter_rows()) == {"a": "e1", "b": None, "c": "e2"}
    assert marked["keep"].to_list() == [True, True, True]  # action: fail leaves it to the gate
    assert dedupe.summarise(marked)["contaminated_ids"] == ["a", "c"]
    dropped = dedupe.dedupe(rows, DedupeParams(contamination={"action": "drop"}), evals)
    assert dict(dropped.select("id", "drop_reason").iter_rows()) == {"a": "eval_overlap", "b": None,
                                                                     "c": "eval_overlap"}


def test_semantic_pass_joins_paraphrases_that_share_few_words(open_rows) -> None:
    rows = open_rows(("a", "How do I reverse a string in Python?"), ("b", "What's the way to reverse a Python string?"),
                     ("c", "Explain how photosynthesis works in plants."))
    params = DedupeParams(semantic={"enabled": True, "threshold": 0.8})
    result = dedupe.dedupe(rows, params)
    b = result.filter(pl.col("id") == "b").row(0, named=True)
    assert (b["keep"], b["dup_of"], b["dup_kind"]) == (False, "a", "semantic") and b["dup_similarity"] >= 0.8
    assert result.filter(pl.col("id") != "b")["keep"].to_list() == [True, True]
    assert dedupe.dedupe(rows, DedupeParams())["keep"].to_list() == [True, True, True]  # words alone: distinct
