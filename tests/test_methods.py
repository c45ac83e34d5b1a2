"""Each elicitation method, run by the generate stage against the stand-in teacher over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from demo import words
from distill import params as params_module
from distill.elicit.novelty import jaccard, shingles
from distill.elicit.parsing import parse_judgement, parse_lines
from distill.entry import StageError
from distill.records import PREFERENCE
from distill.teacher.store import RequestStore

# --- parse steps ----------------------------------------------------------------------------------


def test_parse_lines_strips_numbering_bullets_and_preambles() -> None:
    text = "Sure! Here are some new tasks:\n1. reverse cat\n2) upper dog\n- reverse cat\n\n* upper owl"
    assert parse_lines(text) == ["reverse cat", "upper dog", "upper owl"]
    assert parse_lines("Here you go:\n\n") is None and parse_lines(None) is None


def test_parse_judgement_needs_a_json_grade_in_range() -> None:
    good = parse_judgement('Here: {"score": 7, "critique": "Close.", "correction": "tenalp"} thanks')
    assert (good.score, good.critique, good.correction) == (0.7, "Close.", "tenalp")
    for bad in ("Score: 7/10. Close.", '{"score": 11, "critique": "", "correction": "x"}',
                '{"score": "7", "critique": "", "correction": "x"}', '{"score": 7, "critique": "x"}', "{broken"):
        assert parse_judgement(bad) is None, bad


# --- expansion ------------------------------------------------------------------------------------


def test_expansion_writes_new_inputs_drops_near_duplicates_before_paying_and_answers_the_rest(
        tmp_path: Path, forty_seeds: Path, params_for, run_stage, outputs, with_standin, quiet) -> None:
    expansion = {"rounds": 2, "requests_per_round": 3, "tasks_per_request": 6}
    params = with_standin(params_for(["expansion"], expansion=expansion), **quiet)
    metrics = run_stage(params, tmp_path, forty_seeds)
    rows, rejects, _ = outputs(tmp_path)
    seeds = pl.read_parquet(forty_seeds)
    assert set(rows["method"]) == {"expansion"} and rows.height == metrics["elicit"]["expansion"]["inputs_accepted"]
    assert set(rows["input_origin"]) == {"expansion round 1", "expansion round 2"}
    assert all(words.is_correct(r["instruction"], r["response"]) for r in rows.iter_rows(named=True))
    near = rejects.filter(pl.col("reason") == "near_duplicate")
    assert near.height > 0 and "jaccard" in near["detail"][0]
    # No accepted input is a near duplicate of a seed or of another accepted input.
    texts = seeds["instruction"].to_list() + rows["instruction"].to_list()
    grams = [shingles(t) for t in texts]
    assert all(jaccard(grams[i], grams[j]) < 0.7 for i in range(len(texts)) for j in range(i + 1, len(texts))
               if i >= seeds.height or j >= seeds.height)
    # Only accepted inputs were answered: 6 writing requests + one answer per accepted input.
    assert metrics["requests_sent"] == 6 + rows.height
    with RequestStore(tmp_path / "store/generate.jsonl", read_only=True) as store:
        assert all(store.entry(key) is not None for key in rows["parent_key"])  # lineage: who wrote the input
    again = run_stage(params, tmp_path, forty_seeds)
    assert (again["requests_sent"], again["cache_hits"]) == (0, metrics["requests_sent"])


def test_expansion_drops_new_inputs_that_copy_the_eval_split(
    tmp_path: Path,
    forty_seeds: Path,
    params_for,
    run_stage,
    outputs,
    with_standin,
    quiet,
) -> None:
    """The stand-in near-copies its examples; with the eval split as the only examples' twin, none leak."""
    params = with_standin(params_for(["expansion"], expansion={"requests_per_round": 4}), **quiet)
    evals = pl.read_parquet(forty_seeds).with_columns(split=pl.lit("eval"))
    evals.write_parquet(forty_seeds.with_name("eval.parquet"))  # eval = seeds: every copy is a leak
    run_stage(params, tmp_path, forty_seeds)
    rows, _, _ = outputs(tmp_path)
    eval_grams = [shingles(t) for t in evals["instruction"]]
    assert not any(jaccard(shingles(t), g) >= 0.7 for t in rows["instruction"] for g in eval_grams)


