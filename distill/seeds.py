"""Seed files: read JSONL, CSV, parquet or a ``datasets.save_to_disk`` folder, and normalise the records
to the SEED schema.

A record is either an instruction seed, ``instruction`` (non-empty string) with optional ``input`` and
``reference`` strings (Alpaca's layout), or a chat seed, ``messages``: ``[{role, content}, ...]`` with roles
system (first only), user and assistant, ending with a user turn, or with an assistant turn that is then
the reference. A chat seed's final user turn is its instruction and the turns before it its ``context``.
``reference`` is required in the eval split: it is what the metric compares against. The field names can
be mapped (``ingest.fields``). Ids are content hashes of (instruction, input, and context when there is
one), so they are stable across runs and machines; records with identical content collapse onto the first
one. A malformed file is one error naming the file, the line and what is wrong.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import polars as pl

from distill.entry import StageError
from distill.io import content_hash, file_hash
from distill.params import FieldNames
from distill.records import SEED, conform

FIELDS = ("instruction", "input", "reference")
ROLES = ("system", "user", "assistant")


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


def _read_csv(path: Path, names: FieldNames) -> list[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(_decode(path), newline=""))
    if not {names.instruction, names.messages} & set(reader.fieldnames or []):
        raise SeedError(f"{path}:1: header has no '{names.instruction}' (or '{names.messages}') column (found "
                        f"{reader.fieldnames}; map your names with ingest.fields)")
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


def _read_saved_dataset(path: Path) -> list[tuple[int, dict]]:
    """A folder written by ``datasets``' ``save_to_disk`` (one split: a DatasetDict's split is its subfolder)."""
    from datasets import Dataset, load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except Exception as error:  # datasets raises several types for a folder that is not a saved dataset
        raise SeedError(f"{path}: not a folder written by datasets' save_to_disk ({error})") from None
    if not isinstance(dataset, Dataset):
        raise SeedError(f"{path}: holds the splits {sorted(dataset)}; point at one of them, e.g. "
                        f"{path / sorted(dataset)[0]}")
    if len(dataset) == 0:
        raise SeedError(f"{path}: dataset has no rows")
    return [(row + 1, record) for row, record in enumerate(dataset.to_list())]


READERS = {".jsonl": _read_jsonl, ".json": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}


def read_records(path: Path, names: FieldNames | None = None) -> list[tuple[int, dict]]:
    """(line, record) pairs; line is 1-based (the row number for parquet and saved datasets)."""
    if not path.exists():
        raise SeedError(f"{path}: file not found")
    if path.is_dir():
        return _read_saved_dataset(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise SeedError(f"{path}: unsupported format {path.suffix!r}; use one of {sorted(READERS)}")
    records = reader(path, names or FieldNames()) if reader is _read_csv else reader(path)
    if not records:
        raise SeedError(f"{path}: no records")
    return records


def seed_id(instruction: str, input_text: str = "", context: str = "") -> str:
    """The content id of a seed; the context enters only when there is one (instruction seeds keep their ids)."""
    content = {"instruction": instruction, "input": input_text}
    return content_hash(content | {"context": context} if context else content)


def _turns(where: str, field: str, value: object) -> list[dict]:
    """A chat seed's turns, checked: a list of {role, content} strings, system first if at all."""
    if isinstance(value, str):  # CSV cells (and some exports) hold the list as JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise SeedError(f"{where}: field '{field}' is not a JSON list of turns ({error.msg})") from None
    if not isinstance(value, list) or not value:
        raise SeedError(f"{where}: field '{field}' must be a non-empty list of {{role, content}} turns")
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
            raise SeedError(f"{where}: {field}[{i}] must be {{role: system|user|assistant, content: string}}, "
                            f"got {str(turn)[:80]}")
        if turn["role"] == "system" and i > 0:
            raise SeedError(f"{where}: {field}[{i}]: a system turn may only come first")
        turns.append({"role": turn["role"], "content": turn["content"]})
    return turns


def _values(where: str, record: dict, names: FieldNames) -> dict:
    """instruction, input, reference and context of one record (instruction or chat seed), checked."""
    values = {}
    for name in FIELDS:
        value = record.get(getattr(names, name))
        if value is not None and not isinstance(value, str):
            raise SeedError(f"{where}: field '{getattr(names, name)}' must be a string, got {type(value).__name__}")
        values[name] = value
    values["context"] = ""
    messages = record.get(names.messages)
    if messages is not None:
        if values["instruction"] is not None:
            raise SeedError(f"{where}: has both '{names.instruction}' and '{names.messages}'; a seed is one or the "
                            "other")
        turns = _turns(where, names.messages, messages)
        if turns[-1]["role"] == "assistant":  # a chat that ends with its answer: that answer is the reference
            if values["reference"]:
                raise SeedError(f"{where}: ends with an assistant turn and has a '{names.reference}'; keep one")
            values["reference"] = turns.pop()["content"]
        if not turns or turns[-1]["role"] != "user":
            raise SeedError(f"{where}: field '{names.messages}' must end with a user turn (or a user turn and "
                            "its reference answer)")
        values["instruction"] = turns[-1]["content"]
        values["context"] = json.dumps(turns[:-1], ensure_ascii=False) if len(turns) > 1 else ""
    elif values["instruction"] is None:
        raise SeedError(f"{where}: missing required field '{names.instruction}' (or '{names.messages}')")
    if not values["instruction"].strip():
        raise SeedError(f"{where}: the instruction (field '{names.instruction}', or the last user turn) is empty")
    values["input"] = values["input"] or ""
    return values


def normalise(path: Path, records: list[tuple[int, dict]], split: str, names: FieldNames | None = None
              ) -> pl.DataFrame:
    """Validate each record and build the SEED frame; duplicates keep their first line."""
    names = names or FieldNames()
    source_hash = file_hash(path) if path.is_file() else content_hash(sorted(
        file_hash(part) for part in path.rglob("*") if part.is_file()))
    rows: dict[str, dict] = {}
    for line, record in records:
        values = _values(f"{path}:{line}", record, names)
        if split == "eval" and not values["reference"]:
            raise SeedError(f"{path}:{line}: eval records need a reference answer (field '{names.reference}', or "
                            "a final assistant turn)")
        key = seed_id(values["instruction"], values["input"], values["context"])
        rows.setdefault(
            key,
            values | {"id": key, "split": split, "source_file": str(path), "source_line": line,
                      "source_hash": source_hash},
        )
    return conform(pl.DataFrame(list(rows.values()), schema=SEED), SEED)
