"""Writes the shipped seed sets of ``demo.math_problems`` and the tiny math student's tokenizer corpus.

Deterministic (one seeded RNG), so re-running rewrites the same bytes. Each set mixes difficulties (about 40%
one-step, 35% two-step, 25% three-step problems) and every row carries its integer ``reference``, which the
``numeric`` verifier checks teacher answers against. No eval instruction appears in train.

The corpus (data/students/tiny-math-corpus.txt) is what ``python -m distill.student math`` trains the tiny
math student's BPE on: train problems with their step lines and answers, never an eval problem. It is written
here because the product (distill/) does not import the demo.

Run: ``python -m demo.math_seeds`` (from the repository root).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from demo.math_problems import Problem, problem

OUT = Path("data/seeds/math")
CORPUS = Path("data/students/tiny-math-corpus.txt")
SIZES = {"train": 400, "eval": 60}
SHARES = {1: 0.40, 2: 0.35, 3: 0.25}  # problems by number of operations
CORPUS_LINES = [  # the prompts' fixed words, so the tokenizer learns them too: templates/generic/system.txt, cot.txt
    "You are a helpful assistant.",
    "Think step by step, then give the final answer alone on the last line as `Answer: <result>`.",
]


def mix(size: int) -> list[int]:
    """Step counts for ``size`` problems in SHARES (the last share takes the rounding), in a fixed order."""
    counts = {steps: round(size * share) for steps, share in SHARES.items()}
    counts[max(SHARES)] = size - sum(count for steps, count in counts.items() if steps != max(SHARES))
    return [steps for steps, count in counts.items() for _ in range(count)]


def build(seed: int = 0) -> dict[str, list[Problem]]:
    """Problems by split; train is drawn first and eval only takes instructions train does not have."""
    rng, seen, splits = random.Random(seed), set(), {}
    for split, size in SIZES.items():
        order = mix(size)
        rng.shuffle(order)
        drawn = []
        for steps in order:
            while (candidate := problem(rng, steps)).instruction in seen:
                pass
            seen.add(candidate.instruction)
            drawn.append(candidate)
        splits[split] = drawn
    return splits


def corpus(problems: list[Problem]) -> str:
    """One problem a block: its text, its step lines, then the answer as the stand-in writes it."""
    blocks = ["\n".join(CORPUS_LINES)]
    blocks += [f"{p.instruction}\n{p.reasoning}\nAnswer: {p.answer}\nThe answer is {p.answer}." for p in problems]
    return "\n\n".join(blocks) + "\n"


def write(out: Path = OUT, corpus_path: Path = CORPUS, seed: int = 0) -> None:
    splits = build(seed)
    for split, problems in splits.items():
        path = out / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"instruction": p.instruction, "reference": str(p.answer)} for p in problems]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        print(f"{path}: {len(rows)} rows")
    corpus_path.parent.mkdir(parents=True, exist_ok=True)
    corpus_path.write_text(corpus(splits["train"]), encoding="utf-8")
    print(f"{corpus_path}: {len(splits['train'])} problems")


if __name__ == "__main__":
    write()
