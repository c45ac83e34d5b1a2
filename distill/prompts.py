"""Prompt rendering and answer parsing: pure functions over versioned template files.

Labelling options (``generate.demonstrations``, ``generate.chain_of_thought``): k hand-written
demonstrations are rendered as prior user/assistant turns, chosen per seed by a hash (so runs are
reproducible), and the chain-of-thought instruction is appended to each user message; the answer is
then the text after the last ``Answer:`` line (``final_answer``). With both off the messages, and
so the request keys, are exactly those of a plain labelling prompt.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from pathlib import Path

from distill.entry import StageError
from distill.io import content_hash
from distill.reasoning import of_message

_ANSWER_LINE = re.compile(r"^[ \t]*answer[ \t]*:(?P<answer>.*)$", re.IGNORECASE | re.MULTILINE)


class TemplateError(StageError):
    """A template field that is not a plain name the template is filled with."""


class _PlainNames(string.Formatter):
    """``str.format`` with named fields only: a template is user data, so ``{instruction.__class__}`` or
    ``{input[0]}`` must not reach into Python objects (str.format would render them), and a stray brace (literal
    JSON in a template) is one clear error instead of a KeyError."""

    def get_field(self, field_name: str, args, kwargs):  # noqa: ANN001 -- string.Formatter's signature
        if not field_name.isidentifier() or field_name not in kwargs:
            fields = ", ".join("{" + name + "}" for name in kwargs)
            raise TemplateError(f"template field {{{field_name}}} is not one of {fields}: a template fills plain "
                                "names only; write a literal brace as {{ or }}")
        return kwargs[field_name], field_name


def render(template: str, **fields: object) -> str:
    """``template`` with each ``{name}`` replaced by ``fields[name]`` and ``{{``/``}}`` as literal braces."""
    try:
        return _PlainNames().format(template, **fields)
    except ValueError as error:  # an unmatched brace: "Single '}' encountered", ...
        raise TemplateError(f"template cannot be filled: {error}; write a literal brace as {{{{ or }}}}") from None


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def load_demonstrations(path: str) -> list[dict]:
    """``{"instruction", "answer"[, "input", "reasoning"]}`` per JSONL line; a bad line is a ValueError."""
    demos = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            demo = json.loads(line)
        except ValueError as error:
            raise ValueError(f"{path}:{number}: not JSON: {error}") from None
        if (not isinstance(demo, dict) or not isinstance(demo.get("instruction"), str)
                or not isinstance(demo.get("answer"), str)):
            raise ValueError(f"{path}:{number}: expected an object with string 'instruction' and 'answer'")
        demos.append(demo)
    return demos


class Prompt:
    """A system + user template pair, plus the labelling options; its hash goes into every row it produced.

    ``demonstrations`` (k) prior turns come from ``demonstrations_path``; ``cot_path`` (None = off) is
    the chain-of-thought instruction. Each file enters the hash only when it is used.
    """

    def __init__(self, system_path: str, user_path: str, demonstrations: int = 0,
                 demonstrations_path: str | None = None, cot_path: str | None = None):
        self.system = Path(system_path).read_text(encoding="utf-8")
        self.user = Path(user_path).read_text(encoding="utf-8")
        self.k = demonstrations
        self.demos: list[dict] = []
        self.cot: str | None = None
        hashed: dict = {"system": self.system, "user": self.user}
        if demonstrations > 0:
            if demonstrations_path is None:
                raise ValueError(f"demonstrations={demonstrations} needs a demonstrations file")
            self.demos = load_demonstrations(demonstrations_path)
            if len(self.demos) < demonstrations + 1:  # one may equal the seed and is left out
                raise ValueError(f"demonstrations={demonstrations} needs at least {demonstrations + 1} "
                                 f"demonstrations in {demonstrations_path} (one may equal a seed), it has "
                                 f"{len(self.demos)}")
            hashed["demonstrations"] = {"k": demonstrations, "file": Path(demonstrations_path).read_text("utf-8")}
        if cot_path is not None:
            self.cot = Path(cot_path).read_text(encoding="utf-8").strip()
            hashed["chain_of_thought"] = self.cot
        self.hash = content_hash(hashed)

    @property
    def chain_of_thought(self) -> bool:
        return self.cot is not None

    def user_message(self, instruction: str, input_text: str = "") -> str:
        user = fill(self.user, instruction, input_text).strip()
        return user if self.cot is None else f"{user}\n\n{self.cot}"

    def chosen(self, instruction: str) -> list[dict]:
        """The k demonstrations shown with this seed: first k by a hash of (seed, demo), none equal to the seed."""
        if not self.k:
            return []
        seed = _normal(instruction)

        def rank(demo: dict) -> str:
            return hashlib.sha256(f"{seed}\x00{_normal(demo['instruction'])}".encode()).hexdigest()

        return sorted((d for d in self.demos if _normal(d["instruction"]) != seed), key=rank)[: self.k]

    def demo_answer(self, demo: dict) -> str:
        if self.cot is None:
            return demo["answer"].strip()
        reasoning = (demo.get("reasoning") or "").strip()
        return (f"{reasoning}\n" if reasoning else "") + f"Answer: {demo['answer'].strip()}"

    def messages(self, instruction: str, input_text: str = "", context: str = "") -> list[dict]:
        """System, the k demonstrations, a chat seed's earlier turns (its own system turn replaces ours), then
        the user message; with no context the messages (and so the request keys) are as they always were."""
        turns = json.loads(context) if context else []
        system = turns.pop(0)["content"] if turns and turns[0]["role"] == "system" else self.system.strip()
        messages = [{"role": "system", "content": system}]
        for demo in self.chosen(instruction):
            messages += [{"role": "user", "content": self.user_message(demo["instruction"], demo.get("input", ""))},
                         {"role": "assistant", "content": self.demo_answer(demo)}]
        return messages + turns + [{"role": "user", "content": self.user_message(instruction, input_text)}]


class Template:
    """A system + user template pair filled with named fields (``{examples}``, ``{answer}``, ...);
    its hash goes into the rows it produced, so editing a template re-asks the teacher."""

    def __init__(self, system_path: str, user_path: str):
        self.system = Path(system_path).read_text(encoding="utf-8").strip()
        self.user = Path(user_path).read_text(encoding="utf-8")
        self.hash = content_hash({"system": self.system, "user": self.user})

    def messages(self, **fields: object) -> list[dict]:
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": render(self.user, **fields).strip()}]


def parse_reasoned(choice: dict) -> tuple[str | None, str | None]:
    """``(reasoning, answer)`` of a choice: a reasoning model's thinking (its own field or a ``<think>`` block,
    distill/reasoning.py) apart from the answer text; either is None when there is none."""
    reasoning, content = of_message(choice.get("message") or {})
    return reasoning, content.strip() if isinstance(content, str) and content.strip() else None


def parse_choice(choice: dict) -> str | None:
    """Labelling's parse step: the answer text (never a reasoning model's thinking), or None when there is none."""
    return parse_reasoned(choice)[1]


def split_final_answer(text: str) -> tuple[str | None, str | None]:
    """Chain-of-thought parse step: ``(reasoning, answer)``, the text before and after the last ``Answer:`` line;
    answer None when there is none."""
    matches = list(_ANSWER_LINE.finditer(text))
    if not matches or not matches[-1]["answer"].strip():
        return None, None
    return text[: matches[-1].start()].strip() or None, matches[-1]["answer"].strip()


def final_answer(text: str) -> str | None:
    """Chain-of-thought parse step: the text after the last ``Answer:`` line; None when there is none."""
    return split_final_answer(text)[1]


def fill(template: str, instruction: str, input_text: str = "") -> str:
    """A user template filled with a seed; a template without ``{input}`` gets a non-empty input after a blank
    line, so an input is never silently lost (and a seed without one renders as it always did)."""
    text = render(template, instruction=instruction, input=input_text)
    return f"{text.rstrip()}\n\n{input_text}" if input_text and "{input}" not in template else text


def student_prompt(template: str, instruction: str, input_text: str = "") -> str:
    """What a template-less student sees for an instruction seed: the same text in training and in eval."""
    return fill(template, instruction, input_text)
