"""Dedupe: exact, near (MinHash) and semantic (embedding) duplicates; each cluster keeps its best row.
Also two contamination checks: no kept row may near-duplicate a held-out eval row, nor share a word n-gram
with an item of a standard benchmark (benchmarks.sets).

Reads:   data/score/rows.parquet, data/ingest/eval.parquet, the benchmarks.sets files (under data/benchmarks)
Writes:  data/dedupe/rows.parquet (DEDUPED: every row, marked), metrics/dedupe.json, logs/dedupe.json (wall time)
Params:  dedupe, benchmarks.sets

The passes, the clusters and the eval-split check are distill/curate/duplicates.py. With
``dedupe.contamination.action: fail`` (default) the dedupe gate fails naming the overlapping
ids; with ``drop`` they are dropped as ``eval_overlap``. The benchmark check is
distill/curate/decontaminate.py (``dedupe.decontaminate``: ngram, action): with ``action: drop``
(default) the rows are dropped as ``contaminated`` before the duplicate passes; with ``fail`` the
stage stops, writing nothing, naming the benchmark, the rows and the shared n-gram. The metrics'
``decontamination`` block has per benchmark its items, rows_matched and sample matches.

Run:     python -m stages.dedupe
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import polars as pl

from distill import params as params_module
from distill import paths, run_log
from distill.curate import decontaminate
from distill.curate.duplicates import dedupe, summarise
from distill.entry import guarded
from distill.io import write_json, write_parquet


def run(params: params_module.DedupeParams, scored: pl.DataFrame, evals: pl.DataFrame | None,
        benchmarks: Sequence[decontaminate.Benchmark] = ()) -> tuple[pl.DataFrame, dict]:
    """Every scored row, marked (DEDUPED), and the metrics. Raises StageError when a row shares an n-gram with a
    benchmark item and ``params.decontaminate.action`` is fail."""
    found = decontaminate.check(scored.filter(pl.col("keep")), benchmarks, params.decontaminate)
    deduped = dedupe(scored, params, evals, contaminated=found["id"])
    block = decontaminate.summary(found, benchmarks, params.decontaminate)
    return deduped, summarise(deduped) | {
        "decontamination": block,
        "contaminated_by_benchmark": {name: b["rows_matched"] for name, b in block["benchmarks"].items()}}


def main() -> None:
    started = time.monotonic()
    params = params_module.load()
    evals = pl.read_parquet(paths.INGEST_EVAL) if paths.INGEST_EVAL.exists() else None
    benchmarks = [decontaminate.load_benchmark(entry) for entry in params.benchmarks.sets]
    deduped, metrics = run(params.dedupe, pl.read_parquet(paths.SCORE_ROWS), evals, benchmarks)
    write_parquet(deduped, paths.DEDUPE_ROWS)
    write_json(metrics, paths.metrics("dedupe"))
    run_log.record("dedupe", started)
    print(f"dedupe: {metrics['kept']} rows kept; {metrics['duplicates_dropped']} duplicates dropped "
          f"{metrics['duplicates_by_kind']}; {metrics['contaminated_rows']} rows overlap the eval split; "
          f"benchmark n-grams dropped {metrics['contaminated_by_benchmark']}")


if __name__ == "__main__":
    guarded("dedupe", main)
