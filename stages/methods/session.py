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

from stages.params import Params, TeacherParams
from stages.teachers.ask import ask
from stages.teachers.engine import EngineSettings, Ledger, TeacherRequest, cost_usd
from stages.teachers.store import RequestStore


@dataclass
class Session:
    params: Params
    store: RequestStore  # open and writable for the whole stage (stages.teachers.store.open_store)
    send: Callable[..., Ledger]  # sends a plan: flows.teacher.run_plan, handed in by the stage's main
    settings: EngineSettings = field(default_factory=EngineSettings.from_env)  # read once, before anything starts
    ledgers: dict[str, Ledger] = field(default_factory=dict)  # teacher name -> what it cost in this run
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
                dollars += cost_usd(ledger.prompt_tokens, ledger.completion_tokens, teacher.price)
                tokens += ledger.prompt_tokens + ledger.completion_tokens
        return dollars, tokens

    def ask(self, requests: list[TeacherRequest], teacher: TeacherParams, label: str) -> Ledger:
        """Answer ``requests`` through the store, within what the budget has left."""
        gen = self.params.generate
        dollars, tokens = self.spent()
        budget_usd = None if gen.budget_usd is None else max(gen.budget_usd - dollars, 0.0)
        budget_tokens = None if gen.budget_tokens is None else max(gen.budget_tokens - tokens, 0)
        ledger = ask(requests, teacher, self.store, self.send, gen.shards, label=f"{label} ({teacher.name})",
                     budget_usd=budget_usd, budget_tokens=budget_tokens,
                     expected_completion_tokens=gen.expected_completion_tokens, settings=self.settings)
        self.ledgers.setdefault(teacher.name, Ledger()).merge(ledger)
        return ledger
