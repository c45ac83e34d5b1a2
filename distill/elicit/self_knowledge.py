"""Self-knowledge: the student samples answers to seed inputs; a filter keeps the good ones.

``generate.self_knowledge.filter``:
- ``verifier``: a checker function (``module:function(instruction, answer[, reference]) -> bool``; null:
  the task's verifier) keeps the answers it accepts, given the seed's reference where it has one;
- ``consistency``: the most frequent answer is kept when at least ``min_agreement`` of the
  samples agree (self-consistency; no teacher, no checker);
- ``judge``: the teacher grades each distinct answer and those at or above ``min_score`` are kept.

Kept answers become rows with ``method: self_knowledge`` and ``teacher: student``: marked for
self-training. The others go to the rejects as ``filtered`` with the filter's reason.
"""

from __future__ import annotations

import importlib
from collections import Counter
from pathlib import Path

import polars as pl

from distill.elicit import student_inputs
from distill.elicit.answering import frames, reject
from distill.elicit.judge import grade
from distill.elicit.output import MethodOutput
from distill.elicit.session import Session
from distill.entry import StageError
from distill.io import content_hash
from distill.measure.sampling import Sample, sample_answers
from distill.params import TaskParams
from distill.task import Verify, with_reference
from distill.task import load as load_task

METHOD = "self_knowledge"
WRITER = "student"


def load_verifier(spec: str) -> Verify:
    """The checker ``module:function``, taking (instruction, answer) or (instruction, answer, reference)."""
    module_name, _, function_name = spec.partition(":")
    try:
        return with_reference(getattr(importlib.import_module(module_name), function_name))
    except (ImportError, AttributeError, ValueError) as error:
        raise StageError(f"generate.self_knowledge.verifier={spec!r}: expected module:function, {error}") from None


def task_verifier(task: TaskParams | str | None) -> Verify:
    """The task's verifier (distill/task.py); a task without one cannot filter by verifier."""
    verify = load_task(task).verify
    if verify is None:
        module = task.module if isinstance(task, TaskParams) else task
        raise StageError(f"generate.self_knowledge.filter=verifier, but task {module!r} has no verifier: "
                         "set task.verifier, name one in generate.self_knowledge.verifier, or filter by "
                         "consistency or judge")
    return verify


def consistent(samples: list[Sample], min_agreement: float) -> tuple[str | None, str]:
    """The majority answer if enough samples agree (ties: the first sampled), and the reason."""
    counts = Counter(s.text for s in samples if s.text)
    if not counts:
        return None, "every sample was empty"
    answer, votes = counts.most_common(1)[0]
    share = votes / len(samples)
    if share < min_agreement:
        return None, f"best answer {answer!r} has {votes}/{len(samples)} votes < min_agreement {min_agreement}"
    return answer, f"{votes}/{len(samples)} votes"


def candidates(session: Session, items: list[dict], samples: list[list[Sample]]
               ) -> tuple[list[tuple[dict, str, float | None, str | None]], list[dict]]:
    """(input, kept answer, judge score, judge key) per kept answer, and the rejects, by the filter."""
    settings = session.params.generate.self_knowledge
    kept, rejects = [], []
    if settings.filter == "consistency":
        for item, drawn in zip(items, samples, strict=True):
            answer, why = consistent(drawn, settings.min_agreement)
            if answer is None:
                rejects.append(reject(METHOD, item, None, "filtered", f"consistency: {why}"))
            else:
                kept.append((item, answer, None, None))
        return kept, rejects
    distinct = [(item, text) for item, drawn in zip(items, samples, strict=True)
                for text in dict.fromkeys(s.text for s in drawn)]
    if settings.filter == "verifier":
        check = load_verifier(settings.verifier) if settings.verifier else task_verifier(session.params.task)
        for item, text in distinct:
            if text and check(item["instruction"], text, item.get("reference")):
                kept.append((item, text, None, None))
            else:
                rejects.append(reject(METHOD, item, None, "filtered", f"verifier: rejected {text!r}"[:200]))
        return kept, rejects
    graded = grade(session, [(item["instruction"], item["input"], text) for item, text in distinct], METHOD)
    for (item, text), result in zip(distinct, graded, strict=True):
        if result.judgement is None:
            rejects.append(reject(METHOD, item, result.request_key, result.reason, result.detail))
        elif result.judgement.score * 10 < settings.min_score:
            rejects.append(reject(METHOD, item, result.request_key, "filtered",
                                  f"judge: {text!r} scored {result.judgement.score * 10:g} < {settings.min_score}"))
        else:
            kept.append((item, text, result.judgement.score, result.request_key))
    return kept, rejects


def run(session: Session, seeds: pl.DataFrame, evals: pl.DataFrame) -> MethodOutput:
    gen = session.params.generate
    student, settings = session.params.student, gen.self_knowledge
    inputs = student_inputs.pick(seeds, settings.max_inputs)
    samples = sample_answers(student.model, student_inputs.prompts(inputs, student), student.seed,
                             student.max_new_tokens, student.batch_size, settings.samples, settings.temperature)
    items = [row | {"input_origin": "seed", "parent_key": None} for row in inputs.iter_rows(named=True)]
    kept, rejects = candidates(session, items, samples)
    sampling_hash = content_hash(student.model_dump() | settings.model_dump())
    template_hash = content_hash(Path(student.prompt_template).read_text(encoding="utf-8"))
    rows = [{
        "id": content_hash({"method": METHOD, "seed": item["id"], "answer": text}), "seed_id": item["id"],
        "source_file": item["source_file"], "source_line": item["source_line"], "method": METHOD, "teacher": WRITER,
        "model_requested": student.model, "model_answered": student.model,
        "template_hash": template_hash, "sampling_hash": sampling_hash,
        "request_key": judge_key, "response_id": "", "choice_index": 0, "created_at": session.started_at,
        "prompt_tokens": 0, "completion_tokens": 0, "finish_reason": "stop", "instruction": item["instruction"],
        "input": item["input"], "response": text, "input_origin": "seed", "parent_key": None, "judge_score": score,
    } for item, text, score, judge_key in kept]
    row_frame, reject_frame = frames(rows, rejects)
    return MethodOutput(rows=row_frame, rejects=reject_frame, metrics={
        "inputs": inputs.height, "samples": inputs.height * settings.samples, "kept": len(rows),
        "filter": settings.filter})
