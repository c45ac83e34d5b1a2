"""Teacher generation as a Prefect flow: shards of requests as tasks, async I/O inside.

Run by the generate stage (``python -m stages.generate``); not meant to be deployed on
its own. One Prefect task per shard, never per request (a task costs 5-70 ms here).
Retries are owned by the engine (``distill.teacher.engine``), so tasks have ``retries=0``
and the openai client ``max_retries=0``. Caching is the request store's job: tasks use
``NO_CACHE`` (keying paid calls on task source or inputs would be wrong and slow).

The flow takes a *plan file* (JSONL of requests, private to its owner), not the requests
themselves: flow parameters are stored by the Prefect API, and the API key is read from the
environment inside the flow so that it never becomes a parameter. The budget (caps, prices and
the tokenisation the reservations assume) and the engine settings are passed as plain JSON values.
The plan is de-duplicated by key before it is split into shards, so no key is sent twice, and the
shards write through the stage's open request store (``open_store``: one writer per store).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

# Without a configured server Prefect starts a temporary one per process; on a busy 2-core
# machine its default 20 s start-up timeout is too tight. No usage statistics leave the machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from tqdm import tqdm  # noqa: E402

from distill.lifetime import watch  # noqa: E402
from distill.params import BatchParams, PriceParams  # noqa: E402
from distill.teacher.batch import BatchSender, batch_client  # noqa: E402
from distill.teacher.engine import (  # noqa: E402
    Budget,
    EngineSettings,
    Ledger,
    RateLimiter,
    TeacherRequest,
    answer_all,
    make_client,
)
from distill.teacher.plan import read_plan, unique, write_plan  # noqa: E402
from distill.teacher.store import open_store  # noqa: E402
from flows.rate_limit import SharedRateLimit  # noqa: E402


@task(name="teacher-shard", retries=0, cache_policy=NO_CACHE)
async def answer_shard(requests: list[TeacherRequest], client, store, settings, gate, on_done, limiter,
                       budget: Budget | None = None) -> Ledger:
    return await answer_all(requests, client, store, settings, gate, on_done, limiter, budget=budget)


def make_limiter(settings: EngineSettings) -> RateLimiter | SharedRateLimit:
    """One pace for every shard of the run: this run's RPM/TPM, and the server's shared rate limit when
    DISTILL_TEACHER_RATE_LIMIT names one (then every run and worker sending to the teacher shares it)."""
    local = RateLimiter(settings.requests_per_minute, settings.tokens_per_minute)
    return SharedRateLimit(settings.rate_limit, local) if settings.rate_limit else local


def make_budget(budget: dict | None) -> Budget | None:
    """One budget shared by every shard, or None when there is no cap. ``budget`` holds plain,
    JSON-able values (it is a flow parameter): ``budget_usd``, ``budget_tokens`` (the caps), ``spent_usd``,
    ``spent_tokens`` (what this run's earlier requests and probes spent), ``price``
    (the teacher's price table) and ``chars_per_token`` (the prompt-size estimate)."""
    if not budget or (budget.get("budget_usd") is None and budget.get("budget_tokens") is None):
        return None
    cap = Budget(PriceParams(**(budget.get("price") or {})), budget.get("budget_usd"), budget.get("budget_tokens"),
                 budget.get("chars_per_token", 4.0))
    cap.settled_usd, cap.settled_tokens = budget.get("spent_usd", 0.0), budget.get("spent_tokens", 0)  # earlier asks
    return cap


async def answer_plan(
    plan_path: str,
    store_path: str,
    base_url: str,
    api_key_env: str | None,
    shards: int,
    budget: dict | None = None,
    settings: dict | None = None,
    shard_runner: Callable | None = None,
) -> Ledger:
    """Every request of the plan not yet in the store, shard by shard. ``shard_runner`` is the Prefect task
    (default) or its plain function (benchmarks/pipeline.py measures what Prefect adds with it)."""
    shard_runner = shard_runner or answer_shard
    requests = unique(read_plan(Path(plan_path)))  # before sharding: a key is never in two shards
    cap = make_budget(budget)
    extra = {"budget": cap} if cap is not None else {}
    engine = EngineSettings(**settings) if settings is not None else EngineSettings.from_env()
    api_key = os.environ[api_key_env] if api_key_env else "standin-needs-no-key"
    parts = [requests[i::shards] for i in range(shards) if requests[i::shards]]
    gate = asyncio.Semaphore(engine.concurrency)  # one bound across all shards
    limiter = make_limiter(engine)  # and one pace
    ledger = Ledger()
    with (
        open_store(Path(store_path), engine.store_wait_s) as store,
        tqdm(total=len(requests), unit="req", desc="teacher", file=sys.stderr, mininterval=1.0) as bar,
    ):
        async with make_client(base_url, api_key, engine) as client:
            results = await asyncio.gather(
                *(shard_runner(part, client, store, engine, gate, bar.update, limiter, **extra) for part in parts)
            )
    for result in results:
        ledger.merge(result)
    return ledger


@flow(name="teacher-generation", log_prints=True)
async def teacher_generation(
    plan_path: str, store_path: str, base_url: str, api_key_env: str | None, shards: int, budget: dict | None = None,
    settings: dict | None = None,
) -> Ledger:
    """Answer every request of the plan not yet in the store, shard by shard, within the budget."""
    return await answer_plan(plan_path, store_path, base_url, api_key_env, shards, budget, settings)


@flow(name="teacher-batches", log_prints=True)
async def teacher_batches(
    plan_path: str, store_path: str, base_url: str, api_key_env: str | None, shards: int, budget: dict | None = None,
    settings: dict | None = None, batch: dict | None = None,
) -> Ledger:
    """Answer every request of the plan not yet in the store through the Batch API (distill/teacher/batch.py),
    within the budget; what it leaves for online sending (``teacher.batch.failed: online``) goes request by
    request, within what the batches left of the budget."""
    requests = unique(read_plan(Path(plan_path)))
    engine = EngineSettings(**settings) if settings is not None else EngineSettings.from_env()
    cap = make_budget(budget)
    api_key = os.environ[api_key_env] if api_key_env else "standin-needs-no-key"
    with open_store(Path(store_path), engine.store_wait_s) as store:
        sender = BatchSender(batch_client(base_url, api_key, engine), store, BatchParams(**(batch or {})), engine, cap,
                             cap.price.batch if cap is not None else 1.0)
        ledger, leftover = await asyncio.to_thread(sender.run, requests)  # blocking polls, off the event loop
        if leftover:
            rest = Path(plan_path).with_name("online.jsonl")
            write_plan(leftover, rest)
            left = None if cap is None else budget | {"spent_usd": cap.settled_usd, "spent_tokens": cap.settled_tokens}
            print(f"batch: {len(leftover)} requests the batches could not answer go online (teacher.batch.failed)")
            ledger.merge(await answer_plan(str(rest), store_path, base_url, api_key_env, shards, left, settings))
    return ledger


def run_plan(
    plan_path: Path, store_path: Path, base_url: str, api_key_env: str | None, shards: int, budget: dict | None = None,
    settings: EngineSettings | None = None, batch: dict | None = None, cluster: dict | None = None,
) -> Ledger:
    """Entry used by the stages: the plan through the Prefect flow (``batch``: teacher.batch, through the Batch
    API flow). ``settings`` default to the environment's.
    Without a configured Prefect server, Prefect starts a temporary one: the watchdog is started first, so
    that it dies with the stage even under kill -9 (distill/lifetime.py)."""
    settings = settings or EngineSettings.from_env()
    args = (str(plan_path), str(store_path), base_url, api_key_env, shards)
    watch()
    if batch is not None:
        return asyncio.run(teacher_batches(*args, budget, settings.model_dump(), batch))
    if cluster and cluster.get("runner") == "dask":  # params.cluster: each shard a task on a Dask worker
        from flows.scale import run_on_cluster  # imports dask only when it is used

        return run_on_cluster(*args, budget, settings, cluster)
    return asyncio.run(teacher_generation(*args, budget, settings.model_dump()))
