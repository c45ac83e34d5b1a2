"""Test-session environment: no analytics, no hub, a private Prefect home."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.servers import background, free_port, stop, wait_for

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))


@pytest.fixture
def forty_seeds(tmp_path: Path) -> Path:
    """Forty demo seeds (reverse and upper of twenty words) as an ingest parquet file."""
    from stages.io import write_parquet
    from tests.test_generate import WORDS, seeds

    path = tmp_path / "ingest" / "train.parquet"
    write_parquet(seeds([f"{op} {word}" for word in WORDS for op in ("reverse", "upper")]), path)
    return path


@pytest.fixture(scope="module")
def serve() -> Iterator[Callable[..., str]]:
    """``serve(**rates)`` -> base URL of a stand-in with those settings, started once per test module."""
    from stages.params import StandinParams
    from stages.teachers.standin import running_standin

    with ExitStack() as stack:
        urls: dict[tuple, str] = {}

        def url_for(**rates: float) -> str:
            key = tuple(sorted(rates.items()))
            if key not in urls:
                urls[key] = stack.enter_context(running_standin(StandinParams(**rates)))
            return urls[key]

        yield url_for


def billed_requests(request_log: Path) -> Counter:
    """Requests a stand-in answered and billed, by request hash, from its ``--request-log`` (replays of an
    Idempotency-Key and faults are not billed)."""
    records = [json.loads(line) for line in request_log.read_text().splitlines()]
    return Counter(r["request_hash"] for r in records if r["status"] == 200 and r["fault"] is None)


@pytest.fixture
def billed() -> Callable[[Path], Counter]:
    """``billed(request_log)``: the stand-in's billed requests by request hash (see billed_requests)."""
    return billed_requests




@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git+DVC copy of the repo with the tiny profile after one `dvc repro`. Read only: a test that goes on
    from it works on its own copy (tests/repos.py: copy_run)."""
    from tests.repos import run, tiny_repo

    repo = tiny_repo(tmp_path_factory.mktemp("tiny-run") / "repo")
    run(repo, "dvc", "repro")
    return repo


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server (``prefect server start``) on loopback with its own PREFECT_HOME and SQLite
    database, started once per test session; yields its API URL."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    server = background(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                        home / "server.log", env={"PREFECT_HOME": str(home), "PREFECT_API_URL": ""})
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_for(f"{api}/health", server, "prefect server", home / "server.log")
        yield api
    finally:
        stop(server)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real S3-compatible server (moto in server mode) on loopback, with a bucket ``distill-remote``;
    yields the environment a DVC or boto3 client needs to reach it (``endpoint`` is its URL)."""
    import boto3

    log = tmp_path_factory.mktemp("s3") / "moto.log"
    port = free_port()
    server = background(["moto_server", "-H", "127.0.0.1", "-p", str(port)], log)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        wait_for(f"{endpoint}/moto-api/", server, "moto server", log, timeout_s=60)
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket="distill-remote")
        yield env | {"endpoint": endpoint}
    finally:
        stop(server)


@pytest.fixture(scope="session")
def prefect_worker(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real process worker (``prefect worker start --pool distill``) polling the test server every second;
    yields its log file."""
    log = tmp_path_factory.mktemp("prefect-worker") / "worker.log"
    worker = background(["prefect", "worker", "start", "--pool", "distill", "--type", "process"], log,
                        env={"PREFECT_API_URL": prefect_server, "PREFECT_WORKER_QUERY_SECONDS": "1"})
    try:
        yield log
    finally:
        stop(worker)
