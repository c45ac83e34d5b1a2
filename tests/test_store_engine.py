"""The request store (append-only JSONL) and the async engine against the real stand-in over HTTP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from demo.standin import Settings as StandinSettings
from demo.standin import running_standin
from distill.teacher.engine import (
    EngineSettings,
    Ledger,
    RateLimiter,
    TeacherRequest,
    answer_all,
    make_client,
    retry_delay,
)
from distill.teacher.plan import read_plan, write_plan
from distill.teacher.store import RequestStore, request_key
from distill.teacher.transports import Transient, retry_after
from flows.teacher import answer_plan, answer_shard, run_plan

MODEL = "standin-skill-1"
SETTINGS = EngineSettings(concurrency=8, timeout_s=2, max_attempts=6, backoff_base_s=0.01)
WORDS = ["planet", "cat", "river", "stone", "maple", "orbit", "lemon", "tiger", "cloud", "amber", "delta", "quartz"]


def messages(instruction: str) -> list[dict]:
    return [{"role": "system", "content": "Reply with the answer only."}, {"role": "user", "content": instruction}]


def requests_for(words: list[str], teacher: str = "test") -> list[TeacherRequest]:
    sampling = {"temperature": 0.0, "max_tokens": 16, "n": 1, "seed": 0}
    result = []
    for word in words:
        for op in ("reverse", "upper"):
            msgs = messages(f"{op} {word}")
            result.append(TeacherRequest(request_key(teacher, MODEL, msgs, sampling), MODEL, msgs, sampling))
    return result


def answer(config: StandinSettings, requests: list[TeacherRequest], store_path: Path,
           settings: EngineSettings = SETTINGS) -> Ledger:
    async def go(url: str) -> Ledger:
        with RequestStore(store_path) as store:
            async with make_client(url, "test", settings) as client:
                return await answer_all(requests, client, store, settings, asyncio.Semaphore(settings.concurrency))

    with running_standin(config) as url:
        return asyncio.run(go(url))


def content(store: RequestStore, key: str) -> str:
    return store.get(key)["choices"][0]["message"]["content"]


# --- store ---------------------------------------------------------------------------------------


def test_request_key_changes_with_every_part() -> None:
    base = ("t", "m", [{"role": "user", "content": "reverse cat"}], {"temperature": 0.0, "seed": 0})
    key = request_key(*base)
    assert len(key) == 32
    assert request_key(*base) == key
    assert request_key("t", "m", [{"role": "user", "content": "reverse cat"}], {"seed": 0, "temperature": 0.0}) == key
    variants = [
        ("t2", *base[1:]),
        (base[0], "m2", *base[2:]),
        (*base[:2], [{"role": "user", "content": "reverse dog"}], base[3]),
        (*base[:2], [{"role": "system", "content": "reverse cat"}], base[3]),
        (*base[:3], {"temperature": 0.5, "seed": 0}),
        (*base[:3], {"temperature": 0.0, "seed": 1}),
        (*base[:3], {"temperature": 0.0, "seed": 0, "n": 2}),
    ]
    keys = {request_key(*variant) for variant in variants}
    assert len(keys) == len(variants) and key not in keys


# --- retry delay ---------------------------------------------------------------------------------


def transient(headers: dict[str, str]) -> Transient:
    """A retryable error as a transport raises it, with the server's headers read."""
    return Transient("RateLimitError", "fault", retry_after(httpx.Headers(headers)))


def test_retry_delay_honours_server_headers() -> None:
    assert retry_delay(transient({"retry-after-ms": "50", "retry-after": "1"}), 0, SETTINGS) == 0.05
    assert retry_delay(transient({"Retry-After-Ms": "1500"}), 3, SETTINGS) == 1.5
    assert retry_delay(transient({"retry-after": "2"}), 0, SETTINGS) == 2.0
    assert retry_delay(transient({"retry-after": "0.5"}), 0, SETTINGS) == 0.5


