"""Sharing a run through the DVC remote: push its outputs, and pull without losing local work.

Plain ``dvc pull`` refuses the whole pull when the workspace has changed an output since
``dvc.lock`` recorded it (and ``--force`` would throw the change away). The change that matters
most here is a request store holding answers paid for on this machine and not yet recorded: a
run killed or failed after paying, or a ``dvc.lock`` from git that another machine wrote. So:

- outputs changed here are kept as they are, never overwritten;
- a request store changed here gets the remote's copy merged in (every answer whose key it
  lacks), so neither this machine's nor the other's answers are lost or paid for again;
- everything else is pulled; outputs the remote does not have yet are skipped (a first run).

The next ``dvc repro`` re-runs the stages whose outputs changed, answering from the stores.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from distill import paths
from distill.dvc_cli import DvcFailed, dvc_output, run_dvc
from distill.lineage import lock_outputs
from distill.teacher.store import RequestStore

STORES = paths.GENERATE_STORE.parent  # data/store: every stage's request store


@dataclass
class Pulled:
    kept: list[str] = field(default_factory=list)  # outputs changed here, left as they are
    merged: dict[str, int] = field(default_factory=dict)  # request store -> answers added from the remote


def changed_here(repo: Path) -> list[str]:
    """Outputs the workspace changed since ``dvc.lock`` recorded them."""
    status = json.loads(dvc_output(["data", "status", "--json"], repo) or "{}")
    return sorted(path.rstrip("/") for path in status.get("uncommitted", {}).get("modified", []))


def is_store(path: str) -> bool:
    return Path(path).parent == STORES and path.endswith(".jsonl")


def cached_copy(repo: Path, md5: str) -> Path:
    """Where DVC 3 keeps the file with this md5 in the repo's cache."""
    cache = Path(dvc_output(["cache", "dir"], repo).strip())
    return (repo / cache) / "files" / "md5" / md5[:2] / md5[2:]


def merge_remote_store(repo: Path, store: str, md5: str, on_line: Callable[[str], None]) -> int:
    """Fetch the store's recorded copy and add its missing answers to the workspace's; 0 when the remote lacks it."""
    try:
        run_dvc(["fetch", store], repo, on_line)
    except DvcFailed as error:
        on_line(f"{store}: kept as it is; the remote copy could not be fetched ({error})")
        return 0
    source = cached_copy(repo, md5)
    if not source.exists():
        return 0
    with RequestStore(repo / store) as target:  # takes the store's writer lock: never while a stage writes it
        added = target.merge(source)
    on_line(f"{store}: changed here, so merged, not overwritten: {added} answer(s) added from the remote")
    return added


def pull(repo: Path = Path("."), on_line: Callable[[str], None] = print) -> Pulled:
    """``dvc pull`` that keeps local changes and merges request stores (see the module docstring)."""
    pulled = Pulled(kept=changed_here(repo))
    locked = lock_outputs(repo / "dvc.lock")
    for path in pulled.kept:
        if is_store(path) and path in locked and locked[path]["md5"]:
            pulled.merged[path] = merge_remote_store(repo, path, locked[path]["md5"], on_line)
        else:
            on_line(f"{path}: changed here since dvc.lock; kept, not pulled")
    targets = [path for path in locked if path not in pulled.kept]
    if not pulled.kept:
        run_dvc(["pull", "--allow-missing"], repo, on_line)
    elif targets:
        run_dvc(["pull", "--allow-missing", *targets], repo, on_line)
    return pulled


def push(repo: Path = Path("."), on_line: Callable[[str], None] = print) -> None:
    """``dvc push`` to the default remote: every output ``dvc.lock`` records, request stores included."""
    run_dvc(["push"], repo, on_line)
