"""A judge's win rate of one system's answers against the teacher's: for open-ended tasks, where no reference
metric says which of two wordings is better, the teacher compares them (templates/judge/pairwise.txt).

Judges favour a position; each pair is asked in both orders (the system as A, then as B) and the two verdicts
averaged, so a bias toward either position cancels. The share of pairs whose orders agree says how much of
the verdict was the position. Asked greedily through its own request store, so a re-run pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from distill import params as params_module
from distill.prompts import Template, parse_choice
from distill.teacher.ask import ask, make_request
from distill.teacher.engine import EngineSettings, Ledger
from distill.teacher.store import open_store

TEMPLATE = "templates/judge/pairwise.txt"
VERDICTS = ("a", "b", "tie")


def verdict(text: str | None) -> str | None:
    """"a", "b" or "tie": the reply's first word, case and punctuation aside; None when it is anything else."""
    first = (text or "").split(maxsplit=1)[:1]
    word = first[0].strip(".,;:!\"'`*").lower() if first else ""
    return word if word in VERDICTS else None


def reply(response: dict | None) -> str | None:
    """The stored answer's text (None when the request failed or the answer is empty)."""
    choices = (response or {}).get("choices") or []
    return parse_choice(choices[0]) if choices else None


def score(first: str, second: str) -> tuple[float, float]:
    """The system's score in each order (first: it was A; second: it was B): 1 win, 0.5 tie, 0 loss."""
    win = {"a": 1.0, "tie": 0.5, "b": 0.0}
    return win[first], 1.0 - win[second]


def win_rate(
    items: list[tuple[str, str | None, str | None]],
    params: params_module.Params,
    store_path: Path,
    send: Callable[..., Ledger],
    template_path: str = TEMPLATE,
) -> dict:
    """The system's win rate against the teacher over ``items`` (task text, system answer, teacher answer).

    Per item and order the system scores 1 for a win, 0.5 for a tie, 0 for a loss; the item scores the mean of
    its two orders. A missing system answer is a loss (nothing is asked); a missing teacher answer skips the item
    (``skipped``); an item whose either verdict does not parse (or never came) is left out (``unparsed``).
    ``win_rate`` is the mean over the ``pairs`` scored (None when none), ``position_consistency`` the share of
    judged items whose two orders agree (None when none)."""
    template = Template(params.judge.system, template_path)
    sampling = {"temperature": 0.0, "max_tokens": 4, "n": 1, "seed": params.generate.seed}
    judged = [(task, mine, theirs) for task, mine, theirs in items if mine is not None and theirs is not None]
    requests = [make_request(template.messages(instruction=task, answer_a=a, answer_b=b), sampling, params.teacher)
                for task, mine, theirs in judged for a, b in ((mine, theirs), (theirs, mine))]
    scores = [0.0] * sum(1 for _, mine, theirs in items if mine is None and theirs is not None)
    agreed, unparsed, ledger = 0, 0, Ledger()
    settings = EngineSettings.from_env()  # a bad DISTILL_* value fails before anything starts
    with open_store(store_path, settings.store_wait_s) as store:
        if requests:
            ledger = ask(requests, params.teacher, store, send, label="pairwise", settings=settings)
        replies = [verdict(reply(store.get(request.key))) for request in requests]
    for first, second in zip(replies[::2], replies[1::2], strict=True):
        if first is None or second is None:
            unparsed += 1
            continue
        as_a, as_b = score(first, second)
        scores.append((as_a + as_b) / 2)
        agreed += as_a == as_b
    consistent = len(judged) - unparsed
    return {"win_rate": sum(scores) / len(scores) if scores else None, "pairs": len(scores), "unparsed": unparsed,
            "position_consistency": agreed / consistent if consistent else None,
            "skipped": sum(1 for item in items if item[2] is None),
            "requests_sent": ledger.requests_sent, "cache_hits": ledger.cache_hits}

