"""Scheduling, as a user sets it up: a real Prefect server on loopback, `distill deploy`, a real process
worker running the deployments in a temporary tiny repo, and the shared teacher rate limit.

One repo for the module; the tests run in order: register and read back -> a run whose gate fails
-> the nightly run completes and pushes to the DVC remote -> two runs share one teacher RPM budget.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

from demo.standin import Settings as StandinSettings
from demo.standin import running_standin

pytestmark = pytest.mark.slow
RPM = 6000  # the rate limit the deployments' runs share: 100 requests/s


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, prefect_server: str, tiny_repo, run) -> Path:
    """A tiny repo (its default DVC remote is ../distill-remote, beside it) with the deployments registered."""
    repo = tiny_repo(tmp_path_factory.mktemp("scheduled") / "repo")
    run(repo, "distill", "deploy", "--teacher-rpm", str(RPM), env={"PREFECT_API_URL": prefect_server})
    return repo


def api(server: str, method: str, path: str, body: dict | None = None) -> dict | list:
    response = httpx.request(method, f"{server}{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def finished(server: str, flow_run_id: str, timeout_s: float = 600) -> str:
    """Wait for the flow run to end; its final state type (COMPLETED, FAILED, ...)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = api(server, "GET", f"/flow_runs/{flow_run_id}")["state"]["type"]
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return state
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} still {state} after {timeout_s} s")


def run_logs(server: str, flow_run_id: str) -> str:
    """Every log line of the flow run, in order (the API pages by 200)."""
    time.sleep(3)  # the run's last log batch reaches the server shortly after its final state
    messages: list[str] = []
    while page := api(server, "POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}},
                                                       "sort": "TIMESTAMP_ASC", "limit": 200,
                                                       "offset": len(messages)}):
        messages += [entry["message"] for entry in page]
    return "\n".join(messages)