# --- curation -------------------------------------------------------------------------------------


def test_curation_walks_the_topic_tree(
    tmp_path: Path,
    forty_seeds: Path,
    params_for,
    run_stage,
    outputs,
    with_standin,
    quiet,
) -> None:
    params = with_standin(params_for(["curation"], curation={"subtopics_per_topic": 2, "tasks_per_subtopic": 4}),
                          **quiet)
    metrics = run_stage(params, tmp_path, forty_seeds)
    rows, _, _ = outputs(tmp_path)
    assert metrics["elicit"]["curation"]["subtopics"] == 4  # 2 topics x 2 subtopics
    assert set(rows["method"]) == {"curation"} and rows.height > 8
    origins = set(rows["input_origin"])
    assert len(origins) == 4 and all(o.startswith("curation: ") and " / words starting with" in o for o in origins)
    for row in rows.iter_rows(named=True):
        expected_op = "reverse" if "reversing" in row["input_origin"] else "upper"
        assert words.op_of(row["instruction"]) == expected_op
        assert words.is_correct(row["instruction"], row["response"])


def test_curation_topics_file_errors_name_the_file(tmp_path: Path, forty_seeds: Path, params_for, run_stage) -> None:
    bad = tmp_path / "topics.yaml"
    bad.write_text("domain: words\ntopics: []\n")
    params = params_for(["curation"], curation={"topics_file": str(bad)})
    with pytest.raises(StageError, match=rf"{bad}: `topics` must be a non-empty list"):
        run_stage(params, tmp_path, forty_seeds)
    assert not (tmp_path / "gen/rows.parquet").exists()


# --- feedback -------------------------------------------------------------------------------------


def test_feedback_turns_graded_student_answers_into_preference_pairs(
    tmp_path: Path,
    forty_seeds: Path,
    params_for,
    run_stage,
    outputs,
    with_standin,
    quiet,
) -> None:
    params = with_standin(params_for(["feedback"], feedback={"max_inputs": 12, "focus_fraction": 0.5}), **quiet)
    metrics = run_stage(params, tmp_path, forty_seeds)
    rows, rejects, pairs = outputs(tmp_path)
    assert pairs.schema == pl.Schema(PREFERENCE)
    assert metrics["elicit"]["feedback"]["graded"] == 6 and pairs.height == 6  # the untrained student is wrong
    assert metrics["requests_sent"] == 6
    for pair in pairs.iter_rows(named=True):
        assert pair["chosen"] == words.solve(pair["instruction"]) != pair["rejected"]
        assert 0 <= pair["score_rejected"] < 1 == pair["score_chosen"] and pair["critique"]
        assert pair["student"] == "data/students/tiny-char" and pair["teacher"] == params.teacher.name
    assert set(rows["method"]) == {"feedback"} and rows["response"].to_list() == pairs["chosen"].to_list()
    assert rejects.is_empty()


def test_feedback_focus_picks_the_least_confident() -> None:
    from distill.elicit.feedback import focus

    seeds = pl.DataFrame({"id": ["a", "b", "c", "d"], "instruction": ["w", "x", "y", "z"]})
    picked = focus(seeds, [-0.1, -3.0, -0.5, -2.0], 0.5)
    assert picked["id"].to_list() == ["b", "d"]


# --- self-knowledge -------------------------------------------------------------------------------


def short_answers_only(instruction: str, answer: str) -> bool:
    """A checker for the test: the verifier is any module:function the user names."""
    return len(answer) <= 12


