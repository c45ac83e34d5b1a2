"""Parse steps for the teacher's free-text replies: lists of lines, and JSON grades.

A reply that yields nothing usable is ``None`` here and a reject with reason ``unparseable``
in the stage; nothing is dropped silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_BULLET = re.compile(r"^\s*(?:[-*\u2022]\s+|\(?\d{1,3}[.)]\s+)")
MAX_LINE_CHARS = 2000


def parse_lines(text: str | None) -> list[str] | None:
    """One item per line: bullets and numbering stripped, blank lines and preambles ("...:") dropped,
    repeats kept once. None when no item is left."""
    if not text:
        return None
    items: list[str] = []
    for line in text.splitlines():
        item = _BULLET.sub("", line).strip().strip('"').strip()
        if item and not item.endswith(":") and len(item) <= MAX_LINE_CHARS and item not in items:
            items.append(item)
    return items or None


@dataclass(frozen=True)
class Judgement:
    score: float  # the grade in [0, 1] (the template asks for 0-10)
    critique: str
    correction: str


def parse_judgement(text: str | None) -> Judgement | None:
    """The first JSON object in the reply with a numeric ``score`` in [0, 10] and string ``critique`` and
    ``correction``; None otherwise (no JSON, wrong types, score out of range)."""
    if not text or "{" not in text:
        return None
    try:
        data, _ = json.JSONDecoder().raw_decode(text[text.index("{"):])
    except (ValueError, RecursionError):  # a reply nested deeper than the decoder recurses is no grade either
        return None
    if not isinstance(data, dict):
        return None
    score, critique, correction = data.get("score"), data.get("critique", ""), data.get("correction")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 10:
        return None
    if not isinstance(critique, str) or not isinstance(correction, str):
        return None
    return Judgement(round(float(score) / 10, 4), critique.strip(), correction.strip())
