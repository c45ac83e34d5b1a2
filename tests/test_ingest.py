"""Seed ingest: JSONL, CSV and parquet to the SEED schema; one precise error per bad file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from distill.io import file_hash
from distill.params import FieldNames, IngestParams
from distill.records import SEED
from distill.seeds import SeedError, normalise, read_records, seed_id
from stages.ingest import run

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, data: bytes | str) -> Path:
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def ingest(path: Path, split: str = "train") -> pl.DataFrame:
    return normalise(path, read_records(path), split)


def seed_error(path: Path, split: str = "train") -> str:
    with pytest.raises(SeedError) as caught:
        ingest(path, split)
    return str(caught.value)


def test_jsonl_to_seed_schema(tmp_path: Path) -> None:
    path = write(
        tmp_path / "train.jsonl",
        '{"instruction": "reverse planet"}\n'
        "\n"
        '{"instruction": "upper cat", "input": "ctx", "reference": "CAT"}\n',
    )
    frame = ingest(path)
    assert frame.schema == pl.Schema(SEED)
    assert frame.drop("id").to_dicts() == [
        {"instruction": "reverse planet", "input": "", "context": "", "reference": None, "split": "train",
         "source_file": str(path), "source_line": 1, "source_hash": file_hash(path)},
        {"instruction": "upper cat", "input": "ctx", "context": "", "reference": "CAT", "split": "train",
         "source_file": str(path), "source_line": 3, "source_hash": file_hash(path)},
    ]
    assert all(len(seed_id) == 16 for seed_id in frame["id"])
    assert frame["id"].n_unique() == 2


def test_ids_are_content_hashes_stable_across_formats(tmp_path: Path) -> None:
    jsonl = write(tmp_path / "a.jsonl", '{"instruction": "reverse planet"}\n{"instruction": "upper cat"}\n')
    csv = write(tmp_path / "b.csv", "instruction,input\nupper cat,\nreverse planet,\n")
    parquet = tmp_path / "c.parquet"
    schema = {"instruction": pl.String, "input": pl.String}
    pl.DataFrame({"instruction": ["reverse planet"], "input": [None]}, schema=schema).write_parquet(parquet)
    by_jsonl = dict(ingest(jsonl).select("instruction", "id").iter_rows())
    by_csv = dict(ingest(csv).select("instruction", "id").iter_rows())
    by_parquet = dict(ingest(parquet).select("instruction", "id").iter_rows())
    assert by_jsonl == by_csv
    assert by_parquet == {"reverse planet": by_jsonl["reverse planet"]}
    assert by_jsonl["reverse planet"] != by_jsonl["upper cat"]
    # the same instruction with another input is other content
    other = write(tmp_path / "d.jsonl", '{"instruction": "reverse planet", "input": "x"}\n')
    assert ingest(other)["id"][0] != by_jsonl["reverse planet"]


def test_csv_and_parquet_lines(tmp_path: Path) -> None:
    csv = write(tmp_path / "s.csv", "instruction,reference\nreverse planet,tenalp\nupper cat,CAT\n")
    frame = ingest(csv, "eval")
    assert frame.select("instruction", "reference", "source_line", "split").rows() == [
        ("reverse planet", "tenalp", 2, "eval"),
        ("upper cat", "CAT", 3, "eval"),
    ]
    parquet = tmp_path / "s.parquet"
    pl.DataFrame({"instruction": ["reverse planet", "upper cat"]}).write_parquet(parquet)
    assert ingest(parquet).select("instruction", "source_line").rows() == [("reverse planet", 1), ("upper cat", 2)]


def test_duplicates_collapse_onto_first_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "dup.jsonl",
        '{"instruction": "reverse planet", "reference": "tenalp"}\n'
        '{"instruction": "upper cat", "reference": "CAT"}\n'
        '{"instruction": "reverse planet", "reference": "other"}\n',
    )
    frame = ingest(path, "eval")
    assert frame.select("instruction", "reference", "source_line").rows() == [
        ("reverse planet", "tenalp", 1),
        ("upper cat", "CAT", 2),
    ]


def test_eval_requires_reference(tmp_path: Path) -> None:
    path = write(tmp_path / "eval.jsonl", '{"instruction": "reverse planet", "reference": "tenalp"}\n'
                                          '{"instruction": "upper cat"}\n')
    assert ingest(path, "train").height == 2
    assert seed_error(path, "eval") == (f"{path}:2: eval records need a reference answer (field 'reference', or a "
                                        "final assistant turn)")


def test_bad_json_line_names_line_3(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.jsonl",
        '{"instruction": "a"}\n{"instruction": "b"}\n{"instruction": "c"\n{"instruction": "d"}\n',
    )
    assert seed_error(path) == f"{path}:3: invalid JSON (Expecting ',' delimiter at column 20)"


def test_json_array_instead_of_object(tmp_path: Path) -> None:
    path = write(tmp_path / "arr.jsonl", '{"instruction": "a"}\n["reverse planet"]\n')
    assert seed_error(path) == f"{path}:2: expected a JSON object, got list"


def test_missing_instruction(tmp_path: Path) -> None:
    path = write(tmp_path / "m.jsonl", '{"instruction": "a"}\n{"input": "x"}\n')
    assert seed_error(path) == f"{path}:2: missing required field 'instruction' (or 'messages')"


def test_instruction_null_is_missing(tmp_path: Path) -> None:
    path = write(tmp_path / "m.jsonl", '{"instruction": null}\n')
    assert seed_error(path) == f"{path}:1: missing required field 'instruction' (or 'messages')"


def test_instruction_int(tmp_path: Path) -> None:
    path = write(tmp_path / "i.jsonl", '{"instruction": "a"}\n{"instruction": 7}\n')
    assert seed_error(path) == f"{path}:2: field 'instruction' must be a string, got int"


def test_input_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path / "i.jsonl", '{"instruction": "a", "input": ["x"]}\n')
    assert seed_error(path) == f"{path}:1: field 'input' must be a string, got list"


def test_empty_instruction(tmp_path: Path) -> None:
    path = write(tmp_path / "e.jsonl", '{"instruction": "a"}\n{"instruction": "   "}\n')
    assert seed_error(path) == f"{path}:2: the instruction (field 'instruction', or the last user turn) is empty"


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path / "empty.jsonl", content)
    assert seed_error(path) == f"{path}: file is empty"


def test_non_utf8_names_line_2(tmp_path: Path) -> None:
    path = write(tmp_path / "latin.jsonl", b'{"instruction": "a"}\n{"instruction": "caf\xff"}\n')
    assert seed_error(path) == f"{path}:2: not valid UTF-8 (byte 0xff at column 21); re-save the file as UTF-8"


def test_unsupported_extension(tmp_path: Path) -> None:
    path = write(tmp_path / "seeds.txt", "reverse planet\n")
    assert seed_error(path) == f"{path}: unsupported format '.txt'; use one of ['.csv', '.json', '.jsonl', '.parquet']"


def test_missing_file(tmp_path: Path) -> None:
    assert seed_error(tmp_path / "nope.jsonl") == f"{tmp_path / 'nope.jsonl'}: file not found"


def test_csv_without_instruction_column(tmp_path: Path) -> None:
    path = write(tmp_path / "s.csv", "prompt,input\nreverse planet,\n")
    assert seed_error(path) == (f"{path}:1: header has no 'instruction' (or 'messages') column (found ['prompt', "
                                "'input']; map your names with ingest.fields)")


def test_parquet_instruction_int(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    pl.DataFrame({"instruction": ["a", "b"], "input": [None, None]}).with_columns(
        instruction=pl.Series([1, 2])
    ).write_parquet(path)
    assert seed_error(path) == f"{path}:1: field 'instruction' must be a string, got int"


def test_run_returns_both_splits_and_metrics(tmp_path: Path) -> None:
    train = write(tmp_path / "train.jsonl", '{"instruction": "reverse planet"}\n{"instruction": "reverse planet"}\n'
                                            '{"instruction": "upper cat"}\n')
    evals = write(tmp_path / "eval.csv", "instruction,reference\nreverse dog,god\n")
    frames, metrics = run(IngestParams(train=str(train), eval=str(evals)))
    assert metrics == {
        "train": {"source": str(train), "records_read": 3, "rows": 2, "duplicates_collapsed": 1, "ignored_fields": {}},
        "eval": {"source": str(evals), "records_read": 1, "rows": 1, "duplicates_collapsed": 0, "ignored_fields": {}},
    }
    assert frames["train"]["instruction"].to_list() == ["reverse planet", "upper cat"]
    assert frames["eval"].select("instruction", "reference", "split").rows() == [
        ("reverse dog", "god", "eval")
    ]


def test_stage_with_bad_eval_writes_nothing(tmp_path: Path) -> None:
    """python -m stages.ingest: one line naming file and line, exit 1, neither split written."""
    (tmp_path / "data/seeds").mkdir(parents=True)
    write(tmp_path / "data/seeds/train.jsonl", '{"instruction": "reverse planet"}\n')
    write(tmp_path / "data/seeds/eval.jsonl", '{"instruction": "reverse dog"}\n')  # no reference
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    proc = subprocess.run([sys.executable, "-m", "stages.ingest"], cwd=tmp_path, capture_output=True, text=True,
                          env=os.environ | {"PYTHONPATH": str(REPO)}, timeout=120, check=False)
    assert proc.returncode == 1
    assert proc.stderr == ("ingest: data/seeds/eval.jsonl:1: eval records need a reference answer (field "
                           "'reference', or a final assistant turn)\n")
    assert not (tmp_path / "data/ingest").exists()


def test_two_seeds_differing_only_in_input_are_two_seeds(tmp_path: Path) -> None:
    path = write(tmp_path / "s.jsonl", '{"instruction": "Translate to French", "input": "cat"}\n'
                                       '{"instruction": "Translate to French", "input": "dog"}\n')
    frame = ingest(path)
    assert frame["input"].to_list() == ["cat", "dog"] and frame["id"].n_unique() == 2


def test_alpaca_field_names_are_mapped(tmp_path: Path) -> None:
    path = write(tmp_path / "alpaca.jsonl", '{"instruction": "Count the letters.", "input": "planet", '
                                            '"output": "planet has 6 letters."}\n')
    frame = normalise(path, read_records(path), "eval", FieldNames(reference="output"))
    assert frame.select("instruction", "input", "reference").rows() == [
        ("Count the letters.", "planet", "planet has 6 letters.")]


def test_chat_seed_with_a_system_turn_and_two_user_turns(tmp_path: Path) -> None:
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A word: planet"},
             {"role": "assistant", "content": "Noted."}, {"role": "user", "content": "Count its letters."},
             {"role": "assistant", "content": "planet has 6 letters."}]
    path = write(tmp_path / "chat.jsonl", json.dumps({"messages": turns}) + "\n")
    row = ingest(path, "eval").row(0, named=True)
    assert row["instruction"] == "Count its letters." and row["reference"] == "planet has 6 letters."
    assert json.loads(row["context"]) == turns[:3]
    assert row["id"] == seed_id("Count its letters.", "", row["context"]) != seed_id("Count its letters.")


@pytest.mark.parametrize(("turns", "message"), [
    ([{"role": "user", "content": "hi"}, {"role": "system", "content": "late"}],
     "messages[1]: a system turn may only come first"),
    ([{"role": "bot", "content": "hi"}], "messages[0] must be {role: system|user|assistant, content: string}"),
    ([{"role": "system", "content": "only a system turn"}], "field 'messages' must end with a user turn"),
    ([], "field 'messages' must be a non-empty list"),
])
def test_bad_chat_seeds_name_the_line_and_the_turn(tmp_path: Path, turns: list, message: str) -> None:
    path = write(tmp_path / "chat.jsonl", '{"instruction": "upper cat"}\n' + json.dumps({"messages": turns}) + "\n")
    assert seed_error(path).startswith(f"{path}:2: ") and message in seed_error(path)


def test_a_saved_hugging_face_dataset_is_read_and_a_dataset_dict_names_its_splits(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    rows = {"prompt": ["upper cat", "reverse dog"], "answer": ["CAT", "god"]}
    DatasetDict({"train": Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "ds"))
    frame = normalise(tmp_path / "ds" / "train", read_records(tmp_path / "ds" / "train"), "eval",
                      FieldNames(instruction="prompt", reference="answer"))
    assert frame.select("instruction", "reference", "source_line").rows() == [("upper cat", "CAT", 1),
                                                                              ("reverse dog", "god", 2)]
    with pytest.raises(SeedError, match=r"holds the splits \['train'\]; point at one of them"):
        read_records(tmp_path / "ds")


def test_chat_seeds_in_csv_hold_their_turns_as_json(tmp_path: Path) -> None:
    turns = json.dumps([{"role": "user", "content": "upper cat"}]).replace('"', '""')
    path = write(tmp_path / "chat.csv", f'messages\n"{turns}"\n')
    assert ingest(path)["instruction"].to_list() == ["upper cat"]



# --- bad seed files found when tried as a new user would (issue 18): each one error naming file, line and field --

BAD_SEEDS = "bad input: seed files"  # the reliability table's row


@pytest.mark.reliability
def test_a_lone_surrogate_is_refused_naming_line_and_field(tmp_path: Path, reliability) -> None:
    """Case 1: a stray "\ud800" escape decoded fine, then crashed writing parquet (UnicodeEncodeError)."""
    path = write(tmp_path / "s.jsonl", '{"instruction": "a"}\n{"instruction": "caf\\ud800e"}\n')
    assert seed_error(path) == (f"{path}:2: field 'instruction' holds a lone surrogate ('\\ud800') at character 4; "
                                "a JSON \\u escape must name a whole character (a surrogate pair)")
    chat = write(tmp_path / "c.jsonl", '{"messages": [{"role": "user", "content": "\\udc00"}]}\n')
    assert seed_error(chat).startswith(f"{chat}:1: messages[0].content holds a lone surrogate ('\\udc00')")
    key = write(tmp_path / "k.jsonl", '{"instruction": "a", "x\\ud800": "b"}\n')  # a name the metrics would list
    assert seed_error(key).startswith(f"{key}:1: a field name holds a lone surrogate")
    pair = write(tmp_path / "p.jsonl", '{"instruction": "\\ud83d\\ude00"}\n')  # a whole pair is one character
    assert ingest(pair)["instruction"].to_list() == ["\U0001f600"]
    reliability(BAD_SEEDS, named_cases=1)


@pytest.mark.reliability
def test_deeply_nested_json_is_refused_naming_the_line(tmp_path: Path, reliability) -> None:
    """Case 2: 100,000 '[' raised RecursionError."""
    deep = "[" * 100_000
    path = write(tmp_path / "s.jsonl", '{"instruction": "a"}\n{"instruction": ' + deep + "}\n")
    assert seed_error(path) == f"{path}:2: JSON nested too deeply to read; a seed is a flat object of strings"
    array = write(tmp_path / "s.json", deep)
    assert seed_error(array) == f"{array}: JSON nested too deeply to read; a seed is a flat object of strings"
    cell = write(tmp_path / "s.csv", f"messages\n{deep}\n")  # a chat seed's turns as JSON text in a cell
    assert seed_error(cell) == (f"{cell}:2: field 'messages' is not a JSON list of turns: JSON nested too deeply to "
                                "read; a seed is a flat object of strings")
    reliability(BAD_SEEDS, named_cases=1)


@pytest.mark.reliability
def test_a_seed_path_that_is_a_folder_or_not_a_file_is_refused(tmp_path: Path, reliability) -> None:
    """Case 3: a folder where a seed file was expected, or a folder that is not a saved dataset."""
    folder = tmp_path / "train.jsonl"
    folder.mkdir()
    (folder / "part-0.jsonl").write_text('{"instruction": "a"}\n')
    assert seed_error(folder) == f"{folder}: is a folder, not a .jsonl file"
    other = tmp_path / "seeds"
    other.mkdir()
    (other / "notes.txt").write_text("not a dataset")
    assert seed_error(other).startswith(f"{other}: not a folder written by datasets' save_to_disk (")
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)  # reading it would block for ever
    assert seed_error(fifo) == (f"{fifo}: not a regular file (a pipe or a device?); point ingest at a seed file or "
                                "a saved dataset folder")
    reliability(BAD_SEEDS, named_cases=1)


@pytest.mark.reliability
def test_unicode_line_breaks_inside_json_strings_are_text(tmp_path: Path, reliability) -> None:
    """Case 4: lines were split with str.splitlines(), which also splits at U+2028, U+2029, \x85, \x0b and \x0c."""
    texts = ["a\u2028b", "a\u2029b", "a\x85b", "a\x0bb", "a\x0cb"]
    body = "".join(json.dumps({"instruction": text}, ensure_ascii=False) + "\n" for text in texts)
    path = write(tmp_path / "s.jsonl", body + '{"instruction": "raw\x0bvt"}\n')  # raw inside the string too
    frame = ingest(path)
    assert frame["instruction"].to_list() == [*texts, "raw\x0bvt"]
    assert frame["source_line"].to_list() == [1, 2, 3, 4, 5, 6]
    crlf = write(tmp_path / "crlf.jsonl", '{"instruction": "a"}\r\n\r\n{"instruction": "b"\r\n')
    assert seed_error(crlf) == f"{crlf}:3: invalid JSON (Expecting ',' delimiter at column 20)"
    crlf.write_bytes(b'{"instruction": "a"}\r\n\r\n{"instruction": "b"}\r\n')
    assert ingest(crlf).select("instruction", "source_line").rows() == [("a", 1), ("b", 3)]
    reliability(BAD_SEEDS, named_cases=1)


@pytest.mark.reliability
def test_nul_and_other_control_characters_are_refused(tmp_path: Path, reliability) -> None:
    """Case 5: NUL (escaped in JSON, raw in CSV) was accepted silently; tab and newline stay legitimate."""
    escaped = write(tmp_path / "s.jsonl", '{"instruction": "a", "input": "b\\u0000c"}\n')
    assert seed_error(escaped) == (f"{escaped}:1: field 'input' holds a control character ('\\x00') at character 2; "
                                   "remove it from the file")
    raw = write(tmp_path / "s.csv", b"instruction,reference\nupper cat,C\x00AT\n")
    assert seed_error(raw, "eval") == (f"{raw}:2: field 'reference' holds a control character ('\\x00') at "
                                       "character 2; remove it from the file")
    escape = write(tmp_path / "e.jsonl", '{"instruction": "\\u001b[31mred"}\n')  # a terminal escape
    assert "field 'instruction' holds a control character ('\\x1b') at character 1" in seed_error(escape)
    fine = write(tmp_path / "ok.jsonl", '{"instruction": "a\\tb\\nc\\r\\nd"}\n')
    assert ingest(fine)["instruction"].to_list() == ["a\tb\nc\r\nd"]
    reliability(BAD_SEEDS, named_cases=1)


@pytest.mark.reliability
def test_csv_with_an_open_quote_surplus_cells_or_a_repeated_column_is_refused(tmp_path: Path, reliability) -> None:
    """Case 6: an unterminated quote swallowed the rest of the file into one cell, surplus cells were dropped."""
    open_quote = write(tmp_path / "q.csv", 'instruction,input\nupper cat,x\n"reverse dog,y\nupper owl,z\n')
    assert seed_error(open_quote) == (f"{open_quote}:3: not valid CSV (unexpected end of data); a quoted cell that "
                                      "starts here is never closed")
    stray = write(tmp_path / "s.csv", 'instruction\n"upper" cat\n')
    assert seed_error(stray) == f"{stray}:2: not valid CSV (',' expected after '\"')"
    surplus = write(tmp_path / "c.csv", "instruction,input\nupper cat,x\nreverse dog, the cat,y\n")
    assert seed_error(surplus) == (f"{surplus}:3: 3 cells but the header has 2 columns; quote the cells that hold a "
                                   "comma")
    twice = write(tmp_path / "t.csv", "instruction,input,input\nupper cat,x,y\n")
    assert seed_error(twice) == f"{twice}:1: the header names ['input'] more than once; give each column its own name"
    short = write(tmp_path / "ok.csv", 'instruction,input\n"upper\ncat"\nreverse dog,y\n')  # fewer cells: absent
    assert ingest(short).select("instruction", "input", "source_line").rows() == [("upper\ncat", "", 2),
                                                                                   ("reverse dog", "y", 4)]
    reliability(BAD_SEEDS, named_cases=1)


@pytest.mark.reliability
def test_a_misspelt_field_is_an_error_and_other_extra_fields_are_listed(tmp_path: Path, reliability) -> None:
    """Case 7: 'inptu' was dropped without a word. A near miss of a known field the record lacks is an error;
    other fields are real datasets' extra columns: ignored, but counted in the metrics."""
    path = write(tmp_path / "s.jsonl", '{"instruction": "a", "input": "x"}\n{"instruction": "b", "inptu": "y"}\n')
    assert seed_error(path) == (f"{path}:2: unknown field 'inptu': did you mean 'input'? Rename it in the file, or "
                                "set ingest.fields.input: 'inptu' in params.yaml")
    capital = write(tmp_path / "c.jsonl", '{"Instruction": "upper cat"}\n')
    assert "unknown field 'Instruction': did you mean 'instruction'?" in seed_error(capital)
    # a chat seed does not miss 'instruction', nor an Alpaca record its mapped 'output'
    chat = write(tmp_path / "chat.jsonl", '{"messages": [{"role": "user", "content": "hi"}], "instructions": "x"}\n')
    assert ingest(chat)["instruction"].to_list() == ["hi"]
    train = write(tmp_path / "train.jsonl", '{"instruction": "a", "category": "qa", "id": 7}\n'
                                            '{"instruction": "b", "category": "qa", "output": "B"}\n')
    evals = write(tmp_path / "eval.jsonl", '{"instruction": "c", "output": "C", "category": null}\n')
    _, metrics = run(IngestParams(train=str(train), eval=str(evals), fields=FieldNames(reference="output")))
    assert metrics["train"]["ignored_fields"] == {"category": 2, "id": 1}
    assert metrics["eval"]["ignored_fields"] == {}  # a null carries nothing
    reliability(BAD_SEEDS, named_cases=1)


