"""End to end, as a user runs it: `dvc repro` of a tiny profile in a temporary git+DVC copy.

One copy for the module; the tests run in order and each sets the params it needs:
full run (with the selection and the data sweep) -> no-op re-run -> a training-only change ->
a gate that no data can meet -> lineage of a training row and of a row cut by the budget ->
the Prefect pipeline flow -> no API key anywhere on disk.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import polars as pl
import pytest

from demo.standin import Settings as StandinSettings
from demo.standin import running_standin

SENTINEL = f"sk-SENTINEL-{uuid.uuid4().hex}"  # made at run time, so this file cannot match it
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path, copy_run) -> Path:
    """A git+DVC copy of the committed repo with the tiny profile, after one `dvc repro`."""
    return copy_run(tiny_run, tmp_path_factory.mktemp("e2e") / "repo")


def test_full_run_produces_every_output(repo: Path, metrics) -> None:
    evaluation = metrics(repo, "eval")
    for key in ("student_before", "student_after", "teacher"):
        assert 0.0 <= evaluation[key] <= 1.0
    assert evaluation["teacher"] >= 0.6  # right unless a fault is injected (about 9% of answers)
    generated = metrics(repo, "generate")
    assert generated["requests_sent"] == generated["requests_planned"] == 150
    assert generated["cache_hits"] == 0
    assert (repo / "data/train/model/model.safetensors").exists()
    for stage in ("ingest", "generate", "score", "dedupe", "select", "train", "evaluate"):
        assert json.loads((repo / f"reports/gates/{stage}.json").read_text())["success"] is True
    assert "| student_after |" in (repo / "reports/eval.md").read_text()
    rows = pl.read_parquet(repo / "data/select/rows.parquet")
    assert rows["drop_reason"].is_null().eq(rows["keep"]).all()  # every dropped row says why
    assert rows["keep"].sum() == 75 == metrics(repo, "select")["selected"]  # half the 150 generated rows
    assert metrics(repo, "train")["examples"] == 75


def test_sweep_compares_the_selection_with_all_rows_and_a_random_subset(repo: Path, run, metrics) -> None:
    head = metrics(repo, "sweep")["comparison"]
    assert (head["selected"]["rows"], head["all"]["rows"], head["random"]["rows"]) == (75, 150, 75)
    assert all(0.0 <= head[name]["score"] <= 1.0 for name in ("selected", "all", "random"))
    assert head["selected"]["score"] == metrics(repo, "eval")["student_after"]  # the train stage's model, reused
    for name in ("reports/sweep.png", "reports/sweep.md", "reports/plots/sweep_selected.csv",
                 "reports/plots/sweep_random.csv"):
        assert (repo / name).stat().st_size > 0, name
    shown = run(repo, "dvc", "metrics", "show", "metrics/sweep.json").stdout
    assert "comparison.selected.score" in shown


def test_second_repro_runs_nothing(repo: Path, run, stages_run) -> None:
    result = run(repo, "dvc", "repro")
    assert stages_run(result.stdout) == []
    assert "Data and pipelines are up to date" in result.stdout


def test_training_param_reruns_only_training_and_eval_with_no_teacher_calls(
    repo: Path,
    run,
    metrics,
    run_log,
    set_params,
    stages_run,
) -> None:
    before = metrics(repo, "generate")
    set_params(repo, **{"train.max_steps": 31})
    result = run(repo, "dvc", "repro")
    ran = stages_run(result.stdout)
    assert ran[0] == "train" and sorted(ran) == [
        "benchmark", "evaluate", "gate@evaluate", "gate@sweep", "gate@train", "report", "sweep", "train"]
    assert metrics(repo, "generate") == before
    evaluation = run_log(repo, "evaluate")  # what this run of the stage did
    assert evaluation["teacher_requests_sent"] == 0
    assert evaluation["teacher_cache_hits"] == 30


def test_impossible_gate_stops_the_pipeline(repo: Path, run, set_params, stages_run, tiny_profile) -> None:
    set_params(repo, **{"gates.dedupe.min_rows": 10**9, "train.max_steps": 32})
    result = run(repo, "dvc", "repro", check=False)
    assert result.returncode != 0
    first = result.stderr.splitlines()[0]
    assert first.startswith("gate dedupe failed: rows: expect_column_sum_to_be_between(keep): observed ")
    assert first.endswith("expected >= 1000000000 (report: reports/gates/dedupe.json)")
    assert "gate@dedupe" in stages_run(result.stdout)
    assert "train" not in stages_run(result.stdout)
    report = json.loads((repo / "reports/gates/dedupe.json").read_text())
    assert report["success"] is False
    set_params(repo, **{"gates.dedupe.min_rows": tiny_profile["gates.dedupe.min_rows"], "train.max_steps": 31})
    run(repo, "dvc", "repro")


def test_lineage_traces_a_training_row_to_its_seed_line(repo: Path, run, tiny_profile) -> None:
    rows = pl.read_parquet(repo / "data/select/rows.parquet")
    kept = rows.filter(pl.col("keep")).row(0, named=True)
    result = run(repo, sys.executable, "-m", "distill.cli", "lineage", kept["id"])
    assert f"source_file: {tiny_profile['ingest.train']}" in result.stdout
    assert f"source_line: {kept['source_line']}" in result.stdout
    assert kept["instruction"] in result.stdout
    assert "matches workspace" in result.stdout
    duplicate = rows.filter(pl.col("drop_reason") == "duplicate")
    if duplicate.height:
        result = run(repo, sys.executable, "-m", "distill.cli", "lineage", duplicate["id"][0])
        assert f"dup_of: {duplicate['dup_of'][0]}" in result.stdout
    cut = rows.filter(pl.col("drop_reason") == "over_budget").row(0, named=True)
    result = run(repo, sys.executable, "-m", "distill.cli", "lineage", cut["id"])
    assert "  drop_reason: over_budget\n" in result.stdout
    assert f"  select_rank: {cut['select_rank']}\n" in result.stdout


def test_pipeline_flow_runs_dvc_repro(repo: Path, run) -> None:
    result = run(repo, sys.executable, "-m", "flows.pipeline")
    assert "Data and pipelines are up to date" in result.stdout + result.stderr


def test_api_key_never_written(repo: Path, tmp_path: Path, run, set_params, stages_run) -> None:
    """A real-endpoint run with a sentinel key: the key is in no file the pipeline wrote."""
    prefect_home = repo / ".prefect-home"
    with running_standin(StandinSettings()) as base_url:
        set_params(repo, **{"teacher.provider": "openai", "teacher.base_url": base_url,
                            "teacher.api_key_env": "DISTILL_TEST_KEY"})
        env = {"DISTILL_TEST_KEY": SENTINEL, "PREFECT_HOME": str(prefect_home)}
        result = run(repo, "dvc", "repro", "generate", env=env)
    assert "generate" in stages_run(result.stdout)
    assert SENTINEL not in result.stdout + result.stderr
    leaks = [
        str(path)
        for path in repo.rglob("*")
        if path.is_file() and ".git" not in path.parts and SENTINEL.encode() in path.read_bytes()
    ]
    assert leaks == []
    assert any(prefect_home.rglob("*")), "the Prefect run left its database where this test can read it"
