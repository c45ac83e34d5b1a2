"""The demo task: small, checkable word transformations (``task: demo.words``).

The offline default needs a skill that a stand-in teacher can answer exactly, that a
tiny character-level student can learn in a few CPU minutes, and whose answers can be
verified, so that scoring has something real to check. Word reversal and uppercasing
fit (see ../shared/design/pitfalls.md: a 3-layer, 128-wide Llama learns reversal to
100% in about 75 s here).

An instruction reads ``"<verb> <word>"``, e.g. ``"reverse planet"`` -> ``"tenalp"``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

OPS: dict[str, Callable[[str], str]] = {
    "reverse": lambda word: word[::-1],
    "upper": str.upper,
}

_INSTRUCTION = re.compile(r"^\s*(?P<op>[a-z]+)\s+(?P<word>[a-z]+)\s*$", re.IGNORECASE)


def parse(instruction: str) -> tuple[str, str] | None:
    """Return ``(op, word)`` if the instruction is one of the skill's, else None."""
    match = _INSTRUCTION.match(instruction)
    if match is None or match["op"].lower() not in OPS:
        return None
    return match["op"].lower(), match["word"].lower()


def solve(instruction: str) -> str | None:
    """The exact answer, or None when the instruction is not part of the skill."""
    parsed = parse(instruction)
    return None if parsed is None else OPS[parsed[0]](parsed[1])


def op_of(instruction: str) -> str:
    parsed = parse(instruction)
    return "unknown" if parsed is None else parsed[0]


def is_correct(instruction: str, answer: str | None) -> bool:
    """The skill's metric: exact match after trimming surrounding whitespace."""
    expected = solve(instruction)
    return expected is not None and answer is not None and answer.strip() == expected


def exact_match(prediction: str | None, reference: str) -> float:
    """The eval metric: 1.0 when the prediction equals the reference after trimming whitespace."""
    return float(prediction is not None and prediction.strip() == reference.strip())


# The task API (distill/task.py): ``task: demo.words`` in params.yaml.


def verify(instruction: str, response: str) -> bool | None:
    """Score's verifier: None when the instruction is not one of the skill's (it cannot tell)."""
    return None if parse(instruction) is None else is_correct(instruction, response)


metric = exact_match  # evaluate's score of one answer
group = op_of  # evaluate's per-group table: one group per operation


def random_word(rng: random.Random, min_len: int = 3, max_len: int = 8) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(min_len, max_len)))


def random_instruction(rng: random.Random) -> str:
    return f"{rng.choice(sorted(OPS))} {random_word(rng)}"


# Off-skill questions: the teacher should refuse them, and scoring should drop them.
OFF_SKILL = ["What is the capital of France?", "Write a haiku about rain.", "Explain quantum computing."]


def demo_seeds(n_train: int = 8000, n_eval: int = 200, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """The shipped demo seed set: disjoint train/eval words, plus planted near-duplicate
    variants (case and spacing) and off-skill questions so dedupe and scoring have work."""
    rng = random.Random(seed)
    seen: set[str] = set()

    def fresh() -> str:
        while (instruction := random_instruction(rng)) in seen:
            pass
        seen.add(instruction)
        return instruction

    evals = [{"instruction": text, "reference": solve(text)} for text in (fresh() for _ in range(n_eval))]
    train = [{"instruction": fresh()} for _ in range(n_train)]
    for row in rng.sample(train, n_train // 40):  # 2.5% near-duplicates of existing seeds
        op, word = parse(row["instruction"])
        variant = rng.choice([f"{op.capitalize()} {word}", f"{op}  {word}", f"{op} {word.upper()}"])
        train.insert(rng.randrange(len(train)), {"instruction": variant})
    for question in OFF_SKILL:
        train.insert(rng.randrange(len(train)), {"instruction": question})
    return train, evals


if __name__ == "__main__":  # python -m demo.words rewrites the shipped demo seeds
    import json
    from pathlib import Path

    for name, rows in zip(("train", "eval"), demo_seeds(), strict=True):
        Path(f"data/seeds/{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
