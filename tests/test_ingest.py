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
        "train": {"source": str(train), "records_read": 3, "rows": 2, "duplicates_collapsed": 1},
        "eval": {"source": str(evals), "records_read": 1, "rows": 1, "duplicates_collapsed": 0},
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
