"""Forgetting guard: general instruction data replayed beside the task's rows, and the general held-out set
the forgetting probe scores (stages/evaluate.py).

``train.replay.ratio`` general rows per task row are drawn (seeded) from ``train.replay.data`` and
mixed into the training pairs, so fine-tuning on one narrow skill does not overwrite what the
student could do before (the replay mix of continual learning). The default general set is
built here, offline: word tasks *other* than the demo skill's (copy, double, first/last letter,
sort), written to ``data/general/{train,eval}.jsonl`` by ``python -m stages.replay``. A real
student would replay a slice of an open instruction set instead: any JSONL of
``instruction``/``input``/``response`` rows works.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl

from stages import params as params_module
from stages.entry import StageError
from stages.skill import random_word

GENERAL_DIR = Path("data/general")
GENERAL_EVAL = GENERAL_DIR / "eval.jsonl"
GENERAL_OPS = {
    "copy": lambda word: word,
    "double": lambda word: word + word,
    "first": lambda word: word[0],
    "last": lambda word: word[-1],
    "sort": lambda word: "".join(sorted(word)),
}


def read_general(path: Path) -> list[dict]:
    """instruction/input/response rows of a JSONL file; a bad line is one error naming file and line."""
    if not path.is_file():
        raise StageError(f"{path}: the general data file does not exist (train.replay.data)")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise StageError(f"{path}:{number}: not JSON: {error.msg}") from None
        if not isinstance(row, dict) or not isinstance(row.get("instruction"), str) \
                or not isinstance(row.get("response"), str):
            raise StageError(f"{path}:{number}: needs string fields instruction and response")
        rows.append({"instruction": row["instruction"], "input": row.get("input") or "", "response": row["response"]})
    if not rows:
        raise StageError(f"{path}: no rows")
    return rows


def general_rows(settings: params_module.ReplayParams, task_rows: int, seed: int) -> pl.DataFrame:
    """round(ratio * task_rows) general rows (id, instruction, input, response, keep), drawn with a seed (with
    replacement past the file's size); they train like the task's rows (KD: on cross-entropy, no teacher)."""
    wanted = round(settings.ratio * task_rows)
    schema = {"id": pl.String, "instruction": pl.String, "input": pl.String, "response": pl.String, "keep": pl.Boolean}
    if wanted == 0:
        return pl.DataFrame(schema=schema)
    rows = read_general(Path(settings.data))
    rng = random.Random(seed)
    drawn = rng.sample(rows, wanted) if wanted <= len(rows) else [rng.choice(rows) for _ in range(wanted)]
    return pl.DataFrame([{"id": f"general-{i}", **row, "keep": True} for i, row in enumerate(drawn)], schema=schema)


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
