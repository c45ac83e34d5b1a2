"""Disk and file faults: a full disk during a write leaves the previous outputs whole and fails with one line
naming the file; a request store with torn, garbage and duplicate lines keeps every paid answer and names what it
moved aside; a second `dvc repro`, or a second generate by hand, started while one runs is refused and harms
nothing.

The full-disk tests mount a small tmpfs, so they need root (and, in a container, CAP_SYS_ADMIN); elsewhere they
are skipped, saying so."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import yaml

from demo.standin import Settings as StandinSettings
from demo.standin import running_standin
from distill.entry import guarded
from distill.io import atomic_dir, write_json, write_parquet, write_text
from distill.teacher.store import RequestStore, quarantine_path
from distill.transfer.training import train

ROOT = Path(__file__).resolve().parents[1]
ROW = "disk and file faults"  # the README's reliability table
PAGE = 4096  # tmpfs counts space in pages
KEY_ENV = "DISTILL_DISK_FAULTS_KEY"


# --- a full disk ------------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk() -> Iterator[Callable[..., Path]]:
    """``small_disk(folder, size="1m")``: a tmpfs of that size mounted at ``folder`` (created), unmounted after
    the test; the test is skipped, saying why, where mounting is not allowed."""
    if os.geteuid() != 0:
        pytest.skip("the full-disk tests mount a small tmpfs, which needs root: run them as root (CI's container "
                    "does)")
    mounted: list[Path] = []

    def mount(folder: Path, size: str = "1m") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                capture_output=True, text=True)
        if result.returncode:
            pytest.skip(f"could not mount a tmpfs ({result.stderr.strip()}): a container without CAP_SYS_ADMIN")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


def fill(disk: Path, leave: int) -> None:
    """Fill the filesystem at ``disk`` with a file until a write fails, then free ``leave`` bytes of it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)
    os.truncate(filler, filler.stat().st_size - leave)
    assert shutil.disk_usage(disk).free == leave


def contents(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes), the filler left out."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name != "filler"}


def stage_env(**extra: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return os.environ | {"PYTHONPATH": str(ROOT), "PATH": f"{bin_dir}:{os.environ['PATH']}"} | extra


def ingest(workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.ingest"], cwd=workdir, env=stage_env(), capture_output=True,
                          text=True, timeout=120)


@pytest.mark.reliability
def test_a_full_disk_fails_the_stage_naming_the_file_and_keeps_its_previous_outputs(
        tmp_path: Path, small_disk: Callable[..., Path], reliability) -> None:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "data/seeds").mkdir(parents=True)
    for name in ("train.jsonl", "eval.jsonl"):  # params.yaml's ingest.train and ingest.eval
        shutil.copy(ROOT / "data/seeds" / name, tmp_path / "data/seeds" / name)
    disk = small_disk(tmp_path / "data/ingest")  # the stage's output folder is the small filesystem
    assert ingest(tmp_path).returncode == 0
    previous = contents(disk)

    seeds = tmp_path / "data/seeds/train.jsonl"  # new inputs: a write that got through would change the outputs
    seeds.write_text("".join(seeds.read_text().splitlines(keepends=True)[::2]))
    fill(disk, leave=PAGE)
    assert len(previous["train.parquet"]) > PAGE  # so the write fails mid-way, not at its first byte
    failed = ingest(tmp_path)

    assert failed.returncode == 1
    assert failed.stderr.startswith("ingest: could not write data/ingest/train.parquet: no space left on device")
    assert "Traceback" not in failed.stderr and len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert contents(disk) == previous  # byte for byte, and no temporary file beside them
    reliability(ROW, faults=1, full_disk=1)


def random_rows(count: int = 2000) -> list[str]:
    return [os.urandom(16).hex() for _ in range(count)]  # incompressible: tens of KB in any format


WRITERS = {  # each atomic writer with a payload far larger than the space left
    "parquet": lambda target: write_parquet(pl.DataFrame({"x": random_rows()}), target),
    "json": lambda target: write_json(random_rows(), target),
    "text": lambda target: write_text("\n".join(random_rows()), target),
}


