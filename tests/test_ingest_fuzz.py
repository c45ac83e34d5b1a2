"""Property-based tests of seed ingest (issue 18): JSONL, JSON arrays, CSV, parquet and chat seeds, generated
with bad UTF-8, byte order marks, NUL and other control bytes, CRLF, huge rows, deep nesting, wrong types,
missing, misspelt and extra fields, duplicates and empty files.

The property: ``read_records`` + ``normalise`` either return a valid SEED frame (its rows those the records
describe) or raise one SeedError naming the file (and the line, where there is one) in one short line; never
another exception. Then ``python -m stages.ingest`` on a bad file: exit 1, one line, nothing written.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.params import FieldNames
from distill.records import SEED
from distill.seeds import BAD_CHARACTER, SeedError, normalise, read_records, seed_id

REPO = Path(__file__).resolve().parents[1]
BAD_SEEDS = "bad input: seed files"  # the reliability table's row
FUZZ = settings(max_examples=600, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAX_MESSAGE = 600  # characters of a SeedError beyond the path: values are quoted clipped

# strings that broke ingest once, or could: surrogates, NUL and other controls, Unicode line breaks, CSV and JSON
# syntax, a BOM inside the text, a value over csv's default 131,072-character cell limit
NASTY = ["", " ", "\x00", "a\x00b", "\x1b[31m", "\ud800", "\udc00x", "\u2028", "\u2029", "\x85", "\x0b", "\x0c",
         "\r", "\r\n", "\n", "\t", '"', '""', ",", "a,b", "\ufeff", "[", "{", "\\", "\U0001f600", "y" * 140_000]
texts = st.one_of(st.text(max_size=12), st.sampled_from(NASTY),
                  st.text(st.characters(exclude_categories=()), max_size=6))  # surrogates included
roles = st.sampled_from(["system", "user", "assistant", "bot"])
turns = st.lists(st.fixed_dictionaries({"role": roles, "content": st.one_of(texts, st.integers())}), max_size=4)
values = st.one_of(texts, texts, texts, st.none(), st.integers(), st.floats(), st.booleans(),
                   st.lists(texts, max_size=2), turns)
# the known names, near misses of them, and the extra columns real datasets carry
KEYS = ["instruction", "input", "reference", "messages", "inptu", "Instruction", "refernce", "output", "category",
        "id", "", "a\x00b"]
hostile = st.dictionaries(st.sampled_from(KEYS), values, max_size=5)
# valid seeds, so that both outcomes are reached: text that is never refused (Unicode line breaks and tabs included)
clean = st.text(st.characters(exclude_categories=("Cs", "Cc"), include_characters="\t\n\r\x0b\x0c"), max_size=12)
filled = clean.filter(str.strip)
instruction_seed = st.fixed_dictionaries({"instruction": filled}, optional={
    "input": clean, "reference": filled, "output": filled, "category": clean})
chat_seed = st.builds(lambda system, pairs, last, answer: {"messages": system + pairs + last + answer},
                      st.lists(st.fixed_dictionaries({"role": st.just("system"), "content": clean}), max_size=1),
                      st.lists(st.sampled_from(["user", "assistant"]).flatmap(
                          lambda role: st.fixed_dictionaries({"role": st.just(role), "content": clean})), max_size=3),
                      st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": filled}), min_size=1,
                               max_size=1),
                      st.lists(st.fixed_dictionaries({"role": st.just("assistant"), "content": filled}), max_size=1))
records = st.lists(st.one_of(instruction_seed, instruction_seed, instruction_seed, chat_seed, chat_seed, hostile),
                   min_size=0, max_size=6)
splits = st.sampled_from(["train", "train", "eval"])  # eval seeds need a reference: most such files are refused
# whole lines a JSONL file may hold: deep nesting, a huge number, JSON that is not an object, truncations
RAW_LINES = ["[" * 100_000, '{"instruction": ' + "[" * 5_000 + "]" * 5_000 + "}",
             '{"instruction": 1' + "0" * 5_000 + "}", '{"instruction": NaN}', '{"instruction": "a"', '"a string"',
             "null", "[]", '{"instruction": "a", "instruction": "b"}', '{"instruction": "\\ud800"}',
             '{"instruction": "\\u0000"}', '{"instruction": "a\\', "\x00", "\ufeff{}",
             '{"messages": "[{\\"role\\": \\"user\\", \\"content\\": \\"hi\\"}]"}']
# bytes inserted anywhere: invalid UTF-8 (0xff, a cut sequence, an encoded surrogate), NUL, BOMs, line ends, syntax
BYTES = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf", b"\r", b"\n", b'"', b",", b"[", b"\\",
         b"\xfe\xff"]


def dump(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def encode_jsonl(items: list[dict], raw: list[str], newline: str) -> str:
    lines = [dump(item) for item in items]
    for index, line in enumerate(raw):  # spread the raw lines through the file
        lines.insert(index * 2 % (len(lines) + 1), line)
    return newline.join(lines) + newline


def cell(value: object) -> str:
    """CSV holds text: a list (chat turns) as JSON text, a missing value as an empty cell, other values as str()."""
    return value if isinstance(value, str) else dump(value) if isinstance(value, list) else "" if value is None \
        else str(value)


def encode_csv(items: list[dict], newline: str) -> tuple[str, list[dict]]:
    """The CSV text, and its records as a reader sees them (text cells; an empty cell is no value)."""
    header = list(dict.fromkeys(key for item in items for key in item)) or ["instruction"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(header)
    rows = [[cell(item.get(key)) for key in header] for item in items]
    writer.writerows(rows)
    return out.getvalue(), [{key: text for key, text in zip(header, row, strict=True) if text} for row in rows]


@st.composite
def text_seed_files(draw) -> tuple[str, bytes, list[dict] | None]:
    """(suffix, file bytes, the records it faithfully holds, or None once the bytes were damaged)."""
    items = draw(records)
    items += draw(st.lists(st.sampled_from(items), max_size=2)) if items else []  # duplicates
    kind = draw(st.sampled_from(["jsonl", "json", "csv"]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    raw = draw(st.lists(st.sampled_from(RAW_LINES), max_size=draw(st.sampled_from([0, 0, 0, 2])))) if (
        kind == "jsonl") else []
    if kind == "jsonl":
        text = encode_jsonl(items, raw, newline)
    elif kind == "json":
        text = json.dumps(items, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 2])))
    else:
        text, items = encode_csv(items, newline)
    data = text.encode("utf-8", errors="surrogatepass")  # a raw lone surrogate is itself invalid UTF-8
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    faithful = not raw
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # damage: insert bytes, or cut the file short there
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(BYTES)) + (data[at:] if draw(st.booleans()) else b"")
        faithful = False
    if draw(st.integers(0, 20)) == 0:
        data, faithful = draw(st.sampled_from([b"", b"\n", b"\xef\xbb\xbf", b"[]", b"{}", b" \r\n"])), False
    return kind, data, items if faithful else None


@st.composite
def parquet_seed_files(draw) -> tuple[bytes, int, list[dict] | None]:
    """(parquet bytes, rows, the records, or None once the bytes were damaged): each column one type (strings with
    nulls, ints, string lists or chat turns)."""
    rows = draw(st.integers(0, 5))
    column = st.sampled_from(["text", "text", "int", "list", "turns"])
    unicode = texts.filter(lambda text: not re.search("[\ud800-\udfff]", text))  # arrow strings are Unicode
    cells = {"text": st.one_of(st.none(), unicode), "filled": st.one_of(filled, filled, filled, unicode),
             "clean": st.one_of(st.none(), clean),
             "int": st.integers(-(2**63), 2**63 - 1), "list": st.lists(st.text(max_size=5), max_size=2),
             "turns": st.lists(st.fixed_dictionaries({"role": roles, "content": st.text(max_size=8)}), max_size=3),
             "chat": chat_seed.map(lambda seed: seed["messages"])}
    columns = draw(st.sampled_from([{"instruction": "filled", "input": "clean", "reference": "clean"},
                                    {"instruction": "filled"}, {"messages": "chat"}, {}]))
    columns = columns | draw(st.dictionaries(st.sampled_from(KEYS), column, max_size=3))  # extra or hostile
    data = {name: [draw(cells[kind]) for _ in range(rows)] for name, kind in columns.items()}
    frame = pl.DataFrame(data, strict=False) if data else pl.DataFrame({"instruction": [None] * rows},
                                                                       schema={"instruction": pl.String})
    out = io.BytesIO()
    frame.write_parquet(out)
    data, items = out.getvalue(), frame.to_dicts()
    damage = draw(st.sampled_from([None, None, None, "cut", "flip"]))
    if damage:
        at = draw(st.integers(0, len(data) - 1))
        data, items = data[:at] if damage == "cut" else data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:], None
    return data, frame.height, items


def expected_rows(items: list[dict], split: str, names: FieldNames) -> dict[str, tuple]:
    """id -> (instruction, input, context, reference) as the module docstring defines them; the first of each
    content wins. Only called when ingest succeeded, so every record is valid."""
    rows: dict[str, tuple] = {}
    for item in items:
        messages = item.get(names.messages)
        if isinstance(messages, str):
            messages = json.loads(messages)
        reference, context = item.get(names.reference), ""
        if messages:
            turns = [{"role": turn["role"], "content": turn["content"]} for turn in messages]
            if turns[-1]["role"] == "assistant":
                reference = turns.pop()["content"]
            instruction = turns[-1]["content"]
            context = dump(turns[:-1]) if len(turns) > 1 else ""
        else:
            instruction = item[names.instruction]
        input_text = item.get(names.input) or ""
        rows.setdefault(seed_id(instruction, input_text, context), (instruction, input_text, context, reference))
    return rows


def check(path: Path, split: str, lines: int, names: FieldNames, items: list[dict] | None) -> str:
    """The property, on one file: "ok" or "refused"; any other outcome fails the test."""
    try:
        frame = normalise(path, read_records(path, names), split, names)
    except SeedError as error:
        message = str(error)
        assert message.startswith(f"{path}: ") or re.match(rf"{re.escape(str(path))}:\d+: ", message), message
        line = re.match(rf"{re.escape(str(path))}:(\d+): ", message)
        assert not line or 1 <= int(line.group(1)) <= lines, message
        assert "\n" not in message and len(message) < len(str(path)) + MAX_MESSAGE, message[:2000]
        return "refused"
    assert frame.schema == pl.Schema(SEED)
    assert frame["id"].n_unique() == frame.height > 0
    assert frame["split"].unique().to_list() == [split]
    assert frame["source_line"].min() >= 1 and frame["source_line"].max() <= lines
    for row in frame.iter_rows(named=True):
        assert row["id"] == seed_id(row["instruction"], row["input"], row["context"])
        assert row["instruction"].strip()
        assert not any(BAD_CHARACTER.search(row[name] or "") for name in ("instruction", "input", "context",
                                                                          "reference"))
        assert split == "train" or row["reference"]
    frame.write_parquet(io.BytesIO())  # every value can be written (no surrogates)
    if items is not None:  # the file says exactly these records: the rows are theirs
        got = {row["id"]: (row["instruction"], row["input"], row["context"], row["reference"])
               for row in frame.iter_rows(named=True)}
        want = expected_rows([{k: v for k, v in item.items() if v != ""} for item in items] if path.suffix == ".csv"
                             else items, split, names)
        assert got == want
    return "ok"


@pytest.mark.reliability
def test_text_seed_files_ingest_or_are_refused_with_one_error(tmp_path: Path, reliability) -> None:
    outcomes: Counter[str] = Counter()

    @settings(FUZZ, max_examples=1500)
    @given(case=text_seed_files(), split=splits,
           names=st.sampled_from([FieldNames(), FieldNames(reference="output")]))
    def run(case: tuple[str, bytes, list[dict] | None], split: str, names: FieldNames) -> None:
        kind, data, items = case
        path = tmp_path / f"seeds.{kind}"
        path.write_bytes(data)
        lines = len(re.split(rb"\r\n|\r|\n", data)) if kind == "csv" else data.count(b"\n") + 1  # csv: \r ends a line
        outcomes[check(path, split, lines, names, items)] += 1

    run()
    print(f"text seed files: {dict(outcomes)}")
    assert outcomes["ok"] and outcomes["refused"]  # the generator reaches both sides
    reliability(BAD_SEEDS, examples=sum(outcomes.values()), crashes=0)


@pytest.mark.reliability
def test_parquet_seed_files_ingest_or_are_refused_with_one_error(tmp_path: Path, reliability) -> None:
    outcomes: Counter[str] = Counter()

    @FUZZ
    @given(case=parquet_seed_files(), split=splits)
    def run(case: tuple[bytes, int, list[dict] | None], split: str) -> None:
        data, rows, items = case
        path = tmp_path / "seeds.parquet"
        path.write_bytes(data)
        outcomes[check(path, split, max(rows, 1), FieldNames(), items)] += 1

    run()
    print(f"parquet seed files: {dict(outcomes)}")
    assert outcomes["ok"] and outcomes["refused"]
    reliability(BAD_SEEDS, examples=sum(outcomes.values()), crashes=0)


# --- the stage's command line: a bad file is exit 1, one line on stderr, nothing written ------------------------


def ingest_stage(root: Path, train: bytes, evals: bytes, suffix: str = ".jsonl") -> subprocess.CompletedProcess:
    (root / "data/seeds").mkdir(parents=True, exist_ok=True)
    (root / f"data/seeds/train{suffix}").write_bytes(train)
    (root / "data/seeds/eval.jsonl").write_bytes(evals)
    params = (REPO / "params.yaml").read_text().replace("train: data/seeds/train.jsonl",
                                                        f"train: data/seeds/train{suffix}", 1)
    (root / "params.yaml").write_text(params)
    return subprocess.run([sys.executable, "-m", "stages.ingest"], cwd=root, capture_output=True, text=True,
                          env=os.environ | {"PYTHONPATH": str(REPO)}, timeout=120, check=False)


GOOD_EVAL = b'{"instruction": "upper cat", "reference": "CAT"}\n'


@pytest.mark.reliability
@pytest.mark.parametrize(("suffix", "train", "error"), [
    (".jsonl", b'{"instruction": "a"}\n{"instruction": "b\\ud800"}\n',
     "data/seeds/train.jsonl:2: field 'instruction' holds a lone surrogate ('\\ud800') at character 2; a JSON \\u "
     "escape must name a whole character (a surrogate pair)"),
    (".csv", b"instruction,input\nupper cat,x\n\"reverse dog,y\n",
     "data/seeds/train.csv:3: not valid CSV (unexpected end of data); a quoted cell that starts here is never closed"),
])
def test_the_stage_refuses_a_bad_file_in_one_line_and_writes_nothing(tmp_path: Path, suffix: str, train: bytes,
                                                                     error: str) -> None:
    proc = ingest_stage(tmp_path, train, GOOD_EVAL, suffix)
    assert (proc.returncode, proc.stderr) == (1, f"ingest: {error}\n")
    assert not (tmp_path / "data/ingest").exists() and not (tmp_path / "metrics").exists()


@pytest.mark.reliability
def test_the_stage_names_the_fields_it_ignores_once(tmp_path: Path) -> None:
    train = b'{"instruction": "a", "category": "qa"}\n{"instruction": "b", "category": "qa", "id": 2}\n'
    proc = ingest_stage(tmp_path, train, GOOD_EVAL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["ingest: 2 train and 1 eval seeds", "ingest: ignored fields that "
                                        "ingest.fields does not map: train: category (2 records), id (1 records)"]
    metrics = json.loads((tmp_path / "metrics/ingest.json").read_text())
    assert metrics["train"]["ignored_fields"] == {"category": 2, "id": 1} and metrics["eval"]["ignored_fields"] == {}
