"""Sending teacher requests: async, bounded concurrency, one owner of retries.

The engine is the only layer that retries: the official ``openai`` client is built with
``max_retries=0`` and Prefect tasks with ``retries=0``, so attempts never multiply.
Backoff is exponential with full jitter and honours ``retry-after-ms`` / ``retry-after``.
Every answer goes into the request store the moment it arrives.

Throughput settings come from the environment, never from params.yaml, so tuning them
never invalidates a paid DVC stage:
  DISTILL_TEACHER_CONCURRENCY (32)   requests in flight
  DISTILL_TEACHER_TIMEOUT_S (60)     per-request timeout
  DISTILL_TEACHER_MAX_ATTEMPTS (6)   attempts per request before it is a failure
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import openai

from stages.teachers.store import RequestStore

# Errors worth another attempt; anything else (400, 401, 403, 404, 422) will fail again.
RETRYABLE = (
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APITimeoutError,
    openai.APIConnectionError,
    openai.APIResponseValidationError,
    ValueError,  # a JSON body cut short surfaces as json.JSONDecodeError
)
FATAL = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)


@dataclass(frozen=True)
class EngineSettings:
    concurrency: int = 32
    timeout_s: float = 60.0
    max_attempts: int = 6
    backoff_base_s: float = 0.25
    backoff_max_s: float = 20.0

    @classmethod
    def from_env(cls) -> EngineSettings:
        env = os.environ
        return cls(
            concurrency=int(env.get("DISTILL_TEACHER_CONCURRENCY", cls.concurrency)),
            timeout_s=float(env.get("DISTILL_TEACHER_TIMEOUT_S", cls.timeout_s)),
            max_attempts=int(env.get("DISTILL_TEACHER_MAX_ATTEMPTS", cls.max_attempts)),
        )


@dataclass(frozen=True)
class TeacherRequest:
    key: str
    model: str
    messages: list[dict]
    sampling: dict  # temperature, max_tokens, n, seed, ... sent as-is

    def payload(self) -> dict:
        return {"model": self.model, "messages": self.messages, **self.sampling}


@dataclass
class Ledger:
    """What a batch of requests cost and how it went."""

    requests_sent: int = 0  # unique requests that went over HTTP (answered or not)
    cache_hits: int = 0
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: Counter = field(default_factory=Counter)  # final failures by error class
    retries: Counter = field(default_factory=Counter)  # retried errors by class
    errors: dict[str, str] = field(default_factory=dict)  # key -> last error, for rejects

    def merge(self, other: Ledger) -> None:
        for name in ("requests_sent", "cache_hits", "attempts", "prompt_tokens", "completion_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.update(other.failures)
        self.retries.update(other.retries)
        self.errors.update(other.errors)


def retry_delay(error: Exception, attempt: int, settings: EngineSettings) -> float:
    """Server-requested wait if any, else exponential backoff with full jitter."""
    response = getattr(error, "response", None)
    if response is not None:
        headers = response.headers
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        if headers.get("retry-after", "").replace(".", "", 1).isdigit():
            return float(headers["retry-after"])
    return random.uniform(0, min(settings.backoff_max_s, settings.backoff_base_s * 2**attempt))


def make_client(base_url: str, api_key: str, settings: EngineSettings) -> openai.AsyncOpenAI:
    # aiohttp transport: at high concurrency it keeps up where the default httpx one stalls
    return openai.AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        max_retries=0,
        timeout=settings.timeout_s,
        http_client=openai.DefaultAioHttpClient(timeout=settings.timeout_s),
    )


async def _answer(
    request: TeacherRequest,
    client: openai.AsyncOpenAI,
    store: RequestStore,
    settings: EngineSettings,
    gate: asyncio.Semaphore,
    ledger: Ledger,
) -> None:
    ledger.requests_sent += 1
    for attempt in range(settings.max_attempts):
        async with gate:
            ledger.attempts += 1
            try:
                completion = await client.chat.completions.create(**request.payload())
            except FATAL:
                raise
            except RETRYABLE as error:
                failure = error
            except openai.APIStatusError as error:  # 400/422: the request itself is wrong
                ledger.failures[type(error).__name__] += 1
                ledger.errors[request.key] = f"{type(error).__name__}: {error}"[:500]
                return
            else:
                answer = completion.model_dump(mode="json", exclude_none=True)
                store.put(request.key, request.payload(), answer)
                usage = answer.get("usage", {})
                ledger.prompt_tokens += usage.get("prompt_tokens", 0)
                ledger.completion_tokens += usage.get("completion_tokens", 0)
                return
        kind = type(failure).__name__
        if attempt + 1 < settings.max_attempts:
            ledger.retries[kind] += 1
            await asyncio.sleep(retry_delay(failure, attempt, settings))
    ledger.failures[kind] += 1
    ledger.errors[request.key] = f"{kind} after {settings.max_attempts} attempts: {failure}"[:500]


async def answer_all(
    requests: list[TeacherRequest],
    client: openai.AsyncOpenAI,
    store: RequestStore,
    settings: EngineSettings,
    gate: asyncio.Semaphore,
    on_done: Callable[[int], None] = lambda n: None,
) -> Ledger:
    """Answer every request not yet in the store; duplicates are sent once."""
    ledger = Ledger()
    pending: dict[str, TeacherRequest] = {}
    for request in requests:
        if request.key in store:
            ledger.cache_hits += 1
        else:
            pending.setdefault(request.key, request)
    on_done(len(requests) - len(pending))

    async def one(request: TeacherRequest) -> None:
        await _answer(request, client, store, settings, gate, ledger)
        on_done(1)

    await asyncio.gather(*(one(request) for request in pending.values()))
    return ledger
