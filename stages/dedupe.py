"""Dedupe: exact, near (MinHash) and semantic (embedding) duplicates; each cluster keeps its best row.
Also the contamination check: no kept row may near-duplicate a held-out eval row.

Reads:   data/score/rows.parquet, data/ingest/eval.parquet
Writes:  data/dedupe/rows.parquet (DEDUPED: every row, marked), metrics/dedupe.json
Params:  dedupe

The passes, the clusters and the contamination check are distill/curate/duplicates.py. With
``dedupe.contamination.action: fail`` (default) the dedupe gate fails naming the overlapping
ids; with ``drop`` they are dropped as ``eval_overlap``.
"""

from __future__ import annotations

import time

import polars as pl

from distill import params as params_module
from distill import paths
from distill.curate.duplicates import dedupe, summarise
from distill.entry import guarded
from distill.io import write_json, write_parquet


def run(params: params_module.DedupeParams, scored: pl.DataFrame, evals: pl.DataFrame | None
        ) -> tuple[pl.DataFrame, dict]:
    """Every scored row, marked (DEDUPED), and the metrics."""
    started = time.monotonic()
    deduped = dedupe(scored, params, evals)
    return deduped, summarise(deduped) | {"wall_s": round(time.monotonic() - started, 2)}


def main() -> None:
    evals = pl.read_parquet(paths.INGEST_EVAL) if paths.INGEST_EVAL.exists() else None
    deduped, metrics = run(params_module.load().dedupe, pl.read_parquet(paths.SCORE_ROWS), evals)
    write_parquet(deduped, paths.DEDUPE_ROWS)
    write_json(metrics, paths.metrics("dedupe"))
    print(f"dedupe: {metrics['kept']} rows kept; {metrics['duplicates_dropped']} duplicates dropped "
          f"{metrics['duplicates_by_kind']}; {metrics['contaminated_rows']} rows overlap the eval split")


if __name__ == "__main__":
    guarded("dedupe", main)
