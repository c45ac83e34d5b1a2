"""Teacher generation on a Dask cluster: each shard a Prefect task on a Dask worker process.

Used by the generate stage when params.yaml sets ``cluster.runner: dask`` (flows/teacher.py ``run_plan``
hands the plan over); docs/scale.md says how to start a cluster. ``cluster.address: null`` starts a
``LocalCluster`` of ``cluster.workers`` processes for the run (they die with the stage, even under
kill -9: distill/lifetime.py); an address joins a running scheduler (``dask scheduler``).

The driver, this process, holds the request store's writer lock; the shards never append to the store
(its contract, point 5, in distill/teacher/store.py). Each shard opens its own transport, reads the API
key from its worker's environment (the variable's *name* is the parameter), sends with the engine
(retries, its share of the pace and the budget: distill/teacher/shards.py) and writes each answer to its
own shard file as it arrives. When the shards have ended (or failed) the driver merges their files into
the store in shard order and only then deletes them; a killed run's files are merged by the next run
before anything is planned. Workers report to the driver's Prefect API: Prefect's temporary server when
none is configured (reachable from this machine only), else PREFECT_API_URL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

# Dask logs every worker's start, stop and out-of-band call at INFO; read when dask is imported, here and in the
# LocalCluster's workers, which inherit it.
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

import psutil  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.context import FlowRunContext  # noqa: E402
from prefect.futures import as_completed  # noqa: E402
from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: E402
from prefect_dask import DaskTaskRunner  # noqa: E402
from tqdm import tqdm  # noqa: E402

from distill.entry import StageError  # noqa: E402
from distill.lifetime import watch  # noqa: E402
from distill.params import ClusterParams  # noqa: E402
from distill.teacher.engine import EngineSettings, Ledger, TeacherRequest, answer_all, make_client  # noqa: E402
from distill.teacher.plan import read_plan, unique  # noqa: E402
from distill.teacher.shards import (  # noqa: E402
    ShardResult,
    api_key,
    drop_spools,
    shard_budgets,
    shard_settings,
    shard_store,
    spooled,
    store_identity,
)
from distill.teacher.store import RequestStore, open_store  # noqa: E402
from flows.teacher import make_budget, make_limiter  # noqa: E402

WORKER_WAIT_S = 120  # how long a run waits for the cluster's first worker before it stops


def task_runner(cluster: ClusterParams) -> DaskTaskRunner:
    """Prefect's Dask task runner for ``cluster``: the scheduler at ``cluster.address``, or a LocalCluster of
    ``cluster.workers`` processes with one thread each (a shard is one event loop: more threads add nothing)."""
    if cluster.address:
        return DaskTaskRunner(address=cluster.address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": cluster.workers, "processes": True, "threads_per_worker": 1,
                                          "dashboard_address": None, "silence_logs": logging.WARNING})


@task(name="teacher-shard", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def cluster_shard(index: int, requests: list[TeacherRequest], store_path: str, identity: str, base_url: str,
                        api_key_env: str | None, budget: dict | None, settings: dict) -> ShardResult:
    """One shard on a Dask worker: its requests through its own transport into its own shard file."""
    engine = EngineSettings(**settings)
    key = api_key(api_key_env)  # from this worker's environment
    path, spool = shard_store(Path(store_path), identity, index)
    with RequestStore(path, wait_s=engine.store_wait_s) as store:  # a re-run of this task answers from it
        async with make_client(base_url, key, engine) as client:
            ledger = await answer_all(requests, client, store, engine, asyncio.Semaphore(engine.concurrency),
                                      limiter=make_limiter(engine), budget=make_budget(budget))
    return ShardResult(index, ledger, str(path), f"{socket.gethostname()}:{os.getpid()}", spool)


def elsewhere(workers: list[str], api: str) -> list[str]:
    """The workers (``tcp://host:port``) on other machines, when Prefect's API is on loopback (its temporary server):
    they could not report their task runs to it."""
    if urlparse(api).hostname not in ("127.0.0.1", "localhost", "::1"):
        return []
    mine = {address.address for addresses in psutil.net_if_addrs().values() for address in addresses}
    return [worker for worker in workers if urlparse(worker).hostname not in mine | {"localhost"}]


def collect_spools(store: RequestStore, client, identity: str) -> int:
    """Merge the spool files every worker's machine holds for this store (shards that ran where the store's
    folder is not), in shard order, then have them deleted; how many answers were added."""
    found = {name: entries for per_worker in client.run(spooled, identity, store.path.name).values()
             for name, entries in per_worker}  # two workers on one machine report its files twice
    added = 0
    for name in sorted(found, key=lambda name: (int(name.rsplit(".shard-", 1)[1].split(".")[0]), name)):
        added += store.merge_entries(found[name])  # fsynced before any spool file is deleted
    if found:
        client.run(drop_spools, identity, list(found))
    return added


def wait_for(futures: list, bar: tqdm, sizes: dict) -> list:
    """Each shard's ShardResult, or the exception it ended with, once all have ended."""
    for future in as_completed(futures):
        bar.update(sizes[future.task_run_id])
    return [future.result(raise_on_failure=False) for future in futures]


