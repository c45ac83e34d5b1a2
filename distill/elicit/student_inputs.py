"""Seed inputs shown to the student (feedback, self_knowledge): a reproducible subset, and its prompts."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from distill.chat import frame_prompts
from distill.params import StudentParams
from distill.student import load_tokenizer


def pick(seeds: pl.DataFrame, max_inputs: int | None) -> pl.DataFrame:
    """At most ``max_inputs`` seeds, the first by a hash of their id: adding seeds rarely changes the pick."""
    if max_inputs is None or seeds.height <= max_inputs:
        return seeds
    return seeds.with_columns(_rank=pl.col("id").hash(seed=0)).sort("_rank").head(max_inputs).drop("_rank")


def prompts(seeds: pl.DataFrame, student: StudentParams) -> list[str]:
    template = Path(student.prompt_template).read_text(encoding="utf-8")
    return frame_prompts(load_tokenizer(student.model), seeds, template)
