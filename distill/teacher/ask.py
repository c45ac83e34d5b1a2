"""Ask the teacher a batch of requests through the store: the one path every stage uses.

Counts what the store already holds, prints what the rest will cost (see estimate.py),
starts the endpoint (or the stand-in) only when something is missing, and hands the rest to
the sender the stage gives it (the Prefect teacher flow), within the budget if one is given.
The plan file (every prompt) is private scratch in the repo, and the stand-in and Prefect's
temporary server die with the stage, even under kill -9 (distill/lifetime.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from distill.lifetime import scratch
from distill.params import TeacherParams
from distill.prompts import Prompt
from distill.teacher.endpoint import teacher_endpoint, teacher_identity
from distill.teacher.engine import EngineSettings, Ledger, TeacherRequest
from distill.teacher.estimate import chars_per_token, estimate
from distill.teacher.plan import write_plan
from distill.teacher.store import RequestStore, request_key


def make_request(messages: list[dict], sampling: dict, teacher: TeacherParams) -> TeacherRequest:
    """A request keyed for the store: the key covers the teacher, model, messages and sampling."""
    key = request_key(teacher_identity(teacher), teacher.model, messages, sampling)
    return TeacherRequest(key=key, model=teacher.model, messages=messages, sampling=sampling)


def plan_requests(rows: Iterable[dict], prompt: Prompt, sampling: dict, teacher: TeacherParams) -> list[TeacherRequest]:
    """One request per row (``instruction``, ``input``, and a chat seed's ``context``), keyed for the store; pure."""
    return [make_request(prompt.messages(row["instruction"], row["input"], row.get("context") or ""), sampling, teacher)
            for row in rows]


def ask(
    requests: list[TeacherRequest],
    teacher: TeacherParams,
    store: RequestStore,
    send: Callable[..., Ledger],
    shards: int = 1,
    label: str = "teacher",
    budget_usd: float | None = None,
    budget_tokens: int | None = None,
    expected_completion_tokens: int | None = None,
    settings: EngineSettings | None = None,
) -> Ledger:
    """Make sure every request has an answer in ``store``, the open writable store (within the budget, if
    any), by handing ``send`` a plan file of the missing ones; return what it cost. ``send`` is the stage's
    sender, ``flows.teacher.run_plan`` (the library does not import the orchestrator: the stage's main
    hands it in). ``ledger.estimated_cost_usd`` is the estimate printed before sending.
    ``settings`` default to the environment's (read here when the stage has not read them)."""
    settings = settings or EngineSettings.from_env()
    planned = estimate(requests, store, teacher.price, chars_per_token(teacher), expected_completion_tokens)
    print(planned.table(label))
    if not planned.to_send:
        return Ledger(cache_hits=len(requests))
    extra = {}
    if budget_usd is not None or budget_tokens is not None:
        extra["budget"] = {"budget_usd": budget_usd, "budget_tokens": budget_tokens,
                           "price": teacher.price.model_dump(), "chars_per_token": chars_per_token(teacher)}
    # scratch first: it starts the watchdog before the stand-in or Prefect's server starts
    with scratch("plan") as folder, teacher_endpoint(teacher) as (base_url, api_key_env):
        plan_path = folder / "plan.jsonl"
        write_plan(requests, plan_path)
        ledger = send(plan_path, store.path, base_url, api_key_env, shards, settings=settings, **extra)
    ledger.estimated_cost_usd = planned.cost_usd_expected
    return ledger
