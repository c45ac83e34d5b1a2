"""Teacher generation (labelling): the teacher answers every seed input.

Reads:   data/ingest/train.parquet, the templates named in params, the request store
Writes:  data/generate/rows.parquet (GENERATED), data/generate/rejects.parquet (REJECT),
         data/generate/features.parquet (FEATURES; empty unless generate.top_logprobs is set),
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

Labelling options: ``generate.demonstrations`` (k) sends k hand-written demonstrations from
``generate.demonstrations_file`` as prior user/assistant turns, chosen per seed by a hash;
``generate.chain_of_thought`` appends ``generate.cot_template`` and keeps only the text after the
last ``Answer:`` line (none: reject ``unparseable``). Both off: requests exactly as without them.

Feature knowledge: with ``generate.top_logprobs`` set, requests also ask for token
log-probabilities, and ``features.parquet`` holds them by token id of
``generate.feature_tokenizer`` (see stages/features.py). Before anything is sent or the
stand-in started, the plan is checked against ``teacher.capabilities``
(stages/teachers/capabilities.py). Answers without log-probabilities go to the rejects
(``no_logprobs``; all of them: the endpoint ignored ``logprobs`` and the stage fails), as do
answers whose tokens the tokenizer cannot map (``tokenizer_mismatch``; more than half: the
stage fails, the teacher's and the student's tokenizers differ).
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
from stages.features import FeatureTokenizer, build_features
from stages.io import content_hash, write_json, write_parquet
from stages.prompts import Prompt, final_answer, parse_choice
from stages.records import FEATURES, GENERATED, REJECT, conform, empty
from stages.teachers import capabilities
from stages.teachers.ask import ask, plan_requests
from stages.teachers.engine import Ledger, TeacherRequest, cost_usd
from stages.teachers.store import RequestStore

METHOD = "labelling"


def sampling_of(params: params_module.GenerateParams) -> dict:
    sampling = {"temperature": params.temperature, "max_tokens": params.max_tokens, "n": params.n,
                "seed": params.seed}
    if params.top_logprobs is not None:  # only then: keys of runs without log-probs stay as they were
        sampling |= {"logprobs": True, "top_logprobs": params.top_logprobs}
    return sampling


def feature_tokenizer(params: params_module.GenerateParams) -> FeatureTokenizer | None:
    """The tokenizer features are stored in, when log-probs are asked for (loaded before sending)."""
    if params.top_logprobs is None:
        return None
    if params.feature_tokenizer is None:
        raise StageError(f"generate.top_logprobs={params.top_logprobs} needs generate.feature_tokenizer: the "
                         "path or HF id of the student's tokenizer, whose ids features.parquet stores")
    return FeatureTokenizer(params.feature_tokenizer)


def split_features(rows: pl.DataFrame, rejects: pl.DataFrame, store: RequestStore, params: params_module.Params,
                   tokenizer: FeatureTokenizer) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Features of the rows; rows without usable ones move to the rejects. Fails when the
    endpoint ignored ``logprobs`` or the tokenizers clearly differ."""
    gen, teacher = params.generate, params.teacher.name
    features, dropped = build_features(rows, store, gen.top_logprobs, tokenizer)
    reasons = [reason for reason, _ in dropped.values()]
    if rows.height and reasons.count("no_logprobs") == rows.height:
        raise StageError(
            f"generate.top_logprobs={gen.top_logprobs} asked for log-probabilities, but none of the {rows.height} "
            f"answers of {teacher} has them: the endpoint ignored `logprobs` (as `transformers serve` does); use "
            "one that returns them (OpenAI, vLLM), or set teacher.capabilities.logprobs: false to be told before "
            "sending")
    mismatched = reasons.count("tokenizer_mismatch")
    if mismatched * 2 > rows.height:
        example = next(detail for reason, detail in dropped.values() if reason == "tokenizer_mismatch")
        raise StageError(
            f"{mismatched} of {rows.height} answers have tokens that generate.feature_tokenizer="
            f"{gen.feature_tokenizer} cannot map ({example}): teacher and student tokenizers differ; the feature "
            "method needs a teacher that shares the student's tokenizer")
    moved = (rows.filter(pl.col("id").is_in(list(dropped)))
             .with_columns(reason=pl.col("id").replace_strict({k: v[0] for k, v in dropped.items()}),
                           detail=pl.col("id").replace_strict({k: v[1] for k, v in dropped.items()})))
    rejects = pl.concat([rejects, conform(moved, REJECT)])
    return rows.filter(~pl.col("id").is_in(list(dropped))), rejects, features


