"""Forgetting guard: general instruction data replayed beside the task's rows, and the general held-out set
the forgetting probe scores (stages/evaluate.py).

``train.replay.ratio`` general rows per task row are drawn (seeded) from ``train.replay.data`` and
mixed into the training pairs, so fine-tuning on one narrow skill does not overwrite what the
student could do before (the replay mix of continual learning). Any JSONL of
``instruction``/``input``/``response`` rows works: a real student would replay a slice of an open
instruction set. The demo's general set (word tasks other than the demo's) is built by demo/general.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl

from distill import params as params_module
from distill.entry import StageError


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
    """round(ratio * task_rows) general rows (id, instruction, input, response, reasoning, keep), drawn with a
    seed (with replacement past the file's size); they train like the task's rows (KD: on cross-entropy, no
    teacher) on their response alone (no reasoning, whatever student.reasoning)."""
    wanted = round(settings.ratio * task_rows)
    schema = {"id": pl.String, "instruction": pl.String, "input": pl.String, "context": pl.String,
              "response": pl.String, "reasoning": pl.String, "keep": pl.Boolean}
    if wanted == 0:
        return pl.DataFrame(schema=schema)
    rows = read_general(Path(settings.data))
    rng = random.Random(seed)
    drawn = rng.sample(rows, wanted) if wanted <= len(rows) else [rng.choice(rows) for _ in range(wanted)]
    return pl.DataFrame([{"id": f"general-{i}", **row, "context": "", "reasoning": None, "keep": True}
                         for i, row in enumerate(drawn)],
                        schema=schema)
