"""Offline stand-in teacher: an OpenAI Chat Completions server for the built-in demo tasks.

This is an offline stand-in. It exists only so that the pipeline runs with no internet and
no API key; real use sets ``teacher.base_url`` in ``params.yaml`` to a real endpoint, and
then this server is never started. It is a real HTTP server on 127.0.0.1 (aiohttp, its own
process) that answers ``GET /v1/models`` and ``POST /v1/chat/completions`` like the real
API (usage, ``n``, ``seed``, ``max_tokens`` cut-off, ``logprobs``, OpenAI-style errors) and
injects the faults set in ``teacher.settings`` so that retries and scoring get exercised.

Tokens: one token per character. ``usage.prompt_tokens`` is the character count of all
message contents, ``completion_tokens`` the characters returned across all choices. With ``tokenizer`` set,
that tokenizer's tokens instead (distill/teacher/tokens.py: the prompt through its chat template, as vLLM
bills it; each answer's text encoded), and ``max_tokens`` cuts in them.

Determinism: content faults (wrong, malformed, refusal) are drawn from
sha256(request body without ``n``, choice, seed), so the same request always gets the
same answers; with temperature 0 every choice shares one draw. ``hard_wrong_rate`` is a
systematic slip rather than noise: on long words (``hard_min_letters`` or more) the answer loses
its last letter, the same way every time, as real teachers slip on character-level tasks. A
student trained on unchecked answers learns such a slip, where it averages random noise away.
Transient faults (429, 500, hang, truncated body) are drawn per attempt of the same body, so a
retry can succeed. As some real servers do, ``ignore_seed`` leaves ``seed`` out of the answers' hash and, at
temperature > 0, draws anew for every request (two identical requests differ); ``ignore_n`` answers one choice
whatever ``n`` asks.

Chain of thought: the question is the last line of the last user message that is a skill
instruction; when that message contains ``Answer:`` (the chain-of-thought instruction) the
reply is a short reasoning line, then ``Answer: <result>`` (malformed replies drop it half the time).

Word facts: a labelling prompt that holds no ``demo.words`` instruction may be a ``demo.word_facts`` one: a line
of the last user message is one of that task's instructions, the next non-empty line its input (the word; a bare
heading such as ``### Input:`` is skipped), or the word is named earlier ("Here is a word: planet", in an earlier
user turn or line). The answer is a sentence
("planet has 6 letters."), under the same fault draws (a wrong answer is a near miss: a count off by one,
another first letter, two letters swapped); ``hard_wrong_rate`` is the words task's slip and does not apply.

Math: a labelling prompt that is neither of those may hold a ``demo.math_problems`` word problem (the last one in
the last user message, whatever surrounds it). The reply works it out: the step lines ("5 + 7 = 12."), then
``Answer: <n>``. It is wrong with probability min(1, ``math_wrong_rate`` x steps), harder problems more often: one
step's result is off by 1-3 and the later steps carry it on, so the lines show the slip (``wrong_rate`` and
``hard_wrong_rate`` do not apply).

Reasoning models: ``reasoning`` says where a labelling answer's reasoning goes (the words line, the word facts
line, the math step lines). ``none``: as above. ``field``: ``message.reasoning_content`` holds it and the content
is the answer (math: ``The answer is <n>.``; asked for chain of thought: ``Answer: <answer>``), as vLLM and
DeepSeek return it. ``inline``: the content is ``<think>\n{reasoning}\n</think>\n\n{answer}``, as Qwen3 served
raw writes it. Completion tokens include the reasoning, ``usage.completion_tokens_details.reasoning_tokens`` says
how many, and ``max_tokens`` covers it too (reasoning that uses it up leaves the content empty); logprobs cover
the content only. Such a model takes ``reasoning_effort`` (minimal, low, medium, high); other models refuse it
with HTTP 400, and ``require_max_completion_tokens`` refuses ``max_tokens`` the way OpenAI's reasoning models do.

Prompt kinds: ``kind_of`` reads the last user message, first match wins. ``Compare two answers`` ending in
``Which answer is better?`` is a pairwise judge prompt (templates/judge/pairwise.txt): the reply is ``A``, ``B``
or ``tie`` (an answer equal to the solution wins, else the closer one), and with ``position_bias`` ``A``
whatever the answers (malformed: a sentence around the verdict). ``Answer to grade:``
is a judge prompt (templates/judge/grade.txt; the reply is a JSON grade, or ``Score: n/10. ...``
when malformed); ``new tasks of the same kind`` is Self-Instruct expansion
(templates/expansion/instructions.txt); ``Subtopic:`` with ``distinct tasks`` asks for the tasks of
one subtopic and ``distinct subtopics`` for the subtopics of a topic (templates/curation/). Those
reply one item a line (malformed: a ``Sure!`` preamble and ``1.`` numbering; at most ``MAX_ITEMS``).
Anything else is a labelling prompt, answered as above. Every kind may be refused.

Run: ``python -m demo.standin --port 8000 [--request-log PATH] [--ready-file PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import hashlib
import itertools
import json
import math
import os
import random
import re
import signal
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Field

from demo import math_problems, standin_batch, word_facts, words
from distill.lifetime import scratch
from distill.params import CapabilityParams, Fraction, Positive, Strict, load
from distill.teacher.tokens import content_text  # a message's text (string or content parts)

MODEL_ID = "standin-skill-1"
SNAPSHOT_SUFFIX = "-2026-11-01"  # real APIs answer with a dated snapshot of the model asked for
REFUSAL = "I'm sorry, but as an AI I can't help with that."
THINK = ("<think>", "</think>")  # how reasoning models mark their thinking inline (QwQ, Qwen3, DeepSeek-R1)
EFFORTS = ("minimal", "low", "medium", "high")  # reasoning_effort values a reasoning model accepts
PROJECT_ROOT = Path(__file__).resolve().parents[1]


# The provider API (distill/teacher/providers.py): ``teacher.provider: standin`` in params.yaml.
CAPABILITIES = CapabilityParams(logprobs=True, max_top_logprobs=20, n=True, seed=True)  # whatever params say;
# the ignore_logprobs, ignore_n and ignore_seed knobs then fall short of it silently, as some real servers do
CHARS_PER_TOKEN = 1.0  # it bills one token per character


class Settings(Strict):
    """The stand-in's knobs (``teacher.settings`` with ``teacher.provider: standin``); rates are shares of requests."""

    latency_ms: Annotated[float, Field(ge=0)] = 0.0  # added latency per request
    wrong_rate: Fraction = 0.0  # share of answers that are plausible but wrong
    hard_wrong_rate: Fraction = 0.0  # share of answers for long words (hard_min_letters+) that lose their last
    # letter: a systematic slip (real teachers err more on long words), which a student would learn
    hard_min_letters: Positive = 8  # letters from which a word counts as long (hard_wrong_rate)
    malformed_rate: Fraction = 0.0  # share of answers wrapped in junk text
    refusal_rate: Fraction = 0.0  # share of "I'm sorry..." answers
    error_rate: Fraction = 0.0  # share of HTTP 500 answers (retried by the engine)
    rate_limit_rate: Fraction = 0.0  # share of HTTP 429 answers with Retry-After (retried)
    timeout_rate: Fraction = 0.0  # share of requests that hang past the client timeout
    truncated_body_rate: Fraction = 0.0  # share of HTTP 200 answers whose JSON body is cut off mid-way
    ignore_logprobs: bool = False  # answer without logprobs even when asked, as `transformers serve` does
    position_bias: Fraction = 0.1  # share of pairwise verdicts that say "A" whatever the answers: a judge's
    # position bias, which asking both orders cancels
    seed: int = 0  # makes the injected faults reproducible
    idempotency: bool = True  # replay a repeated Idempotency-Key's first answer unbilled (false: bill every
    # request, as most endpoints do); changes what is billed, never an answer, so it is not in the request key
    math_wrong_rate: Fraction = 0.1  # per operation: a demo.math_problems problem of s steps is answered wrong with
    # probability min(1, s x this); one step's result is off by 1-3 and the later steps carry it on
    reasoning: Literal["none", "field", "inline"] = "none"  # how labelling answers carry their reasoning: none = in
    # the content (words: only when chain of thought is asked; math: always, the step lines before `Answer: n`);
    # field = message.reasoning_content (vLLM, DeepSeek); inline = a <think> block before the answer (Qwen3 served raw)
    require_max_completion_tokens: bool = False  # refuse max_tokens with OpenAI's HTTP 400, as its reasoning models
    # do (max_completion_tokens works); changes what is refused, never an answer, so it is not in the request key
    ignore_n: bool = False  # answer one choice whatever n asks, as some servers do
    ignore_seed: bool = False  # answer without reading seed: at temperature > 0 two identical requests differ
    tokenizer: str | None = None  # bill (and cut at max_tokens) in this tokenizer's tokens (an HF id or local path;
    # the prompt through its chat template, as vLLM bills); null = a token per character; billing only: not in the key
    batch_delay_ms: Annotated[float, Field(ge=0)] = 200.0  # Batch API: a batch validates this long before it starts
    batch_line_ms: Annotated[float, Field(ge=0)] = 1.0  # Batch API: time per line while it runs (progress shows)
    auth_error_rate: Fraction = 0.0  # share of requests (any route) refused with OpenAI's HTTP 401 "Incorrect API
    # key provided: sk-abcd****wxyz", echoing the key sent, masked; 1 = a wrong key (tests that no log keeps it)
    echo_key_rate: Fraction = 0.0  # share of chat requests refused with HTTP 400 whose message echoes the key sent,
    # masked, as verbose proxies do; they end in the rejects file (tests that it is scrubbed there)


