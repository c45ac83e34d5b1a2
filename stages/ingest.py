"""Seed ingest: read the seed and eval files, validate, normalise to the SEED schema.

Reads:   params ``ingest.train`` and ``ingest.eval`` (JSONL, JSON, CSV, parquet or a saved dataset folder)
Writes:  data/ingest/train.parquet, data/ingest/eval.parquet, metrics/ingest.json, logs/ingest.json (wall time)
Params:  ingest
Run:     python -m stages.ingest

The formats, the checks and the ids are distill/seeds.py. A malformed file is one error naming
the file, the line and what is wrong, and nothing is written. Fields that ``ingest.fields`` does
not map are ignored, counted per split in the metrics (``ignored_fields``) and named in one line.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from distill import params as params_module
from distill import paths, run_log
from distill.entry import guarded
from distill.io import write_json, write_parquet
from distill.seeds import ignored_fields, normalise, read_records


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
            "ignored_fields": ignored_fields(records, params.fields),  # field -> records carrying it
        }
    return frames, metrics


def main() -> None:
    started = time.monotonic()
    frames, metrics = run(params_module.load().ingest)
    for split, frame in frames.items():  # written only once every file has validated
        write_parquet(frame, {"train": paths.INGEST_TRAIN, "eval": paths.INGEST_EVAL}[split])
    write_json(metrics, paths.metrics("ingest"))
    run_log.record("ingest", started)
    print(f"ingest: {metrics['train']['rows']} train and {metrics['eval']['rows']} eval seeds")
    ignored = []  # extra columns are fine; one the user meant to be read is not, so name them all once
    for split, split_metrics in metrics.items():
        counts = split_metrics["ignored_fields"]
        if counts:
            ignored.append(f"{split}: " + ", ".join(f"{name} ({count} records)" for name, count in counts.items()))
    if ignored:
        print(f"ingest: ignored fields that ingest.fields does not map: {'; '.join(ignored)}")


if __name__ == "__main__":
    guarded("ingest", main)
