"""The demo's general data: word tasks *other* than the demo task's (copy, double, first/last letter, sort).

``train.replay.data`` replays rows of ``data/general/train.jsonl`` beside the task's, and the forgetting
probe (``evaluate.general_eval``) scores ``data/general/eval.jsonl``; both were written, offline, by
``python -m demo.general``. A real run points those params at a slice of an open instruction set.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from demo.words import random_word

GENERAL_DIR = Path("data/general")
GENERAL_OPS = {
    "copy": lambda word: word,
    "double": lambda word: word + word,
    "first": lambda word: word[0],
    "last": lambda word: word[-1],
    "sort": lambda word: "".join(sorted(word)),
}


def build_general(out_dir: Path = GENERAL_DIR, n_train: int = 2000, n_eval: int = 200, seed: int = 0) -> None:
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict] = []
    while len(rows) < n_train + n_eval:
        op = rng.choice(sorted(GENERAL_OPS))
        word = random_word(rng)
        instruction = f"{op} {word}"
        if instruction not in seen:
            seen.add(instruction)
            rows.append({"instruction": instruction, "input": "", "response": GENERAL_OPS[op](word)})
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.jsonl", rows[:n_train]), ("eval.jsonl", rows[n_train:])):
        (out_dir / name).write_text("".join(json.dumps(row) + "\n" for row in part), encoding="utf-8")
    print(json.dumps({"built": str(out_dir), "train": n_train, "eval": n_eval}))


if __name__ == "__main__":
    build_general()
