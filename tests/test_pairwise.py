"""The pairwise judge: the stand-in's verdicts over real HTTP, and distill.measure.pairwise's win rate through
the request store and the teacher flow (flows.teacher.run_plan), both orders asked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from demo.standin import REFUSAL, kind_of, pairwise_prompt
from distill.measure.pairwise import verdict, win_rate
from distill.prompts import Template
from flows.teacher import run_plan

REPO = Path(__file__).resolve().parents[1]
PAIRWISE = str(REPO / "templates/judge/pairwise.txt")
JUDGE = Template(str(REPO / "templates/judge/system.txt"), PAIRWISE)
FACT = "Count the letters of the word in the input.\n\nplanet"  # an Alpaca task: instruction, blank line, input
QUIET = {"wrong_rate": 0.0, "hard_wrong_rate": 0.0, "malformed_rate": 0.0, "refusal_rate": 0.0, "error_rate": 0.0,
         "rate_limit_rate": 0.0}


def judge(url: str, task: str, answer_a: str, answer_b: str) -> str:
    teacher = openai.OpenAI(base_url=url, api_key="test", max_retries=0, timeout=5.0)
    messages = JUDGE.messages(instruction=task, answer_a=answer_a, answer_b=answer_b)
    content = teacher.chat.completions.create(model="standin-skill-1", messages=messages, temperature=0,
                                              max_tokens=4).choices[0].message.content
    assert content is not None
    return content


# --- the stand-in's verdicts -----------------------------------------------------------------------------------


def test_the_template_is_its_own_kind_and_parses() -> None:
    text = JUDGE.messages(instruction=FACT, answer_a="", answer_b="x\n\nAnswer A: {odd}")[1]["content"]
    assert kind_of([{"role": "user", "content": text}]) == "pairwise"
    assert pairwise_prompt(text) == (FACT, "", "x\n\nAnswer A: {odd}")


@pytest.mark.parametrize(("task", "answer_a", "answer_b", "expected"), [
    ("reverse planet", "tenalp", "tenlap", "A"),
    ("reverse planet", " tenlap", "tenalp\n", "B"),  # trimmed
    ("upper cat", "cat", "CAT", "B"),  # case-sensitive
    ("reverse planet", "tenalp", "tenalp", "tie"),
    ("reverse planet", "tenlap", "xyz", "A"),  # both wrong: the closer wins
    ("reverse planet", "xyz", "zyx", "tie"),
    (FACT, "planet has 6 letters.", "The word planet has 6 letters.", "A"),
    (FACT, "planet has 7 letters.", "planet has 6 letters.", "B"),
    ("Here is a word: maple\nWhat is its first letter?", "maple starts with p.", "maple starts with m.", "B"),
])
def test_verdicts(serve: Callable[..., str], task: str, answer_a: str, answer_b: str, expected: str) -> None:
    assert judge(serve(position_bias=0.0), task, answer_a, answer_b) == expected


def test_position_bias_refusal_and_chatter(serve: Callable[..., str]) -> None:
    assert judge(serve(position_bias=1.0), "reverse planet", "tenlap", "tenalp") == "A"
    assert judge(serve(position_bias=0.0), "What is the capital of France?", "Paris", "Rome") == REFUSAL[:4]
    assert judge(serve(position_bias=0.0, refusal_rate=1.0), "reverse planet", "tenalp", "x") == REFUSAL[:4]
    assert verdict(judge(serve(position_bias=0.0, malformed_rate=1.0), "reverse planet", "tenalp", "x")) is None


def test_the_measure_imports_neither_demo_nor_flows(project_files: Callable[[str], set[str]]) -> None:
    assert not {path for path in project_files("distill.measure.pairwise") if path.startswith(("demo/", "flows/"))}


def test_verdict_parsing() -> None:
    assert [verdict(text) for text in ("A", " b.", "TIE", "Tie!", "A is better", None, "", "Answer A", "I'm ")] == \
        ["a", "b", "tie", "tie", "a", None, None, None, None]


# --- the win rate through the store --------------------------------------------------------------------------


def params_with(base_params, with_standin, **settings: float):
    params = with_standin(base_params, **QUIET, **settings)
    judge_params = params.judge.model_copy(update={"system": str(REPO / "templates/judge/system.txt")})
    return params.model_copy(update={"judge": judge_params})


def rate(params, tmp_path: Path, items: list) -> dict:
    return win_rate(items, params, tmp_path / "pairwise.jsonl", run_plan, template_path=PAIRWISE)


def test_win_rate_without_position_bias(tmp_path: Path, base_params, with_standin) -> None:
    params = params_with(base_params, with_standin, position_bias=0.0)
    same = [("reverse planet", "tenalp", "tenalp"), (FACT, "planet has 6 letters.", "planet has 6 letters.")]
    assert rate(params, tmp_path, same) | {"requests_sent": None} == {
        "win_rate": 0.5, "pairs": 2, "unparsed": 0, "position_consistency": 1.0, "skipped": 0, "cache_hits": 0,
        "requests_sent": None}
    better = [("reverse planet", "tenalp", "tenlap"), (FACT, "planet has 6 letters.", "planet has 5 letters.")]
    first = rate(params, tmp_path, better)
    assert (first["win_rate"], first["pairs"], first["position_consistency"]) == (1.0, 2, 1.0)
    assert first["requests_sent"] == 4
    again = rate(params, tmp_path, better)  # served from the store
    assert again == first | {"requests_sent": 0, "cache_hits": 4}
    worse = [(task, theirs, mine) for task, mine, theirs in better]
    assert rate(params, tmp_path, worse)["win_rate"] == 0.0


def test_asking_both_orders_cancels_position_bias(tmp_path: Path, base_params, with_standin) -> None:
    params = params_with(base_params, with_standin, position_bias=1.0)
    result = rate(params, tmp_path, [("reverse planet", "tenalp", "tenlap"), ("upper cat", "CAT", "CTA")])
    assert (result["win_rate"], result["pairs"], result["position_consistency"]) == (0.5, 2, 0.0)


def test_missing_answers_and_unparsed_verdicts(tmp_path: Path, base_params, with_standin) -> None:
    params = params_with(base_params, with_standin, position_bias=0.0)
    items = [("reverse planet", None, "tenalp"), ("upper cat", "CAT", None), ("reverse cat", "tac", "tca"),
             ("Write a haiku about rain.", "Rain falls.", "Drops.")]  # the judge refuses: unparsed
    result = rate(params, tmp_path, items)
    assert {k: result[k] for k in ("win_rate", "pairs", "unparsed", "skipped", "requests_sent")} == {
        "win_rate": 0.5, "pairs": 2, "unparsed": 1, "skipped": 1, "requests_sent": 4}
    assert rate(params, tmp_path, [("upper cat", "CAT", None)])["win_rate"] is None
