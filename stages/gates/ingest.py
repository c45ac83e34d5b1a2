"""Gate of the ingest stage: seed tables ``data/ingest/train.parquet`` and ``data/ingest/eval.parquet``.

Run as ``python -m stages.gates.ingest`` (DVC stage ``gate@ingest``); thresholds come
from ``params.gates.ingest``. Each split is checked on its own: ids present and unique,
instructions non-empty and not over-long, the right ``split`` label, enough rows, and
(eval only) a reference answer on every row, since evaluation scores against it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import polars as pl

from distill.gate import Check, main
from distill.params import IngestGate
from distill.records import SEED

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

STAGE = "ingest"
TABLES = {"train": "data/ingest/train.parquet", "eval": "data/ingest/eval.parquet"}
SCHEMAS = {"train": SEED, "eval": SEED}


def checks(gate: IngestGate, frames: dict[str, pl.DataFrame]) -> list[Check]:
    import great_expectations as gx

    gxe = gx.expectations
    out = []
    for split, min_rows in (("train", gate.min_rows), ("eval", gate.min_eval_rows)):
        expectations: list[Expectation] = [
            gxe.ExpectTableRowCountToBeBetween(min_value=min_rows),
            gxe.ExpectColumnValuesToNotBeNull(column="id"),
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            gxe.ExpectColumnValuesToNotBeNull(column="instruction"),
            gxe.ExpectColumnValueLengthsToBeBetween(
                column="instruction", min_value=1, max_value=gate.max_instruction_chars),
            gxe.ExpectColumnValuesToNotBeNull(column="input"),  # "" when absent, never null
            gxe.ExpectColumnValuesToNotBeNull(column="context"),  # "" for an instruction seed
            gxe.ExpectColumnValuesToBeInSet(column="split", value_set=[split]),
            gxe.ExpectColumnValuesToNotBeNull(column="source_file"),
            gxe.ExpectColumnValuesToBeBetween(column="source_line", min_value=1),  # 1-based
        ]
        if split == "eval":
            expectations.append(gxe.ExpectColumnValuesToNotBeNull(
                column="reference", description="evaluation scores predictions against the reference"))
        out.append(Check(split, frames[split], expectations))
    return out


if __name__ == "__main__":
    sys.exit(main(sys.modules[__name__]))
