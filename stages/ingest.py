"""Seed ingest: read the seed and eval files, validate, normalise to the SEED schema.

Reads:   params ``ingest.train`` and ``ingest.eval`` (JSONL, CSV or parquet)
Writes:  data/ingest/train.parquet, data/ingest/eval.parquet, metrics/ingest.json
Params:  ingest

The formats, the checks and the ids are distill/seeds.py. A malformed file is one error naming
the file, the line and what is wrong, and nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from distill import params as params_module
from distill import paths
from distill.entry import guarded
from distill.io import write_json, write_parquet
from distill.seeds import normalise, read_records


def run(params: params_module.IngestParams) -> tuple[dict[str, pl.DataFrame], dict]:
    """The train and eval seed frames, and the metrics."""
    frames, metrics = {}, {}
    for split, source in (("train", Path(params.train)), ("eval", Path(params.eval))):
        records = read_records(source, params.fields)
        frames[split] = normalise(source, records, split, params.fields)
        metrics[split] = {
            "source": str(source),
            "records_read": len(records),
            "rows": frames[split].height,
            "duplicates_collapsed": len(records) - frames[split].height,
        }
    return frames, metrics


def main() -> None:
    frames, metrics = run(params_module.load().ingest)
    for split, frame in frames.items():  # written only once every file has validated
        write_parquet(frame, {"train": paths.INGEST_TRAIN, "eval": paths.INGEST_EVAL}[split])
    write_json(metrics, paths.metrics("ingest"))
    print(f"ingest: {metrics['train']['rows']} train and {metrics['eval']['rows']} eval seeds")


if __name__ == "__main__":
    guarded("ingest", main)
