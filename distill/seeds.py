"""Seed files: read JSONL, CSV or parquet records and normalise them to the SEED schema.

Each record needs ``instruction`` (non-empty string); ``input`` and ``reference`` are optional
strings (``reference`` is required in the eval split: it is what the metric compares against).
Ids are content hashes of (instruction, input), so they are stable across runs and machines;
records with identical content collapse onto the first one. A malformed file is one error
naming the file, the line and what is wrong.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import polars as pl

from distill.entry import StageError
from distill.io import content_hash, file_hash
from distill.records import SEED, conform

FIELDS = ("instruction", "input", "reference")


class SeedError(StageError):
    """A seed file that cannot be ingested; the message names file and line."""


def _decode(path: Path) -> str:
    data = path.read_bytes()
    if not data.strip():
        raise SeedError(f"{path}: file is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise SeedError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[error.start]:02x} at column {column}); "
            "re-save the file as UTF-8"
        ) from None


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    records = []
    for number, line in enumerate(_decode(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise SeedError(f"{path}:{number}: invalid JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(record, dict):
            raise SeedError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append((number, record))
    return records


def _read_csv(path: Path) -> list[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(_decode(path), newline=""))
    if "instruction" not in (reader.fieldnames or []):
        raise SeedError(f"{path}:1: header has no 'instruction' column (found {reader.fieldnames})")
    records = []
    start = reader.line_num + 1  # a quoted field may span lines: report where the record starts
    for record in reader:
        clean = {key: value for key, value in record.items() if key is not None and value != ""}
        records.append((start, clean))
        start = reader.line_num + 1
    return records


def _read_parquet(path: Path) -> list[tuple[int, dict]]:
    try:
        frame = pl.read_parquet(path)
    except Exception as error:  # polars raises several types for a corrupt file
        raise SeedError(f"{path}: not a readable parquet file ({error})") from None
    if frame.is_empty():
        raise SeedError(f"{path}: file has no rows")
    return [(row + 1, record) for row, record in enumerate(frame.to_dicts())]


READERS = {".jsonl": _read_jsonl, ".json": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}


def read_records(path: Path) -> list[tuple[int, dict]]:
    """(line, record) pairs; line is 1-based (the row number for parquet)."""
    if not path.exists():
        raise SeedError(f"{path}: file not found")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise SeedError(f"{path}: unsupported format {path.suffix!r}; use one of {sorted(READERS)}")
    records = reader(path)
    if not records:
        raise SeedError(f"{path}: no records")
    return records


def normalise(path: Path, records: list[tuple[int, dict]], split: str) -> pl.DataFrame:
    """Validate each record and build the SEED frame; duplicates keep their first line."""
    source_hash = file_hash(path)
    rows: dict[str, dict] = {}
    for line, record in records:
        if "instruction" not in record or record["instruction"] is None:
            raise SeedError(f"{path}:{line}: missing required field 'instruction'")
        values = {}
        for name in FIELDS:
            value = record.get(name)
            if value is not None and not isinstance(value, str):
                raise SeedError(f"{path}:{line}: field '{name}' must be a string, got {type(value).__name__}")
            values[name] = value
        if not values["instruction"].strip():
            raise SeedError(f"{path}:{line}: field 'instruction' is empty")
        if split == "eval" and not values["reference"]:
            raise SeedError(f"{path}:{line}: eval records need a 'reference' answer")
        values["input"] = values["input"] or ""
        seed_id = content_hash({"instruction": values["instruction"], "input": values["input"]})
        rows.setdefault(
            seed_id,
            values | {"id": seed_id, "split": split, "source_file": str(path), "source_line": line,
                      "source_hash": source_hash},
        )
    return conform(pl.DataFrame(list(rows.values()), schema=SEED), SEED)
