"""Generate: planning requests, building rows and rejects, and the stage run against the stand-in."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from distill import params as params_module
from distill.elicit import answering
from distill.entry import StageError
from distill.io import content_hash
from distill.records import GENERATED, REJECT
from distill.teacher.endpoint import TeacherConfigError, teacher_identity
from distill.teacher.store import RequestStore, request_key

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "templates"
# --- plan ----------------------------------------------------------------------------------------


def test_plan_one_request_per_seed_with_stable_keys(load_params, seeds, prompt) -> None:
    params = load_params()
    params = params.model_copy(update={"generate": params.generate.model_copy(update={"top_logprobs": None})})
    frame = seeds(["reverse planet", "upper cat", "reverse river"])
    requests = answering.plan(frame, prompt(params), params.generate, params.teacher)
    assert len(requests) == 3
    assert [r.key for r in requests] == [r.key for r in answering.plan(frame, prompt(params), params.generate,
                                                                      params.teacher)]
    assert len({r.key for r in requests}) == 3
    first = requests[0]
    assert first.model == "standin-skill-1"
    assert first.sampling == {"temperature": 0.0, "max_tokens": 16, "n": 1, "seed": 0}
    assert first.messages[0]["role"] == "system"
    assert first.messages[1] == {"role": "user", "content": prompt(params).messages("reverse planet")[1]["content"]}
    assert first.messages[1]["content"].endswith("\n\nreverse planet")
    assert first.key == request_key(teacher_identity(params.teacher), "standin-skill-1", first.messages,
                                    first.sampling)


def keys(params: params_module.Params, frame: pl.DataFrame, prompt) -> list[str]:
    return [r.key for r in answering.plan(frame, prompt(params), params.generate, params.teacher)]


def test_keys_change_with_template_model_sampling_and_standin(
    tmp_path: Path,
    load_params,
    with_standin,
    seeds,
    prompt,
) -> None:
    params = load_params()
    frame = seeds(["reverse planet", "upper cat"])
    base = keys(params, frame, prompt)
    template = tmp_path / "labelling.txt"
    template.write_text((TEMPLATES / "labelling.txt").read_text() + "Be brief.\n")
    variants = {
        "template": load_params(template=str(template)),
        "model": params.model_copy(update={"teacher": params.teacher.model_copy(update={"model": "other-1"})}),
        "temperature": load_params(temperature=0.7),
        "max_tokens": load_params(max_tokens=32),
        "seed": load_params(seed=1),
        "standin": with_standin(params, wrong_rate=0.5),
    }
    for name, variant in variants.items():
        changed = keys(variant, frame, prompt)
        assert not set(changed) & set(base), name
    # shards and the failure threshold are not part of what is asked
    assert keys(load_params(shards=1, max_failed_fraction=0.5), frame, prompt) == base


# --- build_rows ----------------------------------------------------------------------------------


def test_build_rows_provenance_and_rejects(tmp_path: Path, load_params, seeds, prompt, completion) -> None:
    params = load_params(n=2)
    frame = seeds(["reverse planet", "upper cat", "reverse river", "reverse stone"])
    requests = answering.plan(frame, prompt(params), params.generate, params.teacher)
    with RequestStore(tmp_path / "s.jsonl") as store:
        store.put(requests[0].key, requests[0].payload(), completion("chatcmpl-a", " tenalp\n", "tenlap"))
        store.put(requests[1].key, requests[1].payload(), completion("chatcmpl-b", "CAT", "   ", finish="length"))
        # requests[2] never answered, with an error; requests[3] never answered, no error recorded
        errors = {requests[2].key: "InternalServerError after 2 attempts: boom"}
        rows, rejects = answering.frames(*answering.build_rows(
            "labelling", list(answering.as_inputs(frame).iter_rows(named=True)), requests, store, "standin",
            "tpl-hash", errors, {}))
        stored_at = store.entry(requests[0].key)["stored_at"]
    assert rows.schema == pl.Schema(GENERATED)
    assert rejects.schema == pl.Schema(REJECT)
    assert rows.select("seed_id", "choice_index", "response", "finish_reason", "response_id").rows() == [
        (frame["id"][0], 0, "tenalp", "stop", "chatcmpl-a"),
        (frame["id"][0], 1, "tenlap", "stop", "chatcmpl-a"),
        (frame["id"][1], 0, "CAT", "length", "chatcmpl-b"),
    ]
    first = rows.row(0, named=True)
    assert first == {
        "id": content_hash({"request": requests[0].key, "choice": 0}),
        "seed_id": frame["id"][0],
        "source_file": "seeds/train.jsonl",
        "source_line": 1,
        "method": "labelling",
        "teacher": "standin",
        "model_requested": "standin-skill-1",
        "model_answered": "standin-skill-1-2026-11-01",
        "template_hash": "tpl-hash",
        "sampling_hash": content_hash(requests[0].sampling),
        "request_key": requests[0].key,
        "response_id": "chatcmpl-a",
        "choice_index": 0,
        "created_at": stored_at,
        "prompt_tokens": 100,
        "completion_tokens": 6,
        "finish_reason": "stop",
        "instruction": "reverse planet",
        "input": "",
        "context": "",
        "reference": None,
        "response": "tenalp",
        "reasoning": None,
        "input_origin": "seed",
        "parent_key": None,
        "judge_score": None,
        "pass_rate": None,
    }
    assert rows["id"].n_unique() == 3
    assert rejects.rows() == [
        ("labelling", frame["id"][1], requests[1].key, "seeds/train.jsonl", 2, "empty_answer", "choice 1"),
        ("labelling", frame["id"][2], requests[2].key, "seeds/train.jsonl", 3, "teacher_error",
         "InternalServerError after 2 attempts: boom"),
        ("labelling", frame["id"][3], requests[3].key, "seeds/train.jsonl", 4, "teacher_error", "not answered"),
    ]


# --- the stage against the stand-in --------------------------------------------------------------


def test_run_then_rerun_is_all_cache_hits(
    tmp_path: Path,
    forty_seeds: Path,
    monkeypatch: pytest.MonkeyPatch,
    load_params,
    with_standin,
    prompt,
    run_stage,
) -> None:
    params = with_standin(load_params(), error_rate=0.0, rate_limit_rate=0.0)
    first = run_stage(params, tmp_path, forty_seeds)
    assert (first["requests_planned"], first["requests_sent"], first["cache_hits"]) == (40, 40, 0)
    assert first["attempts"] == 40
    assert first["rows"] + first["rejects"] == 40
    assert first["template_hash"] == prompt(params).hash
    rows = pl.read_parquet(tmp_path / "gen/rows.parquet")
    assert rows.height == first["rows"]
    assert set(rows["model_answered"]) == {"standin-skill-1-2026-11-01"}
    assert set(rows["sampling_hash"]) == {content_hash(answering.sampling_of(params.generate))}
    assert dict(rows.select("instruction", "response").rows())["reverse planet"] == "tenalp"
    assert len((tmp_path / "store/generate.jsonl").read_text().splitlines()) == 40

    second = run_stage(params, tmp_path, forty_seeds)
    assert (second["requests_sent"], second["cache_hits"], second["attempts"]) == (0, 40, 0)
    assert pl.read_parquet(tmp_path / "gen/rows.parquet").equals(rows)
    assert len((tmp_path / "store/generate.jsonl").read_text().splitlines()) == 40


def test_teacher_down_fails_the_stage_and_writes_no_rows(
    tmp_path: Path,
    forty_seeds: Path,
    monkeypatch: pytest.MonkeyPatch,
    load_params,
    with_standin,
    run_stage,
) -> None:
    monkeypatch.setenv("DISTILL_TEACHER_MAX_ATTEMPTS", "2")
    store_path = tmp_path / "store/generate.jsonl"
    with pytest.raises(StageError, match=r"40 of 40 inputs got no usable answer .*generate\.max_failed_fraction=0\.05"):
        run_stage(with_standin(load_params(), error_rate=1.0), tmp_path, forty_seeds)
    assert not (tmp_path / "gen/rows.parquet").exists()
    assert not (tmp_path / "gen/rejects.parquet").exists()
    assert store_path.read_text() == ""


def test_partial_failure_keeps_answers_and_rerun_pays_only_for_the_rest(
    tmp_path: Path,
    forty_seeds: Path,
    monkeypatch: pytest.MonkeyPatch,
    load_params,
    with_standin,
    run_stage,
) -> None:
    monkeypatch.setenv("DISTILL_TEACHER_MAX_ATTEMPTS", "2")
    # 429s carry retry-after-ms: 50, so the retries here wait 50 ms each
    params = with_standin(load_params(), error_rate=0.0, rate_limit_rate=0.5)
    store_path = tmp_path / "store/generate.jsonl"
    with pytest.raises(StageError, match=r"max_failed_fraction") as caught:
        run_stage(params, tmp_path, forty_seeds)
    assert str(store_path) in str(caught.value)
    assert "reasons by class: {'teacher_error': " in str(caught.value)
    assert not (tmp_path / "gen/rows.parquet").exists()
    with RequestStore(store_path) as store:
        answered = len(store)
    assert 0 < answered < 40
    monkeypatch.setenv("DISTILL_TEACHER_MAX_ATTEMPTS", "12")
    rerun = run_stage(params, tmp_path, forty_seeds)
    assert (rerun["requests_sent"], rerun["cache_hits"]) == (40 - answered, answered)
    assert rerun["failures_by_class"] == {}
    assert (tmp_path / "gen/rows.parquet").exists()


def test_configured_endpoint_without_key_names_the_variable(
    tmp_path: Path,
    forty_seeds: Path,
    monkeypatch: pytest.MonkeyPatch,
    load_params,
    run_stage,
) -> None:
    monkeypatch.delenv("DISTILL_TEST_UNSET_KEY", raising=False)
    params = load_params()
    teacher = params.teacher.model_copy(update={"provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                "api_key_env": "DISTILL_TEST_UNSET_KEY"})
    expected = r"teacher\.api_key_env names \$DISTILL_TEST_UNSET_KEY, which is not set"
    with pytest.raises(TeacherConfigError, match=expected):
        run_stage(params.model_copy(update={"teacher": teacher}), tmp_path, forty_seeds)
    assert not (tmp_path / "gen/rows.parquet").exists()


def test_two_seeds_differing_only_in_input_are_two_requests_and_two_rows(
    tmp_path: Path, load_params, with_standin, run_stage
) -> None:
    """The demo's labelling template has no {input}: the input still reaches the teacher (after a blank line), so
    "Translate to French" + cat and + dog are two requests, two answers, two rows."""
    from distill.io import write_parquet
    from distill.seeds import normalise, read_records

    source = tmp_path / "seeds.jsonl"
    source.write_text('{"instruction": "Write the word in the input in capital letters.", "input": "cat"}\n'
                      '{"instruction": "Write the word in the input in capital letters.", "input": "dog"}\n')
    path = tmp_path / "ingest/train.parquet"
    write_parquet(normalise(source, read_records(source), "train"), path)
    params = with_standin(load_params(max_tokens=64), error_rate=0.0, rate_limit_rate=0.0, refusal_rate=0.0,
                          malformed_rate=0.0,
                          wrong_rate=0.0)
    metrics = run_stage(params, tmp_path, path)
    rows = pl.read_parquet(tmp_path / "gen/rows.parquet").sort("input")
    assert metrics["requests_sent"] == 2 and rows["request_key"].n_unique() == 2
    assert rows.select("input", "response").rows() == [("cat", "cat in capitals is CAT."),
                                                      ("dog", "dog in capitals is DOG.")]
