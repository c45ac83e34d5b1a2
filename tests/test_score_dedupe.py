"""Scoring checks and reasons, then dedupe of normalised twins, on literal GENERATED rows."""

from __future__ import annotations

import polars as pl

from stages import dedupe, score
from stages.params import DedupeParams, ScoreParams
from stages.records import DEDUPED, GENERATED, SCORED

SCORE = ScoreParams(min_response_chars=1, max_response_chars=20)
REFUSAL = "I'm sorry, but as an AI I can't help with that."


def generated(*rows: tuple) -> pl.DataFrame:
    """Rows of (id, instruction, response[, finish_reason]) with every other GENERATED column filled."""
    records = []
    for row in rows:
        row_id, instruction, response, finish = (*row, "stop")[:4]
        records.append({
            "id": row_id, "seed_id": f"seed-{row_id}", "source_file": "data/seeds/train.jsonl", "source_line": 1,
            "method": "labelling", "teacher": "standin", "model_requested": "standin-skill-1",
            "model_answered": "standin-skill-1-2026-11-01", "template_hash": "t" * 16, "sampling_hash": "s" * 16,
            "request_key": f"key-{row_id}", "response_id": f"chatcmpl-{row_id}", "choice_index": 0,
            "created_at": "2026-01-01T00:00:00.000+00:00", "prompt_tokens": 10,
            "completion_tokens": len(response), "finish_reason": finish, "instruction": instruction, "input": "",
            "response": response,
        })
    return pl.DataFrame(records, schema=GENERATED)


def checks(scored: pl.DataFrame) -> dict[str, tuple]:
    columns = ("length_ok", "truncated", "refusal", "verified", "quality", "keep", "drop_reason")
    return {row[0]: row[1:] for row in scored.select("id", *columns).iter_rows()}


def test_each_check_and_its_reason() -> None:
    rows = generated(
        ("right", "reverse planet", "tenalp"),
        ("wrong", "reverse planet", "tenlap"),
        ("refuse", "upper cat", REFUSAL),
        ("cut", "reverse planet", "tena", "length"),
        ("long", "upper cat", "CAT" * 10),
        ("offskill", "What is the capital of France?", "Paris"),
        ("spaces", "reverse planet", "  tenalp \n"),
    )
    scored = score.score(rows, SCORE)
    assert scored.schema == pl.Schema(SCORED)
    assert scored["id"].to_list() == ["right", "wrong", "refuse", "cut", "long", "offskill", "spaces"]
    assert checks(scored) == {
        # length_ok, truncated, refusal, verified, quality, keep, drop_reason
        "right": (True, False, False, True, 1.0, True, None),
        "wrong": (True, False, False, False, 5 / 6, False, "verifier_failed"),
        # a refusal fails the length and verifier checks too: the first failing check is the reason
        "refuse": (False, False, True, False, 3 / 6, False, "refusal"),
        "cut": (True, True, False, False, 4 / 6, False, "truncated"),
        "long": (False, False, False, False, 4 / 6, False, "length"),
        "offskill": (True, False, False, None, 1.0, True, None),
        "spaces": (True, False, False, True, 1.0, True, None),
    }
    assert score.summarise(scored) == {
        "rows": 7,
        "kept": 3,
        "dropped": 4,
        "dropped_by_reason": {"length": 1, "refusal": 1, "truncated": 1, "verifier_failed": 1},
        "mean_quality": round((1.0 + 5 / 6 + 3 / 6 + 4 / 6 + 4 / 6 + 1.0 + 1.0) / 7, 4),
        "verified_fraction": round(2 / 6, 4),
        "mean_judge_rating": None,
        "mean_ifd": None,
        "mean_reward": None,
    }


