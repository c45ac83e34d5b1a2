"""Ask the teacher a batch of requests through the store: the one path every stage uses.

Counts what the store already holds, prints what the rest will cost (see estimate.py),
starts the endpoint (or the stand-in) only when something is missing, and hands the rest to
the sender the stage gives it (the Prefect teacher flow), within the budget if one is given.
The plan file (every prompt) is private scratch in the repo, and the stand-in and Prefect's
temporary server die with the stage, even under kill -9 (distill/lifetime.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import replace

from distill.lifetime import scratch
from distill.params import TeacherParams
from distill.prompts import Prompt
from distill.teacher import capabilities, tokens
from distill.teacher.capabilities import CapabilityError
from distill.teacher.endpoint import teacher_endpoint, teacher_identity
from distill.teacher.engine import EngineSettings, Ledger, TeacherRequest
from distill.teacher.estimate import chars_per_token, estimate, price_of
from distill.teacher.plan import write_plan
from distill.teacher.probe import Probe, ProbeFailed, covers, needs_of, probe, refusal
from distill.teacher.store import RequestStore, request_key


def make_request(messages: list[dict], sampling: dict, teacher: TeacherParams) -> TeacherRequest:
    """A request keyed for the store: the key covers the teacher, model, messages and sampling (with the teacher's
    ``reasoning_effort`` when it sets one)."""
    if teacher.reasoning_effort is not None:
        sampling = sampling | {"reasoning_effort": teacher.reasoning_effort}
    key = request_key(teacher_identity(teacher), teacher.model, messages, sampling)
    return TeacherRequest(key=key, model=teacher.model, messages=messages, sampling=sampling)


def plan_requests(rows: Iterable[dict], prompt: Prompt, sampling: dict, teacher: TeacherParams) -> list[TeacherRequest]:
    """One request per row (``instruction``, ``input``, and a chat seed's ``context``), keyed for the store; pure."""
    return [make_request(prompt.messages(row["instruction"], row["input"], row.get("context") or ""), sampling, teacher)
            for row in rows]


def counted(requests: list[TeacherRequest], teacher: TeacherParams) -> list[TeacherRequest]:
    """With ``teacher.tokenizer``, each request's prompt tokens counted exactly (the estimate and the budget use
    them); without, the requests as they are (their estimate divides characters)."""
    if teacher.tokenizer is None:
        return requests
    count = tokens.counter(teacher.tokenizer)
    return [replace(request, prompt_tokens=count.prompt_tokens(request.messages)) for request in requests]


def prompt_source(teacher: TeacherParams, result: Probe | None) -> str:
    """How the estimate counted prompt tokens, and how far off that can be."""
    if teacher.tokenizer is not None:
        return f"prompt tokens counted with teacher.tokenizer={teacher.tokenizer}"
    text = f"prompt tokens approximate: characters / {chars_per_token(teacher):g}"
    if result is not None and result.prompt_tokens:
        ratio = result.prompt_tokens / max(result.estimated_prompt_tokens or 1, 1)
        return (text + f"; on the probe the endpoint counted {result.prompt_tokens} where this counts "
                f"{result.estimated_prompt_tokens} ({ratio:.2f}x); set teacher.tokenizer for exact counts")
    return text + "; real tokenizers differ from it by about 30% either way; set teacher.tokenizer for exact counts"


def checked_by_probe(pending: list[TeacherRequest], teacher: TeacherParams, base_url: str,
                     api_key_env: str | None, settings: EngineSettings, probes: dict[str, Probe],
                     token_id: Callable[[str], int | None] | None) -> Probe | None:
    """The teacher's probe (once per run, and only once something is to be paid for); raises
    ``CapabilityError`` with the probe's evidence when the endpoint cannot serve the pending requests."""
    if not teacher.probe or teacher.provider == "hf":  # a local HF teacher is this program: nothing to find out
        return None
    if teacher.name not in probes or not covers(probes[teacher.name].needs, needs_of(pending)):
        api_key = os.environ[api_key_env] if api_key_env else "standin-needs-no-key"
        counter = tokens.counter(teacher.tokenizer) if teacher.tokenizer else None

        def estimate_prompt(messages: list[dict]) -> int:
            if counter is not None:
                return counter.prompt_tokens(messages)
            return TeacherRequest("", teacher.model, messages, {}).prompt_estimate(chars_per_token(teacher))

        try:
            result = probe(teacher, base_url, api_key, settings.timeout_s, pending, estimate_prompt,
                           prompt_source(teacher, None), token_id)
        except ProbeFailed as error:
            raise CapabilityError(f"{teacher.name}: {error}; nothing of the plan was sent") from None
        earlier = probes.get(teacher.name)
        if earlier is not None:  # a plan that needs more than the last probe found out: the bill adds up
            result.cost_usd += earlier.cost_usd
            result.tokens_billed += earlier.tokens_billed
            result.requests_sent += earlier.requests_sent
        probes[teacher.name] = result
    result = probes[teacher.name]
    problem = refusal(result, needs_of(pending), capabilities.of(teacher).n)
    if problem:
        raise CapabilityError(f"{problem}. Nothing of the plan was sent (the probe cost ${result.cost_usd:.6f})")
    return result


def ask(
    requests: list[TeacherRequest],
    teacher: TeacherParams,
    store: RequestStore,
    send: Callable[..., Ledger],
    shards: int = 1,
    label: str = "teacher",
    budget_usd: float | None = None,
    budget_tokens: int | None = None,
    spent: tuple[float, int] = (0.0, 0),
    expected_completion_tokens: int | None = None,
    settings: EngineSettings | None = None,
    probes: dict[str, Probe] | None = None,
    token_id: Callable[[str], int | None] | None = None,
) -> Ledger:
    """Make sure every request has an answer in ``store``, the open writable store, within the budget if any
    (of which ``spent`` dollars and tokens are gone already), by handing ``send`` a plan file of the missing
    ones; return what it cost. ``send`` is the stage's sender, ``flows.teacher.run_plan`` (the library does
    not import the orchestrator: the stage's main hands it in). Before the first request is paid for, the
    teacher is probed (``probes`` keeps the result per teacher for the run; ``token_id`` maps a teacher token
    onto the feature tokenizer when the plan stores log-probs). ``ledger.estimated_cost_usd`` is the estimate
    printed before sending. ``settings`` default to the environment's."""
    settings = settings or EngineSettings.from_env()
    probes = {} if probes is None else probes
    price = price_of(teacher)  # what the estimate shows
    if teacher.batch.enabled:
        label += f", Batch API at {teacher.price.batch:g}x the price"
    pending = [request for request in requests if request.key not in store]
    if not pending:
        print(estimate(requests, store, price, chars_per_token(teacher), expected_completion_tokens,
                       prompt_source(teacher, None)).table(label))
        return Ledger(cache_hits=len(requests))
    requests = counted(pending, teacher) + [request for request in requests if request.key in store]  # only
    # what is to be sent is priced, so only that is counted
    extra = {}
    if budget_usd is not None or budget_tokens is not None:
        extra["budget"] = {"budget_usd": budget_usd, "budget_tokens": budget_tokens, "spent_usd": spent[0],
                           "spent_tokens": spent[1], "price": teacher.price.model_dump(),
                           "chars_per_token": chars_per_token(teacher)}
    if teacher.batch.enabled:
        extra["batch"] = teacher.batch.model_dump()
    # scratch first: it starts the watchdog before the stand-in or Prefect's server starts
    with scratch("plan") as folder, teacher_endpoint(teacher) as (base_url, api_key_env):
        before = probes.get(teacher.name)
        result = checked_by_probe(pending, teacher, base_url, api_key_env, settings, probes, token_id)
        if result is not None and result is not before and "budget" in extra:  # a new probe, paid from the budget
            extra["budget"]["spent_usd"] += result.cost_usd - (before.cost_usd if before else 0.0)
            extra["budget"]["spent_tokens"] += result.tokens_billed - (before.tokens_billed if before else 0)
        limit_field = result.limit_field if result is not None else (
            "max_tokens" if teacher.completion_limit == "auto" else teacher.completion_limit)
        requests = [replace(request, limit_field=limit_field) for request in requests]
        planned = estimate(requests, store, price, chars_per_token(teacher), expected_completion_tokens,
                           prompt_source(teacher, result))
        print(planned.table(label))
        plan_path = folder / "plan.jsonl"
        write_plan(requests, plan_path)
        ledger = send(plan_path, store.path, base_url, api_key_env, shards, settings=settings, **extra)
    ledger.estimated_cost_usd = planned.cost_usd_expected
    return ledger
