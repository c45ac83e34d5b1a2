"""RL from preference pairs (distill/transfer/rl.py): a reward model (TRL RewardTrainer), then GRPO or RLOO against it,
through the train stage; the recorded reward accuracy, the batch-size adaptation and the refusals."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest

from distill import student
from distill.entry import StageError
from distill.params import LoraParams, RLParams
from distill.transfer import data as train_data
from distill.transfer import rl
from distill.transfer.data import TrainData
from stages import train


@pytest.fixture
def rl_params(train_params):
    """``rl_params(student_dir, algorithm, **updates)``: train_params for a short RL run (2 steps of 4, a reward
    model of 4 steps, 2 answers per prompt of 4 tokens) with the updates."""

    def params_with(student_dir: Path, algorithm: str, **updates: object):
        settings = RLParams(algorithm=algorithm, reward_steps=4, max_steps=2, learning_rate=1e-2, beta=0.05,
                            num_generations=2, max_new_tokens=4)
        return train_params(student_dir, objective="rl", max_steps=2, batch_size=4, rl=settings, **updates)

    return params_with


@pytest.mark.parametrize(("algorithm", "lora", "from_checkpoint"),
                         [("grpo", False, False), ("rloo", False, True), ("grpo", True, False)],
                         ids=["grpo", "rloo-from-checkpoint", "grpo-lora"])
def test_rl_trains_against_a_reward_model(
    tiny_student: Path,
    skill_pairs: list[dict],
    in_tmp: Path,
    algorithm: str,
    lora: bool,
    from_checkpoint: bool,
    monkeypatch: pytest.MonkeyPatch,
    rl_params,
    synthetic_preferences,
    state,
    same_weights,
) -> None:
    """From the config-only student, or (as the stage does, from the SFT baseline) from a saved checkpoint."""
    built = []
    make_trainer = rl.make_trainer
    monkeypatch.setattr(rl, "make_trainer", lambda *args: built.append(make_trainer(*args)) or built[-1])
    params = rl_params(tiny_student, algorithm, **({"lora": LoraParams(enabled=True, r=4, alpha=8)} if lora else {}))
    start = None
    if from_checkpoint:
        start = str(in_tmp / "baseline")
        student.load_model(str(tiny_student), seed=1).save_pretrained(start)
    initial = state(student.load_model(start or str(tiny_student), params.seed))
    model_dir = in_tmp / "model"
    history = train.train(TrainData(skill_pairs, preferences=synthetic_preferences()), params, model_dir, start)

    trainer = built[0]
    assert type(trainer).__name__ == {"grpo": "GRPOTrainer", "rloo": "RLOOTrainer"}[algorithm]
    assert 0.0 <= trainer.reward_accuracy <= 1.0
    recorded = [entry for entry in history if "reward_accuracy" in entry]  # also where the train stage reads it
    assert recorded == [{"reward_accuracy": trainer.reward_accuracy, "reward_pairs": 16, "step": 0}]
    assert trainer.args.num_generations == 2 and trainer.args.max_completion_length == 4
    assert trainer.args.beta == 0.05
    assert (trainer.ref_model is None) == lora  # with LoRA the reference is the adapter switched off
    logged = [entry for entry in history if "loss" in entry]
    assert len(logged) == 2 and all(math.isfinite(entry["loss"]) for entry in logged)
    assert all("rewards/reward_model/mean" in entry for entry in logged)  # scored by the reward model
    assert logged[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the reference is the starting model
    assert (model_dir / "model.safetensors").exists()
    trained = state(student.load_model(str(model_dir), params.seed))
    assert initial.keys() == trained.keys()
    assert not same_weights(initial, trained)
    assert not list((in_tmp / ".distill/checkpoints").iterdir())  # reward model and start copy cleaned up too


def test_reward_model_is_built_from_the_policy_and_learns_the_pairs(
    tiny_student: Path,
    in_tmp: Path,
    rl_params,
    synthetic_preferences,
    state,
    same_weights,
) -> None:
    params = rl_params(tiny_student, "grpo", learning_rate=1e-2).model_copy(
        update={"rl": RLParams(reward_steps=12)})
    tokenizer = student.load_tokenizer(str(tiny_student))
    policy = student.load_model(str(tiny_student), params.seed)
    reward = rl.reward_model_from(policy, tokenizer.pad_token_id, params.seed)
    assert reward.config.num_labels == 1 and reward.config.pad_token_id == tokenizer.pad_token_id
    assert same_weights(state(reward.base_model), state(policy.base_model))

    rows = rl.reward_rows(synthetic_preferences(), tokenizer, params.max_length)
    before = rl.pairwise_accuracy(reward, rows, tokenizer.pad_token_id, 4)
    trained = rl.train_reward_model(policy, tokenizer, params, rows, in_tmp / "reward")
    after = rl.pairwise_accuracy(trained, rows, tokenizer.pad_token_id, 4)
    assert 0.0 <= before <= 1.0 and after > before
    again = rl.train_reward_model(policy, tokenizer, params, rows, in_tmp / "reward")  # a resumed run reuses it
    assert same_weights(state(again), state(trained))


def test_policy_batch_holds_whole_groups() -> None:
    assert rl.policy_batch_size(4, 2, prompts=16) == 4
    assert rl.policy_batch_size(5, 2, prompts=16) == 6  # rounded up to whole groups of num_generations
    assert rl.policy_batch_size(2, 4, prompts=16) == 4  # at least one group
    assert rl.policy_batch_size(64, 4, prompts=3) == 12  # never more prompts per step than there are
    for batch in range(1, 20):
        for generations in range(2, 6):
            assert rl.policy_batch_size(batch, generations, prompts=7) % generations == 0


def test_rl_without_preferences_is_refused(tiny_student: Path, skill_pairs: list[dict],
                                           in_tmp: Path, rl_params, student_template) -> None:
    params = rl_params(tiny_student, "grpo")
    with pytest.raises(StageError, match=r"train.objective=rl needs preference pairs.*feedback to generate.elicit"):
        train.train(TrainData(skill_pairs), params, in_tmp / "model")
    with pytest.raises(StageError, match=r"train.objective=rl needs preference pairs.*feedback to generate.elicit"):
        train_data.preference_pairs(pl.DataFrame(), student_template, "rl", "data/students/tiny-char")


def test_pairs_longer_than_max_length_are_refused(tiny_student: Path, synthetic_preferences) -> None:
    tokenizer = student.load_tokenizer(str(tiny_student))
    with pytest.raises(StageError, match=r"longer than train.max_length \(4 tokens"):
        rl.reward_rows(synthetic_preferences(), tokenizer, 4)
