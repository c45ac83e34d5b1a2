"""Under injected faults no seed is lost: each ends as a row or as a reject with a reason,
and the malformed answers that do arrive are dropped by scoring, with their reason."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from demo.words import demo_seeds
from distill.io import write_parquet
from distill.task import load as load_task
from stages import score


def test_ten_percent_transient_faults_and_five_percent_malformed_lose_no_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, load_params, run_stage, seeds, with_standin
) -> None:
    monkeypatch.setenv("DISTILL_TEACHER_TIMEOUT_S", "1")  # a hung request costs 1 s, then is retried
    monkeypatch.setenv("DISTILL_TEACHER_MAX_ATTEMPTS", "8")
    train, _ = demo_seeds(n_train=300, n_eval=0, seed=7)
    seed_frame = seeds([row["instruction"] for row in train])
    seeds_path = tmp_path / "ingest/train.parquet"
    write_parquet(seed_frame, seeds_path)
    params = with_standin(load_params(), rate_limit_rate=0.04, error_rate=0.04, timeout_rate=0.02,
                          malformed_rate=0.05, wrong_rate=0.0, refusal_rate=0.0)

    metrics = run_stage(params, tmp_path, seeds_path)

    rows = pl.read_parquet(tmp_path / "gen/rows.parquet")
    rejects = pl.read_parquet(tmp_path / "gen/rejects.parquet")
    assert set(rows["seed_id"]) | set(rejects["seed_id"]) == set(seed_frame["id"])
    assert rejects["reason"].null_count() == 0
    assert set(metrics["retries_by_class"]) == {"RateLimitError", "InternalServerError", "APITimeoutError"}
    assert metrics["failed_fraction"] <= params.generate.max_failed_fraction

    scored = score.score(rows, params.score, verify=load_task(params.task).verify)
    malformed = scored.filter(pl.col("response").str.starts_with("Sure!"))  # cut by max_tokens or not
    assert malformed.height > 0
    assert set(malformed["drop_reason"]) <= {"verifier_failed", "truncated", "length"}
    assert scored.filter(~pl.col("keep"))["drop_reason"].null_count() == 0
