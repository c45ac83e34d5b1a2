"""Sending teacher requests: async, bounded concurrency, one owner of retries.

The engine is the only layer that retries: the official ``openai`` client is built with
``max_retries=0`` and Prefect tasks with ``retries=0``, so attempts never multiply.
Backoff is exponential with full jitter and honours ``retry-after-ms`` / ``retry-after``.
An optional requests- and tokens-per-minute limiter paces sending, and an optional
``Budget`` (a hard cap in dollars and/or tokens) refuses requests that would overspend.
Every answer goes into the request store the moment it arrives; one without the shape of a Chat Completions
answer (``checked``: wrong types, no choices, negative usage) is retried as ``MalformedAnswer`` instead.

Throughput settings come from the environment, never from params.yaml, so tuning them
never invalidates a paid DVC stage. ``EngineSettings.from_env`` reads them once, at the start
of a stage, and refuses a bad value before any server or stand-in starts:
  DISTILL_TEACHER_CONCURRENCY (32)   requests in flight, >= 1
  DISTILL_TEACHER_TIMEOUT_S (60)     per-request timeout in seconds, > 0
  DISTILL_TEACHER_MAX_ATTEMPTS (6)   attempts per request before it is a failure, >= 1
  DISTILL_TEACHER_RPM, _TPM (none)   requests / tokens per minute (prompt estimate + max_tokens), > 0
  DISTILL_TEACHER_RATE_LIMIT (none)  a Prefect global rate limit every run shares (flows/rate_limit.py)
  DISTILL_TEACHER_TRANSPORT (openai) "openai" (official client) or "aiohttp" (see transports.py)
  DISTILL_STORE_WAIT_S (0)           seconds to wait for another run writing the same request store, >= 0
  DISTILL_BATCH_POLL_S (10)          teacher.batch: first wait between polls of a batch, > 0 (it grows 1.5x a poll)
  DISTILL_BATCH_POLL_MAX_S (120)     teacher.batch: longest wait between polls, > 0
"""
from __future__ import annotations

import asyncio
import gc
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from distill.entry import StageError
from distill.params import PriceParams
from distill.teacher.store import RequestStore
from distill.teacher.transports import TRANSPORTS, Rejected, Transient, Transport, make_transport


class SettingsError(StageError):
    """A ``DISTILL_*`` variable with a value the engine cannot use; the message names it."""


