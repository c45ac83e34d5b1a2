"""Kill anywhere, lose nothing: train with each objective, evaluate and sweep, each killed by SIGKILL at random
moments, then run again. Right after a kill every output is absent or complete; the rerun's outputs (the model
folders byte for byte) equal an uninterrupted run's; the stand-in teacher billed no eval request twice.
DISTILL_KILL_SEEDS sets the kills per stage variant (StageKiller, tests/conftest.py); the data stages are
tests/test_kill_anywhere.py."""

from __future__ import annotations

from pathlib import Path

import pytest

# long: make test keeps under 20 minutes (training killed and resumed stays in it: tests/test_guards.py,
# tests/test_multiprocess_training.py); this module runs in benchmarks/reliability.py and pytest -m long
pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.long]
TEACHER_DIR = "data/students/tiny-teacher"  # config-only, wider than the student, same tokenizer
PROFILE = {
    "generate.elicit": ["feature", "feedback"],  # the teacher's log-probs (kd) and its preference pairs (dpo, rl)
    "generate.top_logprobs": 5,
    "generate.feedback.max_inputs": 16,
    "generate.max_failed_fraction": 0.5,
    "select.diversity.clusters": 1,  # no embedding model
    "train.objective": "kd",  # the base run: the KD student beside its plain-SFT baseline
    "train.max_steps": 6,
    "train.batch_size": 8,
    "train.checkpoint_every": 2,  # a kill after a checkpoint resumes from it
    "train.local_teacher": TEACHER_DIR,
    "train.on_policy.max_new_tokens": 4,
    "train.dpo.max_steps": 4,
    "train.rl.reward_steps": 4,
    "train.rl.max_steps": 2,
    "train.rl.num_generations": 2,
    "train.rl.max_new_tokens": 4,
}
CHAIN = ["ingest", "generate", "score", "dedupe", "select", "train", "evaluate", "sweep"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tiny_repo, tiny_llama, stage_killer) -> Path:
    """The tiny repo after one uninterrupted run of CHAIN; read only."""
    def white_box_teacher(repo: Path) -> None:
        tiny_llama(repo / TEACHER_DIR, hidden_size=256, layers=2, heads=4)

    repo = tiny_repo(tmp_path_factory.mktemp("kill-train") / "repo", PROFILE | stage_killer.teacher_params,
                     setup=white_box_teacher)
    stage_killer.chain(repo, CHAIN)
    return repo


@pytest.mark.parametrize("objective", ["kd", "sft", "on_policy", "similarity", "dpo", "rl"])
def test_train_killed_anywhere_loses_nothing(base: Path, objective: str, stage_killer, tmp_path: Path) -> None:
    updates = {"train.objective": objective} if objective != PROFILE["train.objective"] else None
    stage_killer.check(base, "train", tmp_path, updates)


@pytest.mark.parametrize("stage", ["evaluate", "sweep"])
def test_stage_killed_anywhere_loses_nothing(base: Path, stage: str, stage_killer, tmp_path: Path) -> None:
    stage_killer.check(base, stage, tmp_path)
