"""The feature method: teacher token log-probabilities against the stand-in over HTTP, stored
by token id (``data/generate/features.parquet``), and the capability check before spending."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import polars as pl
import pytest
from tokenizers import Tokenizer

from distill import params as params_module
from distill.elicit import answering
from distill.elicit.features import FeatureTokenizer, extract
from distill.entry import StageError
from distill.io import content_hash
from distill.records import FEATURES
from distill.teacher import capabilities
from distill.teacher.endpoint import teacher_identity

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "data/students/tiny-char"


def with_teacher(params: params_module.Params, **updates: object) -> params_module.Params:
    return params.model_copy(update={"teacher": params.teacher.model_copy(update=updates)})


def test_top_logprobs_stores_features_by_token_id(tmp_path: Path, forty_seeds: Path,
                                                  monkeypatch: pytest.MonkeyPatch, feature_params, run_stage) -> None:
    metrics = run_stage(feature_params(5), tmp_path, forty_seeds)
    rows = pl.read_parquet(tmp_path / "gen/rows.parquet")
    features = pl.read_parquet(tmp_path / "gen/features.parquet")
    assert features.schema == pl.Schema(FEATURES)
    assert sorted(features["id"]) == sorted(rows["id"]) and features.height == rows.height == metrics["rows"]
    assert set(features["k"]) == {5}
    identity = f"{TINY}@{hashlib.sha256(TINY.joinpath('tokenizer.json').read_bytes()).hexdigest()[:16]}"
    assert metrics["tokenizer"] == identity and set(features["tokenizer"]) == {identity}
    # log-probs are part of what is asked, so of the request key
    entry = json.loads((tmp_path / "store/generate.jsonl").read_text().splitlines()[0])
    assert (entry["request"]["logprobs"], entry["request"]["top_logprobs"]) == (True, 5)

    char = Tokenizer.from_file(str(TINY / "tokenizer.json"))
    joined = rows.select("id", "instruction", "response").join(features, on="id")
    for row in joined.iter_rows(named=True):
        n = len(row["token_ids"])
        assert n == len(row["response"]) and len(row["top_ids"]) == n * 5 == len(row["top_logprobs"])
        assert row["token_ids"] == [char.token_to_id(c) for c in row["response"]]
        assert row["top_ids"][::5] == row["token_ids"]  # the stand-in's chosen token leads its top list
        assert len(row["tail_mass"]) == n
        for position, tail in enumerate(row["tail_mass"]):
            top = row["top_logprobs"][position * 5:(position + 1) * 5]
            assert 0.0 <= tail <= 1.0
            assert tail == pytest.approx(max(0.0, 1 - sum(math.exp(v) for v in top)), abs=5e-3)
    planet = joined.filter(pl.col("instruction") == "reverse planet").row(0, named=True)
    assert planet["response"] == "tenalp"
    assert planet["token_ids"] == char.encode("tenalp", add_special_tokens=False).ids
    assert metrics["feature_rows"] == features.height
    assert metrics["feature_bytes"] == (tmp_path / "gen/features.parquet").stat().st_size
    tokens = int(features["token_ids"].list.len().sum())
    assert metrics["feature_bytes_per_token"] == pytest.approx(metrics["feature_bytes"] / tokens, abs=1e-3)
    assert metrics["feature_bytes_per_token"] > 0


def test_without_top_logprobs_the_sampling_and_keys_stay_and_features_are_empty(
        tmp_path: Path, forty_seeds: Path, monkeypatch: pytest.MonkeyPatch, feature_params, run_stage) -> None:
    params = feature_params(None)
    assert answering.sampling_of(params.generate) == {"temperature": 0.0, "max_tokens": 16, "n": 1, "seed": 0}
    # the later stand-in switches, at their defaults, leave the stand-in's identity (and so every stored key) as
    # it was; idempotency changes billing, never answers, so it is never part of it
    before = {key: value for key, value in params.teacher.settings.items()
              if key not in {"ignore_logprobs", "idempotency", "position_bias", "math_wrong_rate", "reasoning",
                             "ignore_n", "ignore_seed", "tokenizer", "require_max_completion_tokens", "batch_delay_ms",
                             "batch_line_ms", "auth_error_rate", "echo_key_rate"}}
    assert teacher_identity(params.teacher) == f"standin:standin:{content_hash(before)}"
    billing_off = params.teacher.model_copy(update={"settings": params.teacher.settings | {"idempotency": False}})
    assert teacher_identity(billing_off) == teacher_identity(params.teacher)
    metrics = run_stage(params, tmp_path, forty_seeds)
    features = pl.read_parquet(tmp_path / "gen/features.parquet")
    assert features.height == 0 and features.schema == pl.Schema(FEATURES)
    assert (metrics["feature_rows"], metrics["feature_bytes_per_token"], metrics["tokenizer"]) == (0, None, None)


def test_capability_check_refuses_before_any_request(
    tmp_path: Path,
    forty_seeds: Path,
    monkeypatch: pytest.MonkeyPatch,
    feature_params,
    run_stage,
) -> None:
    monkeypatch.setenv("DISTILL_TEST_KEY", "sk-test")
    caps = params_module.CapabilityParams(logprobs=False)
    # a real endpoint URL where nothing listens: a request would fail with a connection error
    params = with_teacher(feature_params(5), provider="openai", base_url="http://127.0.0.1:9/v1",
                          api_key_env="DISTILL_TEST_KEY", capabilities=caps)
    with pytest.raises(StageError, match=r"generate\.top_logprobs=5 asks for log-probabilities, but "
                                         r"teacher\.capabilities\.logprobs is false for standin"):
        run_stage(params, tmp_path, forty_seeds)
    assert not (tmp_path / "store/generate.jsonl").exists()
    assert not (tmp_path / "gen").exists()


def test_capability_check_rules(feature_params) -> None:
    sampling = {"temperature": 0.0, "max_tokens": 16, "n": 1, "seed": 0}
    asked = sampling | {"logprobs": True, "top_logprobs": 8}
    capabilities.check(asked, params_module.CapabilityParams())  # the OpenAI defaults allow it
    with pytest.raises(StageError, match=r"teacher\.capabilities\.max_top_logprobs=5"):
        capabilities.check(asked, params_module.CapabilityParams(max_top_logprobs=5))
    # n > 1 without n: no error, the answer step sends n requests with distinct seeds (tests/test_probe.py)
    capabilities.check(sampling | {"n": 3}, params_module.CapabilityParams(n=False))
    capabilities.check(sampling, params_module.CapabilityParams(logprobs=False, n=False))  # nothing asked
    # the stand-in supports everything, whatever params say
    teacher = feature_params().teacher.model_copy(update={"capabilities": params_module.CapabilityParams(
        logprobs=False, max_top_logprobs=0, n=False)})
    capabilities.check(asked | {"n": 3}, capabilities.of(teacher))


def test_endpoint_that_ignores_logprobs_fails_the_stage_before_paying(
    tmp_path: Path,
    forty_seeds: Path,
    monkeypatch: pytest.MonkeyPatch,
    feature_params,
    run_stage,
) -> None:
    with pytest.raises(StageError, match=r"standin: the plan asks for log-probabilities \(generate.top_logprobs=5\), "
                                         r"but the probe found the endpoint ignores them \(asked logprobs=true, "
                                         r"top_logprobs=5; choices\[0\]\.logprobs was None"):
        run_stage(feature_params(5, ignore_logprobs=True), tmp_path, forty_seeds)
    store = tmp_path / "store/generate.jsonl"
    assert not store.exists() or not store.read_text()  # none of the 40 planned requests was sent
    assert not (tmp_path / "gen/rows.parquet").exists()
    assert not (tmp_path / "gen/features.parquet").exists()


def test_tokens_the_tokenizer_cannot_map_are_mismatches() -> None:
    tokenizer = FeatureTokenizer(str(TINY))
    def position(token: str, *alternatives: str) -> dict:
        return {"token": token, "logprob": -0.1,
                "top_logprobs": [{"token": t, "logprob": -0.1 * (i + 1)} for i, t in enumerate(alternatives)]}
    good = extract([position("a", "a", "b"), position("b", "b")], 2, tokenizer)
    assert good["token_ids"] == [tokenizer.id_of("a"), tokenizer.id_of("b")]
    assert good["top_ids"][-1] == -1 and good["top_logprobs"][-1] == -math.inf  # padded to k
    assert good["tail_mass"][1] == pytest.approx(1 - math.exp(-0.1))
    assert extract([position("é", "é")], 1, tokenizer) == "token 'é' has no id in the feature tokenizer"
    assert "top token ' the'" in extract([position("a", "a", " the")], 2, tokenizer)