def test_retry_delay_backoff_without_headers() -> None:
    settings = EngineSettings(backoff_base_s=0.1, backoff_max_s=0.3)
    # an HTTP date is not a number of seconds: fall back to jittered backoff
    dated = transient({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"})
    for attempt, cap in ((0, 0.1), (1, 0.2), (2, 0.3), (6, 0.3)):
        delays = [retry_delay(dated, attempt, settings) for _ in range(200)]
        assert all(0 <= delay <= cap for delay in delays)
        assert max(delays) > cap / 2  # full jitter spreads over the whole range
    assert 0 <= retry_delay(Transient("APITimeoutError", "timed out"), 0, settings) <= 0.1


# --- engine against the stand-in -----------------------------------------------------------------


def test_all_answered_then_all_cache_hits(tmp_path: Path) -> None:
    requests = requests_for(WORDS[:5])
    store_path = tmp_path / "s.jsonl"
    first = answer(StandinSettings(), requests + requests[:2], store_path)  # duplicates are sent once
    assert (first.requests_sent, first.cache_hits, first.attempts) == (10, 0, 10)
    assert not first.failures and not first.retries and not first.errors
    # usage: one token per character; "tenalp"-style answers are as long as the word
    assert first.completion_tokens == 2 * sum(len(word) for word in WORDS[:5])
    with RequestStore(store_path) as store:
        assert len(store) == 10
        assert content(store, requests[0].key) == "tenalp"
        assert content(store, requests[1].key) == "PLANET"
        assert store.entry(requests[0].key)["request"] == requests[0].payload()
    second = answer(StandinSettings(), requests, store_path)
    assert (second.requests_sent, second.cache_hits, second.attempts) == (0, 10, 0)
    assert len(store_path.read_text().splitlines()) == 10


@pytest.mark.parametrize("transport", ["openai", "aiohttp"])
def test_transient_faults_are_retried_until_answered(tmp_path: Path, transport: str) -> None:
    requests = requests_for(WORDS)
    config = StandinSettings(error_rate=0.3, rate_limit_rate=0.2, truncated_body_rate=0.1)
    settings = EngineSettings(concurrency=8, timeout_s=2, max_attempts=6, backoff_base_s=0.01, transport=transport)
    ledger = answer(config, requests, tmp_path / "s.jsonl", settings)
    assert ledger.requests_sent == 24
    assert not ledger.failures and not ledger.errors
    # a 200 whose JSON body is cut short surfaces as JSONDecodeError and is retried too
    assert set(ledger.retries) == {"InternalServerError", "RateLimitError", "JSONDecodeError"}
    assert ledger.attempts == 24 + sum(ledger.retries.values())
    with RequestStore(tmp_path / "s.jsonl") as store:
        assert len(store) == 24
        assert content(store, requests[0].key) == "tenalp"


def test_permanent_errors_fail_every_request_and_store_nothing(tmp_path: Path) -> None:
    requests = requests_for(WORDS[:3])
    settings = EngineSettings(concurrency=8, timeout_s=2, max_attempts=2, backoff_base_s=0.01)
    store_path = tmp_path / "s.jsonl"
    ledger = answer(StandinSettings(error_rate=1.0), requests, store_path, settings)
    assert (ledger.requests_sent, ledger.attempts) == (6, 12)
    assert ledger.failures == {"InternalServerError": 6}
    assert ledger.retries == {"InternalServerError": 6}
    assert set(ledger.errors) == {request.key for request in requests}
    for message in ledger.errors.values():
        assert message.startswith("InternalServerError after 2 attempts: Error code: 500")
        assert "stand-in fault" in message
    assert store_path.read_text() == ""


@pytest.mark.parametrize("transport", ["openai", "aiohttp"])
def test_bad_request_is_not_retried(tmp_path: Path, transport: str) -> None:
    msgs = messages("reverse cat")
    bad = TeacherRequest("bad", MODEL, msgs, {"temperature": 5.0})
    settings = EngineSettings(concurrency=8, timeout_s=2, max_attempts=6, backoff_base_s=0.01, transport=transport)
    ledger = answer(StandinSettings(), [bad], tmp_path / "s.jsonl", settings)
    assert (ledger.requests_sent, ledger.attempts) == (1, 1)
    assert ledger.failures == {"BadRequestError": 1}
    assert "Invalid 'temperature'" in ledger.errors["bad"]


def test_rate_limiter_paces_requests() -> None:
    async def go() -> float:
        limiter = RateLimiter(requests_per_minute=600, tokens_per_minute=None)  # one per 0.1 s
        started = asyncio.get_running_loop().time()
        await asyncio.gather(*(limiter.wait(10) for _ in range(6)))
        return asyncio.get_running_loop().time() - started

    assert 0.49 <= asyncio.run(go()) < 0.7  # six requests: the last starts 0.5 s after the first


def test_shards_send_each_request_once_and_leave_the_collector_as_found(tmp_path: Path) -> None:
    """Two shards sharing one gate (as answer_plan runs them), each starting its requests in
    steps: every request is sent once, and gc is unfrozen again once both have ended."""
    import gc

    class Echo:  # an in-process transport: no server needed
        def __init__(self) -> None:
            self.sent: list[str] = []

        async def complete(self, payload: dict, idempotency_key: str | None = None) -> dict:
            self.sent.append(idempotency_key)
            await asyncio.sleep(0.01)
            return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1}}

    requests = requests_for(WORDS)  # 24 requests
    settings = EngineSettings(concurrency=64)

    async def go(store: RequestStore, client: Echo) -> list[Ledger]:
        gate = asyncio.Semaphore(settings.concurrency)
        return await asyncio.gather(answer_all(requests[0::2], client, store, settings, gate),
                                    answer_all(requests[1::2] + requests[1:2], client, store, settings, gate))

    frozen_before = gc.get_freeze_count()
    client = Echo()
    with RequestStore(tmp_path / "store.jsonl") as store:
        ledgers = asyncio.run(go(store, client))
        assert len(store) == 24
    assert sorted(client.sent) == sorted(r.key for r in requests)  # the duplicate went once
    assert sum(ledger.requests_sent for ledger in ledgers) == 24
    assert gc.get_freeze_count() == frozen_before


