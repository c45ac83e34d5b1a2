"""Cost: the price table, the estimate before sending, ``distill estimate``, and the hard budget
(against the real stand-in over HTTP)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from distill import params as params_module
from distill.elicit import answering
from distill.io import write_parquet
from distill.params import PriceParams
from distill.teacher.engine import TeacherRequest, cost_usd
from distill.teacher.estimate import chars_per_token, estimate
from distill.teacher.store import RequestStore

REPO = Path(__file__).resolve().parents[1]
PRICE = PriceParams(prompt_per_mtok=1000.0, completion_per_mtok=2000.0)


def test_cost_usd_arithmetic() -> None:
    assert cost_usd(0, 0, PRICE) == 0.0
    assert cost_usd(1_000_000, 0, PriceParams(prompt_per_mtok=0.15, completion_per_mtok=0.6)) == pytest.approx(0.15)
    assert cost_usd(2_000, 500, PriceParams(prompt_per_mtok=0.15, completion_per_mtok=0.6)) == pytest.approx(
        (2_000 * 0.15 + 500 * 0.6) / 1e6)
    assert cost_usd(10, 10, PriceParams()) == 0.0  # no price: free


def literal_request(key: str, chars: int) -> TeacherRequest:
    return TeacherRequest(key=key, model="m", messages=[{"role": "user", "content": "x" * chars}],
                          sampling={"temperature": 0.0, "max_tokens": 10, "n": 2, "seed": 0})


def test_estimate_on_a_literal_plan(tmp_path: Path) -> None:
    requests = [literal_request("k1", 39), literal_request("k2", 80), literal_request("k1", 39),
                literal_request("k0", 7)]
    with RequestStore(tmp_path / "empty.jsonl") as empty:
        bound = estimate(requests, empty, PRICE)  # nothing observed, nothing from params: max_tokens x n
        given = estimate(requests, empty, PRICE, expected_completion_tokens=4)
    assert (bound.planned, bound.cached, bound.to_send) == (4, 0, 3)
    assert bound.prompt_tokens == (39 // 4 + 1) + (80 // 4 + 1) + (7 // 4 + 1) == 33
    assert bound.completion_tokens_expected == bound.completion_tokens_max == 60
    assert given.completion_tokens_expected == 3 * 8

    with RequestStore(tmp_path / "store.jsonl") as store:
        answer = {"choices": [{"index": 0}, {"index": 1}], "usage": {"prompt_tokens": 7, "completion_tokens": 6}}
        store.put("k0", {}, answer)  # 3 completion tokens per answer observed
        planned = estimate(requests, store, PRICE, expected_completion_tokens=4)
        standin = estimate(requests, store, PRICE, chars_per_token=1.0)
    assert (planned.planned, planned.cached, planned.to_send) == (4, 1, 2)
    assert planned.prompt_tokens == 10 + 21
    assert (planned.completion_tokens_expected, planned.completion_tokens_max) == (12, 40)
    assert planned.cost_usd_expected == pytest.approx((31 * 1000 + 12 * 2000) / 1e6)  # 0.055
    assert planned.cost_usd_max == pytest.approx((31 * 1000 + 40 * 2000) / 1e6)  # 0.111
    assert standin.prompt_tokens == 40 + 81
    table = planned.table("generate").splitlines()
    assert table[1].split() == ["requests", "planned", "4"]
    assert table[2].split() == ["cached", "(in", "the", "store)", "1"]
    assert table[3].split() == ["to", "send", "2"]
    assert table[4].split() == ["prompt", "tokens", "31", "31"]
    assert table[5].split() == ["completion", "tokens", "12", "40"]
    assert table[6].split() == ["dollars", "0.0550", "0.1110"]


def test_chars_per_token_follows_the_endpoint(load_params) -> None:
    teacher = load_params().teacher
    assert chars_per_token(teacher) == 1.0  # the stand-in bills one token per character
    real = teacher.model_copy(update={"provider": "openai", "base_url": "http://127.0.0.1:9/v1"})
    assert chars_per_token(real) == 4.0
    assert chars_per_token(teacher.model_copy(update={"provider": "hf"})) == 1.0


# --- the hard budget, against the stand-in -------------------------------------------------------


@pytest.fixture
def worst_cases(prompt):
    """``worst_cases(params, seeds_path)``: (dollars, tokens) each request reserves: prompt at 1 char/token plus
    max_tokens x n."""

    def reserved(params: params_module.Params, seeds_path: Path) -> list[tuple[float, int]]:
        requests = answering.plan(pl.read_parquet(seeds_path), prompt(params), params.generate, params.teacher)
        price = params.teacher.price
        return [(cost_usd(r.prompt_estimate(1.0), r.completion_limit(), price), r.token_estimate(1.0))
                for r in requests]

    return reserved


def spent(store_path: Path, price: PriceParams) -> tuple[float, int]:
    with RequestStore(store_path) as store:
        usages = [entry["response"]["usage"] for entry in store.entries()]
    prompt_tokens = sum(u["prompt_tokens"] for u in usages)
    completion_tokens = sum(u["completion_tokens"] for u in usages)
    return cost_usd(prompt_tokens, completion_tokens, price), prompt_tokens + completion_tokens


@pytest.fixture
def budget_params(load_params, with_standin):
    """``budget_params(**budget)``: load_params with those budget caps and a stand-in that never fails."""

    def params_with(**budget: object) -> params_module.Params:
        params = with_standin(load_params(), error_rate=0.0, rate_limit_rate=0.0)
        return params.model_copy(update={"budget": params.budget.model_copy(update=budget)})

    return params_with


@pytest.mark.parametrize("cap", ["usd", "tokens"])
def test_budget_stops_at_the_cap_and_a_rerun_pays_only_for_the_rest(
    cap: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    worst_cases,
    budget_params,
    run_stage,
    forty_seeds,
) -> None:
    worst = worst_cases(budget_params(), forty_seeds)
    column = 0 if cap == "usd" else 1
    limit = sum(case[column] for case in worst[:10])  # about ten requests' worth
    largest = max(case[column] for case in worst)
    params = budget_params(**{cap: limit})
    store_path = tmp_path / "store/generate.jsonl"

    first = run_stage(params, tmp_path, forty_seeds)
    paid = spent(store_path, params.teacher.price)[column]
    probe = first["probe_cost_usd"] if cap == "usd" else first["probes"]["standin"]["tokens_billed"]
    assert probe > 0  # the probe was paid from the same budget
    assert limit - largest - probe < paid <= limit - probe + 1e-9  # float slack only
    assert first["stopped_by_budget"] is True
    assert first["budget"][cap] == limit
    assert first["skipped_budget"] > 0
    assert first["requests_sent"] + first["skipped_budget"] == 40
    assert first["cost_usd"] == pytest.approx(spent(store_path, params.teacher.price)[0], abs=1e-6)
    assert first["estimated_cost_usd"] > first["cost_usd"]  # the estimate covered all 40
    rejects = pl.read_parquet(tmp_path / "gen/rejects.parquet")
    budget_rejects = rejects.filter(pl.col("reason") == "budget")
    assert budget_rejects.height == first["skipped_budget"]
    assert set(budget_rejects["detail"]) == {f"not sent: budget.{cap}={limit}"}
    assert first["failed_fraction"] <= params.generate.max_failed_fraction  # the stage did not fail
    with RequestStore(store_path) as store:
        answered = len(store)
    assert answered == first["requests_sent"]

    rerun = run_stage(budget_params(), tmp_path, forty_seeds)
    assert (rerun["requests_sent"], rerun["cache_hits"]) == (40 - answered, answered)
    assert rerun["stopped_by_budget"] is False
    assert rerun["rejects_by_reason"].get("budget") is None


# --- distill estimate ----------------------------------------------------------------------------


def project_copy(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    shutil.copytree(REPO / "templates", root / "templates")
    return root


def distill_estimate(cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "distill.cli", "estimate"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_distill_estimate_prints_the_table_and_sends_nothing(
    tmp_path: Path,
    load_params,
    prompt,
    seeds,
    seed_words,
) -> None:
    root = project_copy(tmp_path)
    missing = distill_estimate(root)
    assert missing.returncode != 0
    assert "run `dvc repro ingest` first" in missing.stderr

    frame = seeds([f"{op} {word}" for word in seed_words for op in ("reverse", "upper")])
    write_parquet(frame, root / "data/ingest/train.parquet")
    result = distill_estimate(root)
    assert result.returncode == 0, result.stderr
    lines = {" ".join(line.split()[:-1]): line.split()[-1] for line in result.stdout.splitlines()[1:4]}
    assert lines == {"requests planned": "40", "cached (in the store)": "0", "to send": "40"}
    assert "dollars" in result.stdout
    assert not (root / "data/store").exists()  # nothing sent, no store created

    params = load_params()
    first = answering.plan(frame, prompt(params), params.generate, params.teacher)[0]
    with RequestStore(root / "data/store/generate.jsonl") as store:
        store.put(first.key, first.payload(), {"choices": [{"index": 0}], "usage": {"completion_tokens": 5}})
    before = (root / "data/store/generate.jsonl").read_bytes()
    result = distill_estimate(root)
    assert result.returncode == 0, result.stderr
    assert "cached (in the store)" in result.stdout and "5.00 tokens per answer observed" in result.stdout
    assert result.stdout.splitlines()[2].split()[-1] == "1"
    assert (root / "data/store/generate.jsonl").read_bytes() == before


def test_distill_estimate_covers_every_method_and_teacher(tmp_path: Path, seeds, seed_words) -> None:
    root = project_copy(tmp_path)
    write_parquet(seeds([f"{op} {word}" for word in seed_words for op in ("reverse", "upper")]),
                  root / "data/ingest/train.parquet")
    shutil.copytree(REPO / "data/seeds", root / "data/seeds")
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["generate"]["elicit"] = ["labelling", "expansion", "curation", "feedback"]
    raw["generate"]["top_logprobs"] = None
    raw["generate"]["expansion"] = {"rounds": 2, "requests_per_round": 3, "tasks_per_request": 5}
    raw["generate"]["feedback"] = {"max_inputs": 10, "focus_fraction": 0.5}
    raw["teachers"] = [dict(raw["teacher"], name="cheap", price={"prompt_per_mtok": 0.01, "completion_per_mtok": 0.02})]
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    result = distill_estimate(root)
    assert result.returncode == 0, result.stderr
    out = result.stdout

    def planned(label: str) -> int:
        block = out[out.index(label):]
        return int(block.splitlines()[1].split()[-1])

    # round robin: the 40 seeds split across the two teachers
    assert planned("labelling (standin)") + planned("labelling (cheap)") == 40
    assert planned("expansion: writing inputs (standin)") == 6
    assert planned("expansion: answers (upper bound) (standin)") + planned(
        "expansion: answers (upper bound) (cheap)") == 30
    assert planned("curation: subtopics (standin)") == 2
    assert planned("curation: writing inputs (upper bound) (standin)") == 8
    assert planned("feedback: grading (upper bound) (standin)") == 5
    per_teacher = out[out.index("per teacher"):].splitlines()
    assert per_teacher[1].split()[0] == "standin" and per_teacher[2].split()[0] == "cheap"
    assert not (root / "data/store").exists()