BILLING_ONLY = {"idempotency", "tokenizer", "require_max_completion_tokens", "batch_delay_ms", "batch_line_ms",
                "auth_error_rate", "echo_key_rate"}
# never change an answer (a refusal is never stored, so a later run asks again under the same key)
LATER_KNOBS = ("ignore_logprobs", "position_bias", "math_wrong_rate", "reasoning", "ignore_n", "ignore_seed")
# added after stores existed: at their defaults they stay out of the key, so those stores keep their keys


def identity(settings: Settings) -> str:
    """The part of a request key that its knobs make: fault settings change answers, billing does not."""
    from distill.io import content_hash  # here: distill.io pulls in polars, which the server never needs

    knobs = settings.model_dump(exclude=BILLING_ONLY)
    for name in LATER_KNOBS:
        if knobs[name] == Settings.model_fields[name].default:
            del knobs[name]
    return content_hash(knobs)
CHOSEN_PROB = 0.9  # alternatives share the remaining 0.1, halving each time, so the sum stays < 1
ALPHABET = "etaoinshrdlucmfwypvbgkjqxz ETAOINSHRDLUCMFWYPVBGKJQXZ0123456789.,!?'-"
MAX_N = 128
COT_MARKER = "Answer:"  # a chain-of-thought instruction asks for the result on an `Answer:` line
MAX_ITEMS = 100  # list replies (expansion, subtopics, tasks) hold at most this many lines
DEFAULT_COUNT = 5  # when a list prompt names no count
DUPLICATE_RATE = 0.15  # share of expansion lines that are near-duplicates of an example
GRADE_TAIL = "\n\nReply with a single JSON object"  # ends the graded answer in templates/judge/grade.txt
PAIRWISE_HEAD = "Compare two answers to the task below."  # templates/judge/pairwise.txt opens with it
PAIRWISE_TAIL = "\n\nWhich answer is better?"  # and ends the second answer with it
ROLE_LABEL = re.compile(r"^(?:user|human)\s*:\s*", re.IGNORECASE)  # a task written as a transcript
BARE_LABEL = re.compile(r"^[#\s]*[A-Za-z][A-Za-z ]*:$")  # "### Input:", a heading of the Alpaca prompt format


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = "invalid_value") -> None:
        super().__init__(message)
        self.param, self.code = param, code


