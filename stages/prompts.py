"""Prompt rendering and answer parsing: pure functions over versioned template files."""

from __future__ import annotations

from pathlib import Path

from stages.io import content_hash


class Prompt:
    """A system + user template pair; its hash goes into every row it produced."""

    def __init__(self, system_path: str, user_path: str):
        self.system = Path(system_path).read_text(encoding="utf-8")
        self.user = Path(user_path).read_text(encoding="utf-8")
        self.hash = content_hash({"system": self.system, "user": self.user})

    def messages(self, instruction: str, input_text: str = "") -> list[dict]:
        user = self.user.format(instruction=instruction, input=input_text)
        return [{"role": "system", "content": self.system.strip()}, {"role": "user", "content": user.strip()}]


def parse_choice(choice: dict) -> str | None:
    """Labelling's parse step: the answer text, or None when there is none."""
    content = (choice.get("message") or {}).get("content")
    return content.strip() if isinstance(content, str) and content.strip() else None


def student_prompt(template: str, instruction: str, input_text: str = "") -> str:
    """What the student sees: the same text in training and in eval."""
    return template.format(instruction=instruction, input=input_text)