@pytest.mark.reliability
def test_a_json_file_holding_an_array_of_objects_is_read(tmp_path: Path, reliability) -> None:
    """Case 8: the common export, [{...}, {...}], got a confusing error; each record's line is where its object
    starts, and a .json file of one object per line is still JSONL."""
    records = [{"instruction": "upper cat"}, {"instruction": "reverse dog", "input": "x"}]
    pretty = write(tmp_path / "pretty.json", json.dumps(records, indent=2))
    assert ingest(pretty).select("instruction", "source_line").rows() == [("upper cat", 2), ("reverse dog", 5)]
    one_line = write(tmp_path / "one.json", "\ufeff " + json.dumps(records))
    assert ingest(one_line)["source_line"].to_list() == [1, 1]
    assert ingest(one_line)["id"].to_list() == ingest(pretty)["id"].to_list()
    lines = write(tmp_path / "lines.json", "".join(json.dumps(record) + "\n" for record in records))
    assert ingest(lines)["source_line"].to_list() == [1, 2]
    not_objects = write(tmp_path / "bad.json", '[\n  {"instruction": "a"},\n  "b"\n]')
    assert seed_error(not_objects) == f"{not_objects}:3: element 1 of the array is a str, expected a JSON object"
    broken = write(tmp_path / "broken.json", '[\n  {"instruction": "a"},\n  {"instruction": }\n]')
    assert seed_error(broken) == f"{broken}:3: invalid JSON (Expecting value at column 19)"
    empty = write(tmp_path / "empty.json", "[]")
    assert seed_error(empty) == f"{empty}: no records"
    reliability(BAD_SEEDS, named_cases=1)