class EngineSettings(BaseModel):
    """How requests are sent; ``from_env`` reads each field from its variable in ``ENVIRONMENT``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int = Field(32, ge=1, description="requests in flight at once")
    timeout_s: float = Field(60.0, gt=0, allow_inf_nan=False, description="seconds before a request times out")
    max_attempts: int = Field(6, ge=1, description="attempts per request before it is a failure")
    backoff_base_s: float = Field(0.25, ge=0, description="first retry's mean wait (doubles per attempt)")
    backoff_max_s: float = Field(20.0, ge=0, description="longest wait between attempts")
    requests_per_minute: float | None = Field(None, gt=0, allow_inf_nan=False, description="requests per minute")
    tokens_per_minute: float | None = Field(None, gt=0, allow_inf_nan=False, description="tokens per minute")
    rate_limit: str | None = Field(None, min_length=1, description="a Prefect global rate limit (its name) that "
                                   "every run and worker sending to this teacher shares")
    transport: str = Field("openai", description="the HTTP client")
    store_wait_s: float = Field(0.0, ge=0, allow_inf_nan=False,
                                description="seconds to wait for another run writing the same request store")
    batch_poll_s: float = Field(10.0, gt=0, allow_inf_nan=False, description="first wait between polls of a batch")
    batch_poll_max_s: float = Field(120.0, gt=0, allow_inf_nan=False, description="longest wait between polls")

    @field_validator("transport")
    @classmethod
    def known_transport(cls, name: str) -> str:
        if name not in TRANSPORTS:
            raise ValueError(f"use one of {sorted(TRANSPORTS)}")
        return name

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> EngineSettings:
        """The settings in the environment (unset or empty: the default); a bad value is one ``SettingsError``
        naming the variable, the value and what is allowed."""
        values = {field: env[name] for name, field in ENVIRONMENT.items() if env.get(name, "").strip()}
        try:
            return cls(**values)
        except ValidationError as error:
            lines = []
            for item in error.errors():
                field = str(item["loc"][0])
                name = next(name for name, f in ENVIRONMENT.items() if f == field)
                info = cls.model_fields[field]
                default = {None: "no limit", True: "1", False: "0"}.get(info.default, info.default)
                lines.append(f"{name}={values[field]!r}: {item['msg'].removeprefix('Value error, ')} "
                             f"({info.description}; unset means {default})")
            raise SettingsError("\n".join(lines)) from None


ENVIRONMENT = {  # variable -> EngineSettings field
    "DISTILL_TEACHER_CONCURRENCY": "concurrency",
    "DISTILL_TEACHER_TIMEOUT_S": "timeout_s",
    "DISTILL_TEACHER_MAX_ATTEMPTS": "max_attempts",
    "DISTILL_TEACHER_RPM": "requests_per_minute",
    "DISTILL_TEACHER_TPM": "tokens_per_minute",
    "DISTILL_TEACHER_RATE_LIMIT": "rate_limit",
    "DISTILL_TEACHER_TRANSPORT": "transport",
    "DISTILL_STORE_WAIT_S": "store_wait_s",
    "DISTILL_BATCH_POLL_S": "batch_poll_s",
    "DISTILL_BATCH_POLL_MAX_S": "batch_poll_max_s",
}


@dataclass(frozen=True)
class TeacherRequest:
    key: str
    model: str
    messages: list[dict]
    sampling: dict  # temperature, max_tokens, n, seed, ... sent as-is (but for the limit's field name)
    limit_field: str = "max_tokens"  # the field that carries max_tokens on the wire: max_completion_tokens for
    # reasoning models (teacher.completion_limit, or the probe); not in the key, the limit is the same
    prompt_tokens: int | None = None  # counted with teacher.tokenizer before sending; None = estimate from characters

    def payload(self) -> dict:
        sampling = self.sampling
        if self.limit_field != "max_tokens" and "max_tokens" in sampling:
            sampling = {(self.limit_field if name == "max_tokens" else name): value for name, value in sampling.items()}
        return {"model": self.model, "messages": self.messages, **sampling}

    def prompt_estimate(self, chars_per_token: float = 4.0) -> int:
        """Prompt tokens before sending: the tokenizer's count when there is one, else characters /
        ``chars_per_token`` (about 4 for BPE tokenisers, 1 for the stand-in, which counts characters), rounded
        up generously."""
        if self.prompt_tokens is not None:
            return self.prompt_tokens
        chars = sum(len(str(message.get("content", ""))) for message in self.messages)
        return int(chars // chars_per_token) + 1

    def completion_limit(self) -> int:
        """The most completion tokens this request can be given: max_tokens x n."""
        return int(self.sampling.get("max_tokens") or 0) * int(self.sampling.get("n") or 1)

    def token_estimate(self, chars_per_token: float = 4.0) -> int:
        """Tokens this request may cost before it is sent: the prompt estimate plus every
        completion token it may be given."""
        return self.prompt_estimate(chars_per_token) + self.completion_limit()


def cost_usd(prompt_tokens: int, completion_tokens: int, price: PriceParams) -> float:
    """Dollars for a number of prompt and completion tokens at ``price`` (per million)."""
    return (prompt_tokens * price.prompt_per_mtok + completion_tokens * price.completion_per_mtok) / 1e6


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
    skipped_budget: int = 0  # unique requests not sent because the budget would be exceeded (not failures)
    skipped: dict[str, str] = field(default_factory=dict)  # key -> the cap that stopped it, for rejects
    estimated_cost_usd: float = 0.0  # expected dollars for the requests to send, before sending
    batches: int = 0  # batches submitted to the Batch API (teacher.batch)
    batch_answers: int = 0  # answers that came through the Batch API, at its price
    batch_prompt_tokens: int = 0  # the part of prompt_tokens billed at the batch price
    batch_completion_tokens: int = 0  # the part of completion_tokens billed at the batch price

    def cost_usd(self, price: PriceParams) -> float:
        """Dollars at ``price``: online answers at its prices, Batch API answers at ``price.batch`` of them."""
        online = cost_usd(self.prompt_tokens - self.batch_prompt_tokens,
                          self.completion_tokens - self.batch_completion_tokens, price)
        return online + cost_usd(self.batch_prompt_tokens, self.batch_completion_tokens, price) * price.batch

    def merge(self, other: Ledger) -> None:
        for name in ("requests_sent", "cache_hits", "attempts", "prompt_tokens", "completion_tokens",
                     "skipped_budget", "estimated_cost_usd", "batches", "batch_answers", "batch_prompt_tokens",
                     "batch_completion_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.update(other.failures)
        self.retries.update(other.retries)
        self.errors.update(other.errors)
        self.skipped.update(other.skipped)


class _Answer(BaseModel):  # the parts of a Chat Completions answer that rows, features and the ledger read
    model_config = ConfigDict(extra="allow", strict=True)  # strict: "3" is not a token count, 1 is not a text


class _TopLogprob(_Answer):
    token: str
    logprob: float = Field(le=0)  # a log-probability; NaN fails this too


class _TokenLogprob(_TopLogprob):
    top_logprobs: list[_TopLogprob] | None = None


class _Logprobs(_Answer):
    content: list[_TokenLogprob] | None = None


class _Message(_Answer):
    content: str | None = None  # None (or absent): no text, the row's reject says empty_answer


class _Choice(_Answer):
    index: int = Field(0, ge=0)
    message: _Message
    finish_reason: str | None = None
    logprobs: _Logprobs | None = None


class _Usage(_Answer):
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)


class _Completion(_Answer):
    id: str | None = None
    model: str | None = None
    choices: list[_Choice] = Field(min_length=1)  # none: the input would end as neither a row nor a reject
    usage: _Usage | None = None

    @field_validator("choices")
    @classmethod
    def distinct_indexes(cls, choices: list[_Choice]) -> list[_Choice]:
        indexes = [choice.index for choice in choices]
        if len(set(indexes)) < len(indexes):  # rows are keyed by (request, choice index): one would hide another
            raise ValueError(f"choice indexes repeat: {indexes}")
        return choices


def checked(answer: object) -> dict:
    """``answer`` if it has the shape of a Chat Completions answer, else ``Transient("MalformedAnswer")`` naming
    the first fields that are wrong: it is retried like a body cut short, and never reaches the store, whose
    answers every row, feature and bill is built from."""
    try:
        _Completion.model_validate(answer)
    except ValidationError as error:
        problems = [f"{'.'.join(map(str, item['loc'])) or 'body'}: {item['msg']} (got {repr(item['input'])[:60]})"
                    for item in error.errors()[:3]]
        raise Transient("MalformedAnswer", "; ".join(problems)) from None
    return answer


def retry_delay(error: Transient, attempt: int, settings: EngineSettings) -> float:
    """Server-requested wait if any, else exponential backoff with full jitter."""
    if error.retry_after is not None:
        return error.retry_after
    return random.uniform(0, min(settings.backoff_max_s, settings.backoff_base_s * 2**attempt))


def make_client(base_url: str, api_key: str, settings: EngineSettings) -> Transport:
    """The transport named by ``settings.transport``; use it as ``async with``."""
    return make_transport(settings.transport, base_url, api_key, settings.timeout_s)


class RateLimiter:
    """Requests- and tokens-per-minute pacing within one run, shared by every shard.

    Hand-written: Prefect's global rate limits take a server round trip per slot, too slow at
    hundreds of requests per second; they pace several runs together (flows/rate_limit.py).
    Each request reserves its slot at the pace the limits allow; bursts are not allowed, so a
    limit is never exceeded within any minute."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None):
        self.rpm, self.tpm = requests_per_minute, tokens_per_minute
        self.active = bool(requests_per_minute or tokens_per_minute)
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


