"""The stand-in's real-endpoint dialects, driven over real HTTP by the official openai client: reasoning models
(a reasoning field, inline think blocks, reasoning_effort, max_completion_tokens only), servers that ignore n
or seed, billing in a real tokenizer's tokens, and the math word problems' graded slips."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from demo import math_problems, standin
from distill.teacher.tokens import counter

REPO = Path(__file__).resolve().parents[1]
TINY_CHAT = str(REPO / "data" / "students" / "tiny-chat")
MODEL = "standin-skill-1"
SYSTEM = "You are a helpful assistant."
COT = "Think step by step, then give the final answer alone on the last line as `Answer: <result>`."
AVA = "Ava has 5 apples. Ava buys 7 more apples. Then Ava gives away 3 apples. How many apples does Ava have left?"
AVA_LINES = "5 + 7 = 12.\n12 - 3 = 9."
REVERSE_WHY = "Reading the letters of planet from last to first."
STEP = re.compile(r"^(\d+) ([-+*]) (\d+) = (-?\d+)\.$")


def messages(task: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{task}\n"}]


def ask(url: str, task: str, **kwargs: object):
    client = openai.OpenAI(base_url=url, api_key="test", max_retries=0, timeout=10)
    return client.chat.completions.create(model=MODEL, messages=messages(task), **kwargs)


def shape(reply) -> tuple[str | None, str | None]:
    """(reasoning_content, content) of the first choice."""
    message = reply.choices[0].message
    return getattr(message, "reasoning_content", None), message.content


@pytest.mark.parametrize(("task", "why", "answer", "plain"), [
    ("reverse planet", REVERSE_WHY, "tenalp", "tenalp"),
    ("Count the letters of the word in the input.\n\nplanet", "Looking at the letters of planet.",
     "planet has 6 letters.", "planet has 6 letters."),
    (AVA, AVA_LINES, "9", "The answer is 9."),
])
def test_the_three_ways_to_return_reasoning(serve: Callable[..., str], task: str, why: str, answer: str,
                                            plain: str) -> None:
    none, field, inline = (serve(math_wrong_rate=0.0, reasoning=mode) for mode in ("none", "field", "inline"))
    worked = f"{why}\nAnswer: {answer}"
    reply = ask(none, task, temperature=0)
    assert shape(reply) == (None, worked if task == AVA else answer)  # math is always worked out
    assert reply.usage.completion_tokens_details is None
    assert shape(ask(none, f"{task}\n\n{COT}", temperature=0)) == (None, worked)

    reply = ask(field, task, temperature=0)
    assert shape(reply) == (why, plain)
    assert reply.usage.completion_tokens == len(why) + len(plain)  # billed with the reasoning, as real APIs do
    assert reply.usage.completion_tokens_details.reasoning_tokens == len(why)
    assert shape(ask(field, f"{task}\n\n{COT}", temperature=0)) == (why, f"Answer: {answer}")

    reply = ask(inline, task, temperature=0)
    block = f"<think>\n{why}\n</think>"
    assert shape(reply) == (None, f"{block}\n\n{plain}")
    assert reply.usage.completion_tokens == len(reply.choices[0].message.content)
    assert reply.usage.completion_tokens_details.reasoning_tokens == len(block)


def test_logprobs_and_the_token_limit_with_a_reasoning_field(serve: Callable[..., str]) -> None:
    reply = ask(serve(reasoning="field"), "reverse planet", temperature=0, logprobs=True, top_logprobs=2)
    assert [entry.token for entry in reply.choices[0].logprobs.content] == list("tenalp")  # the content only
    cut = ask(serve(reasoning="field"), "reverse planet", temperature=0, max_completion_tokens=10)
    assert shape(cut) == (REVERSE_WHY[:10], "") and cut.choices[0].finish_reason == "length"  # thought it all away
    tail = ask(serve(reasoning="field"), "reverse planet", temperature=0, max_completion_tokens=len(REVERSE_WHY) + 3)
    assert shape(tail) == (REVERSE_WHY, "ten") and tail.usage.completion_tokens == len(REVERSE_WHY) + 3


def slip_of(lines: list[str], solution: math_problems.Solution) -> int | None:
    """How far off the worked lines' one wrong result is (None: all right); asserts the lines carry it on."""
    slips, value = [], solution.start
    for line, (op, operand) in zip(lines, solution.moves, strict=True):
        left, written_op, right, result = STEP.match(line).groups()
        assert (int(left), written_op, int(right)) == (value, op, operand), lines  # each step starts from the last
        slips += [int(result) - math_problems.apply(op, value, operand)]
        value = int(result)
    wrong = [slip for slip in slips if slip]
    assert len(wrong) <= 1 and all(0 < abs(slip) <= 3 for slip in wrong), lines
    return wrong[0] if wrong else None


