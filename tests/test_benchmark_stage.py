"""The benchmark stage (stages/benchmark.py): the student before and after training and the teacher scored by
lm-evaluation-harness on the local words task (data/benchmarks/words.yaml), 20 items, under one protocol; the teacher
asked over real HTTP (the stand-in on loopback, lm-eval's local-chat-completions model) and a rerun answered from
lm-eval's cache; off, it says so without importing lm_eval; a bad task names its params key."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest

from distill.entry import StageError
from distill.params import BenchmarkSet
from distill.records import SYSTEMS
from stages import benchmark

REPO = Path(__file__).resolve().parents[1]
TASK = "data/benchmarks/words.yaml"
LIMIT = 20


def with_benchmarks(params, **updates):
    return params.model_copy(update={"benchmarks": params.benchmarks.model_copy(update=updates)})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, logged_standin) -> dict:
    """The stage run twice on the words task (20 items) with a saved student checkpoint, from the repo root (the
    task's paths are relative to it); the teacher's cache and the stand-in's request log in a temporary folder."""
    from distill import params as params_module
    from distill.student import load_model, load_tokenizer

    folder = tmp_path_factory.mktemp("benchmark")
    log = folder / "requests.jsonl"
    # A checkpoint folder in data/train/model's place (which a fresh clone lacks until `dvc repro` or `dvc pull`):
    # the demo student as its seed initialises it, saved; its scores are what the harness finds, nothing assumed.
    trained = folder / "model"
    student = params_module.load(REPO / "params.yaml").student
    load_model(str(REPO / student.model), student.seed).save_pretrained(trained)
    load_tokenizer(str(REPO / student.model)).save_pretrained(trained)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        params = params_module.load(REPO / "params.yaml")
        params = with_benchmarks(params, lm_eval=True, limit=LIMIT, num_fewshot=0,
                                 sets=[BenchmarkSet(name="words-bench", path="data/benchmarks/words.jsonl", task=TASK)])
        first, samples = benchmark.run(params, trained, folder / "store", logged_standin(log))
        lines = log.read_text().splitlines()
        second, again = benchmark.run(params, trained, folder / "store", logged_standin(log))
    return {"first": first, "samples": samples, "second": second, "again": again, "log": log, "lines": lines}


def test_students_and_teacher_are_scored_by_one_harness_under_one_protocol(runs: dict) -> None:
    row = runs["first"]["benchmarks"]["words-bench"]
    assert row["task"] == TASK and row["lm_eval_task"] == "words_bench" and row["metric"] == "exact_match,strip"
    assert row["n"] == LIMIT
    protocol = row["protocol"]
    assert protocol["limit"] == LIMIT and protocol["num_fewshot"] == {"words_bench": 0}
    assert protocol["generation_kwargs"]["words_bench"] == {"until": ["\n"], "do_sample": False, "temperature": 0.0,
                                                           "max_gen_toks": 16}
    assert protocol["lm_eval"] == runs["first"]["lm_eval_version"]
    assert all(row["runs"][system]["protocol"] == protocol for system in SYSTEMS)
    assert [row["runs"][system]["model"] for system in SYSTEMS] == ["hf", "hf", "local-chat-completions"]
    # every system got the same prompt for the same item: the student's template around the question
    items = [json.loads(line) for line in (REPO / "data/benchmarks/words.jsonl").read_text().splitlines()][:LIMIT]
    samples = runs["samples"]
    for system in SYSTEMS:
        mine = samples.filter(samples["system"] == system).sort("doc_id")
        assert mine["doc_id"].to_list() == list(range(LIMIT))
        assert mine["prompt"].to_list() == [f"{item['question']}\n=" for item in items]
        right = sum(answer.strip() == item["answer"] for answer, item in zip(mine["response"], items, strict=True))
        assert row[system] == round(right / LIMIT, 4), system  # an exact-match count of our own
    assert row["teacher"] > row["student_before"]  # the stand-in knows the task; an untrained student does not
    expected = (row["student_after"] - row["student_before"]) / (row["teacher"] - row["student_before"])
    assert row["gap_closed"] == round(expected, 4)


def test_the_teacher_is_asked_over_http_and_a_rerun_sends_nothing(runs: dict, billed) -> None:
    first, second = runs["first"]["benchmarks"]["words-bench"], runs["second"]["benchmarks"]["words-bench"]
    # what each run sent is the run log's (logs/benchmark.json), not the metrics': a rerun must not change those
    ran = {name: (runs[name]["run"]["teacher_requests_sent"], runs[name]["run"]["teacher_cache_hits"])
           for name in ("first", "second")}
    assert ran == {"first": ({"words-bench": LIMIT}, {"words-bench": 0}),
                   "second": ({"words-bench": 0}, {"words-bench": LIMIT})}
    assert len(billed(runs["log"])) == LIMIT  # 20 distinct chat completions answered over HTTP (faults retried)
    assert runs["log"].read_text().splitlines() == runs["lines"]  # the stand-in received nothing the second time
    assert second == first
    assert runs["again"].equals(runs["samples"])


def test_the_report_has_every_system_and_the_gap_closed(runs: dict) -> None:
    from distill.measure.standard_benchmarks import report

    row = runs["first"]["benchmarks"]["words-bench"]
    text = report(runs["first"])
    assert (f"| words-bench | {TASK} | exact_match,strip | {LIMIT} | {row['student_before']:.3f} | "
            f"{row['student_after']:.3f} | {row['teacher']:.3f} | {row['gap_closed']:.3f} |") in text


def test_the_key_is_hidden_in_lm_evals_logs() -> None:
    from distill.measure.standard_benchmarks import Redact

    seen = io.StringIO()
    logger = logging.getLogger("test.benchmark.redact")
    logger.addFilter(Redact("sk-secret-123"))
    logger.addHandler(logging.StreamHandler(seen))
    logger.error("request failed: headers %s", {"Authorization": "Bearer sk-secret-123"})
    assert "sk-secret-123" not in seen.getvalue() and "'Bearer ***'" in seen.getvalue()


def test_off_says_so_without_importing_lm_eval(base_params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distill.measure.standard_benchmarks import report

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # any import of it now fails
    metrics, samples = benchmark.run(with_benchmarks(base_params, lm_eval=False), tmp_path / "no-model",
                                     tmp_path / "store")
    assert metrics["lm_eval"] is False and metrics["benchmarks"] == {} and metrics["lm_eval_version"] is None
    assert samples.is_empty() and not (tmp_path / "store").exists()
    assert "Off (`benchmarks.lm_eval: false`)" in report(metrics)


@pytest.mark.parametrize("task", ["data/benchmarks/no-such-task.yaml", "no_such_lm_eval_task"])
def test_a_bad_task_is_one_error_naming_its_key(base_params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                task: str) -> None:
    monkeypatch.chdir(REPO)
    sets = [BenchmarkSet(name="plain", path="data/benchmarks/words.jsonl"),  # decontamination only
            BenchmarkSet(name="broken", path="data/benchmarks/words.jsonl", task=task)]

    def never(teacher):
        raise AssertionError("the teacher must not be started for a bad task")

    with pytest.raises(StageError, match=rf"^benchmarks\.sets\[1\]\.task='{task}' \(broken\): "):
        benchmark.run(with_benchmarks(base_params, lm_eval=True, sets=sets), tmp_path / "no-model",
                      tmp_path / "store", never)
