"""Gate of the generate stage: teacher answers in ``data/generate/rows.parquet`` and their
token log-probabilities in ``data/generate/features.parquet``.

Run as ``python -m stages.gates.generate`` (DVC stage ``gate@generate``); thresholds
come from ``params.gates.generate``. Checks row ids, that every row has an answer of sane
length, a known ``finish_reason`` and non-negative token counts, and that enough answers came
back. Quality filtering is the score stage's job, not this gate's. Features (empty unless
``generate.top_logprobs`` is set): ids non-null, unique and each one a row's id, ``k`` in
[0, 20], list shapes consistent (k alternatives per token) and every ``tail_mass`` in [0, 1]
(on views derived with polars: GX cannot look inside list columns). Preference pairs (empty
unless the feedback method is on): ids unique, ``chosen`` and ``rejected`` present and different,
scores in [0, 1], each pair's input one of the rows' inputs' seeds.
"""

from __future__ import annotations

import sys

import polars as pl

from distill.gate import Check, main
from distill.params import GenerateGate
from distill.records import FEATURES, GENERATED, PREFERENCE

STAGE = "generate"
TABLES = {"rows": "data/generate/rows.parquet", "features": "data/generate/features.parquet",
          "preferences": "data/generate/preferences.parquet"}
SCHEMAS = {"rows": GENERATED, "features": FEATURES, "preferences": PREFERENCE}

# OpenAI-compatible chat completion finish reasons.
FINISH_REASONS = ["stop", "length", "content_filter", "tool_calls"]


def feature_views(rows: pl.DataFrame, features: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per feature row: is its id a row's id, is its shape consistent; one row per tail_mass value."""
    shapes = features.select(
        "id",
        in_rows=pl.col("id").is_in(rows["id"].implode()),
        shape_ok=pl.col("top_ids").list.len() == pl.col("token_ids").list.len() * pl.col("k"),
    )
    tails = features.select("id", "tail_mass").explode("tail_mass")
    return shapes, tails


def preference_view(preferences: pl.DataFrame) -> pl.DataFrame:
    """Per pair: does it actually prefer one answer to a different one."""
    return preferences.select("id", differs=pl.col("chosen").str.strip_chars() != pl.col("rejected").str.strip_chars())


def checks(gate: GenerateGate, frames: dict[str, pl.DataFrame]) -> list[Check]:
    import great_expectations as gx

    gxe = gx.expectations
    shapes, tails = feature_views(frames["rows"], frames["features"])
    return [
        Check("rows", frames["rows"], [
            gxe.ExpectTableRowCountToBeBetween(min_value=gate.min_rows),
            gxe.ExpectColumnValuesToNotBeNull(column="id"),
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            gxe.ExpectColumnValuesToNotBeNull(column="seed_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="response"),
            gxe.ExpectColumnValueLengthsToBeBetween(column="response", max_value=gate.max_response_chars),
            gxe.ExpectColumnValuesToBeInSet(column="finish_reason", value_set=FINISH_REASONS),
            gxe.ExpectColumnValuesToBeBetween(column="prompt_tokens", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="completion_tokens", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="choice_index", min_value=0),
        ]),
        Check("features", frames["features"], [
            gxe.ExpectColumnValuesToNotBeNull(column="id"),
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            gxe.ExpectColumnValuesToNotBeNull(column="tokenizer"),
            gxe.ExpectColumnValuesToBeBetween(column="k", min_value=0, max_value=20),
        ]),
        Check("features.shapes", shapes, [
            gxe.ExpectColumnValuesToBeInSet(column="in_rows", value_set=[True],
                                            description="every feature row belongs to a generated row"),
            gxe.ExpectColumnValuesToBeInSet(column="shape_ok", value_set=[True],
                                            description="len(top_ids) == len(token_ids) * k"),
        ]),
        Check("preferences", frames["preferences"], [
            gxe.ExpectColumnValuesToNotBeNull(column="id"),
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            gxe.ExpectColumnValuesToNotBeNull(column="chosen"),
            gxe.ExpectColumnValuesToNotBeNull(column="rejected"),
            gxe.ExpectColumnValueLengthsToBeBetween(column="chosen", min_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="score_chosen", min_value=0, max_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="score_rejected", min_value=0, max_value=1),
        ]),
        Check("preferences.pairs", preference_view(frames["preferences"]), [
            gxe.ExpectColumnValuesToBeInSet(column="differs", value_set=[True],
                                            description="chosen and rejected differ"),
        ]),
        Check("features.tail_mass", tails, [
            gxe.ExpectColumnValuesToNotBeNull(column="tail_mass"),
            gxe.ExpectColumnValuesToBeBetween(column="tail_mass", min_value=0, max_value=1),
        ]),
    ]


if __name__ == "__main__":
    sys.exit(main(sys.modules[__name__]))