@pytest.mark.reliability
@pytest.mark.parametrize("kind", WRITERS)
def test_each_atomic_writer_on_a_full_disk_keeps_the_old_file_and_says_which(
        kind: str, tmp_path: Path, small_disk: Callable[..., Path], capsys: pytest.CaptureFixture,
        reliability) -> None:
    disk = small_disk(tmp_path / "disk")
    target = disk / f"out.{kind}"
    target.write_bytes(b"the previous output")
    fill(disk, leave=2 * PAGE)
    with pytest.raises(SystemExit) as exited:
        guarded("stage", lambda: WRITERS[kind](target))
    assert exited.value.code == 1
    message = capsys.readouterr().err
    assert message.startswith(f"stage: could not write {target}: no space left on device (8,192 bytes free there "
                              f"now); the previous file there, if any, is unchanged"), message
    assert contents(disk) == {target.name: b"the previous output"}
    reliability(ROW, faults=1, full_disk=1)


@pytest.mark.reliability
def test_a_full_disk_while_saving_the_model_keeps_the_previous_model(
        in_tmp: Path, small_disk: Callable[..., Path], tiny_student: Path, skill_pairs: list[dict],
        train_params, capsys: pytest.CaptureFixture, reliability) -> None:
    disk = small_disk(in_tmp / "disk")  # the training checkpoints stay in ./.distill, off the small disk
    model_dir = disk / "model"
    shutil.copytree(tiny_student, model_dir)  # the previous model
    previous = contents(disk)
    fill(disk, leave=2 * PAGE)  # room for config.json, not for the weights
    with pytest.raises(SystemExit):
        guarded("train", lambda: train(skill_pairs, train_params(tiny_student, max_steps=1), model_dir))
    assert f"train: could not write {model_dir}: no space left on device" in capsys.readouterr().err
    assert contents(disk) == previous  # the old folder whole, no staging folder beside it
    reliability(ROW, faults=1, full_disk=1)


@pytest.mark.reliability
def test_a_folder_written_atomically_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_dir(target) as staging:
        (staging / "new.bin").write_bytes(b"half")
        raise RuntimeError("the save failed half-way")
    assert contents(tmp_path) == {"model/old.bin": b"old"}
    with atomic_dir(target) as staging:
        (staging / "new.bin").write_bytes(b"new")
    assert contents(tmp_path) == {"model/new.bin": b"new"}  # the old folder replaced, nothing left beside it
    assert target.stat().st_mode & 0o777 == 0o755


def generate_workdir(workdir: Path, base_url: str, seeds: int) -> Path:
    """A generate stage's working folder: ``seeds`` seeds ingested, the teacher at ``base_url``."""
    for name in ("templates", "data/students"):  # students: the feature method's tokenizer
        shutil.copytree(ROOT / name, workdir / name)
    (workdir / "data/seeds").mkdir(parents=True)
    lines = (ROOT / "data/seeds/train.jsonl").read_text().splitlines(keepends=True)[:seeds]
    (workdir / "data/seeds/train.jsonl").write_text("".join(lines))
    shutil.copy(ROOT / "data/seeds/eval.jsonl", workdir / "data/seeds/eval.jsonl")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["teacher"] |= {"provider": "openai", "base_url": base_url, "api_key_env": KEY_ENV}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    assert ingest(workdir).returncode == 0
    return workdir