def test_switches_turn_checks_off() -> None:
    rows = generated(
        ("wrong", "reverse planet", "tenlap"),
        ("refuse", "upper cat", REFUSAL),
        ("cut", "reverse planet", "tenalp", "length"),
    )
    params = ScoreParams(min_response_chars=1, max_response_chars=100, drop_truncated=False, drop_refusals=False,
                         verify=False)
    assert checks(score.score(rows, params)) == {
        "wrong": (True, False, False, None, 1.0, True, None),
        "refuse": (True, False, True, None, 4 / 5, True, None),
        "cut": (True, True, False, None, 4 / 5, True, None),
    }


def test_repetition_and_charset_checks() -> None:
    rows = generated(
        ("loop", "Tell me a story", "the cat sat " * 6),
        ("garbled", "Tell me a story", "once upon \ufffd time"),
        ("control", "Tell me a story", "once\x07upon"),
        ("fine", "Tell me a story", "Once upon a time a cat sat on a mat."),
    )
    params = ScoreParams(min_response_chars=1, max_response_chars=100)
    scored = score.score(rows, params)
    marks = {row[0]: row[1:] for row in scored.select("id", "repetition", "charset_ok", "drop_reason").iter_rows()}
    assert marks["loop"][0] > 0.5 and marks["loop"][2] == "repetition"
    assert marks["garbled"][1:] == (False, "charset") and marks["control"][1:] == (False, "charset")
    assert marks["fine"] == (0.0, True, None)
    relaxed = ScoreParams(min_response_chars=1, max_response_chars=100, max_repetition=1.0, drop_bad_charset=False)
    assert score.score(rows, relaxed)["keep"].all()


def test_empty_frame_scores_and_summarises() -> None:
    scored = score.score(generated(), SCORE)
    assert scored.height == 0
    assert score.summarise(scored) == {"rows": 0, "kept": 0, "dropped": 0, "dropped_by_reason": {},
                                       "mean_quality": 0.0, "verified_fraction": 0.0, "mean_judge_rating": None,
                                       "mean_ifd": None, "mean_reward": None}


def deduped(*rows: tuple, params: ScoreParams = SCORE) -> pl.DataFrame:
    result = dedupe.dedupe(score.score(generated(*rows), params), DedupeParams())
    assert result.schema == pl.Schema(DEDUPED)
    return result


def marks(frame: pl.DataFrame) -> dict[str, tuple]:
    return {row[0]: row[1:] for row in frame.select("id", "keep", "drop_reason", "dup_of").iter_rows()}


def test_normalised_twins_share_a_hash_and_smaller_id_wins_a_tie() -> None:
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


def test_input_is_part_of_the_key() -> None:
    rows = generated(("a", "reverse planet", "tenalp"), ("b", "reverse planet", "tenalp"))
    rows = rows.with_columns(input=pl.Series(["", "context"]))
    result = dedupe.dedupe(score.score(rows, SCORE), DedupeParams())
    assert marks(result) == {"a": (True, None, None), "b": (True, None, None)}


def test_normalisation_switches() -> None:
    rows = score.score(generated(("a", "reverse planet", "tenalp"), ("b", "Reverse planet", "tenalp"),
                                 ("c", "reverse  planet", "tenalp")), SCORE)
    # near-duplicates normalise on their own: off here, to see the exact pass's switches alone
    strict = dedupe.dedupe(rows, DedupeParams(lowercase=False, collapse_whitespace=False, near={"enabled": False}))
    assert strict["norm_hash"].n_unique() == 3
    assert strict["keep"].to_list() == [True, True, True]
    spaces_only = dedupe.dedupe(rows, DedupeParams(lowercase=False, collapse_whitespace=True,
                                                   near={"enabled": False}))
    assert marks(spaces_only) == {"a": (True, None, None), "b": (True, None, None), "c": (False, "duplicate", "a")}


def test_higher_quality_twin_wins_over_smaller_id() -> None:
    # truncated answers are kept here, with quality 5/6: the full answer ("z") wins
    params = ScoreParams(min_response_chars=1, max_response_chars=20, drop_truncated=False)
    result = deduped(("a", "reverse planet", "tenalp", "length"), ("z", "REVERSE planet", "tenalp"), params=params)
    assert dict(result.select("id", "quality").iter_rows()) == {"a": 5 / 6, "z": 1.0}
    assert marks(result) == {"a": (False, "duplicate", "z"), "z": (True, None, None)}