def canonical(data: object) -> str:
    # Same form as distill.io.canonical_json; not imported because distill.io pulls in polars,
    # which would slow every server start.
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def draw(*parts: object) -> float:
    """A uniform number in [0, 1) fixed by ``parts``."""
    return int(sha(*parts)[:16], 16) / 16**16


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def masked_key(request: web.Request) -> str:
    """The request's API key as OpenAI echoes it in a 401: its first 8 characters, stars, its last 4."""
    key = request.headers.get("Authorization", "").removeprefix("Bearer ")
    return key[:8] + "*" * max(len(key) - 12, 3) + key[-4:]


def _int(body: dict, key: str, low: int, high: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise BadRequest(f"Invalid '{key}': expected an integer {bounds}, got {value!r}.", key)
    return value


def validate(body: object) -> dict:
    """The request's sampling settings; raise BadRequest the way the real API words it."""
    if not isinstance(body, dict):
        raise BadRequest("We could not parse the JSON body of your request: expected a JSON object.", None, None)
    for key in ("model", "messages"):
        if key not in body:
            raise BadRequest(f"Missing required parameter: '{key}'.", key, "missing_required_parameter")
    if not isinstance(body["model"], str) or not body["model"]:
        raise BadRequest("Invalid 'model': expected a non-empty string.", "model")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise BadRequest("Invalid 'messages': expected a non-empty array.", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"Invalid 'messages[{i}]': expected an object with a 'role'.", f"messages[{i}]")
    if body.get("stream"):
        raise BadRequest("stream=true is not supported by the stand-in teacher.", "stream", "unsupported_value")
    temperature = body.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise BadRequest(f"Invalid 'temperature': expected a number in [0, 2], got {temperature!r}.", "temperature")
    logprobs = body.get("logprobs") or False
    if not isinstance(logprobs, bool):
        raise BadRequest(f"Invalid 'logprobs': expected a boolean, got {logprobs!r}.", "logprobs")
    top = _int(body, "top_logprobs", 0, 20)
    if top is not None and not logprobs:
        raise BadRequest("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs")
    _int(body, "seed", -(2**63))
    limit = _int(body, "max_completion_tokens", 1)
    return {
        "n": _int(body, "n", 1, MAX_N) or 1,
        "max_tokens": limit if limit is not None else _int(body, "max_tokens", 1),
        "temperature": float(temperature),
        "top_logprobs": (top or 0) if logprobs else None,
    }


def dialect(body: dict, config: Settings) -> None:
    """What this model refuses that others accept, worded as OpenAI does: max_tokens (its reasoning models) and
    reasoning_effort (its other models)."""
    if config.require_max_completion_tokens and body.get("max_tokens") is not None:
        raise BadRequest("Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                         "'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter")
    effort = body.get("reasoning_effort")
    if effort is None:
        return
    if config.reasoning == "none":
        raise BadRequest("Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                         "reasoning_effort", "unsupported_parameter")
    if effort not in EFFORTS:
        raise BadRequest(f"Invalid value: {json.dumps(effort)}. Supported values are: 'minimal', 'low', 'medium', "
                         "and 'high'.", "reasoning_effort")


def last_user_text(messages: list[dict]) -> str:
    user = [m for m in messages if m.get("role") == "user"]
    return content_text(user[-1].get("content") if user else "")


def question_of(messages: list[dict]) -> str:
    """The last line of the last user message that is a skill instruction (the template puts the seed
    instruction last; a chain-of-thought instruction may follow it), else its last non-empty line."""
    lines = [line.strip() for line in last_user_text(messages).splitlines()]
    return next((line for line in reversed(lines) if line and words.parse(line) is not None),
                next((line for line in reversed(lines) if line), ""))


def wants_reasoning(messages: list[dict]) -> bool:
    """The chain-of-thought instruction asks for an ``Answer:`` line in the last user message."""
    return COT_MARKER in last_user_text(messages)


def reasoning_of(question: str) -> str:
    parsed = words.parse(question)
    if parsed is None:
        return ""
    op, word = parsed
    return {"reverse": f"Reading the letters of {word} from last to first.",
            "upper": f"Writing each letter of {word} as a capital."}.get(op, f"Applying {op} to {word}.")


def wrong(answer: str, u: float) -> str:
    """A plausible near miss that always differs from ``answer``: swap two adjacent chars or drop one."""
    swaps = [i for i in range(len(answer) - 1) if answer[i] != answer[i + 1]]
    if swaps:
        i = swaps[int(u * len(swaps))]
        return answer[:i] + answer[i + 1] + answer[i] + answer[i + 2 :]
    return answer[:-1] if len(answer) > 1 else answer + "s"


def is_hard(question: str, config: Settings) -> bool:
    """A long word: where real teachers slip on character-level tasks (hard_wrong_rate)."""
    parsed = words.parse(question)
    return parsed is not None and len(parsed[1]) >= config.hard_min_letters


def compose(question: str, config: Settings, key: str, reasoning: bool = False) -> str:
    """One choice's content; a refusal wins over a wrong answer, which may also be wrapped in chatter."""
    answer = words.solve(question)
    if answer is None or draw(key, "refusal") < config.refusal_rate:
        return refused(config)
    if is_hard(question, config) and draw(key, "hard") < config.hard_wrong_rate:
        answer = answer[:-1]  # a systematic slip, the same on every hard input: a student can learn it
    elif draw(key, "wrong") < config.wrong_rate:
        answer = wrong(answer, draw(key, "where"))
    return dressed(answer, reasoning_of(question), config, key, reasoning)


def refused(config: Settings) -> str:
    """The refusal; a reasoning model thinks before it refuses too (so a probe sees where its reasoning goes)."""
    if config.reasoning == "none":
        return REFUSAL
    return f"{THINK[0]}\nThis is not a task I know how to do.\n{THINK[1]}\n\n{REFUSAL}"


def dressed(answer: str, why: str, config: Settings, key: str, reasoning: bool) -> str:
    """The answer as sent: with ``reasoning`` (a chain-of-thought request) the line ``why``, then
    ``Answer: <answer>``; malformed chatter wraps it, and then drops the ``Answer:`` line half of the time.
    A reasoning model (``config.reasoning`` field or inline) thinks ``why`` in a think block first (``message``
    moves it to reasoning_content for field), then answers as asked: the answer, or ``Answer: <answer>``."""
    malformed = draw(key, "malformed") < config.malformed_rate
    if config.reasoning != "none":
        if reasoning:
            said = f"{COT_MARKER} " + (f"Sure! {answer} :)" if malformed else answer)
        else:
            said = f"Sure! The answer is: {answer} :)" if malformed else answer
        return f"{THINK[0]}\n{why}\n{THINK[1]}\n\n{said}"
    if not reasoning:
        return f"Sure! The answer is: {answer} :)" if malformed else answer
    if malformed and draw(key, "no_answer_line") < 0.5:
        return f"{why}\nSo the result would be {answer}, I think :)"
    return f"{why}\n{COT_MARKER} " + (f"Sure! {answer} :)" if malformed else answer)


def fact_in(text: str, earlier: list[dict]) -> tuple[str, str] | None:
    """``(op, word)`` of a demo.word_facts request: the last line of ``text`` that is one of its instructions,
    its input the next non-empty line; the lines above it and the ``earlier`` turns may name the word."""
    lines = [ROLE_LABEL.sub("", line.strip()) for line in text.splitlines()]
    for i in reversed(range(len(lines))):
        if word_facts.op_of(lines[i]) is not None:
            input_text = next((line for line in lines[i + 1 :] if line and not BARE_LABEL.match(line)), "")
            above = {"role": "user", "content": "\n".join(lines[:i])}
            return word_facts.parse(lines[i], input_text, [*earlier, above])
    return None


def fact_of(messages: list[dict]) -> tuple[str, str] | None:
    """The word_facts request of a conversation: in its last user message, the word maybe named before it."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last is None:
        return None
    earlier = [{"role": m.get("role"), "content": content_text(m.get("content"))} for m in messages[:last]]
    return fact_in(content_text(messages[last].get("content")), earlier)


def near_miss(op: str, fact: str, u: float) -> str:
    """A plausible wrong fact that always differs: a count off by one, another first letter, two letters swapped."""
    if op == "count":
        count = int(fact)
        return str(count - 1 if u < 0.5 and count > 1 else count + 1)
    if op == "first":
        letters = string.ascii_lowercase
        other = letters[(letters.index(fact.lower()) + 1 + int(u * 25)) % 26]
        return other.upper() if fact.isupper() else other
    return wrong(fact, u)


def compose_fact(fact: tuple[str, str], config: Settings, key: str, reasoning: bool = False) -> str:
    """compose for a word_facts request: the answer sentence, under the same draws (refusal, wrong, malformed)."""
    if draw(key, "refusal") < config.refusal_rate:
        return REFUSAL
    op, word = fact
    result = word_facts.result(op, word)
    if draw(key, "wrong") < config.wrong_rate:
        result = near_miss(op, result, draw(key, "where"))
    return dressed(word_facts.sentence(op, word, result), f"Looking at the letters of {word}.", config, key,
                   reasoning)


def compose_math(solution: math_problems.Solution, config: Settings, key: str, reasoning: bool = False) -> str:
    """compose for a math problem: the step lines, then the answer. Wrong with probability
    min(1, math_wrong_rate x steps): one step's result is off by 1-3 and carried on, so the lines show the slip."""
    if draw(key, "refusal") < config.refusal_rate:
        return REFUSAL
    lines, answer = solution.lines, solution.answer
    if draw(key, "wrong") < min(1.0, config.math_wrong_rate * solution.steps):
        at, by = int(draw(key, "where") * solution.steps), 1 + int(draw(key, "by") * 3)
        by = -by if draw(key, "sign") < 0.5 else by
        if min(math_problems.results(solution.start, solution.moves, at, by)) < 0:
            by = -by  # a slip upwards: no count goes below zero
        lines, answer = math_problems.worked(solution.start, solution.moves, at, by)
    if config.reasoning == "none":  # worked out in the content, whatever the prompt asks
        return dressed(str(answer), "\n".join(lines), config, key, True)
    return dressed(str(answer) if reasoning else f"The answer is {answer}.", "\n".join(lines), config, key,
                   reasoning)


def kind_of(messages: list[dict]) -> str:
    """Which template the last user message follows: pairwise, judge, expansion, tasks, subtopics or labelling."""
    text = last_user_text(messages)
    if text.startswith(PAIRWISE_HEAD) and PAIRWISE_TAIL in text:  # no other template opens like it
        return "pairwise"
    if "Answer to grade:" in text:  # first: the graded answer may contain anything
        return "judge"
    if "new tasks of the same kind" in text:
        return "expansion"
    if "Subtopic:" in text and "distinct tasks" in text:
        return "tasks"
    if "distinct subtopics" in text:
        return "subtopics"
    return "labelling"


def line_after(text: str, label: str) -> str:
    """The rest of the first line that starts with ``label`` (e.g. ``Task:``), stripped; "" if none."""
    return next((line[len(label):].strip() for line in text.splitlines() if line.startswith(label)), "")


def count_in(text: str, pattern: str) -> int:
    match = re.search(pattern, text)
    return min(int(match[1]), MAX_ITEMS) if match else DEFAULT_COUNT


def judge_prompt(text: str) -> tuple[str, str]:
    """(task, answer): the answer runs from ``Answer to grade: `` to the blank line before the reply format."""
    head, _, rest = text.partition("Answer to grade:")
    answer, tail, _ = rest.rpartition(GRADE_TAIL)
    answer = answer if tail else rest
    return line_after(head, "Task:"), answer.removeprefix(" ")


def pairwise_prompt(text: str) -> tuple[str, str, str]:
    """(task, answer A, answer B) as templates/judge/pairwise.txt lays them out; an answer may hold anything
    but the label after it."""
    body = text.rpartition(PAIRWISE_TAIL)[0]
    head, _, answers = body.partition("\n\nAnswer A: ")
    answer_a, _, answer_b = answers.rpartition("\n\nAnswer B: ")
    return head.partition("Task: ")[2], answer_a, answer_b


def expansion_prompt(text: str) -> tuple[list[str], int]:
    """(examples, count): the ``- `` lines and the number in ``Write {count} new tasks``."""
    examples = [line[2:].strip() for line in text.splitlines() if line.startswith("- ")]
    return examples, count_in(text, r"Write (\d+) new tasks")


def subtopics_prompt(text: str) -> tuple[int]:
    return (count_in(text, r"List (\d+) distinct subtopics"),)


def tasks_prompt(text: str) -> tuple[str, str, int]:
    """(topic, letter, count); letter is "" unless the subtopic reads ``... starting with "x"``."""
    match = re.search(r'starting with\s*"([a-z])"', line_after(text, "Subtopic:"), re.IGNORECASE)
    return line_after(text, "Topic:"), match[1].lower() if match else "", count_in(text, r"Write (\d+) distinct tasks")


def critique_of(task: str, answer: str, expected: str) -> str:
    """One sentence on why ``answer`` is not ``expected``."""
    if not answer:
        return "The answer is empty."
    if words.op_of(task) == "reverse" and sorted(answer) == sorted(expected):
        return "The letters are not in reverse order."
    if words.op_of(task) == "upper" and answer.upper() == expected:
        return "Not every letter is in upper case."
    if difflib.SequenceMatcher(None, answer, expected).ratio() >= 0.6:
        return "Close, but some letters are wrong or missing."
    return "The answer does not carry out the task."


def judge(task: str, answer: str, config: Settings, key: str) -> str:
    """A JSON grade of ``answer`` against what the grader believes right (with wrong_rate, a near miss)."""
    expected = words.solve(task)
    if expected is None or draw(key, "refusal") < config.refusal_rate:
        return REFUSAL
    if draw(key, "wrong") < config.wrong_rate:
        expected = wrong(expected, draw(key, "where"))
    answer = answer.strip()
    if answer == expected:
        score, critique = 10, "Correct."
    else:  # 0..7, growing with similarity
        score = min(7, int(8 * difflib.SequenceMatcher(None, answer, expected).ratio()))
        critique = critique_of(task, answer, expected)
    if draw(key, "malformed") < config.malformed_rate:
        return f"Score: {score}/10. {critique}"
    return json.dumps({"score": score, "critique": critique, "correction": expected})


def solution(task: str) -> str | None:
    """What the pairwise judge believes right: the answer to a demo.words instruction on a line of ``task``,
    else to a demo.word_facts request in it; None when it is neither."""
    question = next((line for line in reversed(task.splitlines()) if words.parse(line) is not None), None)
    if question is not None:
        return words.solve(question)
    fact = fact_in(task, [])
    return None if fact is None else word_facts.sentence(*fact, word_facts.result(*fact))


def pairwise(task: str, answer_a: str, answer_b: str, config: Settings, key: str) -> str:
    """"A", "B" or "tie": an answer equal to the solution (after trimming) beats one that is not; else the one
    more similar to it, "tie" when they are equally so. With ``position_bias`` it is "A" whatever they say."""
    expected = solution(task)
    if expected is None or draw(key, "refusal") < config.refusal_rate:
        return REFUSAL
    answer_a, answer_b = answer_a.strip(), answer_b.strip()
    if (answer_a == expected) != (answer_b == expected):
        verdict = "A" if answer_a == expected else "B"
    else:
        near_a, near_b = (difflib.SequenceMatcher(None, text, expected).ratio() for text in (answer_a, answer_b))
        verdict = "A" if near_a > near_b else "B" if near_b > near_a else "tie"
    if draw(key, "position") < config.position_bias:
        verdict = "A"
    return f"Answer {verdict} is better." if draw(key, "malformed") < config.malformed_rate else verdict


def listing(lines: list[str], what: str, config: Settings, key: str) -> str:
    """One item a line; malformed: a chatty preamble and numbered items."""
    if draw(key, "malformed") < config.malformed_rate:
        return f"Sure! Here are some {what}:\n" + "\n".join(f"{i}. {line}" for i, line in enumerate(lines, 1))
    return "\n".join(lines)


def near_duplicate(example: str, u: float) -> str:
    """A case or spacing variant of an on-skill example, as ``words.demo_seeds`` plants them."""
    op, word = words.parse(example) or ("", "")
    variants = [f"{op.capitalize()} {word}", f"{op}  {word}", f"{op} {word.upper()}"]
    return variants[int(u * len(variants))]


def expand(examples: list[str], count: int, config: Settings, key: str) -> str:
    """``count`` new tasks with the examples' operations; about DUPLICATE_RATE of them near-duplicates."""
    if draw(key, "refusal") < config.refusal_rate:
        return REFUSAL
    on_skill = [example for example in examples if words.parse(example) is not None]
    ops = sorted({words.op_of(example) for example in on_skill}) or sorted(words.OPS)
    lines = []
    for i in range(count):
        if on_skill and draw(key, "duplicate", i) < DUPLICATE_RATE:
            example = on_skill[int(draw(key, "example", i) * len(on_skill))]
            lines.append(near_duplicate(example, draw(key, "variant", i)))
        else:
            word = words.random_word(random.Random(sha(key, "word", i)))
            lines.append(f"{ops[int(draw(key, 'op', i) * len(ops))]} {word}")
    return listing(lines, "new tasks", config, key)


def subtopics(count: int, config: Settings, key: str) -> str:
    """Up to ``count`` subtopics ``words starting with "x"``, distinct letters."""
    if draw(key, "refusal") < config.refusal_rate:
        return REFUSAL
    letters = random.Random(sha(key, "letters")).sample(string.ascii_lowercase, min(count, 26))
    return listing([f'words starting with "{letter}"' for letter in letters], "subtopics", config, key)


def tasks(topic: str, letter: str, count: int, config: Settings, key: str) -> str:
    """``count`` distinct ``<op> <word>`` tasks; the op follows the topic, words start with ``letter``."""
    if draw(key, "refusal") < config.refusal_rate:
        return REFUSAL
    ops = [op for op, stem in (("reverse", "revers"), ("upper", "upper")) if stem in topic.lower()]
    op = ops[0] if ops else sorted(words.OPS)[int(draw(key, "op") * len(words.OPS))]
    return listing([f"{op} {word}" for word in distinct_words(key, count, letter)], "tasks", config, key)


def distinct_words(key: str, count: int, letter: str = "") -> list[str]:
    """``count`` distinct words of 3-8 lowercase letters, starting with ``letter`` when given."""
    rng, drawn = random.Random(sha(key, "words")), {}  # a dict: distinct, in drawing order
    while len(drawn) < count:
        drawn[letter + words.random_word(rng, 2, 7) if letter else words.random_word(rng)] = None
    return list(drawn)


KINDS: dict[str, tuple[Callable[[str], tuple], Callable[..., str]]] = {
    "pairwise": (pairwise_prompt, pairwise),
    "judge": (judge_prompt, judge),
    "expansion": (expansion_prompt, expand),
    "subtopics": (subtopics_prompt, subtopics),
    "tasks": (tasks_prompt, tasks),
}


def responder(messages: list[dict], config: Settings) -> Callable[[str], str]:
    """The prompt, parsed once: a function from a choice's key to that choice's text."""
    kind = kind_of(messages)
    if kind == "labelling":
        question, reasoning = question_of(messages), wants_reasoning(messages)
        if words.parse(question) is not None:
            return lambda key: compose(question, config, key, reasoning)
        fact = fact_of(messages)  # not the skill's: word facts?
        if fact is not None:
            return lambda key: compose_fact(fact, config, key, reasoning)
        problem = math_problems.solve(last_user_text(messages))  # a math word problem?
        if problem is not None:
            return lambda key: compose_math(problem, config, key, reasoning)
        return lambda key: compose(question, config, key, reasoning)  # none of the demo's: refused
    parse, write = KINDS[kind]
    parsed = parse(last_user_text(messages))
    return lambda key: write(*parsed, config, key)


def token_logprobs(text: str, k: int) -> list[dict]:
    def entry(token: str, prob: float) -> dict:
        return {"token": token, "logprob": math.log(prob), "bytes": list(token.encode())}

    result = []
    for char in text:
        # The chosen token leads its own top list, as in the real API, so k entries = it + k-1 others.
        others = [c for c in ALPHABET if c != char][: max(k - 1, 0)]
        top = [entry(c, (1 - CHOSEN_PROB) / 2 ** (j + 1)) for j, c in enumerate(others)]
        result.append({**entry(char, CHOSEN_PROB), "top_logprobs": ([entry(char, CHOSEN_PROB)] + top)[:k]})
    return result


class Tokens:
    """Tokens as the stand-in bills them: one per character, or those of ``tokenizer`` (loaded at start, so that a
    bad path fails the start rather than a request)."""

    def __init__(self, tokenizer: str | None) -> None:
        self.counter = None
        if tokenizer is not None:
            from distill.teacher.tokens import counter  # here: transformers takes seconds to import

            self.counter = counter(tokenizer)

    def prompt(self, messages: list[dict]) -> int:
        if self.counter is None:
            return sum(len(content_text(m.get("content"))) for m in messages)
        return self.counter.prompt_tokens(messages)

    def count(self, text: str) -> int:
        return len(text) if self.counter is None else self.counter.completion_tokens(text)

    def head(self, text: str, limit: int) -> str:
        """The first ``limit`` tokens of ``text``."""
        if self.counter is None:
            return text[:limit]
        tokenizer = self.counter.tokenizer
        return tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)[:limit])


def as_message(text: str, config: Settings, tokens: Tokens, limit: int | None) -> tuple[dict, str, int]:
    """(message, finish_reason, reasoning tokens) of a choice's text. A ``limit`` covers the reasoning too, as
    real APIs count it: thinking that uses it all up leaves the content empty. ``field`` moves the think block
    to reasoning_content; ``inline`` leaves it at the head of the content."""
    opening, closing = f"{THINK[0]}\n", f"\n{THINK[1]}\n\n"
    thought, content = None, text
    if config.reasoning == "field" and text.startswith(opening):
        thought, _, content = text[len(opening):].partition(closing)
    used = tokens.count(thought or "") + tokens.count(content)
    finish = "length" if limit is not None and used > limit else "stop"
    if finish == "length" and thought is not None:
        thought, content = tokens.head(thought, limit), tokens.head(content, max(limit - tokens.count(thought), 0))
    elif finish == "length":
        content = tokens.head(content, limit)
    said = {"role": "assistant", "content": content, "refusal": None}
    if config.reasoning == "field":
        return said | {"reasoning_content": thought}, finish, tokens.count(thought or "")
    block = content.partition(THINK[1])  # inline: the think block as written, its tags included
    inline = block[0] + block[1] if config.reasoning == "inline" and content.startswith(THINK[0]) else ""
    return said, finish, tokens.count(inline)


class Standin:
    """Request handlers plus the per-request-hash attempt counter that transient faults key on."""

    def __init__(self, config: Settings, request_log: Path | None) -> None:
        self.config = config
        self.tokens = Tokens(config.tokenizer)
        self.requests = itertools.count()  # ignore_seed: a fresh number per request goes into its answers' draws
        self.attempts: dict[str, int] = {}  # one small entry per distinct body: fine for a pipeline run
        self.answered: dict[str, str] = {}  # Idempotency-Key -> the answer it was given, replayed unbilled
        self.users: dict[str, str] = {}  # request hash -> the request's `user` (the caller's label), when it has one
        self.log = request_log.open("a", encoding="utf-8") if request_log else None

    def record(self, request_hash: str, attempt: int, status: int, fault: str | None, batch: str | None = None) -> None:
        # Answered (and billed) = status 200 with no fault, written once the answer was delivered;
        # "replayed" answers a repeated Idempotency-Key unbilled; "client_gone" was never delivered.
        # Headers (and so the API key) are never written; the `user` label is (the probe's requests carry one).
        if self.log is not None:
            line = {"time": time.time(), "request_hash": request_hash, "attempt": attempt, "status": status,
                    "fault": fault} | ({"user": self.users[request_hash]} if request_hash in self.users else {})
            if batch is not None:
                line["batch"] = batch
            self.log.write(json.dumps(line) + "\n")
            self.log.flush()

    def transient(self, request_hash: str, attempt: int) -> str | None:
        c = self.config
        for fault, rate in (("rate_limit", c.rate_limit_rate), ("server_error", c.error_rate),
                            ("timeout", c.timeout_rate), ("truncated_body", c.truncated_body_rate)):
            if draw(request_hash, attempt, c.seed, fault) < rate:
                return fault
        return None

    def echo_key(self, request: web.Request, request_hash: str) -> None:
        """echo_key_rate: refuse the request with a message that shows its key, masked (drawn per request)."""
        if draw(request_hash, self.config.seed, "echo_key") < self.config.echo_key_rate:
            raise BadRequest(f"Request refused for the key {masked_key(request)} (stand-in fault).", code=None)

    async def models(self, request: web.Request) -> web.Response:
        model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "standin"}
        return web.json_response({"object": "list", "data": [model]})

    async def chat(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
            request_hash = hashlib.sha256(canonical(body).encode()).hexdigest()
        except ValueError:
            body, request_hash = None, hashlib.sha256(raw).hexdigest()
        attempt = self.attempts[request_hash] = self.attempts.get(request_hash, 0) + 1
        if isinstance(body, dict) and isinstance(body.get("user"), str):
            self.users[request_hash] = body["user"]
        response_id = sha(request_hash, attempt)[:24]
        headers = {"x-request-id": f"req_{response_id}"}
        try:
            settings = validate(body)
            dialect(body, self.config)
            self.echo_key(request, request_hash)
        except BadRequest as error:
            self.record(request_hash, attempt, 400, None)
            payload = error_body(str(error), "invalid_request_error", error.param, error.code)
            return web.json_response(payload, status=400, headers=headers)
        idempotency_key = request.headers.get("Idempotency-Key") if self.config.idempotency else None
        if idempotency_key in self.answered:  # like Stripe's: a retried key gets its first answer, unbilled
            return await self.deliver(request, self.answered[idempotency_key], headers, request_hash, attempt,
                                      "replayed")
        fault = self.transient(request_hash, attempt)
        status = {"rate_limit": 429, "server_error": 500}.get(fault or "", 200)
        if status != 200 or fault is not None:
            self.record(request_hash, attempt, status, fault)
        if self.config.latency_ms:
            await asyncio.sleep(self.config.latency_ms / 1000)
        if fault == "timeout":
            await asyncio.sleep(600)  # longer than any sane client timeout; the client gives up first
        if fault == "rate_limit":
            message = "Rate limit reached for requests (stand-in fault). Please try again in 50ms."
            headers |= {"retry-after": "1", "retry-after-ms": "50"}
            return web.json_response(error_body(message, "rate_limit_error", None, "rate_limit_exceeded"),
                                     status=429, headers=headers)
        if fault == "server_error":
            message = "The server had an error while processing your request (stand-in fault)."
            return web.json_response(error_body(message, "server_error"), status=500, headers=headers)
        text = json.dumps(self.complete(body, settings, f"chatcmpl-{response_id}"))
        if fault == "truncated_body":
            return web.Response(text=text[: len(text) // 2], content_type="application/json", headers=headers)
        if idempotency_key:
            self.answered[idempotency_key] = text
        return await self.deliver(request, text, headers, request_hash, attempt, None)

    async def deliver(self, request: web.Request, text: str, headers: dict, request_hash: str, attempt: int,
                      fault: str | None) -> web.StreamResponse:
        """Write the answer, then log it: a client killed mid-request is not counted as answered."""
        response = web.Response(text=text, content_type="application/json", headers=headers)
        try:
            await response.prepare(request)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self.record(request_hash, attempt, 200, "client_gone")
            raise
        self.record(request_hash, attempt, 200, fault)
        return response

    def batch_line(self, body: Any, batch_id: str) -> tuple[int, dict]:
        """One line of a batch (demo/standin_batch.py), answered as /v1/chat/completions would answer it, with the
        same faults (each a failed line here: a batch has no retry-after) and the same log (billed when 200)."""
        request_hash = hashlib.sha256(canonical(body).encode()).hexdigest()
        attempt = self.attempts[request_hash] = self.attempts.get(request_hash, 0) + 1
        try:
            settings = validate(body)
            dialect(body, self.config)
        except BadRequest as error:
            self.record(request_hash, attempt, 400, None, batch_id)
            return 400, error_body(str(error), "invalid_request_error", error.param, error.code)
        fault = self.transient(request_hash, attempt)
        if fault is not None:
            status = 429 if fault == "rate_limit" else 500
            self.record(request_hash, attempt, status, fault, batch_id)
            return status, error_body(f"The server had an error processing this line (stand-in fault: {fault}).",
                                      "rate_limit_error" if status == 429 else "server_error")
        answer = self.complete(body, settings, f"chatcmpl-{sha(request_hash, attempt)[:24]}")
        self.record(request_hash, attempt, 200, None, batch_id)
        return 200, answer

    def complete(self, body: dict, settings: dict, response_id: str) -> dict:
        messages, config = body["messages"], self.config
        reply = responder(messages, config)
        sampled = settings["temperature"] > 0
        # n is left out so that n=1 and n=3 share choice 0; user is metadata (the probe sends two that differ in it)
        keyed = {k: v for k, v in body.items() if k not in ("n", "user") and not (config.ignore_seed and k == "seed")}
        content_key = sha(canonical(keyed), config.seed)
        if config.ignore_seed and sampled:  # like a server that never reads seed: each request draws anew
            content_key = sha(content_key, next(self.requests))
        limit, top = settings["max_tokens"], settings["top_logprobs"]
        choices, completion_tokens, reasoning_tokens = [], 0, 0
        for index in range(1 if config.ignore_n else settings["n"]):
            said, finish, thought_tokens = as_message(reply(sha(content_key, index if sampled else 0)), config,
                                                   self.tokens, limit)
            choices.append({
                "index": index,
                "message": said,
                # ignore_logprobs: answer as if never asked, as `transformers serve` does; the content's only
                "logprobs": None if top is None or config.ignore_logprobs
                else {"content": token_logprobs(said["content"], top), "refusal": None},
                "finish_reason": finish,
            })
            completion_tokens += self.tokens.count(said["content"]) + self.tokens.count(said.get("reasoning_content")
                                                                                         or "")
            reasoning_tokens += thought_tokens
        prompt_tokens = self.tokens.prompt(messages)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        if config.reasoning != "none":
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
        return {
            "id": response_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"] + SNAPSHOT_SUFFIX,
            "system_fingerprint": "fp_standin",
            "choices": choices,
            "usage": usage,
        }

    async def close(self, app: web.Application) -> None:
        if self.log is not None:
            self.log.close()


def create_app(config: Settings, request_log: Path | None = None) -> web.Application:
    standin = Standin(config, request_log)
    calls = itertools.count()  # auth_error_rate draws per call, whatever the route

    @web.middleware
    async def authenticate(request: web.Request, handler: Callable) -> web.StreamResponse:
        if draw(next(calls), config.seed, "auth") < config.auth_error_rate:
            message = (f"Incorrect API key provided: {masked_key(request)}. You can find your API key at "
                       "https://platform.openai.com/account/api-keys.")
            return web.json_response(error_body(message, "invalid_request_error", None, "invalid_api_key"),
                                     status=401)
        return await handler(request)

    app = web.Application(middlewares=[authenticate])
    app.router.add_get("/v1/models", standin.models)
    app.router.add_post("/v1/chat/completions", standin.chat)
    standin_batch.add_routes(app, standin)
    app.on_cleanup.append(standin.close)
    return app


async def serve(app: web.Application, host: str, port: int, ready_file: Path | None) -> None:
    # handler_cancellation frees hung (timeout-fault) handlers once their client hangs up.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    url = f"http://{host}:{runner.addresses[0][1]}/v1"
    print(f"standin teacher listening on {url}", flush=True)
    if ready_file is not None:
        tmp = ready_file.with_name(ready_file.name + ".tmp")
        tmp.write_text(url, encoding="utf-8")
        os.replace(tmp, ready_file)  # readers never see a half-written URL
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.standin", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="read teacher.settings from it")
    parser.add_argument("--request-log", type=Path, help="append one JSON line per request received")
    parser.add_argument("--ready-file", type=Path, help="write the base URL here once listening")
    parser.add_argument("--config-json", help=argparse.SUPPRESS)  # Settings JSON, from running_standin
    args = parser.parse_args(argv)
    if args.config_json:
        config = Settings.model_validate_json(args.config_json)
    else:
        config = Settings.model_validate(load(args.params).teacher.settings)
    asyncio.run(serve(create_app(config, args.request_log), args.host, args.port, args.ready_file))


def die_with_parent() -> None:
    """Linux: the child gets SIGTERM when the stage that started it dies, even by kill -9."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the context manager's cleanup still stops it on a normal exit


@contextmanager
def running_standin(
    config: Settings, request_log: Path | None = None, startup_timeout_s: float = 30
) -> Iterator[str]:
    """Run the stand-in in a child process; yield its base URL, e.g. ``http://127.0.0.1:41234/v1``."""
    with scratch("standin") as tmp:  # in the repo, removed even if the caller is killed (distill/lifetime.py)
        ready, stderr_path = tmp / "url", tmp / "stderr.txt"
        command = [sys.executable, "-m", "demo.standin", "--host", "127.0.0.1", "--port", "0",
                   "--ready-file", str(ready), "--config-json", config.model_dump_json()]
        if request_log is not None:
            command += ["--request-log", str(request_log.resolve())]  # the child runs from PROJECT_ROOT
        # stderr goes to a file, not a pipe nobody reads, so a chatty child can never block on it.
        with stderr_path.open("wb") as stderr:
            child = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
                                     preexec_fn=die_with_parent)
        try:
            deadline = time.monotonic() + startup_timeout_s
            while not ready.exists():
                if child.poll() is not None or time.monotonic() > deadline:
                    why = f"exited with {child.returncode}" if child.returncode is not None else "timed out"
                    raise RuntimeError(f"stand-in teacher {why} before it was ready; its stderr:\n"
                                       + stderr_path.read_text(encoding="utf-8", errors="replace"))
                time.sleep(0.02)
            yield ready.read_text(encoding="utf-8")
        finally:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


running = running_standin  # the provider API's name


if __name__ == "__main__":
    main()