class Budget:
    """A hard cap on what this run spends, in dollars and/or tokens, shared by every shard.

    Before a request is sent it *reserves* its worst case: the prompt estimate (at
    ``chars_per_token``) priced at the prompt rate plus max_tokens x n at the completion
    rate. The reservation is *settled* to the actual usage when the answer arrives and
    *released* if the request fails. A request is refused when its reservation does not fit
    next to what is already settled; while it would fit only once requests in flight settle,
    it waits for them. So the settled spend never passes the cap as long as the prompt
    estimate is an upper bound (true for the stand-in at 1 char/token; a real tokeniser that
    needs more than chars/4 tokens can overshoot by the in-flight prompts' error), and a
    refusal means less than one request's worst case was left."""

    def __init__(self, price: PriceParams, usd: float | None = None, tokens: int | None = None,
                 chars_per_token: float = 4.0):
        self.price, self.usd, self.tokens, self.chars_per_token = price, usd, tokens, chars_per_token
        self.settled_usd, self.settled_tokens = 0.0, 0
        self.held_usd, self.held_tokens = 0.0, 0  # reservations of requests in flight
        self.changed = asyncio.Condition()

    def describe(self) -> str:
        caps = {"usd": self.usd, "tokens": self.tokens}
        return "not sent: " + ", ".join(f"budget.{name}={cap}" for name, cap in caps.items() if cap is not None)

    def _worst_case(self, request: TeacherRequest, scale: float = 1.0) -> tuple[float, int]:
        prompt, completion = request.prompt_estimate(self.chars_per_token), request.completion_limit()
        return cost_usd(prompt, completion, self.price) * scale, prompt + completion

    def hold(self, request: TeacherRequest, scale: float = 1.0) -> tuple[float, int] | None:
        """``reserve`` without waiting, at ``scale`` of the price (the Batch API's share): the reservation, or
        None when it does not fit next to what is settled and held. For a batch, whose requests are all in
        flight at once until it ends."""
        usd, tokens = self._worst_case(request, scale)
        if not self._fits(usd, tokens, held=True):
            return None
        self.held_usd += usd
        self.held_tokens += tokens
        return usd, tokens

    def settle_held(self, reservation: tuple[float, int], usage: dict | None, scale: float = 1.0) -> None:
        """``settle`` for a ``hold``: the reservation replaced by the usage (None: nothing spent) at ``scale``."""
        self.held_usd -= reservation[0]
        self.held_tokens -= reservation[1]
        if usage:
            prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
            self.settled_usd += cost_usd(prompt, completion, self.price) * scale
            self.settled_tokens += prompt + completion

    def _fits(self, usd: float, tokens: int, held: bool) -> bool:
        spent_usd = self.settled_usd + (self.held_usd if held else 0.0)
        spent_tokens = self.settled_tokens + (self.held_tokens if held else 0)
        return ((self.usd is None or spent_usd + usd <= self.usd + 1e-12)
                and (self.tokens is None or spent_tokens + tokens <= self.tokens))

    async def reserve(self, request: TeacherRequest) -> tuple[float, int] | None:
        """The reservation to settle or release later, or None: the request must not be sent."""
        usd, tokens = self._worst_case(request)
        async with self.changed:
            while not self._fits(usd, tokens, held=True):
                if not self._fits(usd, tokens, held=False):
                    return None  # would not fit even if every request in flight cost nothing
                await self.changed.wait()
            self.held_usd += usd
            self.held_tokens += tokens
            return usd, tokens

    async def settle(self, reservation: tuple[float, int], usage: dict | None) -> None:
        """Replace the reservation by the actual usage (None: the request failed, nothing spent)."""
        async with self.changed:
            self.held_usd -= reservation[0]
            self.held_tokens -= reservation[1]
            if usage:
                prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
                self.settled_usd += cost_usd(prompt, completion, self.price)
                self.settled_tokens += prompt + completion
            self.changed.notify_all()


