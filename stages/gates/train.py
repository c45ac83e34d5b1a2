"""Gate of the train stage: the training log ``data/train/log.parquet`` (one row per logged step).

Run as ``python -m stages.gates.train`` (DVC stage ``gate@train``); thresholds come
from ``params.gates.train``. Checks that steps are unique, every loss is finite (and not negative,
except rl's policy objective, which an advantage can make negative), training
reached ``min_steps``, and the mean loss over the last 20% of logged steps (the ``log.tail``
view; a mean, so one noisy batch does not decide) is at most ``max_final_loss``.
Failing rows are named by ``step``.
"""

from __future__ import annotations

import math
import sys

import polars as pl

from distill.gate import Check, main
from distill.params import TrainGate
from distill.records import TRAIN_LOG

STAGE = "train"
TABLES = {"log": "data/train/log.parquet"}
SCHEMAS = {"log": TRAIN_LOG}

TAIL_FRACTION = 0.2


def tail(log: pl.DataFrame, fraction: float = TAIL_FRACTION) -> pl.DataFrame:
    """The last ``fraction`` of logged steps (at least one row when the log is not empty)."""
    count = math.ceil(log.height * fraction)
    return log.sort("step").tail(count)


def checks(gate: TrainGate, frames: dict[str, pl.DataFrame]) -> list[Check]:
    import great_expectations as gx

    gxe = gx.expectations
    log = frames["log"]
    return [
        Check("log", log, [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToNotBeNull(column="step"),
            gxe.ExpectColumnValuesToBeUnique(column="step"),
            gxe.ExpectColumnMaxToBeBetween(column="step", min_value=gate.min_steps),
            gxe.ExpectColumnValuesToNotBeNull(column="loss"),  # NaN counts as null in pandas
            # Strict bounds of +-inf reject infinities (NaN is caught above).
            gxe.ExpectColumnValuesToBeBetween(column="loss", min_value=-math.inf, max_value=math.inf,
                                              strict_min=True, strict_max=True, description="finite loss"),
            gxe.ExpectColumnValuesToBeInSet(column="objective", value_set=["loss", "policy"]),
        ], index="step"),
        Check("log.losses", log.filter(pl.col("objective") == "loss"), [
            gxe.ExpectColumnValuesToBeBetween(column="loss", min_value=0.0, description="a loss is never negative"),
        ], index="step"),
        Check("log.tail", tail(log), [
            gxe.ExpectColumnMeanToBeBetween(
                column="loss", max_value=gate.max_final_loss,
                description=f"mean loss over the last {TAIL_FRACTION:.0%} of logged steps"),
        ], index="step"),
    ]


if __name__ == "__main__":
    sys.exit(main(sys.modules[__name__]))
