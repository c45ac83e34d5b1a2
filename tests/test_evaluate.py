"""Evaluate: exact-match scoring, the teacher gap closed, predictions, batched student answers, the report."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from demo import words
from distill import params as params_module
from distill import task
from distill.measure.eval_report import protocol_text
from distill.measure.metrics import pass_at
from distill.prompts import student_prompt
from distill.records import PREDICTION
from stages import evaluate


def test_exact_match() -> None:
    assert words.exact_match(" tac \n", "tac") == 1.0
    assert words.exact_match("tac", " tac") == 1.0
    assert words.exact_match("Tac", "tac") == 0.0
    assert words.exact_match("ta c", "tac") == 0.0
    assert words.exact_match(None, "tac") == 0.0
    assert words.exact_match("", "") == 1.0


def test_gap_closed() -> None:
    assert evaluate.gap_closed(0.0, 0.5, 1.0) == 0.5
    assert evaluate.gap_closed(0.2, 0.2, 0.6) == 0.0
    assert evaluate.gap_closed(0.5, 0.9, 0.5) is None
    assert evaluate.gap_closed(0.6, 0.9, 0.5) is None


def test_score_system_conforms_to_prediction() -> None:
    evals = pl.DataFrame({
        "id": ["a", "b", "c"], "instruction": ["reverse cat", "upper dog", "reverse owl"],
        "input": ["", "", ""], "reference": ["tac", "DOG", "lwo"],
    })
    frame = evaluate.score_system(evals, "teacher", [["tac "], ["dog"], [None]], task.load("demo.words"))
    assert frame.schema == pl.Schema(PREDICTION)
    assert frame["system"].to_list() == ["teacher"] * 3
    assert frame["id"].to_list() == ["a", "b", "c"]
    assert frame["prediction"].to_list() == ["tac ", "dog", None]
    assert frame["score"].to_list() == [1.0, 0.0, 0.0]


def test_a_task_names_the_metric_and_groups_and_the_generic_one_normalises() -> None:
    demo = task.load("demo.words")
    assert (demo.metric_name, demo.group("reverse cat"), demo.group("hello there")) == ("exact_match", "reverse",
                                                                                      "unknown")
    generic = task.load(None)
    assert (generic.name, generic.verify, generic.group("anything")) == ("generic", None, "all")
    # exact match after normalisation: Unicode NFKC, whitespace collapsed and trimmed; case still counts
    assert generic.metric(" The  answer\n is\u00a042 ", "The answer is 42") == 1.0
    assert generic.metric("the answer is 42", "The answer is 42") == 0.0 and generic.metric(None, "x") == 0.0
    frame = evaluate.score_system(pl.DataFrame({"id": ["a"], "instruction": ["Say it"], "input": [""],
                                                "reference": ["x  y"]}), "teacher", [["x y"]], generic)
    assert frame["score"].to_list() == [1.0]
    with pytest.raises(ValueError, match="task 'demo.nothing' cannot be loaded"):
        task.load("demo.nothing")


def test_student_answers_batched_and_deterministic(tiny_student: Path, student_template: str) -> None:
    prompts = [student_prompt(student_template, text) for text in ("reverse planet", "upper cat", "reverse stone")]
    student = params_module.StudentParams(model=str(tiny_student), prompt_template="unused", max_new_tokens=4,
                                          batch_size=2)
    first = evaluate.student_answers(str(tiny_student), prompts, student)
    second = evaluate.student_answers(str(tiny_student), prompts, student)
    assert len(first) == len(prompts)
    assert all(len(answers) == 1 and isinstance(answers[0], str) for answers in first)
    assert first == second


def test_several_samples_per_prompt_give_pass_at_k() -> None:
    evals = pl.DataFrame({"id": ["a", "b"], "instruction": ["reverse cat", "upper dog"], "input": ["", ""],
                          "reference": ["tac", "DOG"]})
    # a: 2 of 4 samples right, b: 0 of 4 -> pass@1 = (2/4 + 0) / 2 = 0.25; pass@4 = (1 + 0) / 2 = 0.5;
    # pass@2 for a = 1 - C(2,2)/C(4,2) = 1 - 1/6 = 0.8333, so (0.8333 + 0) / 2 = 0.4167
    frame = evaluate.score_system(evals, "student_after", [["tac", "cat", "tac", "act"], ["dog"] * 4],
                                  task.load("demo.words"))
    assert frame["sample"].to_list() == [0, 1, 2, 3] * 2
    assert (pass_at(frame, 1, 1.0), pass_at(frame, 2, 1.0), pass_at(frame, 4, 1.0)) == (
        {"student_after": 0.25}, {"student_after": 0.4167}, {"student_after": 0.5})


def test_the_protocol_is_reported_beside_the_scores() -> None:
    protocol = {"samples": 4, "temperature": 0.7, "max_new_tokens": 256, "seed": 3,
                "teacher": {"temperature": 0.0, "max_tokens": 2048, "seed": 0}}
    assert protocol_text(protocol) == ("Protocol: students 4 samples per prompt at temperature 0.7, seed 3, at most "
                                       "256 new tokens; the teacher greedy, seed 0, at most 2048 tokens.")
    with pytest.raises(ValueError, match="evaluate.samples > 1 needs evaluate.temperature > 0"):
        params_module.EvaluateParams(samples=2)


def test_report_renders_scores() -> None:
    metrics = {"rows": 3, "student_before": 0.125, "student_after": 0.5, "teacher": 0.875,
               "gap_closed": 0.5, "student_vs_teacher": 0.5714,
               "forgetting_probe": {"rows": 200, "general_eval": "data/general/eval.jsonl", "forgetting": 0.25,
                                    "loss": {"student_before": 2.0, "student_after": 2.25}}}
    by_group = pl.DataFrame({"group": ["reverse", "upper"], "student_before": [0.0, 0.25],
                          "student_after": [0.5, 0.5], "teacher": [1.0, 0.75]})
    examples = pl.DataFrame({"instruction": ["reverse cat"], "reference": ["tac"], "prediction": ["cat"]})
    text = evaluate.report(metrics, by_group, examples)
    assert "| system | score |" in text
    for name in ("student_before", "student_after", "teacher"):
        assert f"| {name} | {metrics[name]:.3f} |" in text
    assert "| reverse | 0.000 | 0.500 | 1.000 |" in text
    assert "| reverse cat | tac | cat |" in text
    assert "Teacher gap closed: 0.5" in text
    assert "Held-out KL" not in text
    assert ("Forgetting probe (200 general held-out rows, data/general/eval.jsonl), loss per answer token: "
            "student_before 2.0, student_after 2.25; after - before = 0.25 (> 0: the student forgot).") in text
    with_kd = metrics | {"baseline_sft": 0.25, "heldout_kl_to_teacher": {"student_after": 0.1, "baseline_sft": 0.4}}
    text = evaluate.report(with_kd, by_group, examples)
    assert "| baseline_sft | 0.250 |" in text
    assert "Held-out KL to the teacher, per answer token: student_after 0.1, baseline_sft 0.4." in text
