"""The second demo task: facts about a word, asked Alpaca-style or in a chat (``task: demo.word_facts``).

``demo.words`` is exact and terse; real seed sets are not. Here an instruction ("Count the letters of the
word in the input.") applies to a word given in the input, or named in an earlier chat turn ("Here is a
word: planet" ... "Count its letters."), and the answer is a sentence ("planet has 6 letters.") that
ROUGE-L grades. Reference answers (``reference``) are worded a little differently from ``solve``'s, as a
human's would be, so the teacher scores below 1 and the gap a student closes means something.

Only the instruction wordings listed here are recognised: a prompt the table does not know stays unanswered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

RESULTS = {  # the bare fact an operation asks for
    "backwards": lambda word: word[::-1],
    "capitals": str.upper,
    "count": lambda word: str(len(word)),
    "first": lambda word: word[0],
}
SENTENCES = {  # how solve (and so the stand-in teacher) words the fact
    "backwards": "{word} backwards is {result}.",
    "capitals": "{word} in capitals is {result}.",
    "count": "{word} has {result} letters.",
    "first": "{word} starts with {result}.",
}
REFERENCES = {  # how the eval sets' reference answers word it
    "backwards": "The word {word} spelled backwards is {result}.",
    "capitals": "The word {word} in capital letters is {result}.",
    "count": "The word {word} has {result} letters.",
    "first": "The word {word} starts with the letter {result}.",
}
INSTRUCTIONS = {  # Alpaca-style: the word is the input
    "backwards": ["Spell the word in the input backwards.", "Write the word in the input in reverse order.",
                  "Reverse the letters of the word in the input."],
    "capitals": ["Write the word in the input in capital letters.", "Convert the word in the input to upper case.",
                 "Give the word in the input in uppercase."],
    "count": ["Count the letters of the word in the input.", "How many letters does the word in the input have?",
              "Give the number of letters in the word in the input."],
    "first": ["Give the first letter of the word in the input.", "What is the first letter of the word in the input?",
              "Which letter does the word in the input start with?"],
}
ASKS = {  # chat: the word was named in an earlier turn
    "backwards": ["Spell it backwards.", "Now write it in reverse order."],
    "capitals": ["Write it in capital letters.", "Now give it in uppercase."],
    "count": ["Count its letters.", "How many letters does it have?"],
    "first": ["What is its first letter?", "Which letter does it start with?"],
}
NAMINGS = ["Here is a word: {word}", "My word is {word}.", "Remember the word {word}."]  # chat's first user turn
NOTED = "Noted: {word}."  # the assistant turn after it


def _key(text: str) -> str:
    return " ".join(text.lower().split())


_OPS = {_key(text): op for table in (INSTRUCTIONS, ASKS) for op, texts in table.items() for text in texts}
# A word the user names: "word: x", "word is x", "the word x", ending the line.
_NAMED = re.compile(r"\b(?:word\s*:|word\s+is|the\s+word)\s+[\"']?([A-Za-z]+)[\"']?\s*[.!]?\s*$", re.IGNORECASE | re.M)
_INPUT = re.compile(r"^\s*(?:input\s*:\s*)?[\"']?([A-Za-z]+)[\"']?\s*$", re.IGNORECASE)


def op_of(instruction: str) -> str | None:
    """The operation an instruction asks for, when it is one of the known wordings (case and spacing aside)."""
    return _OPS.get(_key(instruction))


def word_of(input_text: str) -> str | None:
    """The input's word: a single word, optionally quoted or labelled ``Input:``."""
    match = _INPUT.match(input_text)
    return match[1] if match else None


def named_word(context_turns: Iterable[dict]) -> str | None:
    """The word the latest earlier user turn names ("Here is a word: planet"), if any."""
    found = None
    for turn in context_turns:
        content = turn.get("content")
        names = _NAMED.findall(content) if turn.get("role") == "user" and isinstance(content, str) else []
        found = names[-1] if names else found
    return found


def parse(instruction: str, input_text: str = "", context_turns: Iterable[dict] = ()) -> tuple[str, str] | None:
    """``(op, word)``: the word from the input, else from the earlier turns; None when either is missing."""
    op = op_of(instruction)
    if op is None:
        return None
    word = word_of(input_text) or named_word(context_turns)
    return None if word is None else (op, word)


def result(op: str, word: str) -> str:
    return RESULTS[op](word)


def sentence(op: str, word: str, fact: str) -> str:
    """solve's wording of ``fact`` (which may be a wrong one: the stand-in's near misses go through here)."""
    return SENTENCES[op].format(word=word, result=fact)


def solve(instruction: str, input_text: str = "", context_turns: Iterable[dict] = ()) -> str | None:
    """The answer sentence, e.g. "planet has 6 letters.", or None when the request is not part of the task.
    ``context_turns``: the earlier chat turns (``{"role", "content"}``), where a chat names the word."""
    parsed = parse(instruction, input_text, context_turns)
    return None if parsed is None else sentence(*parsed, result(*parsed))


def reference(op: str, word: str) -> str:
    """A human-worded reference answer, e.g. "The word planet has 6 letters."."""
    return REFERENCES[op].format(word=word, result=result(op, word))


# The task API (distill/task.py): ``task: demo.word_facts`` in params.yaml; grade with ROUGE-L (task.metric).


def group(instruction: str) -> str:
    """evaluate's per-group table: one group per operation."""
    return op_of(instruction) or "unknown"
