"""Malformed teacher answers, fuzzed with Hypothesis over real HTTP, through the engine as the generate stage runs it.

A tiny aiohttp server on 127.0.0.1 returns whatever body the example drew (wrong JSON types, missing fields, a
body cut mid-way or declared longer than sent, invalid UTF-8, lone surrogates, huge bodies, error statuses with
junk ``Retry-After`` headers); the official openai client sends the request as the engine configures it, and the
labelling rows, log-prob features and parse steps are built from what the store kept. Each answer must end as a
classified failure (a retry, then a reject with its reason), a clean stop (401/403/404), or rows whose response is
exactly the text the server sent; never an exception out of the engine or the row builders. The project never
streams (no ``stream: true`` anywhere), so there is no cut stream to try.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.elicit.answering import build_rows
from distill.elicit.features import build_features
from distill.elicit.parsing import parse_judgement, parse_lines
from distill.prompts import parse_choice
from distill.teacher.engine import EngineSettings, TeacherRequest, answer_all, checked, make_client
from distill.teacher.store import RequestStore
from distill.teacher.transports import Fatal, Transient, retry_after

EXAMPLES = 300
MISSING = object()  # a field left out of the body
ENGINE = EngineSettings(concurrency=1, timeout_s=5, max_attempts=2, backoff_base_s=0, backoff_max_s=0)
REQUEST = TeacherRequest("k" * 32, "fuzz-model", [{"role": "user", "content": "reverse abc"}],
                         {"temperature": 0.0, "max_tokens": 16, "n": 1, "seed": 0})
SEED = {"id": "seed-1", "instruction": "reverse abc", "input": "", "context": "", "reference": None,
        "source_file": "seeds.jsonl", "source_line": 1, "input_origin": "seed", "parent_key": None}


# --- what the server sends ------------------------------------------------------------------------------------

junk = st.recursive(  # any JSON value, for a field of the wrong type
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)
texts = st.text(max_size=30).filter(lambda text: "<think>" not in text and "</think>" not in text)


def obj(**fields: st.SearchStrategy) -> st.SearchStrategy:
    return st.fixed_dictionaries(fields).map(lambda drawn: {k: v for k, v in drawn.items() if v is not MISSING})


def answer_bodies(mangled: bool) -> st.SearchStrategy:
    """Chat Completions answers: well-formed (optional fields left out, empty or None contents, log-probs or not),
    or ``mangled``: any field may also be junk of any type or missing, numbers negative, indexes repeated."""

    def maybe(valid: st.SearchStrategy, optional: bool = False) -> st.SearchStrategy:
        if mangled:
            return st.one_of(valid, valid, valid, junk, st.just(MISSING))
        return st.one_of(valid, st.just(MISSING)) if optional else valid

    count = st.integers(-5, 10**6) if mangled else st.integers(0, 10**6)
    logprob = st.floats() if mangled else st.floats(max_value=0)
    top = obj(token=maybe(texts), logprob=maybe(logprob))
    position = obj(token=maybe(texts), logprob=maybe(logprob), top_logprobs=maybe(st.lists(top, max_size=3)))
    logprobs = st.none() | obj(content=maybe(st.none() | st.lists(position, max_size=3)))
    message = obj(role=maybe(st.just("assistant")), content=maybe(st.none() | texts, optional=True),
                  reasoning_content=maybe(texts, optional=True))
    choice = obj(index=maybe(st.integers(0, 2)), message=maybe(message),
                 finish_reason=maybe(st.sampled_from(["stop", "length"]), optional=True),
                 logprobs=maybe(logprobs, optional=True))
    choices = (st.lists(choice, max_size=3) if mangled
               else st.lists(choice, min_size=1, max_size=3, unique_by=lambda c: c["index"]))
    usage = obj(prompt_tokens=maybe(count), completion_tokens=maybe(count))
    return obj(id=maybe(st.text(max_size=12), optional=True), object=maybe(st.just("chat.completion")),
               model=maybe(st.just("fuzz-model"), optional=True), choices=maybe(choices),
               usage=maybe(usage, optional=True))


def valid_answer(content: str) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "fuzz-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": len(content)}}


def encoded(answer: object) -> bytes:
    return json.dumps(answer).encode()


KINDS = ("answer", "mangled", "huge", "answer", "error_status", "mangled", "cut_http", "top_level", "cut_json",
         "bad_utf8", "surrogate", "bytes", "deep")  # Hypothesis draws the first ones more often


@dataclass
class Reply:
    """What the server sends: ``kind`` (what the example tries), status, headers, body and ``cut`` (the bytes sent
    of a body whose Content-Length promises all of it; None: all)."""

    kind: str
    body: bytes = b""
    status: int = 200
    headers: dict = field(default_factory=dict)
    cut: int | None = None

    def __repr__(self) -> str:  # a failing example of MBs is reported by its head
        body = self.body if len(self.body) <= 300 else self.body[:300] + b"...(%d bytes)" % len(self.body)
        return f"Reply({self.kind!r}, {body!r}, status={self.status}, headers={self.headers}, cut={self.cut})"


@st.composite
def replies(draw) -> Reply:
    kind = draw(st.sampled_from(KINDS))
    reply = Reply(kind)
    if kind in ("answer", "mangled"):
        body = encoded(draw(answer_bodies(kind == "mangled")))
    elif kind == "top_level":  # a number, a list, null, a string where the answer object belongs
        body = encoded(draw(junk))
    elif kind == "bytes":
        body = draw(st.binary(max_size=64))
    elif kind == "cut_json":  # HTTP 200 whose JSON stops mid-way (the length header agrees with what is sent)
        whole = encoded(valid_answer(draw(texts)))
        body = whole[:draw(st.integers(0, len(whole) - 1))]
    elif kind == "cut_http":  # the connection closes before the promised Content-Length
        body = encoded(valid_answer(draw(texts)))
        reply.cut = draw(st.integers(0, len(body) - 1))
    elif kind == "bad_utf8":
        whole = encoded(valid_answer("x" * 8))
        at = whole.index(b"x" * 8) + draw(st.integers(0, 7))
        body = whole[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80"])) + whole[at:]
    elif kind == "surrogate":  # valid JSON syntax, but no text can hold it (nor the store, nor parquet)
        body = encoded(valid_answer("ab")).replace(b'"ab"', draw(st.sampled_from([b'"a\\ud800b"', b'"\\udfff"'])))
    elif kind == "huge":  # a valid answer of MBs: kept whole, as sent
        body = encoded(valid_answer("y" * draw(st.sampled_from([1, 3, 6])) * 2**20))
    elif kind == "deep":  # nesting deeper than any parser's recursion, as the body or as a judge's reply text
        depth = draw(st.sampled_from([10_000, 100_000]))
        body = draw(st.sampled_from([b"[" * depth + b"]" * depth, encoded(valid_answer("{\"score\": " * depth))]))
    else:
        reply.status = draw(st.sampled_from([400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503]))
        body = encoded(draw(junk))
        for name in draw(st.sets(st.sampled_from(["retry-after", "retry-after-ms"]))):
            reply.headers[name] = draw(st.sampled_from(
                ["abc", "", "-1", "nan", "inf", "1e9", "99999999", "0", "0.01", "5", "1.5.2", "Wed, 21 Oct 2015"]))
    reply.body = body
    return reply


# --- the server -------------------------------------------------------------------------------------------------


class FuzzServer:
    """An aiohttp app on 127.0.0.1 in a thread of its own, answering every request with ``self.reply``."""

    def __init__(self) -> None:
        self.reply = Reply("none")
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()
        self.ready.wait(30)

    def serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/v1"
        self.ready.set()
        self.loop.run_forever()

    async def chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        reply = self.reply
        if reply.cut is None:
            return web.Response(body=reply.body, status=reply.status, headers=reply.headers,
                                content_type="application/json")
        response = web.StreamResponse(status=reply.status, headers={"Content-Type": "application/json"})
        response.content_length = len(reply.body)
        await response.prepare(request)
        await response.write(reply.body[:reply.cut])
        request.transport.close()  # the rest never comes
        return response

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def server():
    fuzz = FuzzServer()
    yield fuzz
    fuzz.stop()


# --- the property ---------------------------------------------------------------------------------------------


class Tokens:  # the feature tokenizer's interface: every token string has an id
    identity = "fuzz"

    def id_of(self, token: str) -> int:
        return len(token)


async def send(url: str, store: RequestStore):
    async with make_client(url, "fuzz-key", ENGINE) as client:
        # two attempts of at most 5 s each: longer means the engine waits on something the server said (a
        # Retry-After of hours), which fails the example instead of hanging the suite
        return await asyncio.wait_for(answer_all([REQUEST], client, store, ENGINE, asyncio.Semaphore(1)), 30)


def expected_rows(answer: dict) -> dict[int, str | None]:
    """Choice index -> the response its row must carry (None: no text, a reject)."""
    found = {}
    for choice in answer["choices"]:
        content = choice["message"].get("content")
        found[choice.get("index", 0)] = content.strip() if isinstance(content, str) and content.strip() else None
    return found


def outcome(reply: Reply, url: str, tmp: Path) -> str:
    """Send one request against ``reply``; check what became of it; name the outcome."""
    with RequestStore(tmp / "store.jsonl", fsync_every=10**9) as store:
        try:
            ledger = asyncio.run(send(url, store))
        except Fatal:  # the run stops with one message: only a key, permission or model error may do that
            assert reply.status in (401, 403, 404), reply
            return "fatal"
        if REQUEST.key not in store:
            assert sum(ledger.failures.values()) == 1 and ledger.errors[REQUEST.key], ledger
            return next(iter(ledger.failures))
        answer = store.get(REQUEST.key)
        assert answer == json.loads(reply.body)  # kept as sent
        rows, rejects = build_rows("labelling", [SEED], [REQUEST], store, "fuzz", "t", ledger.errors, ledger.skipped)
        expected = expected_rows(answer)
        assert {row["choice_index"]: row["response"] for row in rows} == {
            index: text for index, text in expected.items() if text is not None}
        assert len(rejects) == sum(text is None for text in expected.values())
        assert all(reject["reason"] == "empty_answer" for reject in rejects)
        usage = answer.get("usage") or {}
        assert all(row["prompt_tokens"] == usage.get("prompt_tokens", 0) for row in rows)
        frame = pl.DataFrame(rows, schema_overrides={"choice_index": pl.Int64}) if rows else pl.DataFrame(
            schema={"id": pl.String, "request_key": pl.String, "choice_index": pl.Int64})
        features, dropped = build_features(frame, store, 2, Tokens())
        assert features.height + len(dropped) == len(rows)
        for choice in answer["choices"]:  # the judge's and the writers' parse steps take any text
            text = parse_choice(choice)
            parse_judgement(text)
            parse_lines(text)
        return "rows" if rows else "empty_answer"


@pytest.mark.reliability
def test_malformed_teacher_answers_become_rejects_or_retries_never_crashes(server, tmp_path: Path,
                                                                         reliability) -> None:
    seen: Counter = Counter()

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(reply=replies())
    def check(reply: Reply) -> None:
        server.reply = reply
        with tempfile.TemporaryDirectory(dir=tmp_path) as folder:  # a store per example, MBs freed at once
            seen[outcome(reply, server.url, Path(folder))] += 1
        kinds[reply.kind] += 1

    kinds: Counter = Counter()
    check()
    print(f"outcomes {dict(seen)}; replies by kind {dict(kinds)}")
    assert set(kinds) == set(KINDS), kinds  # every kind of reply was tried ...
    assert {"rows", "empty_answer", "MalformedAnswer", "fatal"} <= set(seen), seen  # ... and reached each outcome
    reliability("bad input: teacher answers", examples=sum(seen.values()), crashes=0)


@pytest.mark.reliability
@pytest.mark.parametrize(("headers", "wait"), [
    ({"retry-after-ms": "50", "retry-after": "1"}, 0.05), ({"retry-after": "2"}, 2.0),
    ({"retry-after-ms": "abc", "retry-after": "3"}, 3.0),  # junk in the first: the second still counts
    ({"retry-after": "99999999"}, None), ({"retry-after-ms": "nan"}, None), ({"retry-after": "-1"}, None),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None), ({"retry-after-ms": ""}, None)])
def test_a_retry_after_is_honoured_only_when_it_is_a_sane_wait(headers: dict, wait: float | None) -> None:
    """Junk no longer crashes the engine (``float("abc")``) and an hour's wait no longer stalls it: as the openai
    client does, only 0 < wait <= 60 s counts; otherwise the engine's own backoff applies."""
    assert retry_after(headers) == wait


@pytest.mark.reliability
def test_a_malformed_answer_is_retried_with_the_fields_that_are_wrong() -> None:
    answer = {"choices": [{"index": 0, "message": {"content": 5}}], "usage": {"prompt_tokens": -1}}
    with pytest.raises(Transient) as raised:
        checked(answer)
    assert raised.value.kind == "MalformedAnswer"
    assert str(raised.value) == ("choices.0.message.content: Input should be a valid string (got 5); "
                                 "usage.prompt_tokens: Input should be greater than or equal to 0 (got -1)")
    ok = {"choices": [{"index": 0, "message": {"content": None}}, {"index": 1, "message": {"content": "hi"}}]}
    assert checked(ok) is ok  # no text and no usage are answers (an empty_answer reject, zero tokens)