async def _answer(
    request: TeacherRequest,
    transport: Transport,
    store: RequestStore,
    settings: EngineSettings,
    gate: asyncio.Semaphore,
    ledger: Ledger,
    limiter: RateLimiter,
    budget: Budget | None = None,
) -> None:
    reservation = None
    if budget is not None:
        reservation = await budget.reserve(request)
        if reservation is None:
            ledger.skipped_budget += 1
            ledger.skipped[request.key] = budget.describe()
            return
    usage = None
    try:
        usage = await _send(request, transport, store, settings, gate, ledger, limiter)
    finally:
        if reservation is not None:
            await budget.settle(reservation, usage)


async def _send(
    request: TeacherRequest,
    transport: Transport,
    store: RequestStore,
    settings: EngineSettings,
    gate: asyncio.Semaphore,
    ledger: Ledger,
    limiter: RateLimiter,
) -> dict | None:
    """Send one request with retries; the answer's usage, or None when it failed."""
    ledger.requests_sent += 1
    payload = request.payload()
    for attempt in range(settings.max_attempts):
        if limiter.active:
            await limiter.wait(request.token_estimate())
        async with gate:
            ledger.attempts += 1
            try:
                # The store key doubles as an idempotency key: a server that honours it replays the
                # answer of a request whose reply a killed run never stored, instead of billing it again.
                answer = checked(await transport.complete(payload, request.key))
            except Transient as error:
                failure = error
            except Rejected as error:  # 400/422: the request itself is wrong; it will not improve
                ledger.failures[error.kind] += 1
                ledger.errors[request.key] = f"{error.kind}: {error}"[:500]
                return None
            else:
                store.put(request.key, payload, answer)
                usage = answer.get("usage") or {}
                ledger.prompt_tokens += usage.get("prompt_tokens", 0)
                ledger.completion_tokens += usage.get("completion_tokens", 0)
                return usage
        if attempt + 1 < settings.max_attempts:
            ledger.retries[failure.kind] += 1
            await asyncio.sleep(retry_delay(failure, attempt, settings))
    ledger.failures[failure.kind] += 1
    ledger.errors[request.key] = f"{failure.kind} after {settings.max_attempts} attempts: {failure}"[:500]
    return None


