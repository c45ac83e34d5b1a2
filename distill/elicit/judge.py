"""The teacher as a judge: grade answers (0-10), explain the grade, correct the answer.

Used by feedback (grade and correct the student), self_knowledge (``filter: judge``) and
``routing: judge`` (keep the best of several teachers' answers). The primary teacher judges,
with the ``judge`` section's templates, at temperature 0, through the same store and budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.elicit.answering import FAILURES, answer_with, reject
from distill.elicit.parsing import Judgement, parse_judgement
from distill.elicit.session import Session
from distill.prompts import Template, parse_choice
from distill.teacher.ask import make_request


@dataclass(frozen=True)
class Graded:
    request_key: str
    judgement: Judgement | None  # None: not graded
    reason: str | None = None  # why not: teacher_error, budget, unparseable
    detail: str = ""
    entry: dict | None = None  # the store entry of the judge's answer


def task_text(instruction: str, input_text: str) -> str:
    return instruction if not input_text else f"{instruction}\n{input_text}"


def judge_sampling(session: Session) -> dict:
    judge = session.params.judge
    return {"temperature": 0.0, "max_tokens": judge.max_tokens, "n": 1, "seed": session.params.generate.seed}


def grade(session: Session, items: list[tuple[str, str, str]], label: str) -> list[Graded]:
    """Grade each (instruction, input, answer) with the primary teacher; one ``Graded`` per item."""
    judge = session.params.judge
    template = Template(judge.system, judge.template)
    requests = [make_request(template.messages(instruction=task_text(instruction, input_text), answer=answer),
                             judge_sampling(session), session.primary)
                for instruction, input_text, answer in items]
    if not requests:
        return []
    ledger = session.ask(requests, session.primary, f"{label} judge")
    graded = []
    for request in requests:
        entry = session.store.entry(request.key)
        if entry is None:
            reason = "budget" if request.key in ledger.skipped else "teacher_error"
            detail = ledger.skipped.get(request.key) or ledger.errors.get(request.key, "not answered")
            graded.append(Graded(request.key, None, reason, detail))
            continue
        choices = entry["response"].get("choices")
        text = parse_choice(choices[0]) if choices else None
        judgement = parse_judgement(text)
        graded.append(Graded(request.key, judgement, None if judgement else "unparseable", (text or "")[:100],
                             entry))
    return graded


def answer_judged(session: Session, inputs: list[dict], method: str) -> tuple[list[dict], list[dict]]:
    """Every teacher answers every input; the judge grades each answer; the best per input is kept
    (ties: the teacher listed first). Answers the judge could not grade rank below graded ones."""
    rows, rejects = [], []
    for teacher in session.params.all_teachers:
        got, failed = answer_with(session, inputs, teacher, method)
        rows, rejects = rows + got, rejects + failed
    graded = grade(session, [(r["instruction"], r["input"], r["response"]) for r in rows], method)
    best: dict[str, dict] = {}
    for order, (row, result) in enumerate(zip(rows, graded, strict=True)):
        row["judge_score"] = result.judgement.score if result.judgement else None
        rank = (row["judge_score"] if row["judge_score"] is not None else -1.0, -order)
        current = best.get(row["seed_id"])
        if current is None or rank > current["_rank"]:
            best[row["seed_id"]] = row | {"_rank": rank}
    kept_ids = {row["id"] for row in best.values()}
    for row in rows:
        if row["id"] not in kept_ids:
            winner = best[row["seed_id"]]
            rejects.append(reject(method, row | {"id": row["seed_id"]}, row["request_key"], "not_best",
                                  f"{row['teacher']} scored {row['judge_score']}, "
                                  f"{winner['teacher']} {winner['judge_score']}"))
    answered = set(best)
    rejects = [r for r in rejects if r["reason"] not in FAILURES or r["seed_id"] not in answered]
    return [{k: v for k, v in row.items() if k != "_rank"} for row in best.values()], rejects
