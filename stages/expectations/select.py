"""Gate of the select stage: the selection in ``data/select/rows.parquet``.

Run as ``python -m stages.validate select`` (DVC stage ``validate@select``); thresholds come
from ``params.gates.select``. Checks that every kept row has its place in the selection order
(``select_rank``) and a cluster, that ranks are unique, that ``drop_reason`` is set exactly on
dropped rows, that the selection still holds no duplicate and no row overlapping the eval split,
and that enough rows are kept for training.
"""

from __future__ import annotations

import polars as pl

from stages.expectations import Check, marked_rows
from stages.params import SelectGate
from stages.records import SELECTED

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
