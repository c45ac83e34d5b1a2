"""Gate of the select stage: the selection in ``data/select/rows.parquet``.

Run as ``python -m stages.validate select`` (DVC stage ``validate@select``); thresholds come
from ``params.gates.select``. Checks that every kept row has its place in the selection order
(``select_rank``) and a cluster, that ranks are unique, that ``drop_reason`` is set exactly on
dropped rows, that the selection still holds no duplicate and no row overlapping the eval split,
and that enough rows are kept for training.
"""

from __future__ import annotations

import polars as pl

from stages.expectations import Check
from stages.params import SelectGate
from stages.records import SELECTED

TABLES = {"rows": "data/select/rows.parquet"}
SCHEMAS = {"rows": SELECTED}


def checks(gate: SelectGate, frames: dict[str, pl.DataFrame]) -> list[Check]:
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    gxe = gx.expectations
    kept = Column("keep") == True  # noqa: E712 -- builds a GX condition, not a Python comparison
    dropped = Column("keep") == False  # noqa: E712
    return [Check("rows", frames["rows"], [
        gxe.ExpectColumnValuesToNotBeNull(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToNotBeNull(column="keep"),
        gxe.ExpectColumnValuesToNotBeNull(column="select_rank", row_condition=kept,
                                          description="every selected row has its place in the order"),
        gxe.ExpectColumnValuesToNotBeNull(column="select_cluster", row_condition=kept),
        gxe.ExpectColumnValuesToBeUnique(column="select_rank"),
        gxe.ExpectColumnValuesToBeNull(column="drop_reason", row_condition=kept),
        gxe.ExpectColumnValuesToNotBeNull(column="drop_reason", row_condition=dropped),
        gxe.ExpectColumnValuesToBeUnique(column="norm_hash", row_condition=kept),
        gxe.ExpectColumnValuesToBeNull(column="contaminated_by", row_condition=kept,
                                       description="no selected row near-duplicates an eval row (contamination)"),
        gxe.ExpectColumnSumToBeBetween(column="keep", min_value=gate.min_rows, description="selected rows"),
    ])]
