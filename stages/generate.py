"""Teacher generation (labelling): the teacher answers every seed input.

Reads:   data/ingest/train.parquet, the templates named in params, the request store
Writes:  data/generate/rows.parquet (GENERATED), data/generate/rejects.parquet (REJECT),
         data/store/generate.jsonl (the request store, appended), metrics/generate.json
Params:  generate, teacher
Run:     python -m stages.generate

Requests go through the teacher request store: a re-run pays only for keys not yet
answered, and ``metrics/generate.json`` says how many were sent and how many were cache
hits. When ``teacher.base_url`` is null the local stand-in teacher is started on
127.0.0.1 for the duration of the stage. Seeds the teacher never answered usefully go
to the rejects file with a reason; past ``generate.max_failed_fraction`` the stage fails.

Cost: the expected cost is printed before sending (as ``distill estimate`` does) and
``metrics/generate.json`` records ``cost_usd`` (this run's spend at ``teacher.price``) and
``estimated_cost_usd``. ``generate.budget_usd`` / ``budget_tokens`` are hard caps on this
run's spending: requests that would pass them are not sent, their seeds go to the rejects
with reason ``budget`` (not counted as failures) and ``stopped_by_budget`` is true; a later
run with a higher budget pays only for the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from stages import params as params_module
from stages import paths
from stages.entry import StageError, guarded
from stages.io import content_hash, write_json, write_parquet
from stages.prompts import Prompt, parse_choice
from stages.records import GENERATED, REJECT, conform
from stages.teachers.ask import ask, plan_requests
from stages.teachers.engine import Ledger, TeacherRequest, cost_usd
from stages.teachers.store import RequestStore

METHOD = "labelling"


def sampling_of(params: params_module.GenerateParams) -> dict:
    return {"temperature": params.temperature, "max_tokens": params.max_tokens, "n": params.n, "seed": params.seed}


def plan(
    seeds: pl.DataFrame, prompt: Prompt, params: params_module.GenerateParams, teacher: params_module.TeacherParams
) -> list[TeacherRequest]:
    """One request per seed, keyed for the store; pure (no I/O)."""
    return plan_requests(seeds.iter_rows(named=True), prompt, sampling_of(params), teacher)


def build_rows(
    seeds: pl.DataFrame,
    requests: list[TeacherRequest],
    store: RequestStore,
    errors: dict[str, str],
    prompt_hash: str,
    sampling_hash: str,
    teacher_name: str,
    skipped: dict[str, str] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Join each seed with its stored answer; seeds without a usable one become rejects
    (reason ``budget`` for requests the budget did not let out, listed in ``skipped``)."""
    skipped = skipped or {}
    rows, rejects = [], []
    for seed, request in zip(seeds.iter_rows(named=True), requests, strict=True):
        base = {"seed_id": seed["id"], "request_key": request.key, "source_file": seed["source_file"],
                "source_line": seed["source_line"]}
        entry = store.entry(request.key)
        if entry is None and request.key in skipped:
            rejects.append(base | {"reason": "budget", "detail": skipped[request.key]})
            continue
        if entry is None:
            rejects.append(base | {"reason": "teacher_error", "detail": errors.get(request.key, "not answered")})
            continue
        answer = entry["response"]
        for choice in answer.get("choices", []):
            text = parse_choice(choice)
            if text is None:
                rejects.append(base | {"reason": "empty_answer", "detail": f"choice {choice.get('index')}"})
                continue
            usage = answer.get("usage", {})
            rows.append(base | {
                "id": content_hash({"request": request.key, "choice": choice.get("index", 0)}),
                "method": METHOD,
                "teacher": teacher_name,
                "model_requested": request.model,
                "model_answered": answer.get("model", ""),
                "template_hash": prompt_hash,
                "sampling_hash": sampling_hash,
                "response_id": answer.get("id", ""),
                "choice_index": choice.get("index", 0),
                "created_at": entry["stored_at"],
                "prompt_tokens": usage.get("prompt_tokens", 0),
                "completion_tokens": usage.get("completion_tokens", 0),
                "finish_reason": choice.get("finish_reason") or "stop",
                "instruction": seed["instruction"],
                "input": seed["input"],
                "response": text,
            })
    return (conform(pl.DataFrame(rows, schema=GENERATED), GENERATED),
            conform(pl.DataFrame(rejects, schema=REJECT), REJECT))


