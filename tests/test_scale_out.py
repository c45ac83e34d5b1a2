"""Scale-out: the teacher's shards as Prefect tasks on a real Dask cluster (two worker processes), against the
stand-in over HTTP. Same answers as one process, every request billed once, the store written by its lock holder
only, a killed run's shard files merged before anything is planned, and the key never stored by Prefect.

One LocalCluster for the module (reached by its address, as a `dask scheduler` would be); the end-to-end test
lets the generate stage start its own."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import psutil
import pytest
import yaml
from distributed import Client, LocalCluster

from demo.standin import Settings as StandinSettings
from demo.standin import running_standin
from distill.params import PriceParams
from distill.teacher import shards as shard_module
from distill.teacher.engine import EngineSettings, TeacherRequest
from distill.teacher.plan import write_plan
from distill.teacher.shards import shard_budgets, shard_settings, split_evenly, spooled, store_identity
from distill.teacher.store import RequestStore, open_store, request_key, shard_files, shard_path
from flows.scale import cluster_shard, collect_spools, elsewhere
from flows.teacher import run_plan

MODEL = "standin-skill-1"
WORDS = ["planet", "cat", "river", "stone", "maple", "orbit", "lemon", "tiger", "cloud", "amber"]
SETTINGS = EngineSettings(concurrency=8, timeout_s=5, max_attempts=8, backoff_base_s=0.01)
FAULTY = StandinSettings(error_rate=0.05, idempotency=False)  # 500s to retry; every answered request is billed
KEY_ENV, SENTINEL = "DISTILL_SCALE_TEST_KEY", "sk-scale-sentinel-6f1c0b"


def plan_requests() -> list[TeacherRequest]:
    """200 requests: reverse and upper of 100 two-word compounds."""
    sampling = {"temperature": 0.0, "max_tokens": 32, "n": 1, "seed": 0}
    result = []
    for first in WORDS:
        for second in WORDS:
            for op in ("reverse", "upper"):
                messages = [{"role": "user", "content": f"{op} {first}{second}"}]
                key = request_key("scale", MODEL, messages, sampling)
                result.append(TeacherRequest(key, MODEL, messages, sampling))
    return result


REQUESTS = plan_requests()


def answers(store_path: Path) -> dict[str, dict]:
    """What the store holds per key, less what differs between two sendings of one request (id, created)."""
    with RequestStore(store_path, read_only=True) as store:
        return {key: {name: store.get(key)[name] for name in ("model", "choices", "usage")}
                for key in (entry["key"] for entry in store.entries())}


@pytest.fixture(scope="module")
def cluster() -> LocalCluster:
    """Two worker processes whose environment holds the key (as `dask worker` started with it would); the driver,
    this process, does not: it passes the variable's name only."""
    os.environ[KEY_ENV] = SENTINEL
    try:
        local = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    finally:
        del os.environ[KEY_ENV]
    with local:
        yield local


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "plan.jsonl"
    write_plan(REQUESTS, path)
    return path


