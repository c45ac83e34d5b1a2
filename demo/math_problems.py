"""The math demo task: grade-school word problems with exact integer answers (``task: demo.math_problems``).

The word skill checks letters; real distillation targets are often arithmetic with a worked solution (GSM8K).
These problems are that in miniature: a quantity that one, two or three operations change ("Ava has 5 apples.
Ava buys 7 more apples. How many apples does Ava have now?"), small numbers (2..20, every result in 0..100),
so a tiny student can learn them, and the number of operations is the difficulty (``group``). Grade with the
built-in ``numeric`` scorer (``task.metric: numeric``), which reads the answer's last number.

The text is written from templates and read back by ``solve``, which the stand-in teacher needs to answer: it
finds a problem anywhere in a prompt (after an instruction, inside an ``### Instruction:`` wrapper) and
ignores what is around it. Only the wordings listed here are recognised.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache

NAMES = ["Ava", "Ben", "Cara", "Dan", "Eli", "Finn", "Gia", "Hugo", "Ivy", "Jack", "Kim", "Leo", "Mia", "Noah",
         "Olga", "Paul", "Rosa", "Sam", "Tara", "Uma"]
THINGS = ["apples", "pencils", "marbles", "stickers", "cookies", "coins", "books", "shells", "cards", "stamps",
          "eggs", "beads", "crayons", "balloons", "buttons", "plums"]
STARTS = ["{name} has {n} {things}.", "{name} starts with {n} {things}.", "{name} collects {n} {things}."]
MOVES = {  # one operation each; {n} is its operand
    "+": ["{name} buys {n} more {things}.", "{name} finds {n} more {things}.",
          "A friend gives {name} {n} more {things}.", "{name} gets {n} more {things}."],
    "-": ["{name} gives away {n} {things}.", "{name} loses {n} {things}.", "{name} sells {n} {things}.",
          "{name} uses {n} {things}."],
    "*": ["{name} now has {n} times as many {things} as before.", "The number of {things} {name} has grows {n} times."],
}
QUESTIONS = ["How many {things} does {name} have now?", "How many {things} does {name} have in the end?"]
LEFT = "How many {things} does {name} have left?"  # asked only after taking some away
THEN = "Then "  # may open a move after the first
LOW, HIGH, MAX_RESULT, MAX_FACTOR = 2, 20, 100, 3  # operands in LOW..HIGH (factors up to MAX_FACTOR), results <= 100
WEIGHTS = {"+": 4, "-": 4, "*": 2}  # how often each operation is drawn, where it fits


@dataclass(frozen=True)
class Problem:
    instruction: str
    answer: int
    steps: int  # operations: the difficulty
    reasoning: str  # the step lines, e.g. "5 + 7 = 12."


@dataclass(frozen=True)
class Solution:
    start: int
    moves: tuple[tuple[str, int], ...]  # (operation, operand) in order

    @property
    def steps(self) -> int:
        return len(self.moves)

    @property
    def lines(self) -> list[str]:
        return worked(self.start, self.moves)[0]

    @property
    def answer(self) -> int:
        return worked(self.start, self.moves)[1]


def apply(op: str, value: int, operand: int) -> int:
    return {"+": value + operand, "-": value - operand, "*": value * operand}[op]


def worked(start: int, moves: tuple[tuple[str, int], ...], slip_at: int | None = None, slip_by: int = 0
           ) -> tuple[list[str], int]:
    """The step lines ("5 + 7 = 12.") and the result. A slip makes step ``slip_at``'s result off by ``slip_by``,
    and the later steps carry the wrong value on, as a solver's slip would."""
    values = results(start, moves, slip_at, slip_by)
    lines = [f"{values[i]} {op} {operand} = {values[i + 1]}." for i, (op, operand) in enumerate(moves)]
    return lines, values[-1]


def results(start: int, moves: tuple[tuple[str, int], ...], slip_at: int | None = None, slip_by: int = 0
            ) -> list[int]:
    """The start, then each step's result (step ``slip_at``'s off by ``slip_by``, carried on)."""
    values = [start]
    for i, (op, operand) in enumerate(moves):
        values.append(apply(op, values[-1], operand) + (slip_by if i == slip_at else 0))
    return values


