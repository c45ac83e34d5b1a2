"""DPO on preference pairs (stages/dpo.py): a short TRL DPOTrainer run through the train stage, and the refusals."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from stages import skill, student, train
from stages.entry import StageError
from stages.params import DPOParams, LoraParams
from stages.prompts import student_prompt
from stages.train_data import TrainData
from tests.test_train_evaluate import (  # noqa: F401 -- fixtures
    STUDENT_TEMPLATE,
    same_weights,
    skill_pairs,
    state,
    tiny_student,
    train_params,
)


def corrupt(answer: str, rng: random.Random) -> str:
    """A wrong answer of the kind a weak student gives: a letter lost, changed or the word left as is."""
    kind = rng.choice(["drop", "change", "reverse"])
    if kind == "drop" and len(answer) > 1:
        return answer[:-1]
    if kind == "reverse" and answer[::-1] != answer:
        return answer[::-1]
    position = rng.randrange(len(answer))
    letter = "z" if answer[position].lower() != "z" else "a"
    return answer[:position] + (letter.upper() if answer.isupper() else letter) + answer[position + 1:]


def synthetic_preferences(count: int = 16, seed: int = 0) -> list[dict]:
    """Feedback-style pairs from the demo skill: chosen = the right answer, rejected = a corrupted one."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        instruction = skill.random_instruction(rng)
        right = skill.solve(instruction)
        rows.append({"prompt": student_prompt(STUDENT_TEMPLATE, instruction), "chosen": right,
                     "rejected": corrupt(right, rng)})
    assert all(row["chosen"] != row["rejected"] for row in rows)
    return rows


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path: the train stage keeps its resumable checkpoints under ./.distill."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_dpo_trains_on_preference_pairs(tiny_student: Path, skill_pairs: list[dict], in_tmp: Path,  # noqa: F811
                                        lora: bool) -> None:
    updates = {"lora": LoraParams(enabled=True, r=4, alpha=8)} if lora else {}
    params = train_params(tiny_student, method="dpo", max_steps=4, batch_size=4,
                          dpo=DPOParams(max_steps=4, learning_rate=1e-2), **updates)
    model_dir = in_tmp / "model"
    history = train.train(TrainData(skill_pairs, preferences=synthetic_preferences()), params, model_dir)

    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert losses and all(math.isfinite(loss) for loss in losses)
    # the first step's policy is the reference (the starting model): the sigmoid loss is -log sigmoid(0) = log 2
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)
    assert any("rewards/margins" in entry for entry in history)  # DPO's own metrics, logged by TRL
    assert (model_dir / "model.safetensors").exists()
    initial = state(student.load_model(str(tiny_student), params.seed))
    trained = state(student.load_model(str(model_dir), params.seed))
    assert initial.keys() == trained.keys()  # a plain (merged) model, also with LoRA
    assert not same_weights(initial, trained)
    assert not list((in_tmp / ".distill/checkpoints").iterdir())  # the finished run cleans up


def test_dpo_without_preferences_is_refused(tiny_student: Path, skill_pairs: list[dict],  # noqa: F811
                                            in_tmp: Path) -> None:
    params = train_params(tiny_student, method="dpo", max_steps=2, batch_size=4, dpo=DPOParams(max_steps=2))
    with pytest.raises(StageError, match=r"train.method=dpo needs preference pairs.*feedback to generate.methods"):
        train.train(TrainData(skill_pairs), params, in_tmp / "model")
    with pytest.raises(StageError, match=r"train.method=dpo needs preference pairs.*feedback to generate.methods"):
        train.preference_pairs(STUDENT_TEMPLATE, "dpo")  # the stage's own check, before any training