# Requests are started SPAWN_STEP at a time with a turn of the event loop in between, so the first
# ones get their connection and reach the server while later ones start (see answer_all).
SPAWN_STEP = 8
_frozen_depth = 0  # answer_all calls running now (shards run them side by side)


@contextmanager
def gc_frozen() -> Iterator[None]:
    """Keep the cyclic garbage collector off the objects that existed before the requests started.

    A full (generation 2) collection walks every tracked object in the process: with openai,
    pydantic and aiohttp loaded (more again with polars and Prefect) that is over 100,000
    objects and tens of milliseconds, during which no answer is read and no request is sent,
    so at hundreds of requests per second every request in flight waits for it.
    ``gc.freeze`` moves the objects alive now out of the collector's sight; garbage made
    while answering is still collected as usual. Unfrozen again when the last shard ends."""
    global _frozen_depth
    if _frozen_depth == 0:
        gc.freeze()
    _frozen_depth += 1
    try:
        yield
    finally:
        _frozen_depth -= 1
        if _frozen_depth == 0:
            gc.unfreeze()


async def answer_all(
    requests: list[TeacherRequest],
    client: Transport,
    store: RequestStore,
    settings: EngineSettings,
    gate: asyncio.Semaphore,
    on_done: Callable[[int], None] = lambda n: None,
    limiter: RateLimiter | None = None,
    budget: Budget | None = None,
) -> Ledger:
    """Answer every request not yet in the store; duplicates are sent once. ``Fatal``
    (bad key, unknown model) propagates: no other request could succeed either. With a
    ``budget``, requests it refuses are counted in ``skipped_budget``, not as failures."""
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
        await _answer(request, client, store, settings, gate, ledger, limiter, budget)
        on_done(1)

    # Starting every request in one go would first open every connection half-way (at 256 in
    # flight: >100 ms before the first request reaches the server); a turn of the loop every
    # SPAWN_STEP requests lets the earlier ones finish connecting and send while later ones start.
    with gc_frozen():
        tasks: list[asyncio.Task] = []
        try:
            for request in pending.values():
                tasks.append(asyncio.ensure_future(one(request)))
                if len(tasks) % SPAWN_STEP == 0:
                    await asyncio.sleep(0)
        except BaseException:  # cancelled while starting: nobody will await the ones started
            for started in tasks:
                started.cancel()
            raise
        await asyncio.gather(*tasks)
    return ledger
