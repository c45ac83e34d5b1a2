"""Tests of the ingest gate (``stages/gates/ingest.py``): good seed tables pass, broken ones fail naming the
expectation and the failing ids, and its command line (``python -m stages.gates.ingest``) reports both."""

from __future__ import annotations

import json

import polars as pl
import pytest

from distill.gate import validate
from distill.params import IngestGate
from distill.records import SEED

INGEST = IngestGate(min_rows=3, min_eval_rows=2, max_instruction_chars=100)


@pytest.fixture(scope="module")
def ingest_frames(frame, good_seed_rows):
    """``ingest_frames(train=None, eval_=None)``: the train and eval frames (4 and 3 good rows by default)."""
    def build(train: list[dict] | None = None, eval_: list[dict] | None = None) -> dict[str, pl.DataFrame]:
        return {"train": frame(train or good_seed_rows(4, "train"), SEED),
                "eval": frame(eval_ or good_seed_rows(3, "eval"), SEED)}
    return build


def test_ingest_good_passes(suite, ingest_frames, assert_passes) -> None:
    result = validate(suite("ingest"), INGEST, ingest_frames())
    assert_passes(result)
    assert result.rows == {"train": 4, "eval": 3}


def test_ingest_bad_rows_fail_with_ids(suite, ingest_frames, good_seed_rows, failed) -> None:
    train = good_seed_rows(4, "train")
    train[1]["id"] = train[2]["id"] = "dup"
    train[3]["instruction"] = "x" * 101
    eval_ = good_seed_rows(3, "eval")
    eval_[0]["reference"] = None
    eval_[2]["split"] = "train"
    fails = failed(validate(suite("ingest"), INGEST, ingest_frames(train, eval_)))
    assert set(fails) == {
        "train: expect_column_values_to_be_unique(id)",
        "train: expect_column_value_lengths_to_be_between(instruction)",
        "eval: expect_column_values_to_not_be_null(reference)",
        "eval: expect_column_values_to_be_in_set(split)",
    }
    assert fails["train: expect_column_values_to_be_unique(id)"].failing_ids == ["dup"]
    assert fails["train: expect_column_value_lengths_to_be_between(instruction)"].failing_ids == ["train-3"]
    assert fails["eval: expect_column_values_to_not_be_null(reference)"].failing_ids == ["eval-0"]
    assert fails["eval: expect_column_values_to_be_in_set(split)"].failing_ids == ["eval-2"]


def test_ingest_min_rows_fails(suite, ingest_frames, failed, never) -> None:
    gate = IngestGate(min_rows=never, min_eval_rows=never, max_instruction_chars=100)
    fails = failed(validate(suite("ingest"), gate, ingest_frames()))
    assert set(fails) == {"train: expect_table_row_count_to_be_between()",
                          "eval: expect_table_row_count_to_be_between()"}
    assert fails["eval: expect_table_row_count_to_be_between()"].observed == 3


def test_schema_mismatch_skips_content_checks(suite, ingest_frames, failed) -> None:
    frames = ingest_frames()
    frames["train"] = frames["train"].drop("source_hash")
    frames["eval"] = frames["eval"].with_columns(pl.col("source_line").cast(pl.String))
    result = validate(suite("ingest"), INGEST, frames)
    fails = failed(result)
    columns, dtypes = ("train: expect_table_columns_to_match_set()",
                       "eval.dtypes: expect_column_pair_values_to_be_equal(dtype, expected)")
    assert set(fails) == {columns, dtypes}
    assert fails[columns].details == {"mismatched": {"missing": ["source_hash"]}}
    assert fails[dtypes].failing_ids == ["source_line"] and fails[dtypes].sample == [["String", "Int64"]]
    assert result.skipped and not result.success


# --- the command line --------------------------------------------------------------------------

def test_cli_fails_with_message_and_report(gate_workdir, good_seed_rows, write_ingest, run_gate) -> None:
    train = good_seed_rows(100, "train")  # params.yaml: gates.ingest.min_rows = 100, min_eval_rows = 50
    train[7]["id"] = train[3]["id"]
    write_ingest(gate_workdir, train, good_seed_rows(50, "eval"))
    proc = run_gate(gate_workdir, "ingest")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines()[0] == (
        "gate ingest failed: train: expect_column_values_to_be_unique(id): 2 of 100 rows unexpected, "
        "e.g. ['train-3', 'train-3']; failing ids: ['train-3'] (report: reports/gates/ingest.json)")
    report = json.loads((gate_workdir / "reports/gates/ingest.json").read_text())
    assert report["success"] is False and report["failed"] == 1
    [failure] = [item for item in report["expectations"] if not item["success"]]
    assert failure["type"] == "expect_column_values_to_be_unique" and failure["failing_ids"] == ["train-3"]


def test_cli_passes(gate_workdir, good_seed_rows, write_ingest, run_gate) -> None:
    write_ingest(gate_workdir, good_seed_rows(100, "train"), good_seed_rows(50, "eval"))
    proc = run_gate(gate_workdir, "ingest")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gate ingest OK: ")
    report = json.loads((gate_workdir / "reports/gates/ingest.json").read_text())
    assert report["success"] is True and report["rows"] == {"train": 100, "eval": 50}


def test_cli_missing_input_names_the_file(gate_workdir, run_gate) -> None:
    proc = run_gate(gate_workdir, "ingest")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "gate ingest failed: missing input data/ingest/train.parquet "
        "(table 'train'; run the ingest stage first) (report: reports/gates/ingest.json)")
    assert json.loads((gate_workdir / "reports/gates/ingest.json").read_text())["success"] is False