@flow(name="teacher-generation", log_prints=True)
async def teacher_generation_on_cluster(
    plan_path: str, store_path: str, base_url: str, api_key_env: str | None, shards: int, budget: dict | None = None,
    settings: dict | None = None,
) -> Ledger:
    """Answer every request of the plan not yet in the store, each shard on a Dask worker."""
    engine = EngineSettings(**settings) if settings is not None else EngineSettings.from_env()
    store_file = Path(store_path).resolve()
    context = FlowRunContext.get()
    client = context.task_runner.client  # starts the LocalCluster, or connects to cluster.address
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError:
        raise StageError(f"cluster.address={client.scheduler.address}: no Dask worker joined in {WORKER_WAIT_S} s; "
                         f"start one with `dask worker {client.scheduler.address}` (docs/scale.md)") from None
    requests = unique(read_plan(Path(plan_path)))  # before sharding: a key is never in two shards
    ledger = Ledger()
    with open_store(store_file, engine.store_wait_s) as store:
        identity = store_identity(store_file)  # the folder exists once the store is open
        collect_spools(store, client, identity)  # what shards on other machines paid for in a killed run
        pending = [request for request in requests if request.key not in store]
        ledger.cache_hits = len(requests) - len(pending)
        parts = [pending[i::shards] for i in range(shards) if pending[i::shards]]
        threads = sum(client.nthreads().values())
        budgets, shares = shard_budgets(budget, len(parts)), shard_settings(engine, len(parts), threads)
        print(f"teacher: {len(pending)} requests in {len(parts)} shards on Dask at {client.scheduler.address} "
              f"({len(client.nthreads())} workers, {threads} threads)")
        api = str(PREFECT_API_URL.value() or context.client.api_url).rstrip("/")  # workers report to this API
        if far := elsewhere(list(client.nthreads()), api):
            raise StageError(f"Dask workers on other machines ({', '.join(far)}) cannot reach Prefect's API at {api} "
                             "(a temporary server on this machine's loopback): start `prefect server start --host "
                             "0.0.0.0` and set PREFECT_API_URL to it here and on the workers (docs/scale.md)")
        with temporary_settings({PREFECT_API_URL: api}):
            futures = [cluster_shard.submit(i, part, str(store_file), identity, base_url, api_key_env, budgets[i],
                                            shares[i].model_dump()) for i, part in enumerate(parts)]
        sizes = {future.task_run_id: len(part) for future, part in zip(futures, parts, strict=True)}
        with tqdm(total=len(pending), unit="req", desc="teacher", file=sys.stderr, mininterval=1.0) as bar:
            outcomes = await asyncio.to_thread(wait_for, futures, bar, sizes)
        # Every shard has ended, answered or failed: what each stored joins the store, in shard order. (Stopped
        # before this, the driver leaves the files for the next run's open_store to merge.)
        store.merge_shards(engine.store_wait_s)
        collect_spools(store, client, identity)
    done = [outcome for outcome in outcomes if isinstance(outcome, ShardResult)]
    failed = [outcome for outcome in outcomes if not isinstance(outcome, ShardResult)]
    for result in done:
        ledger.merge(result.ledger)
    workers = sorted({result.worker for result in done})
    print(f"teacher: {len(done)} of {len(parts)} shards answered by {len(workers)} worker processes "
          f"({', '.join(workers)})")
    if failed:
        raise failed[0] if isinstance(failed[0], BaseException) else StageError(f"a teacher shard failed: {failed[0]}")
    return ledger


def run_on_cluster(plan_path: str, store_path: str, base_url: str, api_key_env: str | None, shards: int,
                   budget: dict | None, settings: EngineSettings, cluster: dict) -> Ledger:
    """Entry from flows/teacher.py ``run_plan`` when ``cluster`` (params.cluster, dumped) has runner dask."""
    watch()  # before a LocalCluster or Prefect's temporary server starts: they die with the stage
    logging.getLogger("distributed").setLevel(logging.WARNING)  # the cluster's start and stop, line by line
    runner = teacher_generation_on_cluster.with_options(task_runner=task_runner(ClusterParams(**cluster)))
    return asyncio.run(runner(str(plan_path), str(store_path), base_url, api_key_env, shards, budget,
                              settings.model_dump()))