def test_self_knowledge_filters(
    tmp_path: Path,
    forty_seeds: Path,
    params_for,
    run_stage,
    outputs,
    with_standin,
    quiet,
) -> None:
    base = {"max_inputs": 6, "samples": 3}
    # verifier: a user's checker decides, answer by answer; no teacher is asked.
    params = params_for(["self_knowledge"], self_knowledge=base | {
        "filter": "verifier", "verifier": "tests.test_methods:short_answers_only", "temperature": 1.0})
    metrics = run_stage(params, tmp_path / "v", forty_seeds)
    rows, rejects, _ = outputs(tmp_path / "v")
    assert metrics["requests_sent"] == 0 and set(rows["teacher"]) <= {"student"}
    assert all(len(text) <= 12 for text in rows["response"]) and rows.height > 0
    assert set(rejects["reason"]) == {"filtered"} and rejects["detail"][0].startswith("verifier: ")
    assert set(rows["method"]) == {"self_knowledge"}

    # consistency: near-greedy samples agree, so each input keeps its one answer.
    params = params_for(["self_knowledge"], self_knowledge=base | {"filter": "consistency", "temperature": 0.01})
    run_stage(params, tmp_path / "c", forty_seeds)
    rows, _, _ = outputs(tmp_path / "c")
    assert rows.height == 6 and rows["seed_id"].n_unique() == 6

    # judge: the teacher grades each distinct answer; the untrained student's are all below 8.
    params = with_standin(params_for(["self_knowledge"], self_knowledge=base | {"filter": "judge", "min_score": 0}),
                          **quiet)
    graded = run_stage(params, tmp_path / "j", forty_seeds)
    rows, _, _ = outputs(tmp_path / "j")
    assert graded["requests_sent"] == rows.height > 0 and rows["judge_score"].is_not_null().all()
    strict = params_for(["self_knowledge"], self_knowledge=base | {"filter": "judge", "min_score": 8})
    strict = with_standin(strict, **quiet)
    again = run_stage(strict, tmp_path / "j", forty_seeds)
    rows, rejects, _ = outputs(tmp_path / "j")
    assert again["requests_sent"] == 0 and rows.is_empty()  # same grades, from the store
    assert set(rejects["reason"]) == {"filtered"} and "scored" in rejects["detail"][0]


def test_unknown_verifier_is_one_clear_error(tmp_path: Path, forty_seeds: Path, params_for, run_stage) -> None:
    params = params_for(["self_knowledge"], self_knowledge={"filter": "verifier", "verifier": "demo.words:nope",
                                                            "max_inputs": 2, "samples": 1})
    with pytest.raises(StageError, match=r"generate\.self_knowledge\.verifier='demo\.words:nope'"):
        run_stage(params, tmp_path, forty_seeds)


# --- several methods in one run -------------------------------------------------------------------


def test_several_methods_in_one_run_share_the_store_and_the_budget(
    tmp_path: Path,
    forty_seeds: Path,
    params_for,
    run_stage,
    outputs,
    with_standin,
    quiet,
) -> None:
    params = with_standin(params_for(["labelling", "expansion", "feedback"], expansion={"requests_per_round": 2},
                                     feedback={"max_inputs": 4}), **quiet)
    metrics = run_stage(params, tmp_path, forty_seeds)
    rows, _, pairs = outputs(tmp_path)
    assert set(rows["method"]) == {"labelling", "expansion", "feedback"}
    assert {m: metrics["elicit"][m]["rows"] for m in metrics["elicit"]} == dict(
        rows["method"].value_counts().iter_rows())
    assert pairs.height == 4 and metrics["preference_pairs"] == 4
    assert metrics["by_teacher"][params.teacher.name]["requests_sent"] == metrics["requests_sent"]
    capped = params.model_copy(update={"budget": params.budget.model_copy(update={"usd": 0.0})})
    again = run_stage(capped, tmp_path / "capped", forty_seeds)
    assert again["requests_sent"] == 0 and again["stopped_by_budget"]


def test_feature_and_top_logprobs_go_together() -> None:
    raw = json.loads(json.dumps(params_module.load().model_dump()))
    raw["generate"]["elicit"] = ["labelling", "feature"]
    raw["generate"]["top_logprobs"] = None
    with pytest.raises(params_module.ParamsError, match=r"generate: .*feature method and top_logprobs go together"):
        params_module.parse(raw)
    raw["generate"]["top_logprobs"] = 5
    assert params_module.parse(raw).generate.elicit == ["labelling", "feature"]
    raw["generate"]["elicit"] = ["labelling", "labelling"]
    with pytest.raises(params_module.ParamsError, match="lists a method twice"):
        params_module.parse(raw)