def prompt_of(params: params_module.GenerateParams) -> Prompt:
    """The labelling prompt: templates plus the k demonstrations and the chain-of-thought instruction, if on."""
    try:
        return Prompt(params.system, params.template, params.demonstrations,
                      params.demonstrations_file if params.demonstrations else None,
                      params.cot_template if params.chain_of_thought else None)
    except ValueError as error:
        raise StageError(f"generate.demonstrations: {error}") from None


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
    chain_of_thought: bool = False,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Join each seed with its stored answer; seeds without a usable one become rejects
    (reason ``budget`` for requests the budget did not let out, listed in ``skipped``). With
    ``chain_of_thought`` the response is the text after the last ``Answer:`` line (the reasoning
    stays in the store); an answer without one is rejected as ``unparseable``."""
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
            if chain_of_thought:
                answer_text = final_answer(text)
                if answer_text is None:
                    rejects.append(base | {"reason": "unparseable", "detail": text[:100]})
                    continue
                text = answer_text
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
    features_path: Path | None = None,
) -> dict:
    """Plan, check it against the teacher's capabilities, send what the store lacks, build rows.
    ``send`` defaults to the Prefect flow; ``features_path`` to features.parquet beside ``rows_path``."""
    started = time.monotonic()
    features_path = features_path or rows_path.with_name(paths.GENERATE_FEATURES.name)
    gen = params.generate
    # Before anything is sent or the stand-in started: a plan the endpoint cannot serve costs nothing.
    capabilities.check(sampling_of(gen), capabilities.of(params.teacher), params.teacher.name)
    tokenizer = feature_tokenizer(gen)
    seeds = pl.read_parquet(seeds_path)
    prompt = prompt_of(gen)
    requests = plan(seeds, prompt, params.generate, params.teacher)
    ledger = ask(requests, params.teacher, store_path, gen.shards, send, label="generate", budget_usd=gen.budget_usd,
                 budget_tokens=gen.budget_tokens, expected_completion_tokens=gen.expected_completion_tokens)
    with RequestStore(store_path) as store:
        rows, rejects = build_rows(seeds, requests, store, ledger.errors, prompt.hash,
                                   content_hash(sampling_of(params.generate)), params.teacher.name, ledger.skipped,
                                   gen.chain_of_thought)
        features = empty(FEATURES)
        if tokenizer is not None:
            rows, rejects, features = split_features(rows, rejects, store, params, tokenizer)
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
    write_parquet(features, features_path)
    feature_tokens = int(features["token_ids"].list.len().sum() or 0)
    metrics |= {
        "feature_rows": features.height,
        "feature_bytes": features_path.stat().st_size,
        "feature_bytes_per_token": round(features_path.stat().st_size / feature_tokens, 3) if feature_tokens else None,
        "tokenizer": tokenizer.identity if tokenizer is not None else None,
    }
    return metrics


def main() -> None:
    params = params_module.load()
    metrics = run(params)
    write_json(metrics, paths.metrics("generate"))
    print(f"generate: {metrics['rows']} rows, {metrics['rejects']} rejects; "
          f"{metrics['requests_sent']} requests sent, {metrics['cache_hits']} cache hits, "
          f"${metrics['cost_usd']:.4f} spent" + ("; stopped by the budget" if metrics["stopped_by_budget"] else "")
          + (f"; {metrics['feature_rows']} feature rows, {metrics['feature_bytes_per_token']} bytes/token"
             if metrics["feature_rows"] else ""))


if __name__ == "__main__":
    guarded("generate", main)
