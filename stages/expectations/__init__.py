"""Expectation suites of the data-quality gates: one module per stage output.

Each module ``<stage>.py`` exposes

- ``TABLES``: table name -> parquet path (relative to the repo root) that the stage writes;
- ``SCHEMAS``: table name -> its column contract from ``stages.records``;
- ``checks(gate, frames) -> list[Check]``: from the loaded polars frames and the stage's
  ``params.gates.<stage>`` block, the frames (the table itself or a view derived with polars,
  e.g. per-system counts) and the Great Expectations expectations to run on each.

The schema part of every gate (columns and dtypes) is built here, once for all stages, and
``stages.validate`` runs it before the content checks. Nothing in this package reads or
writes files. Great Expectations is imported inside the functions only: it costs seconds
and ~250 MB, and listing a stage's tables must stay cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

# Before any great_expectations import in this process: no usage statistics leave the machine.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

STAGE_NAMES = ("ingest", "generate", "score", "dedupe", "select", "train", "evaluate")


@dataclass
class Check:
    """Expectations to run on one frame; ``index`` names the column that identifies failing rows."""

    name: str  # table name ("rows") or derived view ("rows.dtypes", "predictions.per_system")
    frame: pl.DataFrame  # polars; converted to pandas at the gate (GX rejects polars frames)
    expectations: list[Expectation] = field(default_factory=list)
    index: str | None = "id"  # None: table-level expectations only (the frame may lack "id")


def module(stage: str) -> ModuleType:
    """The expectations module of ``stage`` (imported on demand, see the module docstring)."""
    if stage not in STAGE_NAMES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGE_NAMES)}")
    import importlib

    return importlib.import_module(f"{__name__}.{stage}")


def marked_rows() -> tuple[list[Expectation], object]:
    """For tables that mark rows instead of deleting them (score, dedupe, select): every row has a unique id
    and a keep mark, a dropped row says why and a kept one does not. Also the ``keep == True`` condition."""
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    gxe = gx.expectations
    kept = Column("keep") == True  # noqa: E712 -- builds a GX condition, not a Python comparison
    dropped = Column("keep") == False  # noqa: E712
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToNotBeNull(column="keep"),
        gxe.ExpectColumnValuesToBeNull(column="drop_reason", row_condition=kept),
        gxe.ExpectColumnValuesToNotBeNull(column="drop_reason", row_condition=dropped),
    ], kept


def dtype_view(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """One row per contract column present in ``frame``: its actual and its contract dtype."""
    present = [name for name in schema if name in frame.columns]
    return pl.DataFrame(
        {
            "column": present,
            "dtype": [str(frame.schema[name]) for name in present],
            "expected": [str(schema[name]) for name in present],
        },
        schema={"column": pl.String, "dtype": pl.String, "expected": pl.String},
    )


def conforms(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> bool:
    """Same column set and dtypes as the contract: the content checks may rely on the columns."""
    if set(frame.columns) != set(schema):
        return False
    view = dtype_view(frame, schema)
    return view["dtype"].to_list() == view["expected"].to_list()


def schema_checks(table: str, frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> list[Check]:
    """Exact column set on the table itself, and dtypes on a (column, dtype, expected) view."""
    import great_expectations as gx

    return [
        Check(table, frame, [gx.expectations.ExpectTableColumnsToMatchSet(
            column_set=list(schema), exact_match=True,
            description=f"columns of the {table} contract in stages/records.py")], index=None),
        Check(f"{table}.dtypes", dtype_view(frame, schema), [gx.expectations.ExpectColumnPairValuesToBeEqual(
            column_A="dtype", column_B="expected",
            description="dtype of each contract column (failing ids are column names)")], index="column"),
    ]