def test_deploy_registers_the_nightly_cron_and_generation_on_demand(repo: Path, prefect_server: str) -> None:
    nightly = api(prefect_server, "GET", "/deployments/name/distill-pipeline/nightly")
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 2 * * *"]
    assert nightly["parameters"] == {"pull": True, "push": True}
    assert nightly["work_pool_name"] == "distill"
    assert nightly["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(repo)}}]
    assert nightly["job_variables"] == {"env": {"DISTILL_TEACHER_RATE_LIMIT": "distill-teacher"}}
    generate = api(prefect_server, "GET", "/deployments/name/distill-pipeline/generate")
    assert generate["schedules"] == []
    assert generate["parameters"]["targets"] == ["gate@generate"]
    assert api(prefect_server, "GET", "/work_pools/distill")["type"] == "process"
    limit = api(prefect_server, "GET", "/v2/concurrency_limits/distill-teacher")
    assert (limit["limit"], limit["slot_decay_per_second"]) == (100, 100.0)


def test_a_run_whose_gate_fails_ends_failed_with_the_gates_message(
    repo: Path, prefect_server: str, prefect_worker: Path, metrics, set_params
) -> None:
    set_params(repo, **{"gates.generate.min_rows": 10**6})
    deployment = api(prefect_server, "GET", "/deployments/name/distill-pipeline/generate")
    flow_run = api(prefect_server, "POST", f"/deployments/{deployment['id']}/create_flow_run", {})
    assert finished(prefect_server, flow_run["id"]) == "FAILED", prefect_worker.read_text()[-3000:]
    logs = run_logs(prefect_server, flow_run["id"])
    assert "gate generate failed: rows: expect_table_row_count_to_be_between(): observed 150, expected >= 1000000" \
        in logs
    assert metrics(repo, "generate")["requests_sent"] == 150  # paid through the shared rate limit, and kept


def test_the_nightly_run_completes_and_pushes_to_the_remote(
    repo: Path, prefect_server: str, prefect_worker: Path, run, metrics, set_params, tiny_profile
) -> None:
    set_params(repo, **{"gates.generate.min_rows": tiny_profile["gates.generate.min_rows"]})
    started = run(repo, "prefect", "deployment", "run", "distill-pipeline/nightly",
                  env={"PREFECT_API_URL": prefect_server}).stdout
    flow_run_id = re.search(r"flow-run/([0-9a-f-]{36})", started).group(1)
    assert finished(prefect_server, flow_run_id) == "COMPLETED", prefect_worker.read_text()[-3000:]
    logs = run_logs(prefect_server, flow_run_id)
    assert "Running stage 'train':" in logs and "Running stage 'evaluate':" in logs
    assert metrics(repo, "generate")["requests_sent"] == 150  # generate did not run again: nothing paid twice
    assert metrics(repo, "eval")["student_after"] >= 0.0
    pushed = list((repo.parent / "distill-remote").rglob("*"))
    assert len([p for p in pushed if p.is_file()]) > 20  # every output, the request stores included
    assert "Data and pipelines are up to date" in run(repo, "dvc", "repro").stdout
    assert "are in sync" in run(repo, "dvc", "status", "--cloud").stdout


def test_two_runs_share_one_teacher_rate_limit(
    tmp_path_factory: pytest.TempPathFactory,
    prefect_server: str,
    run,
    metrics,
    tiny_repo,
    background,
) -> None:
    """Two repos (two workers) run generate at once against one teacher endpoint, both paced by one global rate
    limit of 1,200 RPM (20/s, a burst of 20): the teacher's own log shows they never went faster together."""
    rpm = 1200
    run(Path.cwd(), "python", "-c", "import asyncio; from flows.rate_limit import ensure_rate_limit; "
        f"asyncio.run(ensure_rate_limit('test-shared-teacher', {rpm}))", env={"PREFECT_API_URL": prefect_server})
    log = tmp_path_factory.mktemp("teacher") / "requests.jsonl"
    env = {"PREFECT_API_URL": prefect_server, "DISTILL_TEACHER_RATE_LIMIT": "test-shared-teacher",
           "DISTILL_TEST_KEY": "unused"}
    with running_standin(StandinSettings(), request_log=log) as url:
        repos = [tiny_repo(tmp_path_factory.mktemp(f"worker{n}"),
                           {"teacher.provider": "openai", "teacher.base_url": url,
                            "teacher.api_key_env": "DISTILL_TEST_KEY"}) for n in (1, 2)]
        workers = [background(["dvc", "repro", "generate"], repo / "repro.log", env=env, cwd=repo) for repo in repos]
        for repo, worker in zip(repos, workers, strict=True):
            assert worker.wait(timeout=600) == 0, (repo / "repro.log").read_text()[-3000:]
    for repo in repos:
        assert metrics(repo, "generate")["requests_sent"] == 150
    times = sorted(json.loads(line)["time"] for line in log.read_text().splitlines())
    assert len(times) >= 300
    burst, per_second = 20, rpm / 60
    for i, start in enumerate(times):  # in every window: at most the burst plus the rate times its length
        for window in (1.0, 5.0):
            inside = sum(1 for t in times[i:i + 400] if t < start + window)
            assert inside <= burst + per_second * window + 2, (start, window, inside)
    assert times[-1] - times[0] >= (len(times) - burst) / per_second - 1  # unpaced, it takes about 2 s


def test_a_rate_limit_missing_on_the_server_is_an_error_not_a_silent_no_op(prefect_server: str, run) -> None:
    script = ("import asyncio; from flows.rate_limit import SharedRateLimit; "
              "asyncio.run(SharedRateLimit('nope').wait(1))")
    result = run(Path.cwd(), "python", "-c", script, check=False, env={"PREFECT_API_URL": prefect_server})
    assert result.returncode != 0
    assert "DISTILL_TEACHER_RATE_LIMIT='nope': no such global rate limit on the Prefect server" in result.stderr
    assert "distill deploy --teacher-rpm N" in result.stderr
