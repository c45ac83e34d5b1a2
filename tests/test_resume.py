"""kill -9 of the generate stage at a random moment mid-run, then a re-run: no request is
answered (billed) twice by the teacher, and the dataset equals an uninterrupted run's."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from demo.standin import Settings as StandinSettings
from demo.standin import running_standin

ROOT = Path(__file__).resolve().parents[1]
SEEDS = 600
PER_CALL = ("created_at", "response_id")  # facts of one HTTP call, not of the answer


def workdir(tmp: Path, base_url: str) -> Path:
    """A stage working directory: params pointing at an external teacher, seeds ingested."""
    for name in ("templates", "data/seeds", "data/students"):  # students: the feature method's tokenizer
        shutil.copytree(ROOT / name, tmp / name)
    lines = (ROOT / "data/seeds/train.jsonl").read_text().splitlines()[:SEEDS]
    (tmp / "data/seeds/train.jsonl").write_text("\n".join(lines) + "\n")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["teacher"] |= {"provider": "openai", "base_url": base_url, "api_key_env": "DISTILL_RESUME_KEY"}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([sys.executable, "-m", "stages.ingest"], cwd=tmp, env=env(), check=True, capture_output=True)
    return tmp


def env(**extra: str) -> dict:
    return os.environ | {"PYTHONPATH": str(ROOT), "DISTILL_RESUME_KEY": "resume-test",
                         "DISTILL_TEACHER_CONCURRENCY": "16"} | extra


def generate(cwd: Path, prefect_api: str) -> subprocess.Popen:
    """The stage, its teacher flow on the session's Prefect server (no temporary server per process)."""
    return subprocess.Popen([sys.executable, "-m", "stages.generate"], cwd=cwd, env=env(PREFECT_API_URL=prefect_api),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def rows(cwd: Path) -> pl.DataFrame:
    return pl.read_parquet(cwd / "data/generate/rows.parquet").drop(PER_CALL).sort("id")


@pytest.mark.slow
def test_kill_then_rerun_pays_each_request_once_and_matches_an_uninterrupted_run(tmp_path: Path,
                                                                                 prefect_server: str,
                                                                                 billed) -> None:
    config = StandinSettings(latency_ms=30, error_rate=0.05, rate_limit_rate=0.05)
    log = tmp_path / "requests.jsonl"
    with running_standin(config, request_log=log) as url:
        killed = workdir(tmp_path / "killed", url)
        process = generate(killed, prefect_server)
        store = killed / "data/store/generate.jsonl"
        deadline = time.monotonic() + 60
        while not (store.exists() and store.stat().st_size > 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(random.uniform(0.0, 0.5))  # a random moment while answers are arriving
        process.send_signal(signal.SIGKILL)
        process.wait()
        answered_before = sum(1 for _ in store.open())
        assert 0 < answered_before < SEEDS, "the kill should land mid-run"
        assert not (killed / "data/generate/rows.parquet").exists()  # nothing partial was written

        rerun = generate(killed, prefect_server)
        assert rerun.wait() == 0, rerun.stderr.read()
        metrics = json.loads((killed / "metrics/generate.json").read_text())
        assert metrics["cache_hits"] == answered_before
        assert metrics["requests_sent"] == SEEDS - answered_before

        paid = billed(log)  # the plan's requests (each run's probe pays its own two)
        assert len(paid) == SEEDS
        assert max(paid.values()) == 1, [h for h, n in paid.items() if n > 1]

        # The same teacher (its URL is part of every request key) answers an uninterrupted run.
        straight = workdir(tmp_path / "straight", url)
        assert generate(straight, prefect_server).wait() == 0
    assert rows(killed).equals(rows(straight))