# --- the teacher flow ----------------------------------------------------------------------------


def test_run_plan_through_the_prefect_flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILL_TEST_TEACHER_KEY", "sk-test")
    requests = requests_for(WORDS[:4])
    plan_path, store_path = tmp_path / "plan.jsonl", tmp_path / "store.jsonl"
    write_plan(requests, plan_path)
    assert read_plan(plan_path) == requests
    with running_standin(StandinSettings()) as url:
        first = run_plan(plan_path, store_path, url, "DISTILL_TEST_TEACHER_KEY", 3)
        second = run_plan(plan_path, store_path, url, None, 3)
    assert (first.requests_sent, first.cache_hits, first.attempts) == (8, 0, 8)
    assert not first.failures
    assert (second.requests_sent, second.cache_hits) == (0, 8)
    with RequestStore(store_path) as store:
        assert [content(store, r.key) for r in requests[:4]] == ["tenalp", "PLANET", "tac", "CAT"]
    assert "sk-test" not in store_path.read_text()


def test_a_runs_rpm_holds_across_all_its_shards(tmp_path: Path) -> None:
    """DISTILL_TEACHER_RPM is one pace for the whole run: 12 requests in 4 shards at 600/min take about
    1.1 s, not a quarter of it (one limiter per shard would allow 4 x 600/min)."""
    requests = requests_for(WORDS[:6])  # 12 requests
    plan_path, store_path = tmp_path / "plan.jsonl", tmp_path / "store.jsonl"
    write_plan(requests, plan_path)
    settings = EngineSettings(requests_per_minute=600)
    with running_standin(StandinSettings()) as url:
        started = time.perf_counter()  # the shards as the flow runs them, timed without the flow's start-up
        ledger = asyncio.run(answer_plan(str(plan_path), str(store_path), url, None, 4, None, settings.model_dump(),
                                         shard_runner=answer_shard.fn))
        elapsed = time.perf_counter() - started
    assert ledger.requests_sent == 12 and not ledger.failures
    assert elapsed >= 1.05
