"""Gate of the select stage: the selection in ``data/select/rows.parquet``.

Run as ``python -m stages.gates.select`` (DVC stage ``gate@select``); thresholds come
from ``params.gates.select``. Checks that every kept row has its place in the selection order
(``select_rank``) and a cluster, that ranks are unique, that ``drop_reason`` is set exactly on
dropped rows, that the selection still holds no duplicate and no row overlapping the eval split,
and that enough rows are kept for training.
"""

from __future__ import annotations

import sys

import polars as pl

from distill.gate import Check, main, marked_rows
from distill.params import SelectGate
from distill.records import SELECTED

STAGE = "select"
TABLES = {"rows": "data/select/rows.parquet"}
SCHEMAS = {"rows": SELECTED}


def checks(gate: SelectGate, frames: dict[str, pl.DataFrame]) -> list[Check]:
    import great_expectations as gx

    gxe = gx.expectations
    marks, kept = marked_rows()
    return [Check("rows", frames["rows"], [
        *marks,
        gxe.ExpectColumnValuesToNotBeNull(column="select_rank", row_condition=kept,
                                          description="every selected row has its place in the order"),
        gxe.ExpectColumnValuesToNotBeNull(column="select_cluster", row_condition=kept),
        gxe.ExpectColumnValuesToBeUnique(column="select_rank"),
        gxe.ExpectColumnValuesToBeUnique(column="norm_hash", row_condition=kept),
        gxe.ExpectColumnValuesToBeNull(column="contaminated_by", row_condition=kept,
                                       description="no selected row near-duplicates an eval row (contamination)"),
        gxe.ExpectColumnSumToBeBetween(column="keep", min_value=gate.min_rows, description="selected rows"),
    ])]


if __name__ == "__main__":
    sys.exit(main(sys.modules[__name__]))