def test_harder_problems_are_answered_wrong_more_often(serve: Callable[..., str]) -> None:
    rng, rates = random.Random(5), {}
    for steps in (1, 3):
        wrong = total = 0
        for _ in range(40):
            drawn = math_problems.problem(rng, steps)
            solution = math_problems.solve(drawn.instruction)
            reply = ask(serve(), drawn.instruction, temperature=1, n=8)
            for choice in reply.choices:
                *lines, last = choice.message.content.splitlines()
                slip = slip_of(lines, solution)
                assert (last == f"Answer: {drawn.answer}") == (slip is None)
                wrong, total = wrong + (slip is not None), total + 1
        rates[steps] = wrong / total
    assert 0.04 < rates[1] < 0.18 and 0.2 < rates[3] < 0.4, rates  # math_wrong_rate 0.1 per step
    always = ask(serve(math_wrong_rate=1.0), AVA, temperature=0)
    assert slip_of(always.choices[0].message.content.splitlines()[:-1], math_problems.solve(AVA)) is not None
    assert ask(serve(math_wrong_rate=0.0), AVA, temperature=1, n=8).choices[7].message.content.endswith("Answer: 9")


def test_answers_vary_per_choice_and_seed_only_when_sampled(serve: Callable[..., str]) -> None:
    url = serve(math_wrong_rate=0.3)
    contents = lambda reply: [choice.message.content for choice in reply.choices]  # noqa: E731
    assert len(set(contents(ask(url, AVA, temperature=0, n=8)))) == 1
    sampled = contents(ask(url, AVA, temperature=1, n=8, seed=1))
    assert len(set(sampled)) > 1 and sampled == contents(ask(url, AVA, temperature=1, n=8, seed=1))
    assert sampled != contents(ask(url, AVA, temperature=1, n=8, seed=2))


def test_a_server_that_ignores_seed_answers_identical_requests_differently(serve: Callable[..., str]) -> None:
    url = serve(math_wrong_rate=0.3, ignore_seed=True)
    first, second = (ask(url, AVA, temperature=1, n=8, seed=1) for _ in range(2))
    assert [c.message.content for c in first.choices] != [c.message.content for c in second.choices]
    greedy = {ask(url, AVA, temperature=0, seed=seed).choices[0].message.content for seed in (1, 2, 1)}
    assert len(greedy) == 1  # greedy answers stay fixed, whatever the seed


def test_a_server_that_ignores_n_answers_one_choice(serve: Callable[..., str]) -> None:
    assert len(ask(serve(), "reverse planet", n=3).choices) == 3
    reply = ask(serve(ignore_n=True), "reverse planet", n=3)
    assert [c.message.content for c in reply.choices] == ["tenalp"] and reply.usage.completion_tokens == 6


def test_a_reasoning_model_refuses_max_tokens(serve: Callable[..., str]) -> None:
    url = serve(require_max_completion_tokens=True, reasoning="field")
    with pytest.raises(openai.BadRequestError) as refused:
        ask(url, "reverse planet", max_tokens=16)
    assert refused.value.status_code == 400
    assert refused.value.body == {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                   "Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}
    reply = ask(url, "reverse planet", max_completion_tokens=100, temperature=0)
    assert shape(reply) == (REVERSE_WHY, "tenalp") and reply.choices[0].finish_reason == "stop"
    assert ask(serve(), "reverse planet", max_tokens=16).choices[0].message.content == "tenalp"  # others take it


def test_reasoning_effort_is_for_reasoning_models_only(serve: Callable[..., str]) -> None:
    for effort in standin.EFFORTS:
        assert shape(ask(serve(reasoning="inline"), "reverse planet", reasoning_effort=effort))[1].endswith("tenalp")
    with pytest.raises(openai.BadRequestError) as refused:
        ask(serve(), "reverse planet", reasoning_effort="low")
    assert (refused.value.code, refused.value.param) == ("unsupported_parameter", "reasoning_effort")
    assert refused.value.body["message"] == ("Unsupported parameter: 'reasoning_effort' is not supported with this "
                                             "model.")
    with pytest.raises(openai.BadRequestError) as invalid:
        ask(serve(reasoning="inline"), "reverse planet", reasoning_effort="extreme")
    assert (invalid.value.code, invalid.value.param) == ("invalid_value", "reasoning_effort")


def test_billing_in_a_real_tokenizers_tokens(serve: Callable[..., str]) -> None:
    tokens = counter(TINY_CHAT)
    reply = ask(serve(tokenizer=TINY_CHAT, reasoning="field"), AVA, temperature=0, n=2)
    why, content = shape(reply)
    assert reply.usage.prompt_tokens == tokens.prompt_tokens(messages(AVA))
    assert reply.usage.completion_tokens == 2 * (tokens.completion_tokens(content) + tokens.completion_tokens(why))
    assert reply.usage.completion_tokens_details.reasoning_tokens == 2 * tokens.completion_tokens(why)
    cut = ask(serve(tokenizer=TINY_CHAT), "reverse planet", temperature=0, max_tokens=1)
    assert cut.choices[0].finish_reason == "length" and tokens.completion_tokens(cut.choices[0].message.content) == 1


def test_the_new_knobs_at_their_defaults_leave_the_request_key_alone() -> None:
    default = standin.identity(standin.Settings())
    assert default == "f03cafcac348595e"  # the key every existing store was written under
    billing = standin.Settings(tokenizer=TINY_CHAT, require_max_completion_tokens=True, idempotency=False)
    assert standin.identity(billing) == default
    for knob in ({"reasoning": "field"}, {"math_wrong_rate": 0.2}, {"ignore_n": True}, {"ignore_seed": True}):
        assert standin.identity(standin.Settings(**knob)) != default, knob
