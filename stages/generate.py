"""Teacher generation: the elicitation methods listed in ``generate.methods``, run in order.

Reads:   data/ingest/{train,eval}.parquet, the templates named in params, the request store
Writes:  data/generate/rows.parquet (GENERATED: every method's knowledge examples, each row with the
         method and the teacher that wrote it), data/generate/rejects.parquet (REJECT: everything that
         did not become a row, with the reason), data/generate/features.parquet (FEATURES; empty unless
         the feature method is on), data/generate/preferences.parquet (PREFERENCE; the feedback
         method's pairs), data/store/generate.jsonl (the request store, appended), metrics/generate.json
Params:  generate, teacher, teachers
Run:     python -m stages.generate

Methods (stages/methods/): labelling (the teacher answers seeds), expansion (Self-Instruct rounds),
curation (a topic x subtopic tree), feature (labelling with token log-probabilities), feedback (the
teacher grades and corrects the student -> preference pairs), self_knowledge (the student's own
answers, filtered). Several teachers (``teachers``) share the answer step by ``generate.routing``.

Requests go through the teacher request store: a re-run pays only for keys not yet answered, and
``metrics/generate.json`` says how many were sent and how many were cache hits, by teacher. The stage
holds the store's writer lock from start to end (a second run on the same store stops, naming this
one's PID); lines of the store it cannot use are moved to ``data/store/generate.quarantine.jsonl`` and
counted in ``store_lines_quarantined`` (stages/teachers/store.py). When a
teacher's ``base_url`` is null the local stand-in is started on 127.0.0.1 while it is asked.
Inputs the teachers failed on go to the rejects; past ``generate.max_failed_fraction`` the stage
fails. Rejects that are choices, not failures (``budget``, ``near_duplicate``, ``not_best``,
``student_correct``, ``filtered``), do not count.

Cost: the expected cost is printed before each batch is sent (as ``distill estimate`` does) and
``metrics/generate.json`` records ``cost_usd`` (this run's spend at each teacher's price) and
``estimated_cost_usd``. ``generate.budget_usd`` / ``budget_tokens`` are hard caps on this run's
spending across all methods and teachers: requests that would pass them are not sent, their
inputs go to the rejects with reason ``budget`` and ``stopped_by_budget`` is true; a later run with
a higher budget pays only for the rest.

Labelling options: ``generate.demonstrations`` (k) sends k hand-written demonstrations from
``generate.demonstrations_file`` as prior user/assistant turns, chosen per seed by a hash;
``generate.chain_of_thought`` appends ``generate.cot_template`` and keeps only the text after the
last ``Answer:`` line (none: reject ``unparseable``). Both off: requests exactly as without them.

Feature knowledge: with ``feature`` in ``generate.methods`` (and ``generate.top_logprobs`` set), the
answer step's requests also ask for token log-probabilities, and ``features.parquet`` holds them by
token id of ``generate.feature_tokenizer`` (see stages/features.py). Before anything is sent or a
stand-in started, the plan is checked against every answering teacher's capabilities
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
from stages.io import write_json, write_parquet
from stages.methods import RUNNERS, to_run
from stages.methods.answering import ANSWER_METHODS, FAILURES, prompt_of, sampling_of
from stages.methods.session import Session
from stages.prompts import Prompt
from stages.records import FEATURES, REJECT, SEED, conform, empty
from stages.teachers import capabilities
from stages.teachers.ask import plan_requests
from stages.teachers.engine import EngineSettings, Ledger, TeacherRequest, cost_usd
from stages.teachers.store import RequestStore, open_store


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


def plan(
    seeds: pl.DataFrame, prompt: Prompt, params: params_module.GenerateParams, teacher: params_module.TeacherParams
) -> list[TeacherRequest]:
    """The labelling requests: one per seed, keyed for the store; pure (no I/O)."""
    return plan_requests(seeds.iter_rows(named=True), prompt, sampling_of(params), teacher)


def check_capabilities(params: params_module.Params) -> None:
    """Before anything is sent or a stand-in started: a plan a teacher cannot serve costs nothing."""
    for teacher in params.all_teachers:
        capabilities.check(sampling_of(params.generate), capabilities.of(teacher), teacher.name)


def ledger_metrics(session: Session) -> dict:
    """The ledger: totals over all teachers, and dollars, tokens and requests by teacher."""
    total = Ledger()
    by_teacher = {}
    for teacher in session.params.all_teachers:
        ledger = session.ledgers.get(teacher.name)
        if ledger is None:
            continue
        total.merge(ledger)
        by_teacher[teacher.name] = {
            "requests_sent": ledger.requests_sent, "cache_hits": ledger.cache_hits,
            "prompt_tokens": ledger.prompt_tokens, "completion_tokens": ledger.completion_tokens,
            "cost_usd": round(cost_usd(ledger.prompt_tokens, ledger.completion_tokens, teacher.price), 6)}
    return {
        "requests_planned": total.requests_sent + total.cache_hits + total.skipped_budget,
        "requests_sent": total.requests_sent,
        "cache_hits": total.cache_hits,
        "attempts": total.attempts,
        "retries_by_class": dict(total.retries),
        "failures_by_class": dict(total.failures),
        "prompt_tokens_sent": total.prompt_tokens,
        "completion_tokens_received": total.completion_tokens,
        "cost_usd": round(sum(t["cost_usd"] for t in by_teacher.values()), 6),
        "estimated_cost_usd": round(total.estimated_cost_usd, 6),
        "skipped_budget": total.skipped_budget,
        "stopped_by_budget": total.skipped_budget > 0,
        "by_teacher": by_teacher,
    }


def elicit(session: Session, seeds: pl.DataFrame, evals: pl.DataFrame, tokenizer: FeatureTokenizer | None
           ) -> tuple[dict, pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Run the methods of ``generate.methods``: their outputs by method, then rows, rejects, preferences and
    features (answers without usable log-probs move to the rejects)."""
    outputs = {method: RUNNERS[method](session, seeds, evals) for method in to_run(session.params.generate.methods)}
    rows = pl.concat([out.rows for out in outputs.values()])
    rejects = pl.concat([out.rejects for out in outputs.values()])
    preferences = pl.concat([out.preferences for out in outputs.values()])
    features = empty(FEATURES)
    if tokenizer is not None:
        answered = rows.filter(pl.col("method").is_in(ANSWER_METHODS))
        kept, rejects, features = split_features(answered, rejects, session.store, session.params, tokenizer)
        rows = pl.concat([kept, rows.filter(~pl.col("method").is_in(ANSWER_METHODS))])
    return outputs, rows, rejects, preferences, features


