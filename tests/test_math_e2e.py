"""The math example end to end, at a small size: a reasoning teacher (the stand-in refusing max_tokens and returning
reasoning_content) answers word problems four times each, the numeric verifier keeps the right answers and records
each question's pass rate, the BPE chat student learns <think> reasoning and the answer, and is scored on the final
number, pass@1 over two samples, through `dvc repro` of examples/math.yaml (shorter training, 30 eval rows)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SMALL = {  # examples/math.yaml, smaller
    "train.max_steps": 800,
    "evaluate.samples": 2,
    "gates.ingest.min_rows": 300, "gates.ingest.min_eval_rows": 30,
    "gates.generate.min_rows": 300, "gates.score.min_rows": 300, "gates.dedupe.min_rows": 250,
    "gates.select.min_rows": 250, "gates.evaluate.min_rows": 30,
}


def math_params(repo: Path) -> None:
    """The math example as the copy's params.yaml (every default written out), with its 400 seeds and 30 eval rows
    (fewer seeds and the tiny student memorises them: 200 gave no right answer at all)."""
    from distill.params import load

    params = load(REPO / "examples/math.yaml").model_dump(mode="json")
    for dotted, value in SMALL.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    for split, rows in (("train", 400), ("eval", 30)):
        lines = (REPO / f"data/seeds/math/{split}.jsonl").read_text().splitlines()[:rows]
        (repo / f"data/seeds/math/{split}.jsonl").write_text("\n".join(lines) + "\n")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def math_run(tmp_path_factory: pytest.TempPathFactory, tiny_repo, run) -> Path:
    repo = tiny_repo(tmp_path_factory.mktemp("math-run") / "repo", setup=math_params)
    run(repo, "dvc", "repro")
    return repo


@pytest.mark.slow
def test_the_math_example_rejection_samples_a_reasoning_teacher_and_closes_part_of_the_gap(
        math_run: Path, metrics) -> None:
    generate, evaluation = metrics(math_run, "generate"), metrics(math_run, "eval")
    probe = generate["probes"]["reasoner"]
    assert (probe["limit_field"], probe["reasoning"], probe["n"]) == ("max_completion_tokens", "field", True)
    rejection = generate["rejection"]
    assert (rejection["keep"], rejection["questions"], rejection["answers"]) == ("verifier", 400, 1600)
    assert 0.6 < rejection["pass_rate_mean"] < 0.95 and rejection["passed"] == generate["rows"]
    rows = pl.read_parquet(math_run / "data/generate/rows.parquet")
    assert rows["reasoning"].null_count() == 0 and rows["pass_rate"].null_count() == 0
    assert rows["response"].str.starts_with("The answer is ").all()
    assert (evaluation["metric"], evaluation["protocol"]["samples"]) == ("numeric", 2)
    assert evaluation["teacher"] > 0.7
    assert evaluation["student_after"] > evaluation["student_before"] + 0.05
    assert evaluation["gap_closed"] > 0.05
    report = (math_run / "reports/eval.md").read_text()
    assert "| system | numeric |" in report and "gap closed" in report.lower()