def _pattern(template: str, name: str | None = None, things: str | None = None) -> re.Pattern:
    """A template as a regex: {n} captures the number; {name} and {things} match the given ones, or capture."""
    parts = []
    for part in re.split(r"(\{name\}|\{n\}|\{things\})", template):
        if part == "{n}":
            parts.append(r"(?P<n>\d+)")
        elif part == "{name}":
            parts.append(re.escape(name) if name else r"(?<![A-Za-z])(?P<name>[A-Z][a-z]+)")
        elif part == "{things}":
            parts.append(re.escape(things) if things else r"(?P<things>[a-z]+)")
        else:
            parts.append(re.escape(part))
    return re.compile("".join(parts))


_STARTS = [_pattern(template) for template in STARTS]
_SPACE = re.compile(r"\s*")


def then(sentence: str) -> str:
    """The sentence opened by "Then " (a leading "A"/"The" lower-cased; a name stays)."""
    first = sentence.split(" ", 1)[0]
    return THEN + (sentence[0].lower() + sentence[1:] if first in ("A", "The") else sentence)


@lru_cache(maxsize=512)
def _follow_ups(name: str, things: str) -> tuple[list[tuple[str, re.Pattern]], list[re.Pattern]]:
    """The moves (with their operation) and the questions that may follow a start about ``name``'s ``things``."""
    moves = [(op, _pattern(wording, name, things)) for op, templates in MOVES.items() for template in templates
             for wording in (template, then(template))]
    return moves, [_pattern(question, name, things) for question in (*QUESTIONS, LEFT)]


def _read_from(text: str, start: re.Match) -> Solution | None:
    """The problem that opens with ``start``: its moves, then its question; None if the question never comes."""
    moves, questions = _follow_ups(start["name"], start["things"])
    found: list[tuple[str, int]] = []
    position = start.end()
    while True:
        position = _SPACE.match(text, position).end()
        if any(question.match(text, position) for question in questions):
            return Solution(int(start["n"]), tuple(found)) if found else None
        move = next(((op, m) for op, pattern in moves if (m := pattern.match(text, position))), None)
        if move is None:
            return None
        found.append((move[0], int(move[1]["n"])))
        position = move[1].end()


def solve(text: str) -> Solution | None:
    """The last problem written in ``text`` (other lines and wrappers ignored), or None when it holds none."""
    starts = sorted((match for pattern in _STARTS for match in pattern.finditer(text)), key=lambda m: m.start())
    for start in reversed(starts):
        solution = _read_from(text, start)
        if solution is not None:
            return solution
    return None


def _move(rng: random.Random, value: int) -> tuple[str, int]:
    """One operation that keeps the result in 0..MAX_RESULT, with an operand of LOW..HIGH (a factor <= MAX_FACTOR)."""
    bounds = {"+": (LOW, min(HIGH, MAX_RESULT - value)), "-": (LOW, min(HIGH, value)),
              "*": (LOW, min(MAX_FACTOR, MAX_RESULT // value) if value else 0)}
    fitting = [op for op, (low, high) in bounds.items() if low <= high]
    op = rng.choices(fitting, [WEIGHTS[op] for op in fitting])[0]
    return op, rng.randint(*bounds[op])


def problem(rng: random.Random, steps: int) -> Problem:
    """A problem of ``steps`` operations (1..3 in the seed sets; any positive number works)."""
    if steps < 1:
        raise ValueError(f"steps={steps}: a problem needs at least one operation")
    name, things, start = rng.choice(NAMES), rng.choice(THINGS), rng.randint(LOW, HIGH)
    moves, value = [], start
    for _ in range(steps):
        op, operand = _move(rng, value)
        moves.append((op, operand))
        value = apply(op, value, operand)
    sentences = [rng.choice(STARTS).format(name=name, n=start, things=things)]
    for i, (op, operand) in enumerate(moves):
        sentence = rng.choice(MOVES[op]).format(name=name, n=operand, things=things)
        sentences.append(then(sentence) if i and rng.random() < 0.3 else sentence)
    question = LEFT if moves[-1][0] == "-" and rng.random() < 0.5 else rng.choice(QUESTIONS)
    sentences.append(question.format(name=name, things=things))
    lines, answer = worked(start, tuple(moves))
    return Problem(" ".join(sentences), answer, steps, "\n".join(lines))


# The task API (distill/task.py): ``task: {module: demo.math_problems, metric: numeric}`` in params.yaml.


def group(instruction: str) -> str:
    """evaluate's per-group table: one group per number of operations ("1 step", "2 steps", ...)."""
    solution = solve(instruction)
    if solution is None:
        return "unknown"
    return f"{solution.steps} step" + ("" if solution.steps == 1 else "s")
