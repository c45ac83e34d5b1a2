"""Gate of the score stage: scored answers in ``data/score/rows.parquet``.

Run as ``python -m stages.gates.score`` (DVC stage ``gate@score``); thresholds come
from ``params.gates.score``. Checks that every row has a quality in [0, 1] and a keep
decision, that ``drop_reason`` is set exactly on dropped rows (row conditions on ``keep``),
and that enough rows exist and a large enough share of them is kept.
"""

from __future__ import annotations

import sys

import polars as pl

from distill.gate import Check, main, marked_rows
from distill.params import ScoreGate
from distill.records import SCORED

STAGE = "score"
TABLES = {"rows": "data/score/rows.parquet"}
SCHEMAS = {"rows": SCORED}


def checks(gate: ScoreGate, frames: dict[str, pl.DataFrame]) -> list[Check]:
    import great_expectations as gx

    gxe = gx.expectations
    marks, _ = marked_rows()
    return [Check("rows", frames["rows"], [
        *marks,
        gxe.ExpectTableRowCountToBeBetween(min_value=gate.min_rows),
        gxe.ExpectColumnValuesToNotBeNull(column="quality"),
        gxe.ExpectColumnValuesToBeBetween(column="quality", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeBetween(column="repetition", min_value=0.0, max_value=1.0),
        # The mean of a boolean column is the kept fraction.
        gxe.ExpectColumnMeanToBeBetween(
            column="keep", min_value=gate.min_kept_fraction, description="fraction of rows kept"),
    ])]


if __name__ == "__main__":
    sys.exit(main(sys.modules[__name__]))
