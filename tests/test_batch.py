"""The Batch API transport (teacher.batch, distill/teacher/batch.py) against the stand-in's /v1/files and
/v1/batches over real HTTP with the official client: answers equal the online path's, failed lines are retried
(in a next batch or online), plans are split under the limits, the budget holds at the batch price, and a run
killed with kill -9 while its batch is in flight resumes it and pays every request exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import openai
import polars as pl
import pytest
import yaml

from demo.standin import Settings as StandinSettings
from demo.standin import running_standin
from distill.params import BatchParams, PriceParams, TeacherParams
from distill.teacher.batch import BatchSender, Entry, Journal, batch_client, input_line, input_path, journal_path
from distill.teacher.engine import Budget, EngineSettings, TeacherRequest
from distill.teacher.plan import write_plan
from distill.teacher.store import RequestStore, open_store
from flows.teacher import answer_plan, answer_shard, run_plan

ROOT = Path(__file__).resolve().parents[1]
FAST = EngineSettings(batch_poll_s=0.05, batch_poll_max_s=0.2)
PRICE = PriceParams(prompt_per_mtok=1.0, completion_per_mtok=4.0)


def requests(count: int, offset: int = 0) -> list[TeacherRequest]:
    return [TeacherRequest(key=f"key-{i:04d}", model="standin-skill-1",
                           messages=[{"role": "user", "content": f"reverse word{i}"}],
                           sampling={"temperature": 0.0, "max_tokens": 16}) for i in range(offset, offset + count)]


def send(url: str, store_path: Path, plan: list[TeacherRequest], budget: Budget | None = None, **batch):
    with open_store(store_path) as store:
        sender = BatchSender(batch_client(url, "batch-test", FAST), store, BatchParams(enabled=True, **batch), FAST,
                             budget, 0.5)
        return (*sender.run(plan), sender)


def contents(store_path: Path) -> dict[str, list[str]]:
    with RequestStore(store_path, read_only=True) as store:
        return {e["key"]: [c["message"]["content"] for c in e["response"]["choices"]] for e in store.entries()}


def batches_of(log: Path) -> Counter:
    return Counter(r.get("batch") for r in map(json.loads, log.read_text().splitlines()))


def test_batches_answer_as_online_requests_do_and_retry_failed_lines(tmp_path: Path, billed) -> None:
    log = tmp_path / "requests.jsonl"
    config = StandinSettings(error_rate=0.25, rate_limit_rate=0.05, batch_delay_ms=20, batch_line_ms=0)
    plan = requests(60)
    with running_standin(config, request_log=log) as url:
        ledger, left, _ = send(url, tmp_path / "batch.jsonl", plan, max_requests=25, rounds=8)
        assert not left and not ledger.failures
        assert ledger.batch_answers == ledger.requests_sent == 60
        assert ledger.batches >= 3 + 1  # 25 + 25 + 10, then at least one batch of retried lines
        assert sum(ledger.retries.values()) == ledger.attempts - 60 > 0
        paid = billed(log)
        assert len(paid) == 60 and max(paid.values()) == 1
        assert all(batch is not None for batch in batches_of(log))  # nothing went online

        write_plan(plan, tmp_path / "plan.jsonl")  # the same requests, request by request
        asyncio.run(answer_plan(str(tmp_path / "plan.jsonl"), str(tmp_path / "online.jsonl"), url, None, 2,
                                settings=EngineSettings().model_dump(), shard_runner=answer_shard.fn))
    assert contents(tmp_path / "batch.jsonl") == contents(tmp_path / "online.jsonl")
    journal = Journal(tmp_path / "batch.jsonl")
    assert journal.entries and not journal.open_entries()
    assert not list(tmp_path.glob("batch.batch-*.jsonl"))  # input files go once collected


def test_lines_still_failing_go_online_or_become_failures(tmp_path: Path, billed) -> None:
    log = tmp_path / "requests.jsonl"
    config = StandinSettings(error_rate=0.3, batch_delay_ms=10, batch_line_ms=0)
    with running_standin(config, request_log=log) as url:
        ledger, left, _ = send(url, tmp_path / "a.jsonl", requests(40), failed="online")
        assert 0 < len(left) < 40 and ledger.batches == 1  # failed lines are handed back for online sending
        assert ledger.batch_answers == 40 - len(left)

        ledger, left, _ = send(url, tmp_path / "b.jsonl", requests(40, offset=100), rounds=1)
        assert not left and ledger.batches == 1
        assert ledger.failures["BatchRoundsExhausted"] == 40 - ledger.batch_answers > 0
        assert set(ledger.errors) == {r.key for r in requests(40, offset=100)} - set(contents(tmp_path / "b.jsonl"))
    assert max(billed(log).values()) == 1


def test_a_plan_is_split_under_the_byte_limit(tmp_path: Path) -> None:
    plan = requests(30)
    limit = 10 * max(len(input_line(r)) + 1 for r in plan)  # ten lines fit, eleven do not (lengths differ by 1)
    with running_standin(StandinSettings(batch_delay_ms=0, batch_line_ms=0)) as url:
        ledger, _, _ = send(url, tmp_path / "store.jsonl", plan, max_bytes=limit)
    assert ledger.batches == 3 and ledger.batch_answers == 30


def test_the_budget_holds_at_the_batch_price(tmp_path: Path) -> None:
    plan = requests(40)
    worst = Budget(PRICE, chars_per_token=1.0)._worst_case(plan[0], 0.5)[0]  # the stand-in bills per character
    budget = Budget(PRICE, usd=worst * 10.5, chars_per_token=1.0)  # ten requests' worst case at the batch price
    with running_standin(StandinSettings(batch_delay_ms=0, batch_line_ms=0)) as url:
        ledger, _, _ = send(url, tmp_path / "store.jsonl", plan, budget=budget)
    assert ledger.batch_answers == 10 and ledger.skipped_budget == 30
    assert budget.settled_usd == pytest.approx(ledger.cost_usd(PRICE)) and budget.settled_usd <= budget.usd
    assert ledger.cost_usd(PRICE) == pytest.approx(0.5 * ledger.cost_usd(PRICE.model_copy(update={"batch": 1.0})))


def test_a_batch_created_by_a_killed_run_is_found_not_created_again(tmp_path: Path, billed) -> None:
    """Killed between `intent` and `submitted` in the journal: the batch exists at the provider only. A new run
    finds it by its metadata; and an intent that never reached the provider is created once."""
    log, store_path = tmp_path / "requests.jsonl", tmp_path / "store.jsonl"
    plan = requests(20)
    with running_standin(StandinSettings(batch_delay_ms=300, batch_line_ms=0), request_log=log) as url:
        client = batch_client(url, "batch-test", FAST)
        journal = Journal(store_path)
        for intent, part, created in (("created", plan[:10], True), ("lost", plan[10:], False)):
            path = input_path(store_path, intent)
            path.write_text("".join(input_line(r) + "\n" for r in part))
            journal.write("intent", Entry(intent, 1))
            if created:
                uploaded = client.files.create(file=(path.name, path.open("rb")), purpose="batch")
                client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h", metadata={"distill_intent": intent})
        ledger, _, _ = send(url, store_path, plan)
        assert ledger.batches == 1 and ledger.requests_sent == 0  # only "lost" was created; nothing new sent
        assert len(contents(store_path)) == 20
        assert len(client.batches.list().data) == 2
    assert len(billed(log)) == 20 and max(billed(log).values()) == 1


def test_params_take_a_bare_switch_and_refuse_batches_for_a_local_teacher() -> None:
    assert TeacherParams(name="t", model="m", provider="standin", batch=True).batch.enabled
    with pytest.raises(ValueError, match="batch: a local hf teacher has no Batch API"):
        TeacherParams(name="t", model="m", provider="hf", batch=True)


def test_run_plan_sends_through_the_batch_flow_and_online_for_what_fails(tmp_path: Path, billed) -> None:
    """The stages' sender with teacher.batch (failed: online): the Prefect flow runs the batches, then sends the
    lines that failed request by request; every request is paid once, and the budget spans both."""
    log = tmp_path / "requests.jsonl"
    plan = requests(50)
    write_plan(plan, tmp_path / "plan.jsonl")
    budget = {"budget_usd": 100.0, "budget_tokens": None, "spent_usd": 0.0, "spent_tokens": 0,
              "price": PRICE.model_dump(), "chars_per_token": 1.0}
    with running_standin(StandinSettings(error_rate=0.2, batch_delay_ms=10, batch_line_ms=0), request_log=log) as url:
        ledger = run_plan(tmp_path / "plan.jsonl", tmp_path / "store.jsonl", url, None, 2, budget, FAST,
                          batch=BatchParams(enabled=True, failed="online").model_dump())
    assert len(contents(tmp_path / "store.jsonl")) == 50 and not ledger.failures
    assert 0 < ledger.batch_answers < 50 and ledger.batches == 1
    by_batch = batches_of(log)
    assert by_batch[None] > 0  # the failed lines went online (with their own retries there)
    assert len(billed(log)) == 50 and max(billed(log).values()) == 1


# --- kill -9 while a batch is in flight, through the generate stage ---------------------------------------------

SEEDS = 300


def workdir(tmp: Path, base_url: str) -> Path:
    for name in ("templates", "data/seeds", "data/students"):
        shutil.copytree(ROOT / name, tmp / name)
    lines = (ROOT / "data/seeds/train.jsonl").read_text().splitlines()[:SEEDS]
    (tmp / "data/seeds/train.jsonl").write_text("\n".join(lines) + "\n")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["teacher"] |= {"provider": "openai", "base_url": base_url, "api_key_env": "DISTILL_BATCH_KEY",
                          "batch": True}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([sys.executable, "-m", "stages.ingest"], cwd=tmp, env=stage_env(), check=True,
                   capture_output=True)
    return tmp


def stage_env(**extra: str) -> dict:
    return os.environ | {"PYTHONPATH": str(ROOT), "DISTILL_BATCH_KEY": "batch-test", "DISTILL_BATCH_POLL_S": "0.2",
                         "DISTILL_BATCH_POLL_MAX_S": "0.5"} | extra


def generate(cwd: Path, prefect_api: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stages.generate"], cwd=cwd,
                            env=stage_env(PREFECT_API_URL=prefect_api), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_kill_while_the_batch_runs_then_rerun_resumes_it_and_pays_once(tmp_path: Path, prefect_server: str,
                                                                       billed) -> None:
    log = tmp_path / "requests.jsonl"
    config = StandinSettings(error_rate=0.05, batch_delay_ms=500, batch_line_ms=10)  # a batch runs ~3.5 s
    with running_standin(config, request_log=log) as url:
        killed = workdir(tmp_path / "killed", url)
        process = generate(killed, prefect_server)
        journal = journal_path(killed / "data/store/generate.jsonl")
        deadline = time.monotonic() + 120
        while not (journal.exists() and '"submitted"' in journal.read_text()) and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (killed / "data/generate/rows.parquet").exists()
        assert Journal(killed / "data/store/generate.jsonl").open_entries()  # in flight when killed

        rerun = generate(killed, prefect_server)
        _, stderr = rerun.communicate()
        assert rerun.returncode == 0, stderr
        assert "resuming batch_" in stderr and "it is polled, not submitted again" in stderr
        metrics = json.loads((killed / "metrics/generate.json").read_text())
        assert metrics["by_teacher"]["standin"]["answered_by_batch"] == SEEDS

        paid = billed(log)  # the plan's requests (each run's probe pays its own two, online)
        assert len(paid) == SEEDS and max(paid.values()) == 1, [h for h, n in paid.items() if n > 1]
        first_batches = {b for b in batches_of(log) if b}
        assert len(first_batches) >= 1

        straight = workdir(tmp_path / "straight", url)  # uninterrupted, same teacher
        assert generate(straight, prefect_server).wait() == 0
    per_call = ("created_at", "response_id")
    assert (pl.read_parquet(killed / "data/generate/rows.parquet").drop(per_call).sort("id")
            .equals(pl.read_parquet(straight / "data/generate/rows.parquet").drop(per_call).sort("id")))


def test_the_official_client_reads_the_standins_batch_objects(tmp_path: Path) -> None:
    """The stand-in's objects parse as the client's types: a batch lists, retrieves and cancels."""
    with running_standin(StandinSettings(batch_delay_ms=2000)) as url:
        client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        path = tmp_path / "in.jsonl"
        path.write_text("".join(input_line(r) + "\n" for r in requests(3)))
        uploaded = client.files.create(file=path.open("rb"), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h", metadata={"distill_intent": "x"})
        assert client.batches.retrieve(batch.id).status == "validating"
        assert [b.id for b in client.batches.list()] == [batch.id]
        assert client.batches.cancel(batch.id).status == "cancelling"


def test_export_then_import_fills_the_store_so_generate_sends_nothing(tmp_path: Path) -> None:
    """`distill batch export` writes the plan as a Batch API file; its output (here from the stand-in's batch
    endpoint; `vllm run-batch -o` writes the same format) goes back with `distill batch import`, and the stage
    then finds every answer in the store."""
    with running_standin(StandinSettings(batch_delay_ms=0, batch_line_ms=0)) as url:
        repo = workdir(tmp_path / "repo", url)
        distill = [sys.executable, "-m", "flows.cli", "batch"]
        exported = subprocess.run([*distill, "export", "plan.jsonl"], cwd=repo, env=stage_env(), text=True,
                                  capture_output=True)
        assert exported.returncode == 0, exported.stderr
        assert f"plan.jsonl: {SEEDS} requests the store lacks" in exported.stdout
        assert (repo / "plan.jsonl").stat().st_mode & 0o777 == 0o600

        client = openai.OpenAI(base_url=url, api_key="x")
        batch = client.batches.create(input_file_id=client.files.create(file=(repo / "plan.jsonl").open("rb"),
                                                                        purpose="batch").id,
                                      endpoint="/v1/chat/completions", completion_window="24h")
        while (batch := client.batches.retrieve(batch.id)).status != "completed":
            time.sleep(0.1)
        (repo / "out.jsonl").write_text(client.files.content(batch.output_file_id).text)
        imported = subprocess.run([*distill, "import", "out.jsonl", "--input", "plan.jsonl"], cwd=repo,
                                  env=stage_env(), text=True, capture_output=True)
        assert imported.returncode == 0, imported.stderr
        assert f"{SEEDS} stored" in imported.stdout

        again = subprocess.run([sys.executable, "-m", "stages.generate"], cwd=repo, env=stage_env(), text=True,
                               capture_output=True)
        assert again.returncode == 0, again.stderr
    metrics = json.loads((repo / "metrics/generate.json").read_text())
    assert metrics["requests_sent"] == 0 and metrics["cache_hits"] == SEEDS