@pytest.mark.reliability
@pytest.mark.slow
def test_a_full_disk_while_generate_stores_answers_keeps_them_and_the_rerun_pays_only_the_rest(
        tmp_path: Path, small_disk: Callable[..., Path], prefect_server: str, billed, reliability) -> None:
    seeds, request_log = 300, tmp_path / "requests.jsonl"
    env = stage_env(**{KEY_ENV: "disk-faults-test", "PREFECT_API_URL": prefect_server})
    with running_standin(StandinSettings(), request_log=request_log) as url:
        workdir = generate_workdir(tmp_path / "work", url, seeds)
        disk = small_disk(workdir / "data/store", size="16m")  # 16 MiB: the whole store once the filler is gone
        fill(disk, leave=5 * PAGE)  # room for a few dozen answers of the 300
        failed = subprocess.run([sys.executable, "-m", "stages.generate"], cwd=workdir, env=env,
                                capture_output=True, text=True, timeout=300)
        assert failed.returncode == 1
        assert failed.stderr.strip().splitlines()[-1].startswith(
            "generate: could not write data/store/generate.jsonl: no space left on device"), failed.stderr[-3000:]
        assert not (workdir / "data/generate").exists()
        with RequestStore(disk / "generate.jsonl", read_only=True) as store:
            kept = len(store)
        assert 0 < kept < seeds

        (disk / "filler").unlink()  # space freed
        rerun = subprocess.run([sys.executable, "-m", "stages.generate"], cwd=workdir, env=env,
                               capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    metrics = json.loads((workdir / "metrics/generate.json").read_text())
    assert (metrics["cache_hits"], metrics["requests_sent"]) == (kept, seeds - kept)
    paid = billed(request_log)  # answers lost in flight were replayed by their idempotency key, not billed again
    assert len(paid) == seeds and max(paid.values()) == 1
    reliability(ROW, faults=1, full_disk=1)


# --- a second run while one runs, and a corrupted request store ---------------------------------------------------


@dataclass
class Race:
    repo: Path
    env: dict[str, str]
    request_log: Path
    first: subprocess.Popen  # the `dvc repro generate` that ran first, finished
    first_log: Path
    second_repro: subprocess.CompletedProcess  # a `dvc repro` started while the first ran
    second_repro_s: float
    second_generate: subprocess.CompletedProcess  # `python -m stages.generate` started while the first ran


def started(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=cwd, env=stage_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finished(process: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture(scope="module")
def race(tmp_path_factory: pytest.TempPathFactory, tiny_repo, background, prefect_server: str) -> Iterator[Race]:
    """A tiny repo whose `dvc repro generate` (teacher: a stand-in logging what it bills) is joined, once the
    generate stage holds the request store, by a second `dvc repro` and a second generate run by hand."""
    folder = tmp_path_factory.mktemp("race")
    request_log = folder / "requests.jsonl"
    # 150 ms a request, 2 at a time: generate holds the store for over 10 s, time for the others to start
    with running_standin(StandinSettings(latency_ms=150), request_log=request_log) as url:
        repo = tiny_repo(folder / "repo", {"teacher.provider": "openai", "teacher.base_url": url,
                                           "teacher.api_key_env": KEY_ENV})
        env = {KEY_ENV: "disk-faults-test", "PREFECT_API_URL": prefect_server, "DISTILL_STORE_WAIT_S": "0"}
        first_log = folder / "first.log"
        first = background(["dvc", "repro", "generate"], first_log, env=env | {"DISTILL_TEACHER_CONCURRENCY": "2"},
                           cwd=repo)
        lock = repo / "data/store/generate.jsonl.lock"  # holds the writer's PID once it has the store
        deadline = time.monotonic() + 300
        while not (lock.exists() and lock.stat().st_size) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first.poll() is None, f"the first run ended before generate took the store:\n{first_log.read_text()}"
        began = time.monotonic()
        second_repro = started(["dvc", "repro"], repo, env)
        second_generate = started([sys.executable, "-m", "stages.generate"], repo, env)
        repro_result = finished(second_repro)
        repro_s = time.monotonic() - began
        generate_result = finished(second_generate)
        first.wait(timeout=600)
        yield Race(repo, env, request_log, first, first_log, repro_result, repro_s, generate_result)


def leftovers(repo: Path) -> list[Path]:
    """Temporary files or folders an atomic write would leave if it were cut off."""
    return [path for folder in ("data", "metrics") for pattern in (".*.tmp", "*.partial", "*.old")
            for path in (repo / folder).rglob(pattern)]


def dvc_status(repo: Path, env: dict[str, str]) -> str:
    return subprocess.run(["dvc", "status", "generate"], cwd=repo, env=stage_env(**env), capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.reliability
@pytest.mark.slow
def test_a_second_run_while_one_runs_is_refused_and_harms_nothing(race: Race, billed, reliability) -> None:
    # DVC lets go of its repo lock while a stage's command runs but keeps its deps read-locked and its outs
    # write-locked (.dvc/tmp/rwlock): the second run stops at its first stage that touches them, naming the holder
    assert race.second_repro.returncode != 0 and race.second_repro_s < 30
    assert "is busy, it is being blocked by" in race.second_repro.stderr
    assert f"(PID {race.first.pid}): " in race.second_repro.stderr
    # a stage run by hand takes no DVC lock, but generate holds the request store's writer lock
    assert race.second_generate.returncode == 1
    assert race.second_generate.stderr.startswith(
        "generate: data/store/generate.jsonl is being written by another run (PID "), race.second_generate.stderr
    assert "Traceback" not in race.second_generate.stderr

    assert race.first.returncode == 0, race.first_log.read_text()[-3000:]
    assert "Data and pipelines are up to date" in dvc_status(race.repo, race.env)  # outputs = what dvc.lock says
    keys = [json.loads(line)["key"] for line in (race.repo / "data/store/generate.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys)) and not quarantine_path(race.repo / "data/store/generate.jsonl").exists()
    paid = billed(race.request_log)
    assert len(paid) == len(keys) and max(paid.values()) == 1  # the refused run paid for nothing
    assert leftovers(race.repo) == []
    reliability(ROW, faults=1, concurrent_repro=1)
    reliability(ROW, faults=1, concurrent_stage=1)

    # Two ingests by hand at once: each writes its own temporary files and renames them whole.
    both = [started([sys.executable, "-m", "stages.ingest"], race.repo, race.env) for _ in range(2)]
    assert [finished(process).returncode for process in both] == [0, 0]
    assert "Data and pipelines are up to date" in dvc_status(race.repo, race.env)
    assert leftovers(race.repo) == []
    reliability(ROW, faults=1, concurrent_stage=1)


@pytest.mark.reliability
@pytest.mark.slow
def test_a_store_with_torn_garbage_and_duplicate_lines_keeps_every_paid_answer(race: Race, billed,
                                                                                 reliability) -> None:
    store = race.repo / "data/store/generate.jsonl"
    rows = race.repo / "data/generate/rows.parquet"
    before_rows, paid_before = pl.read_parquet(rows), billed(race.request_log)
    lines = store.read_bytes().splitlines(keepends=True)
    garbage, duplicate, torn = b"\x00not json {\n", lines[0], lines[5][:40]  # torn: a kill mid-append
    store.write_bytes(b"".join(lines[:10] + [garbage] + lines[10:20] + [duplicate] + lines[20:] + [torn]))

    rerun = subprocess.run([sys.executable, "-m", "stages.generate"], cwd=race.repo, env=stage_env(**race.env),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (f"data/store/generate.jsonl: moved 3 line(s) it could not keep to data/store/generate.quarantine.jsonl: "
            f"line 11 (not JSON), line 22 (duplicate of line 1), line {len(lines) + 3} (torn last line); every "
            f"other answer is kept") in rerun.stderr
    metrics = json.loads((race.repo / "metrics/generate.json").read_text())
    assert metrics["store_lines_quarantined"] == 3 and metrics["requests_sent"] == 0
    assert billed(race.request_log) == paid_before  # no valid stored answer paid for again
    assert store.read_bytes() == b"".join(lines)
    assert quarantine_path(store).read_bytes() == garbage + duplicate + torn + b"\n"
    assert pl.read_parquet(rows).equals(before_rows)
    reliability(ROW, faults=1, corrupt_store=1, store_lines_quarantined=3)
