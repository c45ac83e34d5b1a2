"""Lineage from the student: `distill lineage --model data/train/model` on the tiny run lists exactly the rows the
train stage trained on, their teacher calls and costs, the train stage's dvc.lock record and the git commit; the
checkpoint carries its model card; `model_card` renders the eval table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from distill.model_card import model_card

pytestmark = pytest.mark.slow
MODEL = "data/train/model"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path, copy_run) -> Path:
    """A copy of the tiny run (git+DVC repo after one `dvc repro`)."""
    return copy_run(tiny_run, tmp_path_factory.mktemp("model-lineage") / "repo")


@pytest.fixture(scope="module")
def lineage(repo: Path, run) -> dict:
    """`distill lineage --model data/train/model --json` in the tiny run."""
    return json.loads(run(repo, sys.executable, "-m", "distill.cli", "lineage", "--model", MODEL, "--json").stdout)


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_lists_exactly_the_rows_the_train_stage_used(repo: Path, lineage: dict, monkeypatch) -> None:
    """The train stage's input, rebuilt here as it builds it: the kept rows of data/select/rows.parquet plus the
    replayed general rows, rendered into the pairs it trained on."""
    from distill import params as params_module
    from distill.io import content_hash
    from distill.student import load_tokenizer
    from distill.transfer.data import think_tags, training_pairs, training_rows

    monkeypatch.chdir(repo)
    params = params_module.load()
    selected = pl.read_parquet("data/select/rows.parquet")
    used = training_rows(selected, params.train)
    pairs = training_pairs(used, Path(params.train.prompt_template).read_text(encoding="utf-8"),
                           load_tokenizer(params.train.student), think_tags(params.student))
    rows = lineage["rows"]
    assert [row["id"] for row in rows] == used["id"].to_list()
    assert [row["content_hash"] for row in rows] == [content_hash(pair) for pair in pairs]
    kept = set(selected.filter(pl.col("keep"))["id"])
    assert {row["id"] for row in rows if row["source"] == "select"} == kept
    assert all(row["source"] == "replay" for row in rows if row["id"] not in kept)
    assert lineage["facts"]["rows"]["count"] == len(rows) == used.height
    assert all(row["selection"]["keep"] and row["gates_passed"][-1] == "select" for row in rows
               if row["source"] == "select")
    assert all(gate["success"] for gate in lineage["gates"].values())


def test_each_row_names_its_teacher_call_and_cost(repo: Path, lineage: dict, metrics) -> None:
    stored = {json.loads(line)["key"] for line in (repo / "data/store/generate.jsonl").read_text().splitlines()}
    selected = [row for row in lineage["rows"] if row["source"] == "select"]
    assert selected and all(row["teacher"] == "standin" and row["request_key"] in stored and row["in_store"]
                            for row in selected)
    assert all(row["cost_usd"] >= 0 and row["prompt_tokens"] > 0 for row in selected)
    total = sum(row["cost_usd"] for row in selected)
    assert 0 < total <= metrics(repo, "generate")["cost_usd"] + 1e-9
    teacher = lineage["teachers"]["standin"]
    assert teacher["rows"] == len(selected) and teacher["calls"] == len({row["request_key"] for row in selected})
    assert total <= teacher["cost_usd"] + 1e-9 and teacher["cost_usd"] == pytest.approx(lineage["cost_usd"])


def test_params_and_code_match_the_lock(repo: Path, lineage: dict) -> None:
    locked = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["train"]
    dvc = lineage["dvc"]
    assert dvc["params"] == locked["params"] and dvc["params_match_workspace"]
    assert {dep["path"]: dep["md5"] for dep in dvc["code"] + dvc["deps"]} == {
        dep["path"]: dep["md5"] for dep in locked["deps"]}
    assert "stages/train.py" in {dep["path"] for dep in dvc["code"]}
    assert all(dep["matches_workspace"] for dep in dvc["code"])
    assert dvc["manifest_inputs_match_lock"]["data/select/rows.parquet"] is True


def test_human_output_and_model_card(repo: Path, lineage: dict, run) -> None:
    commit = run(repo, "git", "rev-parse", "HEAD").stdout.strip()
    assert lineage["git"]["head"] == commit == lineage["git"]["at_training"]["commit"]
    shown = run(repo, sys.executable, "-m", "distill.cli", "lineage", "--model", MODEL).stdout
    count = len(lineage["rows"])
    assert shown.startswith(f"lineage of model {MODEL}: objective ")
    assert f"rows: {count} (" in shown and f"git: HEAD {commit}" in shown
    table = shown.split("\n\n", 1)[1].splitlines()
    assert table[0].split()[:3] == ["id", "content", "hash"]
    assert table[1].startswith(lineage["rows"][0]["id"][:16]) and lineage["rows"][0]["content_hash"] in table[1]
    assert f"20 of {count} rows shown" in table[-1]
    card = (repo / MODEL / "README.md").read_text()
    front = front_matter(card)
    assert front["library_name"] == "transformers" and front["pipeline_tag"] == "text-generation"
    assert "distillation" in front["tags"] and front["base_model"] == lineage["facts"]["base_model"]
    assert f"rows trained on: {count} " in card and commit in card and "## Evaluation" in card


def test_a_folder_the_train_stage_did_not_write_is_refused(repo: Path, run) -> None:
    result = run(repo, sys.executable, "-m", "distill.cli", "lineage", "--model", "data/students/tiny-char",
                 check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "distill lineage: data/students/tiny-char: no training_rows.parquet and lineage.json in it, so it was not "
        "trained by this pipeline's train stage (stages/train.py writes them into data/train/model); run "
        "`dvc repro train`, or pass that folder")


FACTS = {
    "model": "data/train/model", "base_model": "data/students/tiny-char", "started_from": "data/students/tiny-char",
    "objective": "kd", "params_hash": "p" * 16, "train_params": {"batch_size": 16, "learning_rate": 0.001},
    "training": {"steps": 30, "first_loss": 4.1, "final_loss": 0.5},
    "rows": {"count": 3, "selected": 2, "replayed": 1, "data_hash": "d" * 16,
             "inputs": {"data/select/rows.parquet": "m" * 32}},
    "teachers": {"standin": {"rows": 2, "calls": 2, "prompt_tokens": 100, "completion_tokens": 8, "cost_usd": 0.25}},
    "selection": {"input_rows": 5, "kept": 2, "drop_reasons": {"duplicate": 3}, "clusters": 1,
                  "gate": {"file": "reports/gates/select.json", "success": True, "evaluated": 13, "failed": 0}},
    "git": {"commit": "c" * 40, "dirty": False},
}
EVALUATION = {"student_before": 0.0, "student_after": 0.9, "baseline_sft": 0.8, "teacher": 0.85,
              "metric": "exact_match", "task": "demo.words", "rows": 20, "gap_closed": 1.059,
              "protocol": {"temperature": 0.0, "samples": 1}}


def test_model_card_with_an_evaluation_has_the_eval_table_and_a_model_index() -> None:
    card = model_card(FACTS, EVALUATION)
    for line in ("| system | exact_match |", "| student before | 0.000 |", "| student after (this model) | 0.900 |",
                 "| plain-SFT baseline | 0.800 |", "| teacher | 0.850 |", "| standin | 2 | 2 | 100 | 8 | 0.2500 |"):
        assert line in card.splitlines()
    assert "Gap closed" in card and "1.059" in card and "temperature: 0.0" in card
    results = front_matter(card)["model-index"][0]["results"][0]
    assert results["task"] == {"type": "text-generation"}
    assert {metric["name"]: metric["value"] for metric in results["metrics"]} == {
        "exact_match (student_before)": 0.0, "exact_match (student_after)": 0.9, "exact_match (baseline_sft)": 0.8,
        "exact_match (teacher)": 0.85}
    unevaluated = model_card(FACTS)
    assert "model-index" not in front_matter(unevaluated) and "reports/model_card.md" in unevaluated


def test_manifest_marks_replayed_rows_and_counts_each_call_once() -> None:
    from distill.model_card import teacher_calls, trained_rows

    selected = pl.DataFrame({"id": ["a", "b"], "teacher": ["t", "t"], "request_key": ["k", "k"],
                             "prompt_tokens": [10, 10], "completion_tokens": [4, 4], "keep": [True, True]})
    pairs = [{"prompt": p, "completion": "x"} for p in ("pa", "pb", "pg")]
    manifest = trained_rows(["a", "b", "general-0"], pairs, selected,
                            {"select": ("rows.parquet", "m1"), "replay": ("general.jsonl", "m2")})
    assert manifest["source"].to_list() == ["select", "select", "replay"]
    assert manifest["input_file"].to_list() == ["rows.parquet", "rows.parquet", "general.jsonl"]
    assert manifest.row(2, named=True)["teacher"] is None and manifest["content_hash"].n_unique() == 3
    assert teacher_calls(manifest) == {"t": {"calls": 1, "prompt_tokens": 10, "completion_tokens": 4, "rows": 2}}
