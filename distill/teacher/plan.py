"""The plan file: the requests one stage hands to the sender (the Prefect teacher flow, flows/teacher.py).

A file rather than a flow parameter, because Prefect's API stores parameters and the plan holds every
prompt: it is written 0600 in the stage's private scratch (distill/lifetime.py) and read by the sender.
"""

from __future__ import annotations

import json
from pathlib import Path

from distill.lifetime import private_file
from distill.teacher.engine import TeacherRequest


def write_plan(requests: list[TeacherRequest], path: Path) -> None:
    """The plan file, 0600: it holds every prompt."""
    with open(private_file(path), "w", encoding="utf-8") as handle:
        for request in requests:
            record = {"key": request.key, "model": request.model, "messages": request.messages,
                      "sampling": request.sampling, "limit_field": request.limit_field,
                      "prompt_tokens": request.prompt_tokens}
            handle.write(json.dumps(record) + "\n")


def read_plan(path: Path) -> list[TeacherRequest]:
    with path.open(encoding="utf-8") as handle:
        return [TeacherRequest(**json.loads(line)) for line in handle]


def unique(requests: list[TeacherRequest]) -> list[TeacherRequest]:
    """One request per key, in first-seen order: two seeds that make the same request are one request
    (the key hashes the whole request, so requests with one key are equal)."""
    return list({request.key: request for request in requests}.values())
