"""A paid answer is never lost and never paid twice, as a user meets it: a corrupted store under `dvc repro`,
two generate runs at once against an endpoint that bills every request, and a generate run killed with -9.

One tiny git+DVC copy for the module (`dvc repro generate` once); each test sets what it needs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import psutil
import pytest

from demo.standin import Settings as StandinSettings
from demo.standin import running_standin

pytestmark = pytest.mark.slow
STORE = Path("data/store/generate.jsonl")
QUARANTINE = Path("data/store/generate.quarantine.jsonl")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, tiny_repo, run) -> Path:
    repo = tiny_repo(tmp_path_factory.mktemp("store"))
    run(repo, "dvc", "repro", "generate")
    return repo


def stage_env(**extra: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}"} | extra


def start_generate(repo: Path, log: Path, **env: str) -> subprocess.Popen:
    """``python -m stages.generate`` in ``repo``, output to ``log``."""
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "stages.generate"], cwd=repo, stdout=out,
                                stderr=subprocess.STDOUT, env=stage_env(**env))


def running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_corrupted_store_loses_no_answer_and_pays_nothing(repo: Path, run, metrics, stages_run) -> None:
    store = repo / STORE
    lines = store.read_bytes().splitlines(keepends=True)
    assert len(lines) == 150
    rows_before = pl.read_parquet(repo / "data/generate/rows.parquet")
    bad = [b'{"request": {}, "response": {"choices": []}}\n', b"x\n", lines[4]]  # keyless, garbage, duplicate
    store.write_bytes(b"".join(lines[:19] + bad[:1] + lines[19:99] + bad[1:2] + lines[99:] + bad[2:]))
    result = run(repo, "dvc", "repro", "-f", "generate")
    assert "generate" in stages_run(result.stdout)
    assert metrics(repo, "generate")["requests_sent"] == 0
    assert metrics(repo, "generate")["store_lines_quarantined"] == 3
    assert store.read_bytes() == b"".join(lines)  # every answer kept, in place
    assert (repo / QUARANTINE).read_bytes() == b"".join(bad)
    assert (f"warning: {STORE}: moved 3 line(s) it could not keep to {QUARANTINE}: line 20 (no key), "
            "line 101 (not JSON), line 153 (duplicate of line 5)") in result.stderr
    assert pl.read_parquet(repo / "data/generate/rows.parquet").equals(rows_before)
    assert run(repo, "git", "status", "--porcelain", "data/store").stdout == ""  # quarantine and lock: ignored


@pytest.mark.parametrize("wait", [False, True], ids=["second-stops", "second-waits"])
def test_two_runs_at_once_bill_every_request_once(
    repo: Path,
    tmp_path: Path,
    wait: bool,
    billed,
    run,
    set_params,
) -> None:
    """Against an endpoint that ignores Idempotency-Key: one run pays, the other stops naming it (or waits for
    it, then pays nothing)."""
    (repo / STORE).unlink()
    request_log = tmp_path / "requests.jsonl"
    config = StandinSettings(idempotency=False, latency_ms=200)
    env = {"DISTILL_TEST_KEY": "sk-test", "DISTILL_TEACHER_CONCURRENCY": "2"}  # about 15 s of sending
    env |= {"DISTILL_STORE_WAIT_S": "300"} if wait else {}
    with running_standin(config, request_log=request_log) as url:
        set_params(repo, **{"teacher.provider": "openai", "teacher.base_url": url,
                            "teacher.api_key_env": "DISTILL_TEST_KEY"})
        first = start_generate(repo, tmp_path / "first.log", **env)
        if not wait:  # the second starts once the first holds the lock
            while str(first.pid) not in (repo / f"{STORE}.lock").read_text():
                time.sleep(0.1)
        second = start_generate(repo, tmp_path / "second.log", **env)
        codes = first.wait(timeout=300), second.wait(timeout=300)
    set_params(repo, **{"teacher.provider": "standin", "teacher.base_url": None,
                        "teacher.api_key_env": "OPENAI_API_KEY"})
    counts = billed(request_log)
    assert len(counts) == 150 and set(counts.values()) == {1}
    outputs = [(tmp_path / name).read_text() for name in ("first.log", "second.log")]
    if wait:
        assert codes == (0, 0)
        sent = sorted(int(text.split(" requests sent")[0].rsplit("; ", 1)[1]) for text in outputs)
        assert sent == [0, 150]
        assert any(": waiting up to 300 s (DISTILL_STORE_WAIT_S)" in text for text in outputs)
    else:
        assert codes == (0, 1)
        assert (f"generate: {STORE} is being written by another run (PID {first.pid}, `{sys.executable} -m "
                f"stages.generate`") in outputs[1]
    assert len((repo / STORE).read_text().splitlines()) == 150


def test_a_killed_run_leaves_nothing_running_or_lying_around(
    repo: Path,
    tmp_path: Path,
    run,
    metrics,
    set_params,
) -> None:
    (repo / STORE).unlink()
    set_params(repo, **{"teacher.settings.latency_ms": 300})
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    stage = start_generate(repo, tmp_path / "killed.log", TMPDIR=str(system_tmp), DISTILL_TEACHER_CONCURRENCY="2")
    deadline = time.monotonic() + 120
    while not ((repo / STORE).exists() and len((repo / STORE).read_bytes().splitlines()) >= 4):
        assert stage.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()
        time.sleep(0.2)
    started = psutil.Process(stage.pid).children(recursive=True)
    commands = " ".join(" ".join(child.cmdline()) for child in started)
    assert "prefect.server" in commands and "demo.standin" in commands and "distill.lifetime" in commands
    assert [path.name for path in (repo / ".distill/tmp").iterdir()]  # the stage's scratch (its plan) is there
    os.kill(stage.pid, signal.SIGKILL)
    stage.wait()
    time.sleep(5)
    assert [child.pid for child in started if running(child)] == []
    assert list((repo / ".distill/tmp").iterdir()) == []
    assert [path for path in system_tmp.rglob("*") if path.is_file()] == []
    kept = len((repo / STORE).read_bytes().splitlines())
    run(repo, "dvc", "repro", "generate")  # same params (the stand-in's latency is part of its request keys)
    set_params(repo, **{"teacher.settings.latency_ms": 0})
    resumed = metrics(repo, "generate")
    assert resumed["requests_sent"] + resumed["cache_hits"] == 150
    assert resumed["cache_hits"] >= kept - 1  # a line torn by the kill is quarantined, never more
    assert len((repo / STORE).read_text().splitlines()) == 150
