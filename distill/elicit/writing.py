"""Inputs written by the teacher (expansion, curation): parse each reply into lines, drop near
duplicates of what we already have before paying for their answers, keep the rest as inputs."""

from __future__ import annotations

from distill.elicit.novelty import NoveltyIndex
from distill.elicit.parsing import parse_lines
from distill.elicit.session import Session
from distill.io import content_hash
from distill.prompts import parse_choice
from distill.teacher.engine import TeacherRequest


def input_id(instruction: str, input_text: str = "") -> str:
    """Same id as ingest gives a seed with this text, so that dedupe and lineage treat both alike."""
    return content_hash({"instruction": instruction, "input": input_text})


def reply_lines(session: Session, requests: list[TeacherRequest], errors: dict[str, str],
                skipped: dict[str, str]) -> list[tuple[list[str] | None, str, str]]:
    """Per request: the parsed lines of all its choices, or None with a reject reason and detail."""
    replies = []
    for request in requests:
        response = session.store.get(request.key)
        if response is None:
            reason = "budget" if request.key in skipped else "teacher_error"
            replies.append((None, reason, skipped.get(request.key) or errors.get(request.key, "not answered")))
            continue
        lines: list[str] = []
        texts = [parse_choice(choice) for choice in response.get("choices", [])]
        for text in texts:
            lines += [line for line in parse_lines(text) or [] if line not in lines]
        replies.append((lines or None, "unparseable", "no lines in: " + repr((texts or [""])[0])[:120]))
    return replies


def accept_new(
    session: Session, method: str, requests: list[TeacherRequest], origins: list[str], index: NoveltyIndex,
    limit: int | None = None,
) -> tuple[list[dict], list[dict]]:
    """New inputs from the replies to ``requests`` (at most ``limit`` per reply), and the rejects:
    unparseable replies and near duplicates (of seeds, eval inputs or inputs accepted before)."""
    ledger = session.ask(requests, session.primary, method)
    inputs, rejects = [], []
    source = str(session.store.path)
    replies = reply_lines(session, requests, ledger.errors, ledger.skipped)
    for request, (lines, reason, detail), origin in zip(requests, replies, origins, strict=True):
        base = {"method": method, "request_key": request.key, "source_file": source, "source_line": None}
        if lines is None:
            rejects.append(base | {"seed_id": None, "reason": reason, "detail": f"{origin}: {detail}"})
            continue
        for line in lines[:limit]:
            match = index.nearest(line)
            if match is not None:
                rejects.append(base | {"seed_id": input_id(line), "reason": "near_duplicate",
                                       "detail": f"{line!r} ~ {match.text!r} (jaccard {match.similarity})"})
                continue
            index.add(line)
            inputs.append({"id": input_id(line), "instruction": line, "input": "", "source_file": source,
                           "source_line": None, "input_origin": origin, "parent_key": request.key})
    return inputs, rejects
