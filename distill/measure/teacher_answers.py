"""The teacher on the held-out split: its answers, the ceiling a student is measured against, and (with
``generate.top_logprobs``) its top-k log-probs on them, what the held-out KL compares with.

Asked exactly as generation asks (``generate.template``, ``system``, ``max_tokens``, ``seed``), greedily,
through its own request store, so a re-run pays nothing. An answer is the message's content without its reasoning
(``parse_choice``: a reasoning_content field or an inline think block is never scored).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

from distill import params as params_module
from distill.elicit.features import FeatureTokenizer, extract
from distill.prompts import Prompt, parse_choice
from distill.records import FEATURES, conform
from distill.teacher import capabilities
from distill.teacher.ask import ask, plan_requests
from distill.teacher.engine import EngineSettings, Ledger
from distill.teacher.store import open_store


def teacher_answers(
    evals: pl.DataFrame, params: params_module.Params, store_path: Path, send: Callable[..., Ledger]
) -> tuple[list[str | None], dict, pl.DataFrame]:
    """The teacher's answers to the eval inputs, through its own request store, and (when generate.top_logprobs
    is set) its top-k log-probs on them by token id (FEATURES, by eval id): what the held-out KL compares with."""
    prompt = Prompt(params.generate.system, params.generate.template)
    sampling = {"temperature": 0.0, "max_tokens": params.generate.max_tokens, "n": 1, "seed": params.generate.seed}
    k = params.generate.top_logprobs
    if k:
        sampling |= {"logprobs": True, "top_logprobs": k}
        capabilities.check(sampling, params.teacher.capabilities, params.teacher.name)
    requests = plan_requests(evals.iter_rows(named=True), prompt, sampling, params.teacher)
    answers, features = [], []
    tokenizer = FeatureTokenizer(params.feature_tokenizer) if k else None
    settings = EngineSettings.from_env()  # a bad DISTILL_* value fails before anything starts
    with open_store(store_path, settings.store_wait_s) as store:
        ledger = ask(requests, params.teacher, store, send, label="evaluate", settings=settings)
        for row_id, request in zip(evals["id"], requests, strict=True):
            response = store.get(request.key)
            choice = response["choices"][0] if response and response.get("choices") else None
            answers.append(parse_choice(choice) if choice else None)
            content = ((choice or {}).get("logprobs") or {}).get("content")
            found = extract(content, k, tokenizer) if tokenizer and content else None
            if isinstance(found, dict):
                features.append({"id": row_id, "tokenizer": tokenizer.identity, "k": k} | found)
    cost = {"requests_sent": ledger.requests_sent, "cache_hits": ledger.cache_hits,
            "store_lines_quarantined": len(store.quarantined)}
    return answers, cost, conform(pl.DataFrame(features, schema=FEATURES), FEATURES)
