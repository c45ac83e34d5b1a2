"""One generation run's shared state: params, the request store, the budget left, a ledger per teacher.

Every elicitation method asks its teachers through ``Session.ask``, so that all of them share
one request store (a re-run pays only for what is missing), one hard budget (each call gets
what the earlier calls left) and one ledger (spend by teacher, for the metrics). The store is
the stage's open writable one (``open_store``): its writer lock is held for the whole stage, and
the answers a call receives are in it when the call returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

from distill.params import Params, TeacherParams
from distill.teacher.ask import ask
from distill.teacher.engine import EngineSettings, Ledger, TeacherRequest, cost_usd
from distill.teacher.probe import Probe
from distill.teacher.store import RequestStore


@dataclass
class Session:
    params: Params
    store: RequestStore  # open and writable for the whole stage (distill.teacher.store.open_store)
    send: Callable[..., Ledger]  # sends a plan: flows.teacher.run_plan, handed in by the stage's main
    settings: EngineSettings = field(default_factory=EngineSettings.from_env)  # read once, before anything starts
    ledgers: dict[str, Ledger] = field(default_factory=dict)  # teacher name -> what it cost in this run
    probes: dict[str, Probe] = field(default_factory=dict)  # teacher name -> what its probe found (one per run)
    feature_token_id: Callable[[str], int | None] | None = None  # a teacher token's id in the feature tokenizer
    # (FeatureTokenizer.id_of), for the probe when the plan stores log-probs
    pass_counts: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # (method, question) ->
    # (answers passed, answers counted) under generate.rejection
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def primary(self) -> TeacherParams:
        """Writes inputs (expansion, curation) and judges (feedback, self_knowledge, routing: judge)."""
        return self.params.teacher

    def spent(self) -> tuple[float, int]:
        """Dollars and tokens this run has spent so far, over all teachers."""
        dollars = tokens = 0
        for teacher in self.params.all_teachers:
            ledger = self.ledgers.get(teacher.name)
            if ledger is not None:
                dollars += ledger.cost_usd(teacher.price)
                tokens += ledger.prompt_tokens + ledger.completion_tokens
        for result in self.probes.values():  # the probes are paid from the same budget
            dollars, tokens = dollars + result.cost_usd, tokens + result.tokens_billed
        return dollars, tokens

    def ask(self, requests: list[TeacherRequest], teacher: TeacherParams, label: str) -> Ledger:
        """Answer ``requests`` through the store, within what the budget has left."""
        gen = self.params.generate
        dollars, tokens = self.spent()
        budget = self.params.budget
        logprobs = any(request.sampling.get("logprobs") for request in requests)
        token_id = self.feature_token_id if logprobs else None
        ledger = ask(requests, teacher, self.store, self.send, gen.shards, label=f"{label} ({teacher.name})",
                     budget_usd=budget.usd, budget_tokens=budget.tokens, spent=(dollars, tokens),
                     expected_completion_tokens=budget.expected_completion_tokens, settings=self.settings,
                     probes=self.probes, token_id=token_id)
        self.ledgers.setdefault(teacher.name, Ledger()).merge(ledger)
        return ledger


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
            "cost_usd": round(ledger.cost_usd(teacher.price), 6),
            "batches": ledger.batches, "answered_by_batch": ledger.batch_answers}
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
        "probes": {name: result.metrics() for name, result in session.probes.items()},
        "probe_cost_usd": round(sum(result.cost_usd for result in session.probes.values()), 8),
    }


def answers_cost(session: Session, rows: pl.DataFrame) -> dict:
    """What the answers behind ``rows`` cost at their teacher's online price, whether this run paid for them or
    an earlier one did (the store served them): the cost of the data, where ``cost_usd`` is this run's spending;
    and per teacher the requests and tokens behind them (the same on every rerun from the store, unlike the
    ledger's). A request answered with several choices is counted once (its rows share ``request_key`` and usage)."""
    prices = {teacher.name: teacher.price for teacher in session.params.all_teachers}
    requests = rows.unique("request_key", keep="first", maintain_order=True).filter(pl.col("teacher").is_in(prices))
    costs = [cost_usd(prompt or 0, completion or 0, prices[teacher]) for teacher, prompt, completion in
             requests.select("teacher", "prompt_tokens", "completion_tokens").iter_rows()]
    priced = requests.select("teacher", "method").with_columns(cost=pl.Series(costs, dtype=pl.Float64))

    def by(column: str) -> dict[str, float]:
        totals = priced.group_by(column, maintain_order=True).agg(pl.col("cost").sum())
        return {name: round(total, 6) for name, total in totals.iter_rows()}

    behind = requests.group_by("teacher", maintain_order=True).agg(
        pl.len().alias("requests"), pl.col("prompt_tokens").sum(), pl.col("completion_tokens").sum())
    return {"answers_cost_usd": round(sum(costs), 6), "answers_cost_by_teacher": by("teacher"),
            "answers_cost_by_method": by("method"),
            "answers_by_teacher": {teacher: {"requests": count, "prompt_tokens": prompt,
                                             "completion_tokens": completion}
                                   for teacher, count, prompt, completion in behind.iter_rows()}}

