"""Teacher generation: the elicitation methods listed in ``generate.elicit``, run in order.

Reads:   data/ingest/{train,eval}.parquet, the templates named in params, data/store/generate.jsonl
Writes:  data/generate/rows.parquet (GENERATED: each row with the method and teacher that wrote it),
         data/generate/rejects.parquet (REJECT: what did not become a row, and why),
         data/generate/features.parquet (FEATURES: teacher log-probs; empty without ``feature``),
         data/generate/preferences.parquet (PREFERENCE: feedback's pairs), the request store (appended),
         metrics/generate.json (with what this run sent and spent), logs/generate.json (its wall time)
Params:  generate, task, student, teacher, teachers, budget, judge; and cluster (where the teacher's shards run,
         flows/scale.py), deliberately not a DVC param: it never changes an answer

Methods (distill/elicit/): labelling, expansion, curation, feature, feedback, self_knowledge; several
teachers share the answer step by ``generate.routing``. Every request goes through the request store
(distill/teacher/store.py): a re-run pays only for keys not yet answered, and the stage holds the
store's writer lock until its outputs are written. Before anything is sent, the plan is checked
against each teacher's capabilities and the budget (``budget.usd`` / ``budget.tokens``);
past ``generate.max_failed_fraction`` of failed inputs the stage fails, keeping every paid answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import polars as pl

from distill import params as params_module
from distill import paths, run_log
from distill.elicit import check_capabilities, elicit, rejection
from distill.elicit.answering import FAILURES, prompt_of
from distill.elicit.features import feature_tokenizer, size_metrics
from distill.elicit.session import Session, answers_cost, ledger_metrics
from distill.entry import StageError, guarded
from distill.io import write_json, write_parquet
from distill.teacher.engine import EngineSettings, Ledger
from distill.teacher.store import RequestStore, open_store

OUTPUTS = {"rows": paths.GENERATE_ROWS, "rejects": paths.GENERATE_REJECTS, "features": paths.GENERATE_FEATURES,
           "preferences": paths.GENERATE_PREFERENCES}


def run(params: params_module.Params, seeds: pl.DataFrame, evals: pl.DataFrame, store: RequestStore,
        send: Callable[..., Ledger], settings: EngineSettings) -> tuple[dict[str, pl.DataFrame], dict]:
    """The methods' frames (``OUTPUTS``' keys) and the metrics. ``store`` is open and locked; ``send`` sends
    a plan of requests (the Prefect teacher flow, handed in by main)."""
    check_capabilities(params)  # a plan a teacher cannot serve costs nothing
    tokenizer = feature_tokenizer(params)
    session = Session(params, store, send, settings, feature_token_id=tokenizer.id_of if tokenizer else None)
    outputs, rows, rejects, preferences, features = elicit(session, seeds, evals, tokenizer)
    failed = rejects.filter(pl.col("reason").is_in(FAILURES)).height
    failed_fraction = failed / max(rows.height + failed, 1)
    metrics = ledger_metrics(session) | answers_cost(session, rows) | {
        "elicit": {method: out.metrics | {"rows": out.rows.height, "rejects": out.rejects.height}
                    for method, out in outputs.items()},
        "rows": rows.height,
        "rows_by_teacher": dict(rows["teacher"].value_counts().iter_rows()),
        "rejects": rejects.height,
        "rejects_by_reason": dict(rejects["reason"].value_counts().iter_rows()),
        "preference_pairs": preferences.height,
        "rejection": rejection.summary(session.pass_counts, params.generate.rejection.keep),
        "failed_fraction": round(failed_fraction, 4),
        "budget": {"usd": params.budget.usd, "tokens": params.budget.tokens},
        "template_hash": prompt_of(params.generate).hash,
        "store_lines_quarantined": len(store.quarantined),
        "tokenizer": tokenizer.identity if tokenizer is not None else None,
    }
    if failed_fraction > params.generate.max_failed_fraction:
        raise StageError(
            f"{failed} of {rows.height + failed} inputs got no usable answer ({failed_fraction:.1%} > "
            f"generate.max_failed_fraction={params.generate.max_failed_fraction}); answers received are "
            f"kept in {store.path}, reasons by class: {metrics['rejects_by_reason']}")
    return {"rows": rows, "rejects": rejects, "features": features, "preferences": preferences}, metrics


def main() -> None:
    from flows.teacher import run_plan  # the orchestrator, handed to the library

    started = time.monotonic()
    params = params_module.load()
    settings = EngineSettings.from_env()  # a bad DISTILL_* value fails before anything starts
    seeds, evals = pl.read_parquet(paths.INGEST_TRAIN), pl.read_parquet(paths.INGEST_EVAL)
    check_capabilities(params)  # before the store is opened or a stand-in started (run checks again, cheaply)
    with open_store(paths.GENERATE_STORE, settings.store_wait_s) as store:  # locked until the outputs are written
        send = partial(run_plan, cluster=params.cluster.model_dump())  # where shards run: not a DVC param
        frames, metrics = run(params, seeds, evals, store, send, settings)
        for name, frame in frames.items():
            write_parquet(frame, OUTPUTS[name])
    metrics |= size_metrics(frames["features"], paths.GENERATE_FEATURES)
    write_json(metrics, paths.metrics("generate"))
    run_log.record("generate", started)
    by_method = ", ".join(f"{name} {m['rows']}" for name, m in metrics["elicit"].items())
    print(f"generate: {metrics['rows']} rows ({by_method}), {metrics['rejects']} rejects; "
          f"{metrics['requests_sent']} requests sent, {metrics['cache_hits']} cache hits, "
          f"${metrics['cost_usd']:.4f} spent" + ("; stopped by the budget" if metrics["stopped_by_budget"] else "")
          + (f"; {metrics['feature_rows']} feature rows, {metrics['feature_bytes_per_token']} bytes/token"
             if metrics["feature_rows"] else ""))


if __name__ == "__main__":
    guarded("generate", main)