def run(
    params: params_module.Params,
    send: Callable[..., Ledger],
    seeds_path: Path = paths.INGEST_TRAIN,
    rows_path: Path = paths.GENERATE_ROWS,
    rejects_path: Path = paths.GENERATE_REJECTS,
    store_path: Path = paths.GENERATE_STORE,
    features_path: Path | None = None,
    evals_path: Path | None = None,
    preferences_path: Path | None = None,
) -> dict:
    """Run the methods of ``generate.methods``; write rows, rejects, features and preferences.
    ``send`` sends a plan of requests (the Prefect teacher flow, from main); ``features_path`` and
    ``preferences_path`` default to files beside ``rows_path``, ``evals_path`` to eval.parquet beside
    ``seeds_path`` (no eval inputs if absent)."""
    started = time.monotonic()
    settings = EngineSettings.from_env()  # first: a bad DISTILL_* value fails before anything starts
    features_path = features_path or rows_path.with_name(paths.GENERATE_FEATURES.name)
    preferences_path = preferences_path or rows_path.with_name(paths.GENERATE_PREFERENCES.name)
    evals_path = evals_path or seeds_path.with_name(paths.INGEST_EVAL.name)
    gen = params.generate
    check_capabilities(params)
    tokenizer = feature_tokenizer(gen)
    seeds = pl.read_parquet(seeds_path)
    evals = pl.read_parquet(evals_path) if evals_path.exists() else empty(SEED)
    with open_store(store_path, settings.store_wait_s) as store:  # the writer lock, held until the outputs are written
        session = Session(params, store, send, settings)
        outputs, rows, rejects, preferences, features = elicit(session, seeds, evals, tokenizer)
        failed = rejects.filter(pl.col("reason").is_in(FAILURES)).height
        failed_fraction = failed / max(rows.height + failed, 1)
        metrics = ledger_metrics(session) | {
            "methods": {method: out.metrics | {"rows": out.rows.height, "rejects": out.rejects.height}
                        for method, out in outputs.items()},
            "rows": rows.height,
            "rows_by_teacher": dict(rows["teacher"].value_counts().iter_rows()),
            "rejects": rejects.height,
            "rejects_by_reason": dict(rejects["reason"].value_counts().iter_rows()),
            "preference_pairs": preferences.height,
            "failed_fraction": round(failed_fraction, 4),
            "budget_usd": gen.budget_usd,
            "budget_tokens": gen.budget_tokens,
            "template_hash": prompt_of(gen).hash,
            "store_lines_quarantined": len(store.quarantined),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "wall_s": round(time.monotonic() - started, 2),
        }
        if failed_fraction > params.generate.max_failed_fraction:
            raise StageError(
                f"{failed} of {rows.height + failed} inputs got no usable answer ({failed_fraction:.1%} > "
                f"generate.max_failed_fraction={params.generate.max_failed_fraction}); answers received are "
                f"kept in {store_path}, reasons by class: {metrics['rejects_by_reason']}"
            )
        write_parquet(rows, rows_path)
        write_parquet(rejects, rejects_path)
        write_parquet(features, features_path)
        write_parquet(preferences, preferences_path)
        feature_tokens = int(features["token_ids"].list.len().sum() or 0)
        metrics |= {
            "feature_rows": features.height,
            "feature_bytes": features_path.stat().st_size,
            "feature_bytes_per_token": (round(features_path.stat().st_size / feature_tokens, 3)
                                        if feature_tokens else None),
            "tokenizer": tokenizer.identity if tokenizer is not None else None,
        }
        return metrics


def main() -> None:
    from flows.teacher import run_plan  # the orchestrator, handed to the library

    params = params_module.load()
    metrics = run(params, run_plan)
    write_json(metrics, paths.metrics("generate"))
    by_method = ", ".join(f"{name} {m['rows']}" for name, m in metrics["methods"].items())
    print(f"generate: {metrics['rows']} rows ({by_method}), {metrics['rejects']} rejects; "
          f"{metrics['requests_sent']} requests sent, {metrics['cache_hits']} cache hits, "
          f"${metrics['cost_usd']:.4f} spent" + ("; stopped by the budget" if metrics["stopped_by_budget"] else "")
          + (f"; {metrics['feature_rows']} feature rows, {metrics['feature_bytes_per_token']} bytes/token"
             if metrics["feature_rows"] else ""))


if __name__ == "__main__":
    guarded("generate", main)
