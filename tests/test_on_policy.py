"""On-policy distillation: TRL's DistillationTrainer with a teacher sharing the student's
tokenizer, GOLD with a teacher on another tokenizer or with lmbda < 1, and a clear error without a teacher."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from distill import student
from distill.entry import StageError
from distill.transfer import on_policy
from distill.transfer.arguments import common_args
from distill.transfer.data import TrainData
from stages import train


@pytest.fixture(scope="module")
def same_tokenizer_teacher(tmp_path_factory: pytest.TempPathFactory, tiny_llama) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("teacher-same"), hidden_size=48, layers=2, heads=3)


@pytest.fixture(scope="module")
def other_tokenizer_teacher(tmp_path_factory: pytest.TempPathFactory, tiny_llama) -> Path:
    """A teacher on another character tokenizer: characters in reverse order, and four more (unused) tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("teacher-other")
    tokens = student.SPECIALS + [f"<extra{i}>" for i in range(4)] + student.CHARS[::-1]
    vocab = {token: i for i, token in enumerate(tokens)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    ).save_pretrained(folder)
    return tiny_llama(folder, hidden_size=48, layers=2, heads=3, vocab_size=len(vocab), tokenizer=False)


@pytest.fixture
def on_policy_params(train_params):
    """``on_policy_params(student_dir, lmbda, **updates)``: train_params for a short on-policy run (4 steps of 4,
    answers of 4 tokens) with that lmbda and the updates."""

    def params_with(student_dir: Path, lmbda: float, **updates: object):
        params = train_params(student_dir, **{"objective": "on_policy", "max_steps": 4, "batch_size": 4, **updates})
        return params.model_copy(
            update={"on_policy": params.on_policy.model_copy(update={"lmbda": lmbda, "max_new_tokens": 4})}
        )

    return params_with


def run_train(data: TrainData, params, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[object, list[dict]]:
    """stages.train.train, in a scratch working directory (its checkpoints), keeping the trainer it built."""
    built = []
    make = on_policy.make_trainer
    monkeypatch.setattr(on_policy, "make_trainer", lambda *args: built.append(make(*args)) or built[-1])
    monkeypatch.chdir(model_dir.parent)
    history = train.train(data, params, model_dir)
    return built[0], history


@pytest.fixture
def check_trained(state, same_weights):
    """``check_trained(history, model_dir, start, steps)``: ``steps`` finite losses, and a saved model whose weights
    moved from ``start``."""

    def check(history: list[dict], model_dir: Path, start: dict, steps: int) -> None:
        from transformers import AutoModelForCausalLM

        losses = [entry["loss"] for entry in history if "loss" in entry]
        assert len(losses) == steps and all(math.isfinite(loss) for loss in losses)
        assert (model_dir / "model.safetensors").is_file()
        assert not same_weights(state(AutoModelForCausalLM.from_pretrained(model_dir)), start)

    return check


def check_mixed(history: list[dict]) -> None:
    """With lmbda 0.5, each step trains on either the teacher's answers or the student's own, and both kinds occur.
    (Which step gets which is GOLD's draw from Python's global random state, which other code in the same process
    may have used, so the order is not asserted.)"""
    kinds = [("on_policy_loss" in entry, "off_policy_loss" in entry) for entry in history if "loss" in entry]
    assert set(kinds) == {(True, False), (False, True)}


def test_distillation_trainer_with_a_shared_tokenizer(
    tiny_student: Path,
    skill_pairs: list[dict],
    same_tokenizer_teacher: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    on_policy_params,
    check_trained,
    state,
) -> None:
    from trl import DistillationTrainer

    params = on_policy_params(tiny_student, lmbda=1.0)
    start = state(student.load_model(str(tiny_student), params.seed))
    trainer, history = run_train(
        TrainData(skill_pairs, local_teacher=str(same_tokenizer_teacher)), params, tmp_path / "model", monkeypatch
    )
    assert type(trainer) is DistillationTrainer
    check_trained(history, tmp_path / "model", start, params.max_steps)


def test_gold_with_another_tokenizer(
    tiny_student: Path,
    skill_pairs: list[dict],
    other_tokenizer_teacher: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    on_policy_params,
    check_trained,
    state,
) -> None:
    from trl.experimental.gold import GOLDTrainer

    params = on_policy_params(tiny_student, lmbda=0.5)
    start = state(student.load_model(str(tiny_student), params.seed))
    trainer, history = run_train(
        TrainData(skill_pairs, local_teacher=str(other_tokenizer_teacher)), params, tmp_path / "model", monkeypatch
    )
    assert isinstance(trainer, GOLDTrainer) and trainer.use_uld_loss
    assert not trainer.args.use_extended_uld  # char-level tokenizers are not ByteLevel: positional ULD
    check_trained(history, tmp_path / "model", start, params.max_steps)
    check_mixed(history)


def test_gold_mixes_in_teacher_answers_when_lmbda_is_below_one(
    tiny_student: Path,
    skill_pairs: list[dict],
    same_tokenizer_teacher: Path,
    tmp_path: Path,
    on_policy_params,
) -> None:
    from trl.experimental.gold import GOLDTrainer

    params = on_policy_params(tiny_student, lmbda=0.5)
    tokenizer = student.load_tokenizer(str(tiny_student))
    trainer = on_policy.make_trainer(
        student.load_model(str(tiny_student), params.seed),
        tokenizer,
        params,
        common_args(params, tmp_path / "checkpoints"),
        TrainData(skill_pairs, local_teacher=str(same_tokenizer_teacher)),
    )
    assert isinstance(trainer, GOLDTrainer) and not trainer.use_uld_loss and trainer.lmbda == 0.5
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == params.max_steps and all(math.isfinite(loss) for loss in losses)
    check_mixed(trainer.state.log_history)


def test_missing_local_teacher_is_a_stage_error(
    tiny_student: Path,
    skill_pairs: list[dict],
    tmp_path: Path,
    on_policy_params,
) -> None:
    params = on_policy_params(tiny_student, lmbda=1.0)
    with pytest.raises(StageError, match="train.local_teacher"):
        on_policy.make_trainer(
            student.load_model(str(tiny_student), 0),
            student.load_tokenizer(str(tiny_student)),
            params,
            common_args(params, tmp_path / "ckpt"),
            TrainData(skill_pairs),
        )