def test_rows_dropped_by_score_do_not_compete() -> None:
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


def open_rows(*rows: tuple[str, str]) -> pl.DataFrame:
    """Scored rows of (id, instruction) with an uncheckable skill: every row is kept with quality 1."""
    return score.score(generated(*((row_id, text, "ok") for row_id, text in rows)), SCORE)


def test_near_duplicates_join_the_best_rows_cluster_with_their_similarity() -> None:
    result = dedupe.dedupe(open_rows(("b", LONG_EDIT), ("a", LONG), ("c", OTHER)), DedupeParams())
    row = result.filter(pl.col("id") == "b").row(0, named=True)
    assert (row["keep"], row["drop_reason"], row["dup_of"], row["dup_kind"]) == (False, "duplicate", "a", "near")
    assert 0.8 <= row["dup_similarity"] < 1.0
    assert result.filter(pl.col("id") != "b")["keep"].to_list() == [True, True]
    off = dedupe.dedupe(open_rows(("b", LONG_EDIT), ("a", LONG)), DedupeParams(near={"enabled": False}))
    assert off["keep"].to_list() == [True, True]
    strict = dedupe.dedupe(open_rows(("b", LONG_EDIT), ("a", LONG)), DedupeParams(near={"threshold": 0.99}))
    assert strict["keep"].to_list() == [True, True]


def test_exact_and_near_links_chain_into_one_cluster() -> None:
    result = dedupe.dedupe(open_rows(("a", LONG), ("b", LONG.upper()), ("c", LONG_EDIT)), DedupeParams())
    assert dict(result.select("id", "dup_kind").iter_rows()) == {"a": None, "b": "exact", "c": "near"}
    assert set(result.filter(~pl.col("keep"))["dup_of"]) == {"a"}


def eval_rows(*rows: tuple[str, str]) -> pl.DataFrame:
    return pl.DataFrame([{"id": row_id, "instruction": text, "input": ""} for row_id, text in rows])


def test_contamination_marks_rows_that_copy_the_eval_split() -> None:
    evals = eval_rows(("e1", LONG), ("e2", "summarise the plot of hamlet"))
    rows = open_rows(("a", LONG_EDIT), ("b", OTHER), ("c", "Summarise  the plot of Hamlet"))
    marked = dedupe.dedupe(rows, DedupeParams(), evals)
    assert dict(marked.select("id", "contaminated_by").iter_rows()) == {"a": "e1", "b": None, "c": "e2"}
    assert marked["keep"].to_list() == [True, True, True]  # action: fail leaves it to the gate
    assert dedupe.summarise(marked)["contaminated_ids"] == ["a", "c"]
    dropped = dedupe.dedupe(rows, DedupeParams(contamination={"action": "drop"}), evals)
    assert dict(dropped.select("id", "drop_reason").iter_rows()) == {"a": "eval_overlap", "b": None,
                                                                     "c": "eval_overlap"}


def test_semantic_pass_joins_paraphrases_that_share_few_words() -> None:
    rows = open_rows(("a", "How do I reverse a string in Python?"), ("b", "What's the way to reverse a Python string?"),
                     ("c", "Explain how photosynthesis works in plants."))
    params = DedupeParams(semantic={"enabled": True, "threshold": 0.8})
    result = dedupe.dedupe(rows, params)
    b = result.filter(pl.col("id") == "b").row(0, named=True)
    assert (b["keep"], b["dup_of"], b["dup_kind"]) == (False, "a", "semantic") and b["dup_similarity"] >= 0.8
    assert result.filter(pl.col("id") != "b")["keep"].to_list() == [True, True]
    assert dedupe.dedupe(rows, DedupeParams())["keep"].to_list() == [True, True, True]  # words alone: distinct
