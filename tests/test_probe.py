"""Real teachers through the generate stage and the stand-in over HTTP: the probe before paying, reasoning models
(max_completion_tokens, reasoning kept in its own column), n answers by n seeded requests where n is ignored,
rejection sampling's pass rates, and estimates counted with the teacher's tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from distill import params as params_module
from distill.entry import StageError
from distill.teacher.tokens import counter

REPO = Path(__file__).resolve().parents[1]
TINY_CHAT = REPO / "data/students/tiny-chat"
CALM = {"error_rate": 0.0, "rate_limit_rate": 0.0, "malformed_rate": 0.0, "refusal_rate": 0.0, "wrong_rate": 0.0,
        "hard_wrong_rate": 0.0}


def stored_requests(tmp_path: Path) -> list[dict]:
    path = tmp_path / "store/generate.jsonl"
    return [json.loads(line)["request"] for line in path.read_text().splitlines()] if path.exists() else []


def with_teacher(params, **updates):
    return params.model_copy(update={"teacher": params.teacher.model_copy(update=updates)})


def plain(load_params, with_standin, **standin):
    """Labelling of the demo's words, no log-probs, a calm stand-in with ``standin`` settings; room for reasoning
    (a reasoning model's thinking counts against the limit: the stand-in bills a token per character)."""
    return with_standin(load_params(elicit=["labelling"], top_logprobs=None, max_tokens=200), **(CALM | standin))


def test_a_reasoning_teacher_gets_max_completion_tokens_and_its_reasoning_is_kept(
        tmp_path, forty_seeds, load_params, with_standin, run_stage) -> None:
    params = plain(load_params, with_standin, require_max_completion_tokens=True, reasoning="field")
    metrics = run_stage(params, tmp_path, forty_seeds)
    probe = metrics["probes"]["standin"]
    assert probe["limit_field"] == "max_completion_tokens" and probe["reasoning"] == "field"
    assert "max_tokens refused: " in probe["evidence"]["limit_field"]
    assert probe["requests_sent"] == 2 and metrics["requests_sent"] == 40
    sent = stored_requests(tmp_path)
    assert len(sent) == 40 and all("max_completion_tokens" in r and "max_tokens" not in r for r in sent)
    rows = pl.read_parquet(tmp_path / "gen/rows.parquet")
    assert rows.height == 40 and rows["reasoning"].null_count() == 0
    planet = rows.filter(pl.col("instruction") == "reverse planet").row(0, named=True)
    assert planet["response"] == "tenalp" and "planet" in planet["reasoning"]


def test_an_inline_think_block_is_split_from_the_answer(
        tmp_path, forty_seeds, load_params, with_standin, run_stage) -> None:
    metrics = run_stage(plain(load_params, with_standin, reasoning="inline"), tmp_path, forty_seeds)
    assert metrics["probes"]["standin"]["reasoning"] == "inline"
    assert metrics["probes"]["standin"]["limit_field"] == "max_tokens"
    rows = pl.read_parquet(tmp_path / "gen/rows.parquet")
    assert not rows["response"].str.contains("<think>|</think>").any() and rows["reasoning"].null_count() == 0


def test_a_limit_field_the_endpoint_refuses_stops_the_plan_before_paying(
        tmp_path, forty_seeds, load_params, with_standin, run_stage) -> None:
    params = with_teacher(plain(load_params, with_standin, require_max_completion_tokens=True),
                          completion_limit="max_tokens")
    with pytest.raises(StageError, match=r"standin: the probe \(.*max_tokens=16.*\) was refused: .*Unsupported "
                                         r"parameter: 'max_tokens'.*set teacher\.completion_limit: "
                                         r"max_completion_tokens .*nothing of the plan was sent"):
        run_stage(params, tmp_path, forty_seeds)
    assert stored_requests(tmp_path) == []


def test_reasoning_effort_is_sent_to_a_reasoning_model_and_refused_by_another(
        tmp_path, forty_seeds, load_params, with_standin, run_stage) -> None:
    params = with_teacher(plain(load_params, with_standin, reasoning="field"), reasoning_effort="low")
    run_stage(params, tmp_path / "a", forty_seeds)
    assert {request["reasoning_effort"] for request in stored_requests(tmp_path / "a")} == {"low"}
    refused = with_teacher(plain(load_params, with_standin), reasoning_effort="low")
    with pytest.raises(StageError, match=r"was refused: .*'reasoning_effort' is not supported with this model"):
        run_stage(refused, tmp_path / "b", forty_seeds)
    assert stored_requests(tmp_path / "b") == []


def a_to_z_tokenizer(folder: Path) -> Path:
    """A word-level tokenizer of lowercase letters only: a student vocabulary the teacher's tokens miss."""
    from tokenizers import Tokenizer, models

    vocab = {"<unk>": 0} | {chr(c): i + 1 for i, c in enumerate(range(ord("a"), ord("z") + 1))}
    folder.mkdir(parents=True)
    Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>")).save(str(folder / "tokenizer.json"))
    return folder


def test_a_tokenizer_mismatch_is_found_by_the_probe_before_paying(
        tmp_path, forty_seeds, feature_params, run_stage) -> None:
    params = feature_params(5)
    tokenizer = a_to_z_tokenizer(tmp_path / "letters")
    params = params.model_copy(update={"generate": params.generate.model_copy(
        update={"feature_tokenizer": str(tokenizer)})})
    with pytest.raises(StageError, match=r"standin: the teacher's tokens do not map onto the feature tokenizer "
                                         r".* of the probe's \d+ tokens, 'I'.* have no id there"):
        run_stage(params, tmp_path, forty_seeds)
    assert stored_requests(tmp_path) == []


def test_an_endpoint_that_ignores_n_is_refused_unless_n_requests_are_declared(
        tmp_path, forty_seeds, load_params, with_standin, run_stage, serve, monkeypatch) -> None:
    params = plain(load_params, with_standin, ignore_n=True).model_copy()
    params = params.model_copy(update={"generate": params.generate.model_copy(update={"n": 3, "temperature": 1.0})})
    with pytest.raises(StageError, match=r"the probe found the endpoint ignores n \(asked n=2; got 1 choice\(s\)\): "
                                         r"set teacher.capabilities.n: false"):
        run_stage(params, tmp_path / "a", forty_seeds)
    assert stored_requests(tmp_path / "a") == []
    # a real endpoint that declares it: n requests of one answer, with the seeds 0, 1, 2
    monkeypatch.setenv("DISTILL_TEST_KEY", "sk-test")
    endpoint = with_teacher(params, provider="openai", base_url=serve(**CALM, ignore_n=True),
                            api_key_env="DISTILL_TEST_KEY", settings={},
                            capabilities=params_module.CapabilityParams(n=False))
    metrics = run_stage(endpoint, tmp_path / "b", forty_seeds)
    assert metrics["requests_sent"] == 120 and metrics["rows"] == 120
    sent = stored_requests(tmp_path / "b")
    assert {(r["n"], r["seed"]) for r in sent} == {(1, 0), (1, 1), (1, 2)}
    rows = pl.read_parquet(tmp_path / "b/gen/rows.parquet")
    assert rows.group_by("seed_id").len()["len"].to_list() == [3] * 40


@pytest.mark.parametrize("keep", ["verifier", "majority", "judge"])
def test_rejection_sampling_keeps_passing_answers_and_records_pass_rates(
        keep, tmp_path, forty_seeds, load_params, with_standin, run_stage) -> None:
    params = plain(load_params, with_standin, wrong_rate=0.3)
    gen = params.generate.model_copy(update={"n": 6, "temperature": 1.0, "rejection": params_module.RejectionParams(
        keep=keep, min_agreement=0.5)})
    metrics = run_stage(params.model_copy(update={"generate": gen}), tmp_path, forty_seeds)
    rows = pl.read_parquet(tmp_path / "gen/rows.parquet")
    rejects = pl.read_parquet(tmp_path / "gen/rejects.parquet")
    dropped = rejects.filter(pl.col("reason") == "rejected_sample")
    summary = metrics["rejection"]
    assert summary["keep"] == keep and summary["questions"] == 40 and summary["answers"] == 240
    assert summary["passed"] == rows.height and rows.height + dropped.height == 240
    assert 0.4 < summary["pass_rate_mean"] < 0.9 and dropped.height > 10  # 30% wrong answers (and grades)
    assert sum(summary["pass_rate_histogram"].values()) == 40
    words = __import__("demo.words", fromlist=["solve"])
    if keep == "verifier":  # every kept answer is right
        assert all(words.solve(i) == r for i, r in rows.select("instruction", "response").iter_rows())
    if keep == "judge":  # graded 8/10 or better by the primary teacher, through the store
        assert rows["judge_score"].min() >= 0.8 and metrics["by_teacher"]["standin"]["requests_sent"] > 40
    assert rows["pass_rate"].is_between(0, 1).all() and rows["pass_rate"].null_count() == 0
    assert metrics["failed_fraction"] == 0.0  # rejected samples are a choice, not a teacher failure


def test_the_score_stage_turns_pass_rates_into_difficulty_that_select_thresholds(generated, deduped_rows) -> None:
    from distill.curate.checks import score
    from distill.curate.selection import select

    rows = generated(("a", "reverse cat", "tac"), ("b", "reverse dog", "god")).with_columns(
        pass_rate=pl.Series([0.25, None], dtype=pl.Float64))
    assert score(rows, params_module.ScoreParams())["difficulty"].to_list() == [0.75, None]
    rows = deduped_rows(4, {"difficulty": [0.0, 0.25, 0.75, None]})
    params = params_module.SelectParams(min={"difficulty": 0.5}, order_by=[], max_fraction=None,
                                        diversity=params_module.DiversityParams(clusters=1))
    selected = select(rows, params)
    assert selected.filter(pl.col("keep"))["difficulty"].to_list() == [0.75]
    assert set(selected.filter(~pl.col("keep"))["drop_reason"]) == {"below_min_difficulty"}


def test_with_the_teachers_tokenizer_the_estimate_counts_exactly(
        tmp_path, forty_seeds, load_params, with_standin, run_stage, capsys) -> None:
    params = with_teacher(plain(load_params, with_standin, tokenizer=str(TINY_CHAT)), tokenizer=str(TINY_CHAT))
    metrics = run_stage(params, tmp_path, forty_seeds)
    probe = metrics["probes"]["standin"]
    assert probe["estimated_prompt_tokens"] == probe["prompt_tokens"]  # exact on the probe
    assert probe["estimate_source"] == f"prompt tokens counted with teacher.tokenizer={TINY_CHAT}"
    count = counter(str(TINY_CHAT))
    assert metrics["prompt_tokens_sent"] == sum(count.prompt_tokens(r["messages"]) for r in stored_requests(tmp_path))
    assert f"(prompt tokens counted with teacher.tokenizer={TINY_CHAT})" in capsys.readouterr().out


def test_without_a_tokenizer_the_estimate_says_it_is_approximate_and_by_how_much(
        tmp_path, forty_seeds, load_params, with_standin, run_stage, capsys) -> None:
    metrics = run_stage(plain(load_params, with_standin), tmp_path, forty_seeds)
    probe = metrics["probes"]["standin"]
    out = capsys.readouterr().out
    assert "(prompt tokens approximate: characters / 1; on the probe the endpoint counted " in out
    assert f"counted {probe['prompt_tokens']} where this counts {probe['estimated_prompt_tokens']}" in out
    assert probe["seed"] is True and probe["evidence"]["seed"].endswith("equal answers")
