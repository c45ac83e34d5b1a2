"""The worked configurations in examples/: each loads, and its generate plan passes the probe against a stand-in
that behaves like the endpoint it names (a hosted API, a vLLM server with log-probs, a reasoning model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.elicit.answering import as_inputs, plan_answers, prompt_of
from distill.elicit.features import FeatureTokenizer
from distill.params import load
from distill.seeds import normalise, read_records
from distill.teacher.ask import checked_by_probe
from distill.teacher.engine import EngineSettings

REPO = Path(__file__).resolve().parents[1]
CALM = {"error_rate": 0.0, "rate_limit_rate": 0.0, "malformed_rate": 0.0, "refusal_rate": 0.0}
ENDPOINTS = {  # example -> how the stand-in behaves like its teacher, and the limit field the probe should find
    "hosted-api.yaml": ({}, "max_tokens"),
    "vllm-logit-kd.yaml": ({}, "max_tokens"),
    "reasoning-cot.yaml": ({"reasoning": "field", "require_max_completion_tokens": True}, "max_completion_tokens"),
}


def test_every_example_is_a_valid_params_file() -> None:
    names = sorted(path.name for path in (REPO / "examples").glob("*.yaml"))
    assert names == ["hosted-api.yaml", "math.yaml", "reasoning-cot.yaml", "vllm-logit-kd.yaml"]
    for name in names:
        load(REPO / "examples" / name)  # raises naming the key when one is wrong


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_the_example_plan_passes_the_probe_against_a_stand_in_like_its_teacher(
        name: str, serve, monkeypatch: pytest.MonkeyPatch) -> None:
    behaviour, limit_field = ENDPOINTS[name]
    params = load(REPO / "examples" / name)
    monkeypatch.chdir(REPO)  # the examples name the repo's seed and template files
    monkeypatch.setenv(params.teacher.api_key_env, "sk-test")
    url = serve(**CALM, **behaviour)
    # the hub is offline here: no teacher tokenizer; the stand-in's tokens are characters, so the feature
    # tokenizer the probe maps them onto is the character-level demo student's
    teacher = params.teacher.model_copy(update={"base_url": url, "tokenizer": None})
    seeds = normalise(Path(params.ingest.train), read_records(Path(params.ingest.train), params.ingest.fields)[:5],
                      "train", params.ingest.fields)
    asked, requests = plan_answers(list(as_inputs(seeds).iter_rows(named=True)), prompt_of(params.generate),
                                   params.generate, teacher)
    assert len(asked) == len(requests) == 5  # one request per seed: n rides in the request
    token_id = FeatureTokenizer(str(REPO / "data/students/tiny-char")).id_of
    result = checked_by_probe(requests, teacher, url, teacher.api_key_env, EngineSettings(), {}, token_id)
    assert result is not None and result.inconclusive is None
    assert result.limit_field == limit_field
    if params.generate.top_logprobs:
        assert result.logprobs and result.top_logprobs == params.generate.top_logprobs
    if params.generate.n > 1:
        assert result.n is True
    if params.student.reasoning == "keep":
        assert result.reasoning == "field"


def test_an_example_workspace_is_a_committed_repo_with_the_example_as_its_params(tmp_path: Path) -> None:
    import subprocess

    from distill.workspace import make_workspace

    workspace = make_workspace(REPO / "examples/math.yaml", tmp_path / "math", REPO)
    written = load(workspace / "params.yaml")
    assert written == load(REPO / "examples/math.yaml")  # every default written out, nothing changed
    assert (workspace / "dvc.yaml").read_text() == (REPO / "dvc.yaml").read_text()
    assert not (workspace / "dvc.lock").exists()  # the default run's lock describes other params
    status = subprocess.run(["git", "status", "--porcelain"], cwd=workspace, capture_output=True, text=True)
    assert status.stdout == ""  # committed: DVC records the code it ran


def test_distill_example_refuses_a_bad_params_file_naming_the_key(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "examples/math.yaml").read_text().replace("n: 4 ", "n: -4 "))
    result = subprocess.run([sys.executable, "-m", "distill.cli", "example", str(bad), "--dir", str(tmp_path / "w")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().endswith(f"distill example: {bad}: generate.n: Input should be greater than 0 "
                                          "(got -4)")
    assert not (tmp_path / "w" / "params.yaml").exists()
