"""Gate of the sweep stage: the data-sweep curves ``reports/plots/sweep_selected.csv`` and ``sweep_random.csv``.

Run as ``python -m stages.gates.sweep`` (DVC stage ``gate@sweep``); thresholds come from
``params.gates.sweep``. Checks that the selection's curve has enough trained students (when the
sweep ran), each at a distinct size, with a score in [0, 1], a positive row count, a share of the
generated rows in (0, 1] and a non-negative teacher-token cost, and that both curves end at the
same full-data point.
"""

from __future__ import annotations

import sys

import polars as pl

from distill.gate import Check, main
from distill.params import SweepGate
from distill.records import SWEEP_POINT

STAGE = "sweep"
TABLES = {"selected": "reports/plots/sweep_selected.csv", "random": "reports/plots/sweep_random.csv"}
SCHEMAS = {"selected": SWEEP_POINT, "random": SWEEP_POINT}


def checks(gate: SweepGate, frames: dict[str, pl.DataFrame]) -> list[Check]:
    import great_expectations as gx

    gxe = gx.expectations
    out = []
    for table in TABLES:
        # both curves are empty with sweep.enabled: false (the sweep did not run); when it ran, the selection's
        # curve holds at least the all-rows point, and the random one is empty with sweep.random: false
        count = gate.min_points if table == "selected" and frames["selected"].height else 0
        out.append(Check(table, frames[table], [
            gxe.ExpectTableRowCountToBeBetween(min_value=count, description="trained students"),
            gxe.ExpectColumnValuesToBeUnique(column="rows", description="one student per subset size"),
            gxe.ExpectColumnValuesToBeBetween(column="score", min_value=0, max_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="rows", min_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="fraction", min_value=0, max_value=1, strict_min=True),
            gxe.ExpectColumnValuesToBeBetween(column="teacher_tokens", min_value=0),
        ], index="rows"))
    if frames["random"].height:  # both curves share their last point: every row, trained once
        ends = pl.DataFrame({"curve": list(TABLES), "rows": [frames[table]["rows"].max() for table in TABLES]})
        out.append(Check("ends", ends, [gxe.ExpectColumnDistinctValuesToEqualSet(
            column="rows", value_set=[frames["selected"]["rows"].max()],
            description="both curves end at the full-data student")], index="curve"))
    return out


if __name__ == "__main__":
    sys.exit(main(sys.modules[__name__]))
