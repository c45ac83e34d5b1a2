"""Feedback: the student answers seed inputs; the teacher grades and corrects each answer.

Output: preference pairs in ``data/generate/preferences.parquet`` (``chosen`` = the teacher's
correction, ``rejected`` = the student's answer, both scores, the critique), ready for DPO and
reward modelling, and the corrections as rows (``method: feedback``) for supervised training.
Answers the teacher grades fully right give no pair (reject ``student_correct``).

``generate.feedback.focus_fraction`` < 1 spends the teacher's grading only on the inputs where
the student is least confident (lowest mean token log-probability of its own answer): the
student's weak spots, found without paying for anything.
"""

from __future__ import annotations

import polars as pl

from distill.elicit import student_inputs
from distill.elicit.answering import frames, reject
from distill.elicit.judge import grade
from distill.elicit.output import MethodOutput
from distill.elicit.session import Session
from distill.io import content_hash
from distill.measure.sampling import sample_answers
from distill.prompts import Template
from distill.records import PREFERENCE, conform

METHOD = "feedback"


def focus(seeds: pl.DataFrame, confidence: list[float], fraction: float) -> pl.DataFrame:
    """The least-confident ``fraction`` of the inputs (at least one), in their original order."""
    frame = seeds.with_columns(confidence=pl.Series(confidence, dtype=pl.Float64))
    if fraction >= 1.0:
        return frame
    keep = max(1, round(frame.height * fraction))
    chosen = set(frame.sort("confidence", "id").head(keep)["id"].to_list())
    return frame.filter(pl.col("id").is_in(chosen))


def run(session: Session, seeds: pl.DataFrame, evals: pl.DataFrame) -> MethodOutput:
    gen = session.params.generate
    student = session.params.student
    inputs = student_inputs.pick(seeds, gen.feedback.max_inputs)
    answers = sample_answers(student.model, student_inputs.prompts(inputs, student), student.seed,
                             student.max_new_tokens, student.batch_size)
    focused = focus(inputs.with_columns(answer=pl.Series([a[0].text for a in answers], dtype=pl.String)),
                    [a[0].mean_logprob for a in answers], gen.feedback.focus_fraction)
    items = list(focused.iter_rows(named=True))
    graded = grade(session, [(i["instruction"], i["input"], i["answer"]) for i in items], METHOD)
    rows, rejects, pairs = [], [], []
    template_hash = Template(session.params.judge.system, session.params.judge.template).hash
    for item, result in zip(items, graded, strict=True):
        item = item | {"input_origin": "seed", "parent_key": None}
        if result.judgement is None:
            rejects.append(reject(METHOD, item, result.request_key, result.reason, result.detail))
            continue
        judgement = result.judgement
        if judgement.score >= 1.0 or judgement.correction.strip() == item["answer"].strip():
            rejects.append(reject(METHOD, item, result.request_key, "student_correct", judgement.critique))
            continue
        if not judgement.correction:
            rejects.append(reject(METHOD, item, result.request_key, "unparseable", "empty correction"))
            continue
        pairs.append({"id": content_hash({"seed": item["id"], "rejected": item["answer"]}), "seed_id": item["id"],
                      "instruction": item["instruction"], "input": item["input"],
                      "context": item.get("context") or "", "chosen": judgement.correction,
                      "rejected": item["answer"], "score_chosen": 1.0, "score_rejected": judgement.score,
                      "critique": judgement.critique, "teacher": session.primary.name, "student": student.model,
                      "student_confidence": item["confidence"], "request_key": result.request_key})
        answer, usage = result.entry["response"], result.entry["response"].get("usage", {})
        rows.append({
            "id": content_hash({"request": result.request_key, "choice": 0}), "seed_id": item["id"],
            "source_file": item["source_file"], "source_line": item["source_line"], "method": METHOD,
            "teacher": session.primary.name, "model_requested": session.primary.model,
            "model_answered": answer.get("model", ""), "template_hash": template_hash,
            "sampling_hash": content_hash(student.model_dump()), "request_key": result.request_key,
            "response_id": answer.get("id", ""), "choice_index": 0, "created_at": result.entry["stored_at"],
            "prompt_tokens": usage.get("prompt_tokens", 0), "completion_tokens": usage.get("completion_tokens", 0),
            "finish_reason": "stop", "instruction": item["instruction"],
            "input": item["input"], "context": item.get("context") or "", "reference": item.get("reference"),
            "response": judgement.correction, "input_origin": "seed", "parent_key": None,
            "judge_score": judgement.score,
        })
    row_frame, reject_frame = frames(rows, rejects)
    preferences = conform(pl.DataFrame(pairs, schema=PREFERENCE), PREFERENCE)
    return MethodOutput(rows=row_frame, rejects=reject_frame, preferences=preferences, metrics={
        "student_answers": inputs.height, "graded": len(items), "pairs": len(pairs),
        "mean_student_score": round(sum(p["score_rejected"] for p in pairs) / len(pairs), 4) if pairs else None})