@pytest.fixture(scope="module")
def reference(plan: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plan answered in one process (cluster.runner: local): its store."""
    store = tmp_path_factory.mktemp("reference") / "store.jsonl"
    with running_standin(FAULTY) as url:
        ledger = run_plan(plan, store, url, None, 4, settings=SETTINGS)
    assert ledger.requests_sent == 200 and not ledger.failures
    return store


class Said(logging.Handler):
    """Keeps the messages logged to it."""

    def __init__(self) -> None:
        super().__init__()
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text += record.getMessage() + "\n"


def on(cluster: LocalCluster) -> dict:
    return {"runner": "dask", "address": cluster.scheduler_address, "workers": 2}


def test_two_dask_workers_answer_like_one_process_and_bill_each_request_once(
    cluster: LocalCluster, plan: Path, reference: Path, tmp_path: Path, billed
) -> None:
    store, log = tmp_path / "store" / "generate.jsonl", tmp_path / "requests.jsonl"
    said = Said()
    logging.getLogger("prefect.flow_runs").addHandler(said)  # the flow's printed lines
    try:
        with running_standin(FAULTY, request_log=log) as url:
            ledger = run_plan(plan, store, url, KEY_ENV, 4, settings=SETTINGS, cluster=on(cluster))
    finally:
        logging.getLogger("prefect.flow_runs").removeHandler(said)
    assert (ledger.requests_sent, ledger.cache_hits, dict(ledger.failures)) == (200, 0, {})
    assert ledger.retries  # the stand-in's 500s were retried in the workers
    counts = billed(log)
    assert len(counts) == 200 and set(counts.values()) == {1}
    assert answers(store) == answers(reference)
    assert shard_files(store) == []  # merged, then deleted
    with Client(cluster, set_as_default=False) as client:
        workers = {f"{socket.gethostname()}:{pid}" for pid in client.run(os.getpid).values()}
    assert f"4 of 4 shards answered by 2 worker processes ({', '.join(sorted(workers))})" in said.text
    home = Path(os.environ["PREFECT_HOME"])  # Prefect's database, results and logs
    leaked = [path for folder in (home, store.parent) for path in folder.rglob("*")
              if path.is_file() and SENTINEL.encode() in path.read_bytes()]
    assert not leaked, f"the API key was written to {leaked}"
    prompts = [path for path in home.rglob("*") if path.is_file() and b"upper planetcat" in path.read_bytes()]
    assert not prompts, f"the shards' requests (task parameters) were written to {prompts}"


def test_a_killed_runs_shard_file_is_merged_first_and_never_paid_again(
    cluster: LocalCluster, plan: Path, reference: Path, tmp_path: Path, billed
) -> None:
    """A run killed after shard 1 stored 50 answers (its last line torn by the kill): the next run merges them
    before planning, sends only the other 150, each once."""
    store, log = tmp_path / "store" / "generate.jsonl", tmp_path / "requests.jsonl"
    store.parent.mkdir()
    lines = reference.read_text().splitlines(keepends=True)
    kept, torn = lines[:50], lines[50][:40]  # the 51st answer was being written when the run was killed: lost
    shard_path(store, 1).write_text("".join(kept) + torn)
    paid_before = {json.loads(line)["key"] for line in kept}
    with running_standin(FAULTY, request_log=log) as url:
        ledger = run_plan(plan, store, url, None, 4, settings=SETTINGS, cluster=on(cluster))
    assert (ledger.requests_sent, ledger.cache_hits) == (150, 50)
    counts = billed(log)
    assert len(counts) == 150 and set(counts.values()) == {1}
    assert answers(store) == answers(reference)
    assert {json.loads(line)["key"] for line in store.read_text().splitlines()[:50]} == paid_before  # first
    assert shard_files(store) == []
    assert (store.parent / "generate.shard-1.quarantine.jsonl").read_text() == torn + "\n"


def test_the_shards_together_stay_within_the_budget(cluster: LocalCluster, plan: Path, tmp_path: Path) -> None:
    """Each of the 4 shards gets a quarter of what the budget has left; together they never pass it."""
    budget = {"budget_usd": None, "budget_tokens": 2000, "spent_usd": 0.0, "spent_tokens": 200,
              "price": PriceParams().model_dump(), "chars_per_token": 1.0}
    with running_standin(StandinSettings()) as url:
        ledger = run_plan(plan, tmp_path / "store.jsonl", url, None, 4, budget, SETTINGS, cluster=on(cluster))
    assert ledger.skipped_budget > 0 and ledger.requests_sent + ledger.skipped_budget == 200
    assert ledger.prompt_tokens + ledger.completion_tokens <= 1800


def test_leftover_shard_files_are_merged_in_shard_order_when_the_store_opens(tmp_path: Path) -> None:
    """First line per key wins: the store's own, then shard 2's before shard 10's; what a shard file cannot keep
    goes to its quarantine. Plain open_store does it, whichever runner comes next."""

    def line(key: str, text: str) -> str:
        return json.dumps({"key": key, "request": {}, "response": {"choices": [{"text": text}]},
                           "stored_at": "2026-01-01T00:00:00"}) + "\n"

    store = tmp_path / "generate.jsonl"
    store.write_text(line("a", "store"))
    shard_path(store, 10).write_text(line("b", "ten") + line("c", "ten"))
    shard_path(store, 2).write_text(line("a", "two") + line("b", "two") + "not json\n")
    (tmp_path / "generate.shard-2.quarantine.jsonl").write_text("")  # a shard's quarantine is no shard
    assert shard_files(store) == [shard_path(store, 2), shard_path(store, 10)]
    with open_store(store) as opened:
        assert {key: opened.get(key)["choices"][0]["text"] for key in "abc"} == {"a": "store", "b": "two", "c": "ten"}
    assert [json.loads(text)["key"] for text in store.read_text().splitlines()] == ["a", "b", "c"]
    assert shard_files(store) == []
    assert (tmp_path / "generate.shard-2.quarantine.jsonl").read_text() == "not json\n"


def test_a_shard_on_another_machine_spools_and_the_driver_collects(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the store's folder is not (another machine), a shard writes a spool file in its temp folder; the
    driver collects every worker's spool files, merges them and has them deleted."""
    monkeypatch.setattr(shard_module.tempfile, "tempdir", str(tmp_path / "worker-tmp"))
    (tmp_path / "worker-tmp").mkdir()
    store = tmp_path / "driver" / "generate.jsonl"
    elsewhere = "a-folder-on-the-driver-this-machine-lacks"
    with running_standin(StandinSettings()) as url:
        result = asyncio.run(cluster_shard.fn(3, REQUESTS[:10], str(store), elsewhere, url, None, None,
                                              SETTINGS.model_dump()))
    assert result.spooled and result.ledger.requests_sent == 10 and not store.parent.exists()
    assert Path(result.path) == tmp_path / "worker-tmp" / "distill-shards" / elsewhere / "generate.shard-3.jsonl"

    class Client:  # Client.run on one worker: this process
        def run(self, function, *args):
            return {"tcp://worker:1": function(*args)}

    with RequestStore(store) as opened:
        assert collect_spools(opened, Client(), elsewhere) == 10
        assert collect_spools(opened, Client(), elsewhere) == 0  # deleted once merged
        assert {request.key for request in REQUESTS[:10]} <= {entry["key"] for entry in opened.entries()}
    assert spooled(elsewhere, "generate.jsonl") == [] and not Path(result.path).exists()


def test_what_the_shards_share_is_split_evenly() -> None:
    assert split_evenly(10, 4) == [3, 3, 2, 2]
    budget = {"budget_usd": 1.0, "budget_tokens": 1001, "spent_usd": 0.2, "spent_tokens": 1, "price": {}}
    parts = shard_budgets(budget, 4)
    assert [part["budget_tokens"] for part in parts] == [250] * 4
    assert all(part["budget_usd"] == pytest.approx(0.2) and part["spent_usd"] == 0 for part in parts)
    assert shard_budgets(None, 2) == [None, None]
    settings = EngineSettings(concurrency=5, requests_per_minute=600, tokens_per_minute=None)
    shares = shard_settings(settings, 4, 2)  # 4 shards, 2 at a time: each pair within the run's pace
    assert [share.concurrency for share in shares] == [3, 2, 3, 2]
    assert {share.requests_per_minute for share in shares} == {300} and shares[0].tokens_per_minute is None
    assert [s.concurrency for s in shard_settings(EngineSettings(concurrency=1), 3, 8)] == [1, 1, 1]


def test_workers_on_other_machines_need_a_prefect_api_they_can_reach() -> None:
    workers = ["tcp://127.0.0.1:40001", "tcp://192.0.2.7:40002"]  # 192.0.2.0/24: documentation only, never local
    assert elsewhere(workers, "http://127.0.0.1:8123/api") == ["tcp://192.0.2.7:40002"]
    assert elsewhere(workers, "http://prefect.internal:4200/api") == []  # a configured server: their business


def test_store_identity_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert store_identity(tmp_path / "a/s.jsonl") == store_identity(tmp_path / "a/t.jsonl")
    assert store_identity(tmp_path / "a/s.jsonl") != store_identity(tmp_path / "b/s.jsonl")


def test_cluster_is_in_no_stage_s_dvc_params() -> None:
    """Where requests run never changes an answer: moving generate onto a cluster must not re-run anything."""
    pipeline = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"]
    for name, stage in pipeline.items():
        listed = stage.get("params", []) if "params" in stage else stage.get("do", {}).get("params", [])
        assert not any(str(param).split(".")[0] == "cluster" for param in listed), name


def with_new_files(repo: Path) -> None:
    """The tiny repo copies the files git tracks; add the working tree's new ones (none once committed)."""
    root = Path(__file__).resolve().parents[1]
    new = subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], cwd=root, capture_output=True,
                         text=True, check=True).stdout.split()
    for name in new:
        if (root / name).is_file() and not (repo / name).exists():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, repo / name)


