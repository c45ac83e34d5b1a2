"""Sharing a run through a DVC remote, as a team does: one machine runs the pipeline and pushes, a fresh
clone pulls. The default remote (a directory beside the repo, in the committed .dvc/config) and an S3
remote on a real S3-compatible server (moto) on loopback.

One run for the module: a tiny repo after `dvc repro`, its lock committed and its outputs pushed.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import boto3
import pytest

from distill.io import file_hash

pytestmark = pytest.mark.slow
STORES = ["data/store/generate.jsonl", "data/store/score.jsonl", "data/store/evaluate.jsonl"]


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path, run, copy_run) -> Path:
    """A tiny repo that ran the pipeline, committed its lock and pushed to the default remote."""
    repo = copy_run(tiny_run, tmp_path_factory.mktemp("team") / "origin")
    run(repo, "git", "add", "-A")
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run")
    assert "files pushed" in run(repo, "dvc", "push").stdout
    return repo


@pytest.fixture
def clone(run):
    """``clone(origin, name)``: a git clone of the origin beside it."""

    def cloned(origin: Path, name: str) -> Path:
        target = origin.parent / name
        run(origin.parent, "git", "clone", "-q", str(origin), name)
        return target

    return cloned


def test_the_default_remote_is_a_directory_beside_the_repo(origin: Path, run) -> None:
    remote = run(origin, "dvc", "remote", "list").stdout.split()
    assert remote[0] == "local" and Path(remote[1]).resolve() == origin.parent / "distill-remote"
    assert any((origin.parent / "distill-remote" / "files" / "md5").iterdir())


def test_a_fresh_clone_that_pulls_reruns_nothing(origin: Path, run, clone, stages_run) -> None:
    repo = clone(origin, "pulled")
    run(repo, "dvc", "pull")
    result = run(repo, "dvc", "repro")
    assert stages_run(result.stdout) == []  # nothing re-runs, so no teacher is even started
    assert "Data and pipelines are up to date" in result.stdout
    for store in STORES:
        assert file_hash(repo / store) == file_hash(origin / store)


def test_a_clone_with_only_the_request_stores_regenerates_without_paying(
    origin: Path,
    run,
    clone,
    metrics,
    run_log,
    stages_run,
) -> None:
    repo = clone(origin, "stores-only")
    run(repo, "dvc", "pull", *STORES)
    assert not (repo / "data/generate/rows.parquet").exists()
    result = run(repo, "dvc", "repro")
    assert "generate" in stages_run(result.stdout) and "evaluate" in stages_run(result.stdout)
    generated = metrics(repo, "generate")
    assert (generated["requests_sent"], generated["cache_hits"]) == (0, 150)
    assert run_log(repo, "evaluate")["teacher_requests_sent"] == 0
    assert file_hash(repo / "data/generate/rows.parquet") == file_hash(origin / "data/generate/rows.parquet")


def test_pull_merges_a_request_store_changed_here_instead_of_refusing(
    origin: Path,
    run,
    clone,
    metrics,
    stages_run,
) -> None:
    """An answer paid for here and not yet recorded in dvc.lock: plain `dvc pull` refuses the whole pull,
    `distill pull` keeps it, merges the remote's answers in and pulls the rest."""
    repo = clone(origin, "changed-here")
    local = {"key": "paid-here-only", "request": {"model": "standin"}, "response": {"choices": []},
             "stored_at": "2026-11-28T00:00:00.000+00:00"}
    (repo / "data/store").mkdir(parents=True, exist_ok=True)
    (repo / STORES[0]).write_text(json.dumps(local) + "\n")
    refused = run(repo, "dvc", "pull", check=False)
    assert refused.returncode != 0 and "unsaved files" in refused.stderr
    run(repo, sys.executable, "-m", "distill.cli", "pull")
    keys = [json.loads(line)["key"] for line in (repo / STORES[0]).read_text().splitlines()]
    assert keys[0] == "paid-here-only" and len(keys) == 151 == len(set(keys))
    assert (repo / "data/train/model/model.safetensors").exists()  # everything else was pulled
    result = run(repo, "dvc", "repro")
    assert stages_run(result.stdout)[:1] == ["generate"]  # its store changed; answered from it
    assert metrics(repo, "generate")["requests_sent"] == 0


def test_an_s3_remote_on_a_real_s3_compatible_server(
    origin: Path,
    s3_server: dict[str, str],
    run,
    clone,
    stages_run,
) -> None:
    env = {k: v for k, v in s3_server.items() if k != "endpoint"}
    for repo in (origin, clone(origin, "from-s3")):
        # --local: the remote and its endpoint stay out of the committed config, as a user's own remote would
        run(repo, "dvc", "remote", "add", "--local", "-d", "s3", "s3://distill-remote/runs")
        run(repo, "dvc", "remote", "modify", "--local", "s3", "endpointurl", s3_server["endpoint"])
    run(origin, "dvc", "push", env=env)
    objects = boto3.client("s3", endpoint_url=s3_server["endpoint"], **{
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"]}).list_objects_v2(Bucket="distill-remote", Prefix="runs/")
    assert objects["KeyCount"] > 20
    shutil.rmtree(origin.parent / "distill-remote")  # the clone can only get the data from S3
    run(repo, "dvc", "pull", env=env)
    result = run(repo, "dvc", "repro")
    assert stages_run(result.stdout) == [] and "Data and pipelines are up to date" in result.stdout
