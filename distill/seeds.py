"""Seed files: read JSONL, JSON, CSV, parquet or a ``datasets.save_to_disk`` folder, and normalise the records
to the SEED schema.

A record is either an instruction seed, ``instruction`` (non-empty string) with optional ``input`` and
``reference`` strings (Alpaca's layout), or a chat seed, ``messages``: ``[{role, content}, ...]`` with roles
system (first only), user and assistant, ending with a user turn, or with an assistant turn that is then
the reference. A chat seed's final user turn is its instruction and the turns before it its ``context``.
``reference`` is required in the eval split: it is what the metric compares against. The field names can
be mapped (``ingest.fields``). Ids are content hashes of (instruction, input, and context when there is
one), so they are stable across runs and machines; records with identical content collapse onto the first
one. A malformed file is one error naming the file, the line and what is wrong, and quoting at most
``QUOTED`` characters of any value.

Text files are UTF-8, with or without a byte order mark. JSONL lines end at ``\n`` (or ``\r\n``) only: U+2028
and the other Unicode line breaks are text inside a string. A ``.json`` file is JSONL, or one array of objects
(a record's line is where its object starts). Values may not hold NUL or other non-whitespace control
characters, nor lone surrogates (a stray ``\ud800`` escape). A field that no ``ingest.fields`` name maps is
ignored (``ignored_fields`` counts them) unless it looks like a misspelt one (``inptu``), which is an error.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import json
import re
import reprlib
import sys
from collections import Counter
from pathlib import Path

import polars as pl

from distill.entry import StageError
from distill.io import content_hash, file_hash
from distill.params import FieldNames
from distill.records import SEED, conform

FIELDS = ("instruction", "input", "reference")
ROLES = ("system", "user", "assistant")
QUOTED = 80  # characters of a value that a message quotes; the rest is counted, never printed
CLOSE = 0.8  # difflib similarity from which an unknown field is a misspelt known one ('inptu' ~ 'input': 0.8)
# NUL and the other C0 controls that are not whitespace are never seed text (C libraries and tokenizers stop at
# NUL); tab, newline, vertical tab, form feed and carriage return are. A lone surrogate (a stray "\ud800" escape
# in JSON) is not Unicode at all: it cannot be written as UTF-8 (parquet, JSON).
BAD_CHARACTER = re.compile(r"[\x00-\x08\x0e-\x1f\ud800-\udfff]")
# Raw control characters inside JSON strings are judged by BAD_CHARACTER, as in every other format.
JSON = json.JSONDecoder(strict=False)
SURPLUS = object()  # csv.DictReader's key for the cells of a row beyond the header's columns


class SeedError(StageError):
    """A seed file that cannot be ingested; the message names file and line."""


def clip(text: str) -> str:
    """``text`` cut to its first QUOTED characters, with its length when cut."""
    return text if len(text) <= QUOTED else f"{text[:QUOTED]}... ({len(text)} chars)"


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = QUOTED
_repr.maxlevel = 3  # a 10,000-deep list prints as [[[...]]]


def shown(value: object) -> str:
    """``value`` as a message quotes it: a repr cut to QUOTED characters per string and a few items and levels."""
    if isinstance(value, str) and len(value) > QUOTED:
        return f"{value[:QUOTED]!r}... ({len(value)} chars)"
    return _repr.repr(value)


def _check_text(where: str, what: str, text: str) -> None:
    bad = BAD_CHARACTER.search(text)
    if bad:
        if bad.group() >= "\ud800":
            kind, fix = "a lone surrogate", "a JSON \\u escape must name a whole character (a surrogate pair)"
        else:
            kind, fix = "a control character", "remove it from the file"
        raise SeedError(f"{where}: {what} holds {kind} ({ascii(bad.group())}) at character {bad.start() + 1}; {fix}")


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SeedError(f"{path}: cannot read it ({error.strerror})") from None
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark (spreadsheet exports) is no part of the text
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


def _json_problem(error: ValueError | RecursionError) -> str:
    """Why JSON text could not be decoded."""
    if isinstance(error, json.JSONDecodeError):
        return f"invalid JSON ({error.msg} at column {error.colno})"
    if isinstance(error, RecursionError):  # Python's decoder recurses once per level of [ or {
        return "JSON nested too deeply to read; a seed is a flat object of strings"
    # the only other ValueError: an integer over Python's limit on digits (sys.get_int_max_str_digits)
    return f"invalid JSON (a number of over {sys.get_int_max_str_digits()} digits)"


def _json(path: Path, text: str, line: int | None = None) -> object:
    """``text`` decoded; errors name line ``line`` (a JSONL line) or the line the decoder stopped at, if known."""
    try:
        return JSON.decode(text)
    except (ValueError, RecursionError) as error:
        line = line or getattr(error, "lineno", None)
        raise SeedError(f"{path}:{line}: {_json_problem(error)}" if line else f"{path}: {_json_problem(error)}"
                        ) from None


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    text = _decode(path)
    if path.suffix.lower() == ".json" and text.lstrip()[:1] == "[":
        return _read_json_array(path, text)
    records = []
    # "\n" only: str.splitlines() would also split at U+2028, \x85, \x0c, ... which JSON strings may hold raw
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        record = _json(path, line.removesuffix("\r"), number)
        if not isinstance(record, dict):
            raise SeedError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append((number, record))
    return records


def _read_json_array(path: Path, text: str) -> list[tuple[int, dict]]:
    """A ``.json`` file holding one array of objects (the common export); a record's line is where its object
    starts."""
    items = _json(path, text)  # the whole document first: the decoder's errors name line and column
    skip = json.decoder.WHITESPACE
    position = text.index("[") + 1
    line = text.count("\n", 0, position) + 1  # the line at position
    records = []
    for index, item in enumerate(items):
        start = skip.match(text, position).end()
        line += text.count("\n", position, start)
        if not isinstance(item, dict):
            raise SeedError(f"{path}:{line}: element {index} of the array is a {type(item).__name__}, expected a "
                            "JSON object")
        records.append((line, item))
        end = JSON.raw_decode(text, start)[1]  # valid JSON (decoded above): only where the element ends
        position = skip.match(text, end).end() + 1  # past the comma, or the closing bracket
        line += text.count("\n", start, position)
    return records


def _read_csv(path: Path, names: FieldNames) -> list[tuple[int, dict]]:
    text = _decode(path)
    # strict: a stray quote is an error, not text; SURPLUS collects the cells of a row longer than the header
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True, restkey=SURPLUS)
    records, start = [], 1  # start: the line where the current record starts (a quoted cell may span lines)
    limit = csv.field_size_limit(max(csv.field_size_limit(), len(text)))  # a cell may be as long as the file
    try:
        header = reader.fieldnames or []
        if not {names.instruction, names.messages} & set(header):
            raise SeedError(f"{path}:1: header has no '{names.instruction}' (or '{names.messages}') column (found "
                            f"{shown(header)}; map your names with ingest.fields)")
        twice = [name for name, count in Counter(header).items() if count > 1 and name]
        if twice:
            raise SeedError(f"{path}:1: the header names {shown(twice)} more than once; give each column its own "
                            "name")
        start = reader.line_num + 1
        for record in reader:
            if SURPLUS in record:
                raise SeedError(f"{path}:{start}: {len(header) + len(record[SURPLUS])} cells but the header has "
                                f"{len(header)} columns; quote the cells that hold a comma")
            records.append((start, {key: value for key, value in record.items() if value != ""}))
            start = reader.line_num + 1
    except csv.Error as error:
        hint = "; a quoted cell that starts here is never closed" if "unexpected end of data" in str(error) else ""
        raise SeedError(f"{path}:{start}: not valid CSV ({error}){hint}") from None
    finally:
        csv.field_size_limit(limit)
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
        if path.suffix.lower() in READERS:  # e.g. data/seeds/train.jsonl/ made by a mistaken copy
            raise SeedError(f"{path}: is a folder, not a {path.suffix} file")
        return _read_saved_dataset(path)
    if not path.is_file():
        raise SeedError(f"{path}: not a regular file (a pipe or a device?); point ingest at a seed file or a saved "
                        "dataset folder")
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
            value = JSON.decode(value)
        except (ValueError, RecursionError) as error:
            raise SeedError(f"{where}: field '{field}' is not a JSON list of turns: {_json_problem(error)}") from None
    if not isinstance(value, list) or not value:
        raise SeedError(f"{where}: field '{field}' must be a non-empty list of {{role, content}} turns")
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
            raise SeedError(f"{where}: {field}[{i}] must be {{role: system|user|assistant, content: string}}, "
                            f"got {shown(turn)}")
        if turn["role"] == "system" and i > 0:
            raise SeedError(f"{where}: {field}[{i}]: a system turn may only come first")
        _check_text(where, f"{field}[{i}].content", turn["content"])
        turns.append({"role": turn["role"], "content": turn["content"]})
    return turns


def _known(names: FieldNames) -> dict[str, str]:
    """The field names the seed files use -> the ingest.fields key that maps each."""
    return {getattr(names, key): key for key in (*FIELDS, "messages")}


def _unknown(record: dict, names: FieldNames) -> list[str]:
    """The fields of ``record`` that carry a value and that no ingest.fields name maps."""
    known = _known(names)
    return [key for key, value in record.items() if value is not None and key not in known]


@functools.cache  # a parquet or CSV file repeats the same columns on every row
def _misspelt(field: str, absent: tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(field, absent, n=1, cutoff=CLOSE)
    return close[0] if close else None


def _check_unknown(where: str, record: dict, names: FieldNames) -> None:
    """Unknown fields are allowed (real datasets carry ids, categories, ...) unless one looks like a misspelling of
    a known field that the record lacks."""
    known = _known(names)
    absent = [name for name in known if record.get(name) is None]
    if names.instruction not in absent or names.messages not in absent:  # a seed has one or the other
        absent = [name for name in absent if name not in (names.instruction, names.messages)]
    for field in _unknown(record, names):
        _check_text(where, "a field name", field)
        meant = _misspelt(field, tuple(absent))
        if meant:
            raise SeedError(f"{where}: unknown field {shown(field)}: did you mean '{meant}'? Rename it in the file, "
                            f"or set ingest.fields.{known[meant]}: {shown(field)} in params.yaml")


def ignored_fields(records: list[tuple[int, dict]], names: FieldNames | None = None) -> dict[str, int]:
    """How many records carry each field that no ingest.fields name maps (its name clipped): listed by the stage so
    that a field meant to be read is never dropped unnoticed."""
    counts = Counter(clip(field) for _, record in records for field in _unknown(record, names or FieldNames()))
    return dict(sorted(counts.items()))


def _values(where: str, record: dict, names: FieldNames) -> dict:
    """instruction, input, reference and context of one record (instruction or chat seed), checked."""
    _check_unknown(where, record, names)
    values = {}
    for name in FIELDS:
        value = record.get(getattr(names, name))
        if value is not None and not isinstance(value, str):
            raise SeedError(f"{where}: field '{getattr(names, name)}' must be a string, got {type(value).__name__}")
        if value is not None:
            _check_text(where, f"field '{getattr(names, name)}'", value)
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