def start_generate(repo: Path, log: Path, **env: str) -> subprocess.Popen:
    """``python -m stages.generate`` in ``repo``, its output in ``log``."""
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "stages.generate"], cwd=repo, stdout=out,
                                stderr=subprocess.STDOUT, env=os.environ | {"PATH": path} | env)


@pytest.mark.slow
def test_the_generate_stage_on_dask_killed_and_rerun_writes_the_rows_it_writes_locally(
    tiny_repo, run, set_params, billed, tmp_path: Path
) -> None:
    """`python -m stages.generate` with cluster.runner: dask (a LocalCluster of 2 workers the stage starts), killed
    with -9 mid-run and run again, gives the rows a local run gives; its workers die with it, the answers its
    shards stored are merged, not paid again (an endpoint that ignores Idempotency-Key may bill the requests in
    flight at the kill twice: at most DISTILL_TEACHER_CONCURRENCY of them)."""
    repo = tiny_repo(tmp_path / "repo", setup=with_new_files)
    run(repo, "python", "-m", "stages.ingest")
    store, log = repo / "data/store/generate.jsonl", tmp_path / "requests.jsonl"
    key = {"DISTILL_TEST_KEY": "sk-test"}
    with running_standin(StandinSettings(idempotency=False, latency_ms=300), request_log=log) as url:
        set_params(repo, **{"teacher.provider": "openai", "teacher.base_url": url,
                            "teacher.api_key_env": "DISTILL_TEST_KEY"})
        run(repo, "python", "-m", "stages.generate", env=key)  # locally: cluster.runner is local in params.yaml
        local = pl.read_parquet(repo / "data/generate/rows.parquet")
        features = pl.read_parquet(repo / "data/generate/features.parquet")
        billed_locally = billed(log)
        store.unlink()
        set_params(repo, **{"cluster.runner": "dask"})
        killed = start_generate(repo, tmp_path / "killed.log", DISTILL_TEACHER_CONCURRENCY="2", **key)
        while sum(len(path.read_text().splitlines()) for path in shard_files(store)) < 40:
            assert killed.poll() is None, (tmp_path / "killed.log").read_text()
            time.sleep(0.1)
        children = psutil.Process(killed.pid).children(recursive=True)  # the cluster's workers among them
        killed.kill()
        killed.wait()
        psutil.wait_procs(children, timeout=30)
        assert not [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
        assert shard_files(store)
        result = run(repo, "python", "-m", "stages.generate", env=key)
    said = result.stdout + result.stderr
    assert "shard file(s) an earlier run left" in said and " shards on Dask at tcp://127.0.0.1:" in said
    metrics = json.loads((repo / "metrics/generate.json").read_text())
    assert metrics["cache_hits"] >= 40 and metrics["requests_sent"] + metrics["cache_hits"] == len(billed_locally)
    scaled = pl.read_parquet(repo / "data/generate/rows.parquet")
    sending = ["created_at", "response_id"]  # when it arrived, and the id the server gave this sending of it
    assert scaled.height >= 100 and scaled.drop(sending).equals(local.drop(sending))
    assert pl.read_parquet(repo / "data/generate/features.parquet").equals(features)  # the log-probs too
    assert not shard_files(store)
    on_dask = billed(log) - billed_locally  # what the killed and the second run paid
    assert set(on_dask) == set(billed_locally) and sum(on_dask.values()) - len(on_dask) <= 2
