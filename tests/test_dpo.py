"""DPO on preference pairs: a short TRL DPOTrainer run through the train stage, and the refusals."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest

from distill import student
from distill.entry import StageError
from distill.params import DPOParams, LoraParams
from distill.transfer import data as train_data
from distill.transfer.data import TrainData
from stages import train


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_dpo_trains_on_preference_pairs(tiny_student: Path, skill_pairs: list[dict], in_tmp: Path,
                                        lora: bool, train_params, synthetic_preferences, state, same_weights) -> None:
    updates = {"lora": LoraParams(enabled=True, r=4, alpha=8)} if lora else {}
    params = train_params(tiny_student, objective="dpo", max_steps=4, batch_size=4,
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


def test_dpo_without_preferences_is_refused(tiny_student: Path, skill_pairs: list[dict],
                                            in_tmp: Path, train_params, student_template) -> None:
    params = train_params(tiny_student, objective="dpo", max_steps=2, batch_size=4, dpo=DPOParams(max_steps=2))
    with pytest.raises(StageError, match=r"train.objective=dpo needs preference pairs.*feedback to generate.elicit"):
        train.train(TrainData(skill_pairs), params, in_tmp / "model")
    with pytest.raises(StageError, match=r"train.objective=dpo needs preference pairs.*feedback to generate.elicit"):
        train_data.preference_pairs(pl.DataFrame(), student_template, "dpo", "data/students/tiny-char")