@pytest.mark.reliability
def test_a_utf8_byte_order_mark_is_not_part_of_the_header_or_the_first_line(tmp_path: Path, reliability) -> None:
    """Case 9: a BOM gave "no 'instruction' column (found ['\\ufeffinstruction', ...])" in a CSV and invalid JSON
    on line 1 of a JSONL."""
    bom = b"\xef\xbb\xbf"
    csv = write(tmp_path / "s.csv", bom + b"instruction,input\nupper cat,x\n")
    jsonl = write(tmp_path / "s.jsonl", bom + b'{"instruction": "upper cat", "input": "x"}\n')
    assert ingest(csv)["id"].to_list() == ingest(jsonl)["id"].to_list() == [seed_id("upper cat", "x")]
    latin = write(tmp_path / "l.jsonl", bom + b'{"instruction": "caf\xe9"}\n')  # positions count after the BOM
    assert seed_error(latin) == f"{latin}:1: not valid UTF-8 (byte 0xe9 at column 21); re-save the file as UTF-8"
    reliability(BAD_SEEDS, named_cases=1)


@pytest.mark.reliability
def test_a_5_mb_value_is_never_quoted_whole(tmp_path: Path, gx_workdir: Path, write_ingest, good_seed_rows,
                                            run_gate, reliability) -> None:
    """Case 10: a 5 MB value was printed whole to stderr and written whole into reports/gates/ingest.json (and GX's
    stored results and Data Docs): every message and report quotes the start of a value and its length."""
    huge = "x" * 5_000_000
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    turn = write(seeds / "t.jsonl", json.dumps({"messages": [huge]}) + "\n")
    assert seed_error(turn) == (f"{turn}:1: messages[0] must be {{role: system|user|assistant, content: string}}, "
                                f"got {'x' * 80!r}... (5000000 chars)")
    headerless = write(seeds / "h.csv", f"{huge},x\nupper cat,y\n")
    assert len(seed_error(headerless)) < 400
    extra = write(seeds / "e.jsonl", json.dumps({"instruction": "a", "reference": "b", huge: 1}) + "\n")
    assert list(run(IngestParams(train=str(extra), eval=str(extra)))[1]["train"]["ignored_fields"]) == [
        f"{'x' * 80}... (5000000 chars)"]
    # the gate: the over-long instruction fails max_instruction_chars and is quoted by its first 200 characters
    rows = good_seed_rows(100, "train")
    rows[5]["instruction"] = huge
    write_ingest(gx_workdir, rows, good_seed_rows(50, "eval"))
    proc = run_gate(gx_workdir, "ingest")
    assert proc.returncode == 1
    assert f"e.g. ['{'x' * 200}... (5000000 chars)']; failing ids: ['train-5']" in proc.stderr
    assert len(proc.stderr) < 2000
    written = [path for folder in ("reports", "gx") for path in (gx_workdir / folder).rglob("*") if path.is_file()]
    assert gx_workdir / "reports/gates/ingest.json" in written and any(path.suffix == ".html" for path in written)
    assert not [path for path in written if "x" * 1000 in path.read_text(errors="replace")]
    reliability(BAD_SEEDS, named_cases=1)
