"""Shards of one plan in other processes or on other machines: what each may spend, and where it writes.

Scale-out (flows/scale.py runs each shard as a Prefect task on a Dask worker) keeps the store's
contract (distill/teacher/store.py, point 5): only the driver, the process that holds the store's
writer lock, appends to the store. A shard writes its answers to a store file of its own, line by
line as they arrive (a kill loses only the requests in flight), and the driver merges those files in
shard order once the shards have ended, or, after a kill, when it next opens the store.

- **On the driver's machine** the shard file is ``<store>.shard-<i>.jsonl`` beside the store.
- **On another machine** (the store's folder is not there) it is a *spool* file in that machine's temp
  folder, named after the store (``spool_folder``); the driver collects every worker's spool files
  for its store before the shards start and after they end (``spooled``), merges them and then has them
  deleted (``drop_spools``). So the store folder is needed on the driver only.

What the shards share is split evenly: a shard cannot see what the others spend. ``shard_budgets``
gives each 1/shards of what the budget has left; ``shard_settings`` gives each of the shards that run
at once its share of DISTILL_TEACHER_CONCURRENCY, _RPM and _TPM, so together they never pass them.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from distill.io import content_hash
from distill.teacher.engine import EngineSettings, Ledger
from distill.teacher.store import RequestStore, StoreBusy, WriterLock, shard_path

SPOOL = "distill-shards"  # under the temp folder of a worker's machine


@dataclass
class ShardResult:
    """What a shard hands back to the driver (pickled by Dask: plain data only)."""

    index: int  # the shard's place in the plan's split, which is the order its answers are merged in
    ledger: Ledger  # what it sent and spent
    path: str  # the store file it wrote, on the machine it ran on
    worker: str  # that machine and the worker's process: ``host:pid``
    spooled: bool  # True: ``path`` is a spool file on ``host``, collected by the driver (not beside the store)


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` integers that differ by at most one and add up to it (the first ones larger)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def shard_budgets(budget: dict | None, shards: int) -> list[dict | None]:
    """Each shard's budget: an even share of what ``budget`` (the flow's JSON budget: caps, ``spent_usd``,
    ``spent_tokens``, price, ``chars_per_token``) has left, with nothing spent yet. A shard that does not use its
    share does not hand it to another, so a run stopped by the budget can leave up to one request's worst case
    per shard unspent."""
    if not budget or (budget.get("budget_usd") is None and budget.get("budget_tokens") is None):
        return [None] * shards
    usd, tokens = budget.get("budget_usd"), budget.get("budget_tokens")
    left_usd = None if usd is None else max(usd - budget.get("spent_usd", 0.0), 0.0) / shards
    left_tokens = [None] * shards if tokens is None else split_evenly(max(tokens - budget.get("spent_tokens", 0), 0),
                                                                     shards)
    return [budget | {"budget_usd": left_usd, "budget_tokens": left_tokens[i], "spent_usd": 0.0, "spent_tokens": 0}
            for i in range(shards)]


def shard_settings(settings: EngineSettings, shards: int, at_once: int) -> list[EngineSettings]:
    """Each shard's engine settings when ``at_once`` of the ``shards`` run at the same time (the cluster's
    worker threads): requests in flight, RPM and TPM split evenly among those, so that together they stay
    within the run's (a shard keeps one request in flight at least). DISTILL_TEACHER_RATE_LIMIT, a Prefect
    global rate limit, is shared as it is: every shard takes its slots from the server."""
    at_once = max(1, min(shards, at_once))
    flights = split_evenly(settings.concurrency, at_once)
    return [settings.model_copy(update={
        "concurrency": max(1, flights[i % at_once]),
        "requests_per_minute": settings.requests_per_minute and settings.requests_per_minute / at_once,
        "tokens_per_minute": settings.tokens_per_minute and settings.tokens_per_minute / at_once,
    }) for i in range(shards)]


def store_identity(store: Path) -> str:
    """Names the store's folder on this machine (host, device, inode): a worker that finds the same folder
    under the same path writes beside the store; any other writes a spool file."""
    folder = store.resolve().parent
    stat = folder.stat()
    return content_hash({"host": socket.gethostname(), "folder": str(folder), "dev": stat.st_dev,
                         "ino": stat.st_ino}, 16)


def sees_store(store: Path, identity: str) -> bool:
    try:
        return store_identity(store) == identity
    except OSError:  # no such folder here
        return False


def spool_folder(identity: str) -> Path:
    """This machine's spool folder for the store named by ``identity`` (0700: the answers hold prompts)."""
    folder = Path(tempfile.gettempdir()) / SPOOL / identity
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def shard_store(store: Path, identity: str, index: int) -> tuple[Path, bool]:
    """Where shard ``index`` writes on this machine, and whether that is a spool file."""
    if sees_store(store, identity):
        return shard_path(store, index), False
    return shard_path(spool_folder(identity) / store.name, index), True


def spooled(identity: str, store_name: str) -> list[tuple[str, list[dict]]]:
    """Every spool file for the store on this machine, in shard order, with its answers (run on each worker)."""
    from distill.teacher.store import shard_files  # one definition of a shard file's name

    folder = Path(tempfile.gettempdir()) / SPOOL / identity
    found = []
    for path in shard_files(folder / store_name):
        with RequestStore(path, read_only=True) as spool:
            found.append((f"{socket.gethostname()}:{path}", spool.entries()))
    return found


def drop_spools(identity: str, names: list[str]) -> int:
    """Delete the spool files ``names`` (``host:path``, as ``spooled`` names them) that are on this machine and
    not being written (their lock is free); how many (run on each worker once their answers are merged)."""
    dropped = 0
    for name in names:
        host, _, path = name.partition(":")
        path = Path(path)
        if host != socket.gethostname() or path.parent.name != identity or not path.exists():
            continue
        try:
            lock = WriterLock(path)
        except StoreBusy:  # a shard still writes it: its answers are collected next time
            continue
        try:
            path.unlink()
            dropped += 1
        finally:
            lock.release()
    return dropped


def api_key(api_key_env: str | None) -> str:
    """The teacher's key from this process's environment (never a task parameter)."""
    if not api_key_env:
        return "standin-needs-no-key"
    key = os.environ.get(api_key_env)
    if not key:
        from distill.entry import StageError

        raise StageError(f"teacher.api_key_env names ${api_key_env}, which is not set on the Dask worker on "
                         f"{socket.gethostname()}: export it where `dask worker` starts (the key is read from each "
                         "worker's environment, never sent with the task)")
    return key
