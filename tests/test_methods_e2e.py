"""Every train.objective end to end, as a user switches between them: `dvc exp run -S train.objective=<m>` in a
temporary git+DVC copy with the tiny profile, the teacher's log-probs (feature) and its feedback pairs,
and a small local white-box teacher for on_policy and similarity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
TEACHER_DIR = "data/students/tiny-teacher"  # config-only, wider than the student, same tokenizer

PROFILE = {
    "generate.elicit": ["feature", "feedback"],
    "generate.top_logprobs": 5,
    "generate.feedback.max_inputs": 40,
    "sweep.enabled": False,
    "train.objective": "sft",
    "train.max_steps": 12,
    "train.checkpoint_every": 5,
    "train.local_teacher": TEACHER_DIR,
    "train.on_policy.max_new_tokens": 4,
    "train.dpo.max_steps": 4,
    "train.rl.reward_steps": 4,
    "train.rl.max_steps": 2,
    "train.rl.num_generations": 2,
    "train.rl.max_new_tokens": 4,
    "train.replay.ratio": 0.1,
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, tiny_repo, run, tiny_llama) -> Path:
    def white_box_teacher(repo: Path) -> None:
        tiny_llama(repo / TEACHER_DIR, hidden_size=256, layers=2, heads=4)

    repo = tiny_repo(tmp_path_factory.mktemp("methods"), PROFILE, setup=white_box_teacher)
    run(repo, "dvc", "repro")
    return repo


def read(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


def test_default_sft_run_has_the_forgetting_probe_and_the_replayed_rows(repo: Path) -> None:
    trained, evaluation = read(repo, "train"), read(repo, "eval")
    assert trained["objective"] == "sft" and trained["replayed_general_rows"] > 0
    probe = evaluation["forgetting_probe"]
    assert probe["rows"] == 200 and set(probe["loss"]) == {"student_before", "student_after"}
    assert probe["forgetting"] == pytest.approx(probe["loss"]["student_after"] - probe["loss"]["student_before"],
                                                abs=1e-4)
    assert (repo / "data/train/baseline/NO_BASELINE.txt").is_file()


@pytest.mark.parametrize("method", ["kd", "on_policy", "similarity", "dpo", "rl"])
def test_dvc_exp_run_switches_the_method(repo: Path, method: str, run, stages_run) -> None:
    result = run(repo, "dvc", "exp", "run", "-S", f"train.objective={method}")
    ran = stages_run(result.stdout)
    assert "train" in ran and "evaluate" in ran and "generate" not in ran  # no teacher call is paid twice
    trained, evaluation = read(repo, "train"), read(repo, "eval")
    assert trained["objective"] == method == evaluation["objective"]
    assert trained["final_loss"] is not None
    assert {"student_after", "baseline_sft"} <= set(evaluation["forgetting_probe"]["loss"])
    assert "baseline_sft" in evaluation  # the plain-SFT baseline, same rows and steps, scored beside it
    assert (repo / "data/train/model/model.safetensors").is_file()
    assert (repo / "data/train/baseline/model.safetensors").is_file()
    if method == "kd":
        assert trained["kd_rows_with_teacher"] > 0
        assert set(evaluation["heldout_kl_to_teacher"]) == {"student_after", "baseline_sft"}
    if method in ("on_policy", "dpo", "rl"):
        assert trained["started_from"] == "data/train/baseline"
    if method in ("dpo", "rl"):
        assert trained["preference_pairs"] > 0
    if method == "rl":
        assert 0.0 <= trained["reward_accuracy"] <= 1.0
    if method in ("on_policy", "similarity"):
        assert trained["local_teacher"] == TEACHER_DIR
