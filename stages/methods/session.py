"""One generation run's shared state: params, the request store, the budget left, a ledger per teacher.

Every elicitation method asks its teachers through ``Session.ask``, so that all of them share
one request store (a re-run pays only for what is missing), one hard budget (each call gets
what the earlier calls left) and one ledger (spend by teacher, for the metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from stages.params import Params, TeacherParams
from stages.teachers.ask import ask
from stages.teachers.engine import Ledger, TeacherRequest, cost_usd
from stages.teachers.store import RequestStore


@dataclass
class Session:
    params: Params
    store_path: Path
    send: Callable[..., Ledger] | None = None  # None: the Prefect teacher flow
    ledgers: dict[str, Ledger] = field(default_factory=dict)  # teacher name -> what it cost in this run
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    _store: RequestStore | None = field(default=None, repr=False)  # read-only, reloaded only after new answers

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
        ledger = ask(requests, teacher, self.store_path, gen.shards, self.send, label=f"{label} ({teacher.name})",
                     budget_usd=budget_usd, budget_tokens=budget_tokens,
                     expected_completion_tokens=gen.expected_completion_tokens)
        self.ledgers.setdefault(teacher.name, Ledger()).merge(ledger)
        if ledger.requests_sent:
            self._store = None  # new answers were appended: the next read loads them
        return ledger

    def store(self) -> RequestStore:
        """The request store, read-only, for building rows from the answers: loaded once, and again only
        after a call sent requests (loading parses the whole file)."""
        if self._store is None:
            self._store = RequestStore(self.store_path, read_only=True)
        return self._store
