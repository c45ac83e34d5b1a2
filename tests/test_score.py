"""Score: each check and its reason, the switches, repetition and charset checks, on literal GENERATED rows."""

from __future__ import annotations

import polars as pl

from demo import words
from distill import task
from distill.params import ScoreParams
from distill.records import SCORED
from stages import score

SCORE = ScoreParams(min_response_chars=1, max_response_chars=20)
REFUSAL = "I'm sorry, but as an AI I can't help with that."


def checks(scored: pl.DataFrame) -> dict[str, tuple]:
    columns = ("length_ok", "truncated", "refusal", "verified", "quality", "keep", "drop_reason")
    return {row[0]: row[1:] for row in scored.select("id", *columns).iter_rows()}


def test_each_check_and_its_reason(generated) -> None:
    rows = generated(
        ("right", "reverse planet", "tenalp"),
        ("wrong", "reverse planet", "tenlap"),
        ("refuse", "upper cat", REFUSAL),
        ("cut", "reverse planet", "tena", "length"),
        ("long", "upper cat", "CAT" * 10),
        ("offskill", "What is the capital of France?", "Paris"),
        ("spaces", "reverse planet", "  tenalp \n"),
    )
    scored = score.score(rows, SCORE, verify=words.verify)  # the demo task's verifier
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
        "mean_difficulty": None,
    }


def test_a_task_without_a_verifier_turns_verification_off(generated) -> None:
    rows = generated(("wrong", "reverse planet", "tenlap"), ("right", "reverse planet", "tenalp"))
    generic = task.load(None)
    assert generic.verify is None and task.load("demo.words").verify.__wrapped__ is words.verify
    assert checks(score.score(rows, SCORE, verify=generic.verify)) == {
        "wrong": (True, False, False, None, 1.0, True, None),
        "right": (True, False, False, None, 1.0, True, None),
    }


def test_switches_turn_checks_off(generated) -> None:
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


def test_repetition_and_charset_checks(generated) -> None:
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


def test_empty_frame_scores_and_summarises(generated) -> None:
    scored = score.score(generated(), SCORE)
    assert scored.height == 0
    assert score.summarise(scored) == {"rows": 0, "kept": 0, "dropped": 0, "dropped_by_reason": {},
                                       "mean_quality": 0.0, "verified_fraction": 0.0, "mean_judge_rating": None,
                                       "mean_ifd": None, "mean_reward": None,
                                       "mean_difficulty": None}
