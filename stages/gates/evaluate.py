"""Gate of the evaluate stage: per-system predictions in ``data/evaluate/predictions.parquet``.

Run as ``python -m stages.gates.evaluate`` (DVC stage ``gate@evaluate``); thresholds
come from ``params.gates.evaluate``. Checks that every row names an eval id and a known
system, has a prediction and a score in [0, 1], that no (id, system, sample) repeats (``evaluate.samples`` answers
per prompt), and that EACH system has answered at least ``min_rows`` eval rows (the ``predictions.per_system``
view, which lists absent systems with 0 rows; a total count could hide a system with no rows at all).
"""

from __future__ import annotations

import sys

import polars as pl

from distill.gate import Check, main
from distill.params import EvaluateGate
from distill.records import OPTIONAL_SYSTEMS, PREDICTION, SYSTEMS

STAGE = "evaluate"
TABLES = {"predictions": "data/evaluate/predictions.parquet"}
SCHEMAS = {"predictions": PREDICTION}


def per_system(predictions: pl.DataFrame) -> pl.DataFrame:
    """Eval rows answered by every system in SYSTEMS (samples of one row count once), 0 for a system with none."""
    counts = predictions.group_by("system").agg(pl.col("id").n_unique().cast(pl.Int64).alias("rows"))
    systems = pl.DataFrame({"system": list(SYSTEMS)}, schema={"system": pl.String})
    return systems.join(counts, on="system", how="left").with_columns(pl.col("rows").fill_null(0))


def checks(gate: EvaluateGate, frames: dict[str, pl.DataFrame]) -> list[Check]:
    import great_expectations as gx

    gxe = gx.expectations
    predictions = frames["predictions"]
    return [
        Check("predictions", predictions, [
            gxe.ExpectColumnValuesToNotBeNull(column="id"),
            gxe.ExpectColumnValuesToNotBeNull(column="system"),
            gxe.ExpectColumnValuesToBeInSet(column="system", value_set=list(SYSTEMS + OPTIONAL_SYSTEMS)),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["id", "system", "sample"]),
            gxe.ExpectColumnValuesToNotBeNull(column="prediction"),
            gxe.ExpectColumnValuesToNotBeNull(column="score"),
            gxe.ExpectColumnValuesToBeBetween(column="score", min_value=0.0, max_value=1.0),
        ]),
        Check("predictions.per_system", per_system(predictions), [
            gxe.ExpectColumnValuesToBeBetween(
                column="rows", min_value=gate.min_rows, description="rows per system"),
        ], index="system"),
    ]


if __name__ == "__main__":
    sys.exit(main(sys.modules[__name__]))
