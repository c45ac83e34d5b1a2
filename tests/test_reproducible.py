"""Byte-reproducible reruns (issue 18): from a kept request store, `dvc repro --force` reruns every stage, generate
answered from the store and paying nothing, and writes every output again byte for byte, so the hashes dvc.lock
records do not change. What a run did rather than what it produced (wall time, throughput, requests sent and
served this run) goes to logs/<stage>.json (distill/run_log.py), which is no output; generate's metrics are the one
exception, keeping what that run sent and spent."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from distill import run_log

REPO = Path(__file__).resolve().parents[1]

PER_RUN = {"metrics/generate.json"}  # generate's metrics: requests sent, served from the store, spent this run


def output_hashes(repo: Path) -> dict[str, str]:
    """Every output's hash in the repo's dvc.lock, by path (a folder's is the hash of its file list)."""
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}


@pytest.mark.reliability
@pytest.mark.slow
def test_a_forced_rerun_from_the_kept_store_writes_every_output_byte_for_byte(
        tiny_run: Path, copy_run, run, stages_run, metrics, run_log, tmp_path: Path, reliability) -> None:
    repo = copy_run(tiny_run, tmp_path / "repo")
    before = output_hashes(repo)
    rerun = run(repo, "dvc", "repro", "--force")
    after = output_hashes(repo)
    assert {"generate", "train", "evaluate", "benchmark", "report"} <= set(stages_run(rerun.stdout))  # all rerun
    assert metrics(repo, "generate")["requests_sent"] == 0  # answered from the kept store

    compared = sorted(set(before) - PER_RUN)
    differ = [path for path in compared if after.get(path) != before[path]]
    reliability("byte-reproducible", outputs=len(compared), identical=len(compared) - len(differ))
    assert not differ, f"{len(differ)} of {len(compared)} outputs changed on a rerun from the kept store: {differ}"
    assert {"data/train/model", "reports/index.html", "metrics/eval.json", "data/store/benchmark"} <= set(compared)

    # what the rerun did is in its run logs instead, e.g. the eval's teacher requests, all served by its store
    evaluate = run_log(repo, "evaluate")
    assert evaluate["teacher_requests_sent"] == 0 and evaluate["teacher_cache_hits"] == metrics(repo, "eval")["rows"]
    assert {"wall_s", "finished_at", "train_runtime_s"} <= set(run_log(repo, "train"))


@pytest.mark.reliability
def test_a_run_log_holds_the_last_run_only_and_is_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    path = run_log.record("train", started, {"train_runtime_s": 1.5})
    first = json.loads(path.read_text())
    assert first["train_runtime_s"] == 1.5 and first["wall_s"] >= 0 and first["finished_at"].endswith("+00:00")
    run_log.record("train", started)
    assert "train_runtime_s" not in json.loads(path.read_text())  # overwritten whole: the last run's facts only
    assert [item.name for item in (tmp_path / "logs").iterdir()] == ["train.json"]  # no temp file left behind
    ignored = subprocess.run(["git", "check-ignore", "-q", "logs/train.json"], cwd=REPO, check=False)
    assert ignored.returncode == 0  # not in git
    assert "logs/" not in (REPO / "dvc.yaml").read_text()  # no DVC output or dep: it never makes DVC rerun anything