def run(
    params: params_module.Params,
    seeds_path: Path = paths.INGEST_TRAIN,
    rows_path: Path = paths.GENERATE_ROWS,
    rejects_path: Path = paths.GENERATE_REJECTS,
    store_path: Path = paths.GENERATE_STORE,
    send: Callable[..., Ledger] | None = None,
) -> dict:
    """Plan, send what the store lacks, build rows. ``send`` defaults to the Prefect flow."""
    started = time.monotonic()
    seeds = pl.read_parquet(seeds_path)
    prompt = Prompt(params.generate.system, params.generate.template)
    requests = plan(seeds, prompt, params.generate, params.teacher)
    gen = params.generate
    ledger = ask(requests, params.teacher, store_path, gen.shards, send, label="generate", budget_usd=gen.budget_usd,
                 budget_tokens=gen.budget_tokens, expected_completion_tokens=gen.expected_completion_tokens)
    with RequestStore(store_path) as store:
        rows, rejects = build_rows(seeds, requests, store, ledger.errors, prompt.hash,
                                   content_hash(sampling_of(params.generate)), params.teacher.name, ledger.skipped)
    failed = rejects.filter(pl.col("reason") != "budget").height  # budget rejects are not failures
    failed_fraction = failed / max(seeds.height, 1)
    metrics = {
        "requests_planned": len(requests),
        "requests_sent": ledger.requests_sent,
        "cache_hits": ledger.cache_hits,
        "attempts": ledger.attempts,
        "retries_by_class": dict(ledger.retries),
        "failures_by_class": dict(ledger.failures),
        "prompt_tokens_sent": ledger.prompt_tokens,
        "completion_tokens_received": ledger.completion_tokens,
        "cost_usd": round(cost_usd(ledger.prompt_tokens, ledger.completion_tokens, params.teacher.price), 6),
        "estimated_cost_usd": round(ledger.estimated_cost_usd, 6),
        "budget_usd": gen.budget_usd,
        "budget_tokens": gen.budget_tokens,
        "skipped_budget": ledger.skipped_budget,
        "stopped_by_budget": ledger.skipped_budget > 0,
        "rows": rows.height,
        "rejects": rejects.height,
        "rejects_by_reason": dict(rejects["reason"].value_counts().iter_rows()),
        "failed_fraction": round(failed_fraction, 4),
        "template_hash": prompt.hash,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.monotonic() - started, 2),
    }
    if failed_fraction > params.generate.max_failed_fraction:
        raise StageError(
            f"{failed} of {seeds.height} seeds got no usable answer ({failed_fraction:.1%} > "
            f"generate.max_failed_fraction={params.generate.max_failed_fraction}); answers received are "
            f"kept in {store_path}, reasons by class: {metrics['rejects_by_reason']}"
        )
    write_parquet(rows, rows_path)
    write_parquet(rejects, rejects_path)
    return metrics


def main() -> None:
    params = params_module.load()
    metrics = run(params)
    write_json(metrics, paths.metrics("generate"))
    print(f"generate: {metrics['rows']} rows, {metrics['rejects']} rejects; "
          f"{metrics['requests_sent']} requests sent, {metrics['cache_hits']} cache hits, "
          f"${metrics['cost_usd']:.4f} spent" + ("; stopped by the budget" if metrics["stopped_by_budget"] else ""))


if __name__ == "__main__":
    guarded("generate", main)
