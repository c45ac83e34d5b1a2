"""One teacher request rate shared by every run and worker: a Prefect global rate limit.

``distill deploy --teacher-rpm N`` creates (or updates) the limit on the server; a run sends
through it when ``DISTILL_TEACHER_RATE_LIMIT`` names it (the deployments set this for their runs).
A rate limit in Prefect is a global concurrency limit whose slots decay: ``slot_decay_per_second``
= RPM / 60 and a burst of one second's worth (``limit``), so in any window of T seconds all runs
together send at most ``limit + RPM * T / 60`` requests, which is how providers meter RPM too.

Taking a slot is a round trip to the server, so a run takes a second's worth of slots at once
(one call per second per run at most) and hands them out locally; ``strict=True`` makes a limit
that does not exist an error instead of Prefect's silent no-op.
"""

from __future__ import annotations

import asyncio
import math

from prefect.client.orchestration import get_client
from prefect.concurrency.asyncio import rate_limit
from prefect.exceptions import ObjectNotFound

from distill.entry import StageError
from distill.teacher.engine import RateLimiter

DEFAULT_NAME = "distill-teacher"


def limit_settings(requests_per_minute: float) -> tuple[int, float]:
    """(limit, slot_decay_per_second) of the rate limit for an RPM budget."""
    per_second = requests_per_minute / 60.0
    return max(1, math.ceil(per_second)), per_second


async def ensure_rate_limit(name: str, requests_per_minute: float) -> None:
    """Create the global rate limit ``name`` for ``requests_per_minute``, or update it to that rate."""
    limit, decay = limit_settings(requests_per_minute)
    async with get_client() as client:
        await client.upsert_global_concurrency_limit_by_name(name, limit, decay)


class SharedRateLimit:
    """Paces one run's requests by the server's rate limit ``name`` (and by this run's own
    ``local`` limiter, when DISTILL_TEACHER_RPM / _TPM are set too). Same interface as
    ``RateLimiter``: ``active`` and ``await wait(tokens)``."""

    active = True

    def __init__(self, name: str, local: RateLimiter | None = None):
        self.name, self.local = name, local
        self.block = 0  # slots taken per server call: read from the limit on first use
        self.held = 0  # slots taken and not yet handed out
        self.lock = asyncio.Lock()

    async def _read_block(self) -> int:
        async with get_client() as client:
            try:
                limit = await client.read_global_concurrency_limit_by_name(self.name)
            except ObjectNotFound:
                raise StageError(
                    f"DISTILL_TEACHER_RATE_LIMIT={self.name!r}: no such global rate limit on the Prefect server at "
                    f"{client.api_url}; create it with `distill deploy --teacher-rpm N` (or `prefect gcl create "
                    f"{self.name} --limit N --slot-decay-per-second R`), or unset the variable") from None
        if not limit.slot_decay_per_second:
            raise StageError(f"DISTILL_TEACHER_RATE_LIMIT={self.name!r} is a concurrency limit without slot decay, "
                             "not a rate limit; recreate it with `distill deploy --teacher-rpm N`")
        return max(1, min(limit.limit, math.ceil(limit.slot_decay_per_second)))

    async def wait(self, tokens: int) -> None:
        if self.local is not None and self.local.active:
            await self.local.wait(tokens)
        async with self.lock:  # one server call at a time; the others use the slots it takes
            if not self.block:
                self.block = await self._read_block()
            if not self.held:
                await rate_limit(self.name, occupy=self.block, strict=True)
                self.held = self.block
            self.held -= 1
