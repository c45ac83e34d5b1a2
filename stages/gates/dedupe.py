"""Gate of the dedupe stage: deduplicated rows in ``data/dedupe/rows.parquet``.

Run as ``python -m stages.gates.dedupe`` (DVC stage ``gate@dedupe``); thresholds come
from ``params.gates.dedupe``. Checks that no two kept rows share a ``norm_hash`` (the point
of the stage), that every duplicate names its kept twin in ``dup_of``, that ``drop_reason``
is set exactly on dropped rows, that no kept row near-duplicates a held-out eval row
(``contaminated_by`` null; the failure names the row ids), and that enough rows are kept for training.
Rows sharing an n-gram with a standard benchmark never reach it kept: the stage drops them (drop reason
``contaminated``) or fails itself (``dedupe.decontaminate.action``).
"""

from __future__ import annotations

import sys

import polars as pl

from distill.gate import Check, main, marked_rows
from distill.params import DedupeGate
from distill.records import DEDUPED

STAGE = "dedupe"
TABLES = {"rows": "data/dedupe/rows.parquet"}
SCHEMAS = {"rows": DEDUPED}


def checks(gate: DedupeGate, frames: dict[str, pl.DataFrame]) -> list[Check]:
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    gxe = gx.expectations
    marks, kept = marked_rows()
    duplicate = Column("drop_reason") == "duplicate"
    return [Check("rows", frames["rows"], [
        *marks,
        gxe.ExpectColumnValuesToNotBeNull(column="norm_hash"),
        gxe.ExpectColumnValuesToBeUnique(column="norm_hash", row_condition=kept),
        gxe.ExpectColumnValuesToNotBeNull(column="dup_of", row_condition=duplicate),
        gxe.ExpectColumnValuesToBeNull(column="contaminated_by", row_condition=kept,
                                       description="no kept row near-duplicates an eval row (contamination)"),
        # The sum of a boolean column is the number of kept rows.
        gxe.ExpectColumnSumToBeBetween(column="keep", min_value=gate.min_rows, description="kept rows"),
    ])]


if __name__ == "__main__":
    sys.exit(main(sys.modules[__name__]))
