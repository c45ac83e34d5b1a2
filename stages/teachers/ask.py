"""Ask the teacher a batch of requests through the store: the one path every stage uses.

Counts what the store already holds, starts the endpoint (or the stand-in) only when
something is missing, and sends the rest through the Prefect teacher flow.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from stages.params import TeacherParams
from stages.prompts import Prompt
from stages.teachers.endpoint import teacher_endpoint, teacher_identity
from stages.teachers.engine import Ledger, TeacherRequest
from stages.teachers.store import RequestStore, request_key


def plan_requests(rows: Iterable[dict], prompt: Prompt, sampling: dict, teacher: TeacherParams) -> list[TeacherRequest]:
    """One request per row (``instruction``, ``input``), keyed for the store; pure."""
    identity = teacher_identity(teacher)
    requests = []
    for row in rows:
        messages = prompt.messages(row["instruction"], row["input"])
        key = request_key(identity, teacher.model, messages, sampling)
        requests.append(TeacherRequest(key=key, model=teacher.model, messages=messages, sampling=sampling))
    return requests


def ask(
    requests: list[TeacherRequest],
    teacher: TeacherParams,
    store_path: Path,
    shards: int = 1,
    send: Callable[..., Ledger] | None = None,
    label: str = "teacher",
) -> Ledger:
    """Make sure every request has an answer in the store; return what it cost."""
    with RequestStore(store_path) as store:
        missing = sum(request.key not in store for request in requests)
    print(f"{label}: {len(requests)} requests planned, {missing} not in the store yet")
    if not missing:
        return Ledger(cache_hits=len(requests))
    from flows.teacher import run_plan, write_plan  # Prefect is imported only when sending

    with teacher_endpoint(teacher) as (base_url, api_key_env), tempfile.TemporaryDirectory() as tmp:
        plan_path = Path(tmp) / "plan.jsonl"
        write_plan(requests, plan_path)
        return (send or run_plan)(plan_path, store_path, base_url, api_key_env, shards)
