"""Rejection sampling: of the ``generate.n`` answers a teacher gave each question, keep those that pass.

The long chain-of-thought recipes (OpenR1, OpenThoughts) ask for many answers per question and keep the ones a
verifier accepts; how many pass is the question's difficulty, which OpenThoughts found among the strongest
filters. ``generate.rejection.keep`` says what passes:

- ``verifier``: the task's verifier against the seed's reference (distill/task.py); answers it cannot check
  (no reference) are kept and left out of the pass rate;
- ``majority``: answers whose final answer (the last number, else the normalised text) is the most common one,
  when at least ``min_agreement`` of the answers give it (self-consistency, for questions without references);
- ``judge``: the primary teacher grades each answer; grades of ``min_score`` or more pass.

Every kept row records its question's ``pass_rate`` (passed / answers received, an unusable answer counts as
failed); failed answers become rejects with reason ``rejected_sample`` (a choice, not a teacher failure), and the
session keeps each question's counts for the metrics (``summary``).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from distill.entry import StageError
from distill.measure.scorers import final_number, normalise
from distill.task import load as load_task

REASON = "rejected_sample"
UNUSABLE = ("empty_answer", "unparseable")  # answers received that count as failed


def final_key(text: str) -> str:
    """What two answers must share to agree: the final number, else the normalised text."""
    number = final_number(text)
    return f"number:{number:g}" if number is not None else f"text:{normalise(text)}"


def verdicts(session, rows: list[dict], keep: str) -> list[bool | None]:
    """Per row: passed, failed, or None (cannot tell: kept, not counted)."""
    settings = session.params.generate.rejection
    if keep == "verifier":
        verify = load_task(session.params.task).verify
        if verify is None:
            raise StageError("generate.rejection.keep=verifier, but the task has no verifier: set task.verifier "
                             "(e.g. numeric, exact_match) or keep by majority or judge")
        return [verify(row["instruction"], row["response"], row["reference"]) for row in rows]
    if keep == "majority":
        by_question: dict[str, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            by_question[row["seed_id"]].append(i)
        passed: list[bool | None] = [False] * len(rows)
        for members in by_question.values():
            keys = [final_key(rows[i]["response"]) for i in members]
            winner, votes = Counter(keys).most_common(1)[0]
            if votes / len(members) >= settings.min_agreement:
                for i, key in zip(members, keys, strict=True):
                    passed[i] = key == winner
        return passed
    from distill.elicit.judge import grade  # the judge asks through the answer step: imported late

    graded = grade(session, [(row["instruction"], row["input"], row["response"]) for row in rows], "rejection")
    for row, result in zip(rows, graded, strict=True):
        row["judge_score"] = result.judgement.score if result.judgement else None
    return [None if r.judgement is None else r.judgement.score * 10 >= settings.min_score for r in graded]


def apply(session, rows: list[dict], rejects: list[dict], method: str) -> tuple[list[dict], list[dict]]:
    """Keep the answers that pass ``generate.rejection``; the rest move to the rejects. Off (``keep: all``): as is."""
    keep = session.params.generate.rejection.keep
    if keep == "all" or not rows:
        return rows, rejects
    passed = verdicts(session, rows, keep)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # seed_id -> [passed, counted]
    for row, verdict in zip(rows, passed, strict=True):
        if verdict is not None:
            counts[row["seed_id"]][0] += bool(verdict)
            counts[row["seed_id"]][1] += 1
    for failed in rejects:
        if failed["reason"] in UNUSABLE:
            counts[failed["seed_id"]][1] += 1
    kept, dropped = [], []
    for row, verdict in zip(rows, passed, strict=True):
        good, counted = counts.get(row["seed_id"], (0, 0))
        row["pass_rate"] = good / counted if counted else None
        if verdict is False:
            dropped.append({"method": method, "seed_id": row["seed_id"], "request_key": row["request_key"],
                            "source_file": row["source_file"], "source_line": row["source_line"], "reason": REASON,
                            "detail": f"{keep}: {good}/{counted} passed; choice {row['choice_index']}: "
                                      f"{row['response'][:80]!r}"})
        else:
            kept.append(row)
    for seed_id, (good, counted) in counts.items():
        session.pass_counts[(method, seed_id)] = (good, counted)
    return kept, rejects + dropped


def summary(pass_counts: dict[tuple[str, str], tuple[int, int]], keep: str) -> dict | None:
    """The metrics of rejection sampling: questions, answers, the mean pass rate and its histogram, and how
    many questions no answer passed (unsolved) or every answer passed (easy)."""
    if keep == "all":
        return None
    rates = [good / counted for good, counted in pass_counts.values() if counted]
    histogram = Counter(min(int(rate * 4), 3) for rate in rates)  # quarters; 1.0 falls in the last
    return {
        "keep": keep,
        "questions": len(rates),
        "answers": sum(counted for _, counted in pass_counts.values()),
        "passed": sum(good for good, _ in pass_counts.values()),
        "pass_rate_mean": round(sum(rates) / len(rates), 4) if rates else None,
        "pass_rate_histogram": {label: histogram.get(i, 0)
                                for i, label in enumerate(("[0, 0.25)", "[0.25, 0.5)", "[0.5, 0.75)", "[0.75, 1]"))},
        "unsolved": sum(1 for rate in rates if rate == 0),
        "solved_by_all": sum(1 for rate in rates if rate == 1),
    }
