"""Gate of the generate stage: teacher answers in ``data/generate/rows.parquet``.

Run as ``python -m stages.validate generate`` (DVC stage ``validate@generate``); thresholds
come from ``params.gates.generate``. Checks row ids, that every row has an answer of sane
length, a known ``finish_reason`` and non-negative token counts, and that enough answers came
back. Quality filtering is the score stage's job, not this gate's.
"""

from __future__ import annotations

import polars as pl

from stages.expectations import Check
from stages.params import GenerateGate
from stages.records import GENERATED

TABLES = {"rows": "data/generate/rows.parquet"}
SCHEMAS = {"rows": GENERATED}

# OpenAI-compatible chat completion finish reasons.
FINISH_REASONS = ["stop", "length", "content_filter", "tool_calls"]


def checks(gate: GenerateGate, frames: dict[str, pl.DataFrame]) -> list[Check]:
    import great_expectations as gx

    gxe = gx.expectations
    return [Check("rows", frames["rows"], [
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
    ])]
