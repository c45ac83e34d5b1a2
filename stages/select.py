"""Select: the selection policy, i.e. which of the clean rows the student is trained on.

Reads:   data/dedupe/rows.parquet
Writes:  data/select/rows.parquet (SELECTED: every row, marked), metrics/select.json, logs/select.json (wall time)
Params:  select

Less teacher data is often better (AlpaGasus: 9k judge-selected rows of Alpaca's 52k beat all of
them; Cherry-LLM: 5-10% by IFD matched the full set). The policy (distill/curate/selection.py):
thresholds on the score signals (``select.min`` / ``select.max``), a rank (``select.order_by``), an
optional round-robin over diversity clusters, then a budget (``max_rows``, ``max_fraction``).
Every row that passed the thresholds gets ``select_rank`` and ``select_cluster``; rows dropped
earlier keep the reason of the stage that dropped them.
"""

from __future__ import annotations

import time

import polars as pl

from distill import params as params_module
from distill import paths, run_log
from distill.curate.selection import select, summarise
from distill.entry import guarded
from distill.io import write_json, write_parquet


def run(params: params_module.SelectParams, deduped: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
    """Every deduplicated row, marked (SELECTED), and the metrics."""
    selected = select(deduped, params)
    return selected, summarise(selected, params)


def main() -> None:
    started = time.monotonic()
    selected, metrics = run(params_module.load().select, pl.read_parquet(paths.DEDUPE_ROWS))
    write_parquet(selected, paths.SELECT_ROWS)
    write_json(metrics, paths.metrics("select"))
    run_log.record("select", started)
    print(f"select: {metrics['selected']} of {metrics['rows_in']} generated rows ({metrics['selected_fraction']:.0%}) "
          f"from {metrics['eligible']} eligible, {metrics['clusters']} clusters; "
          f"dropped {metrics['dropped_by_reason']}")


if __name__ == "__main__":
    guarded("select", main)
