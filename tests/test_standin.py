"""The offline stand-in teacher, driven over real HTTP by the official openai client."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from demo import words
from demo.standin import REFUSAL, canonical, question_of, running_standin, wrong
from demo.standin import Settings as StandinSettings

MODEL = "standin-skill-1"
SYSTEM = "You answer with the result only."
TEMPLATE = "Apply the instruction below.\n\n{instruction}\n"
SENTINEL_KEY = "sk-SENTINEL-123"


def messages(instruction: str) -> list[dict]:
    user = TEMPLATE.format(instruction=instruction)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def client(url: str, timeout: float = 5.0, api_key: str = "test") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=timeout)


def ask(url: str, instruction: str = "reverse planet", **kwargs: object) -> openai.types.chat.ChatCompletion:
    return client(url).chat.completions.create(model=MODEL, messages=messages(instruction), **kwargs)


def test_right_answers_usage_and_dated_model(serve: Callable[..., str]) -> None:
    reply = ask(serve(), "reverse planet", temperature=0)
    assert [c.message.content for c in reply.choices] == ["tenalp"]
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].logprobs is None
    assert reply.model == "standin-skill-1-2026-11-01"
    assert reply.object == "chat.completion"
    assert reply.system_fingerprint == "fp_standin"
    assert reply.id.startswith("chatcmpl-") and len(reply.id) == len("chatcmpl-") + 24
    prompt = len(SYSTEM) + len(TEMPLATE.format(instruction="reverse planet"))
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        prompt, 6, prompt + 6)
    assert ask(serve(), "upper cat").choices[0].message.content == "CAT"


def test_n_choices(serve: Callable[..., str]) -> None:
    reply = ask(serve(), n=3)
    assert [(c.index, c.message.content) for c in reply.choices] == [(0, "tenalp"), (1, "tenalp"), (2, "tenalp")]
    assert reply.usage is not None and reply.usage.completion_tokens == 18


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_truncates(serve: Callable[..., str], limit: str) -> None:
    reply = ask(serve(), **{limit: 2})
    assert (reply.choices[0].message.content, reply.choices[0].finish_reason) == ("te", "length")
    assert reply.usage is not None and reply.usage.completion_tokens == 2


def test_logprobs(serve: Callable[..., str]) -> None:
    reply = ask(serve(), logprobs=True, top_logprobs=5)
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert [entry.token for entry in logprobs.content] == list("tenalp")
    for entry in logprobs.content:
        top = entry.top_logprobs
        assert len(top) == 5
        assert top[0].token == entry.token and top[0].logprob == entry.logprob == math.log(0.9)
        assert entry.token not in [alt.token for alt in top[1:]]
        assert all(a.logprob > b.logprob for a, b in itertools.pairwise(top))
        assert sum(math.exp(alt.logprob) for alt in top) <= 1.0
        assert entry.bytes == list(entry.token.encode())


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"n": 0}, "n"),
        ({"temperature": 2.5}, "temperature"),
    ],
)
def test_invalid_requests(serve: Callable[..., str], kwargs: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(serve(), **kwargs)
    assert (caught.value.type, caught.value.param) == ("invalid_request_error", param)


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": [{"role": "user", "content": "reverse cat"}]}, "model", "missing_required_parameter"),
        ({"model": MODEL}, "messages", "missing_required_parameter"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}, "stream",
         "unsupported_value"),
    ],
)
def test_invalid_bodies_get_openai_style_errors(serve: Callable[..., str], body: dict, param: str, code: str) -> None:
    request = urllib.request.Request(f"{serve()}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 400
    error = json.loads(caught.value.read())["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert isinstance(error["message"], str) and error["message"]


def test_same_request_same_answers(serve: Callable[..., str]) -> None:
    url = serve(wrong_rate=0.5)
    first = ask(url, "reverse planet", temperature=0.7, n=8, seed=1)
    second = ask(url, "reverse planet", temperature=0.7, n=8, seed=1)
    contents = [c.message.content for c in first.choices]
    assert contents == [c.message.content for c in second.choices]
    assert len(set(contents)) > 1  # temperature > 0: choices draw faults independently
    single = ask(url, "reverse planet", temperature=0.7, n=1, seed=1)
    assert single.choices[0].message.content == contents[0]  # n is not part of the draw
    greedy = ask(url, "reverse planet", temperature=0, n=8, seed=1)
    assert len({c.message.content for c in greedy.choices}) == 1


def test_content_faults(serve: Callable[..., str]) -> None:
    answer = ask(serve(wrong_rate=1.0)).choices[0].message.content
    assert answer is not None and answer != words.solve("reverse planet")
    assert sorted(answer) == sorted("tenalp") or len(answer) == 5
    malformed = ask(serve(malformed_rate=1.0)).choices[0].message.content
    assert malformed == "Sure! The answer is: tenalp :)"
    assert ask(serve(refusal_rate=1.0)).choices[0].message.content == REFUSAL
    assert ask(serve(), "write a poem about the sea").choices[0].message.content == REFUSAL


def test_question_is_last_nonempty_line_of_last_user_message() -> None:
    msgs = [
        {"role": "user", "content": "upper old"},
        {"role": "assistant", "content": "OLD"},
        {"role": "user", "content": [{"type": "text", "text": "Do this:\n\n  reverse new  \n\n"}]},
        {"role": "assistant", "content": "prefill"},
    ]
    assert question_of(msgs) == "reverse new"
    assert question_of([{"role": "system", "content": "upper cat"}]) == ""


def test_wrong_always_differs() -> None:
    assert (wrong("ab", 0.0), wrong("aaa", 0.0), wrong("a", 0.0), wrong("", 0.0)) == ("ba", "aa", "as", "s")
    assert all(wrong("tenalp", u / 10) != "tenalp" for u in range(10))


def test_transient_faults(serve: Callable[..., str]) -> None:
    with pytest.raises(openai.RateLimitError) as limited:
        ask(serve(rate_limit_rate=1.0))
    assert limited.value.response.headers["retry-after-ms"] == "50"
    assert limited.value.response.headers["retry-after"] == "1"
    assert (limited.value.type, limited.value.code) == ("rate_limit_error", "rate_limit_exceeded")
    with pytest.raises(openai.InternalServerError):
        ask(serve(error_rate=1.0))
    with pytest.raises(openai.APITimeoutError):
        slow = client(serve(timeout_rate=1.0), timeout=0.5)
        slow.chat.completions.create(model=MODEL, messages=messages("upper cat"))
    # The body is cut mid-JSON under a JSON content type; the client hands on the decoder's error.
    with pytest.raises(json.JSONDecodeError):
        ask(serve(truncated_body_rate=1.0))


def test_transient_faults_are_per_attempt(serve: Callable[..., str]) -> None:
    url, failures = serve(rate_limit_rate=0.5), 0
    for _ in range(20):
        try:
            reply = ask(url, "reverse dog")
            break
        except openai.RateLimitError:
            failures += 1
    else:
        pytest.fail("20 attempts of one request were all rate-limited")
    # The draws for this body and seed 0 are fixed: attempts 1-4 are limited, the 5th answers.
    assert (failures, reply.choices[0].message.content) == (4, "god")


SENT = ["reverse again", "reverse again", "reverse again", "upper dog"]


def test_request_log(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    with running_standin(StandinSettings(error_rate=0.5), request_log=log) as url:
        teacher = client(url, api_key=SENTINEL_KEY)
        statuses = []
        for instruction in SENT:
            try:
                teacher.chat.completions.create(model=MODEL, messages=messages(instruction))
                statuses.append(200)
            except openai.InternalServerError:
                statuses.append(500)
        # An answer is logged once it has been written out, so the client can see it a moment before the log does.
        deadline = time.monotonic() + 10
        while len(log.read_text(encoding="utf-8").splitlines()) < len(statuses) and time.monotonic() < deadline:
            time.sleep(0.02)
        text = log.read_text(encoding="utf-8")
    assert SENTINEL_KEY not in text
    rows = [json.loads(line) for line in text.splitlines()]
    # Fixed draws for these bodies at seed 0: attempts 1 and 3 of "reverse again" fail.
    assert [row["status"] for row in rows] == statuses == [500, 200, 500, 200]
    assert [row["fault"] for row in rows] == ["server_error", None, "server_error", None]
    assert all(set(row) == {"time", "request_hash", "attempt", "status", "fault"} for row in rows)
    expected = [hashlib.sha256(canonical({"model": MODEL, "messages": messages(i)}).encode()).hexdigest()
                for i in SENT]
    assert [(row["request_hash"], row["attempt"]) for row in rows] == list(zip(expected, [1, 2, 3, 1], strict=True))


def test_models_list(serve: Callable[..., str]) -> None:
    assert [model.id for model in client(serve()).models.list()] == ["standin-skill-1"]


def test_startup_timeout_raises() -> None:
    with pytest.raises(RuntimeError, match="timed out"), running_standin(StandinSettings(), startup_timeout_s=0):
        pass
