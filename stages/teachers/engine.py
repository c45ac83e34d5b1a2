"""Sending teacher requests: async, bounded concurrency, one owner of retries.

The engine is the only layer that retries: the official ``openai`` client is built with
``max_retries=0`` and Prefect tasks with ``retries=0``, so attempts never multiply.
Backoff is exponential with full jitter and honours ``retry-after-ms`` / ``retry-after``.
An optional requests- and tokens-per-minute limiter paces sending. Every answer goes into
the request store the moment it arrives.

Throughput settings come from the environment, never from params.yaml, so tuning them
never invalidates a paid DVC stage:
  DISTILL_TEACHER_CONCURRENCY (32)   requests in flight
  DISTILL_TEACHER_TIMEOUT_S (60)     per-request timeout
  DISTILL_TEACHER_MAX_ATTEMPTS (6)   attempts per request before it is a failure
  DISTILL_TEACHER_RPM, _TPM (none)   requests / tokens per minute (prompt estimate + max_tokens)
  DISTILL_TEACHER_TRANSPORT (openai) "openai" (official client) or "aiohttp" (see transports.py)
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from stages.teachers.store import RequestStore
from stages.teachers.transports import Rejected, Transient, Transport, make_transport


@dataclass(frozen=True)
class EngineSettings:
    concurrency: int = 32
    timeout_s: float = 60.0
    max_attempts: int = 6
    backoff_base_s: float = 0.25
    backoff_max_s: float = 20.0
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    transport: str = "openai"

    @classmethod
    def from_env(cls) -> EngineSettings:
        env = os.environ

        def optional(name: str) -> float | None:
            return float(env[name]) if env.get(name) else None

        return cls(
            concurrency=int(env.get("DISTILL_TEACHER_CONCURRENCY", cls.concurrency)),
            timeout_s=float(env.get("DISTILL_TEACHER_TIMEOUT_S", cls.timeout_s)),
            max_attempts=int(env.get("DISTILL_TEACHER_MAX_ATTEMPTS", cls.max_attempts)),
            requests_per_minute=optional("DISTILL_TEACHER_RPM"),
            tokens_per_minute=optional("DISTILL_TEACHER_TPM"),
            transport=env.get("DISTILL_TEACHER_TRANSPORT", cls.transport),
        )


@dataclass(frozen=True)
class TeacherRequest:
    key: str
    model: str
    messages: list[dict]
    sampling: dict  # temperature, max_tokens, n, seed, ... sent as-is

    def payload(self) -> dict:
        return {"model": self.model, "messages": self.messages, **self.sampling}

    def token_estimate(self) -> int:
        """Tokens this request may cost before it is sent: about 4 characters per prompt
        token, plus every completion token it may be given."""
        prompt = sum(len(str(message.get("content", ""))) for message in self.messages) // 4 + 1
        return prompt + int(self.sampling.get("max_tokens") or 0) * int(self.sampling.get("n") or 1)


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


def retry_delay(error: Transient, attempt: int, settings: EngineSettings) -> float:
    """Server-requested wait if any, else exponential backoff with full jitter."""
    if error.retry_after is not None:
        return error.retry_after
    return random.uniform(0, min(settings.backoff_max_s, settings.backoff_base_s * 2**attempt))


def make_client(base_url: str, api_key: str, settings: EngineSettings) -> Transport:
    """The transport named by ``settings.transport``; use it as ``async with``."""
    return make_transport(settings.transport, base_url, api_key, settings.timeout_s)


class RateLimiter:
    """Requests- and tokens-per-minute pacing, shared by every shard.

    Hand-written: Prefect's global rate limits take a server round trip per slot, too slow at
    hundreds of requests per second. Each request reserves its slot at the pace the limits
    allow; bursts are not allowed, so a limit is never exceeded within any minute."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None):
        self.rpm, self.tpm = requests_per_minute, tokens_per_minute
        self.next_free = 0.0
        self.lock = asyncio.Lock()

    async def wait(self, tokens: int) -> None:
        if not self.rpm and not self.tpm:
            return
        spacing = max(60.0 / self.rpm if self.rpm else 0.0, 60.0 * tokens / self.tpm if self.tpm else 0.0)
        async with self.lock:
            now = asyncio.get_running_loop().time()
            start = max(now, self.next_free)
            self.next_free = start + spacing
        if start > now:
            await asyncio.sleep(start - now)


async def _answer(
    request: TeacherRequest,
    transport: Transport,
    store: RequestStore,
    settings: EngineSettings,
    gate: asyncio.Semaphore,
    ledger: Ledger,
    limiter: RateLimiter,
) -> None:
    ledger.requests_sent += 1
    payload = request.payload()
    for attempt in range(settings.max_attempts):
        await limiter.wait(request.token_estimate())
        async with gate:
            ledger.attempts += 1
            try:
                answer = await transport.complete(payload)
            except Transient as error:
                failure = error
            except Rejected as error:  # 400/422: the request itself is wrong; it will not improve
                ledger.failures[error.kind] += 1
                ledger.errors[request.key] = f"{error.kind}: {error}"[:500]
                return
            else:
                store.put(request.key, payload, answer)
                usage = answer.get("usage") or {}
                ledger.prompt_tokens += usage.get("prompt_tokens", 0)
                ledger.completion_tokens += usage.get("completion_tokens", 0)
                return
        if attempt + 1 < settings.max_attempts:
            ledger.retries[failure.kind] += 1
            await asyncio.sleep(retry_delay(failure, attempt, settings))
    ledger.failures[failure.kind] += 1
    ledger.errors[request.key] = f"{failure.kind} after {settings.max_attempts} attempts: {failure}"[:500]


async def answer_all(
    requests: list[TeacherRequest],
    client: Transport,
    store: RequestStore,
    settings: EngineSettings,
    gate: asyncio.Semaphore,
    on_done: Callable[[int], None] = lambda n: None,
    limiter: RateLimiter | None = None,
) -> Ledger:
    """Answer every request not yet in the store; duplicates are sent once. ``Fatal``
    (bad key, unknown model) propagates: no other request could succeed either."""
    ledger = Ledger()
    limiter = limiter or RateLimiter(settings.requests_per_minute, settings.tokens_per_minute)
    pending: dict[str, TeacherRequest] = {}
    for request in requests:
        if request.key in store:
            ledger.cache_hits += 1
        else:
            pending.setdefault(request.key, request)
    on_done(len(requests) - len(pending))

    async def one(request: TeacherRequest) -> None:
        await _answer(request, client, store, settings, gate, ledger, limiter)
        on_done(1)

    await asyncio.gather(*(one(request) for request in pending.values()))
    return ledger
