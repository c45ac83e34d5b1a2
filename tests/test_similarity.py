"""Feature distillation: the losses against direct computations, the layer matching, the
projection (trained, checkpointed, restored on resume, never saved with the student), a short run through the
train stage, and the teacher refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from distill.entry import StageError
from distill.params import SimilarityParams
from distill.student import load_model, load_tokenizer
from distill.transfer import similarity
from distill.transfer.arguments import common_args
from distill.transfer.data import TrainData
from stages import train

MASK = torch.tensor([[True, False, True], [False, True, True]])


def pairs_of(mask: torch.Tensor) -> list[tuple[int, int]]:
    return [(b, t) for b in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[b, t]]


@pytest.fixture
def states() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)


@pytest.fixture
def config_teacher(tiny_llama):
    """``config_teacher(folder, hidden_size=48, layers=2)``: a config-only Llama teacher with the tiny-char
    tokenizer, wider and deeper than the tiny student."""

    def teacher_in(folder: Path, hidden_size: int = 48, layers: int = 2) -> Path:
        return tiny_llama(folder, hidden_size=hidden_size, layers=layers, heads=2)

    return teacher_in


# --- the losses ------------------------------------------------------------------------------------------------------


def test_token_losses_are_the_direct_means_over_the_answer_positions(states) -> None:
    student, teacher = states
    chosen = pairs_of(MASK)

    def direct(per_token) -> float:
        return sum(per_token(student[b, t], teacher[b, t]) for b, t in chosen) / len(chosen)

    assert similarity.l2_loss(student, teacher, MASK).item() == pytest.approx(
        direct(lambda s, t: sum((s[i] - t[i]).item() ** 2 for i in range(4)) / 4))
    assert similarity.l1_loss(student, teacher, MASK).item() == pytest.approx(
        direct(lambda s, t: sum(abs((s[i] - t[i]).item()) for i in range(4)) / 4))
    assert similarity.cosine_loss(student, teacher, MASK).item() == pytest.approx(
        direct(lambda s, t: 1 - float(s @ t) / math.sqrt(float(s @ s) * float(t @ t))))
    changed = teacher.clone()
    changed[~MASK] += 100.0  # the prompt and padding positions do not count
    for loss in similarity.LOSSES.values():
        assert loss(student, changed, MASK).item() == pytest.approx(loss(student, teacher, MASK).item())
    nothing = torch.zeros_like(MASK)
    assert similarity.l2_loss(student.requires_grad_(), teacher, nothing).item() == 0.0  # still differentiable


def test_mmd_is_the_direct_gaussian_kernel_computation_with_the_median_bandwidth(states) -> None:
    student, teacher = states
    x = [student[b, t] for b, t in pairs_of(MASK)]
    y = [teacher[b, t] for b, t in pairs_of(MASK)]
    pooled = x + y
    squared = [float((a - b) @ (a - b)) for i, a in enumerate(pooled) for b in pooled[i + 1:]]
    bandwidth = float(torch.tensor(squared).median())  # torch's median: the lower middle of an even count

    def kernel_mean(left, right) -> float:
        return sum(math.exp(-float((a - b) @ (a - b)) / bandwidth) for a in left for b in right) / (
            len(left) * len(right))

    direct = kernel_mean(x, x) + kernel_mean(y, y) - 2 * kernel_mean(x, y)
    assert similarity.mmd_loss(student, teacher, MASK).item() == pytest.approx(direct)
    assert similarity.mmd_loss(student, student.clone(), MASK).item() == pytest.approx(0.0, abs=1e-9)
    shuffled = student.flip(0).flip(1)  # the same set of vectors at other positions: MMD sees sets, not tokens
    full = torch.ones_like(MASK)
    assert similarity.mmd_loss(student, shuffled, full).item() == pytest.approx(0.0, abs=1e-9)
    assert similarity.l2_loss(student, shuffled, full).item() > 0.1
    assert similarity.mmd_loss(student, student + 1.0, MASK).item() > 0.05


def test_layers_match_by_depth() -> None:
    assert similarity.layer_pairs(1, 2, "last") == [(1, 2)]
    assert similarity.layer_pairs(2, 4, "all") == [(1, 2), (2, 4)]
    assert similarity.layer_pairs(3, 12, "all") == [(1, 4), (2, 8), (3, 12)]
    assert similarity.layer_pairs(4, 2, "all") == [(1, 1), (2, 1), (3, 2), (4, 2)]  # never the embeddings (0)


# --- the trainer -----------------------------------------------------------------------------------------------------


def test_projection_trains_with_the_student_and_is_restored_on_resume(
    tiny_student: Path,
    skill_pairs: list[dict],
    tmp_path: Path,
    config_teacher,
    train_params,
) -> None:
    teacher = config_teacher(tmp_path / "teacher")
    params = train_params(tiny_student, objective="similarity", max_steps=2, batch_size=4, checkpoint_every=2,
                          learning_rate=1e-2, similarity=SimilarityParams(loss="cosine", layers="all"))
    data = TrainData(skill_pairs, local_teacher=str(teacher))

    def trainer():
        model = load_model(str(tiny_student), params.seed)
        return similarity.make_trainer(model, load_tokenizer(str(tiny_student)), params,
                                       common_args(params, tmp_path / "checkpoints"), data)

    first = trainer()
    assert [tuple(layer.weight.shape) for layer in first.projection] == [(48, 32)]  # 1 student layer, 32 -> 48
    before = first.projection.state_dict()["0.weight"].clone()
    first.train()
    after = first.projection.state_dict()["0.weight"]
    assert not torch.equal(before, after)
    assert any(parameter is first.projection[0].weight for group in first.optimizer.param_groups
               for parameter in group["params"])
    assert all(not parameter.requires_grad for parameter in first.teacher.parameters()) and not first.teacher.training
    logged = [entry for entry in first.state.log_history if "similarity" in entry]
    assert logged and all(math.isfinite(entry["similarity"]) and entry["ce"] > 0 for entry in logged)

    checkpoint = tmp_path / "checkpoints" / "checkpoint-2"
    assert (checkpoint / similarity.PROJECTION_FILE).exists()
    resumed = trainer()
    assert not torch.equal(resumed.projection.state_dict()["0.weight"], after)
    resumed.train(resume_from_checkpoint=str(checkpoint))  # at the last step already: only the states are read
    assert torch.equal(resumed.projection.state_dict()["0.weight"], after)


def test_similarity_trains_through_the_train_stage_and_saves_a_plain_student(
    tiny_student: Path,
    skill_pairs: list[dict],
    in_tmp: Path,
    config_teacher,
    train_params,
) -> None:
    from safetensors import safe_open

    teacher = config_teacher(in_tmp / "teacher")
    params = train_params(tiny_student, objective="similarity", max_steps=4, batch_size=4,
                          similarity=SimilarityParams(loss="mmd"))
    history = train.train(TrainData(skill_pairs, local_teacher=str(teacher)), params, in_tmp / "model")

    logged = [entry for entry in history if "similarity" in entry]
    assert logged and all(math.isfinite(entry["similarity"]) and math.isfinite(entry["loss"]) for entry in logged)
    with safe_open(in_tmp / "model" / "model.safetensors", framework="pt") as saved:
        keys = set(saved.keys())
    student_keys = set(load_model(str(tiny_student), params.seed).state_dict()) - {"lm_head.weight"}  # tied
    assert keys == student_keys
    assert not any("projection" in key for key in keys)
    assert json.loads((in_tmp / "model" / "config.json").read_text())["hidden_size"] == 32
    assert not list((in_tmp / ".distill/checkpoints").iterdir())  # the finished run cleans up


# --- refusals --------------------------------------------------------------------------------------------------------


def test_a_teacher_with_another_tokenizer_is_refused(tiny_student: Path, skill_pairs: list[dict],
                                                     in_tmp: Path, config_teacher, train_params,
                                                     tokenizer_files: tuple[str, ...]) -> None:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    teacher = config_teacher(in_tmp / "teacher")
    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials + [chr(c) for c in range(126, 31, -1)] + ["\n"])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    for name in tokenizer_files:
        (teacher / name).unlink()
    PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                            unk_token="<unk>").save_pretrained(teacher)  # same size, other ids
    params = train_params(tiny_student, objective="similarity", max_steps=2, batch_size=4)
    with pytest.raises(StageError, match=rf"train.local_teacher {teacher} must use the student's tokenizer.*on_policy"):
        train.train(TrainData(skill_pairs, local_teacher=str(teacher)), params, in_tmp / "model")
    assert not (in_tmp / "model").exists()


def test_a_missing_teacher_is_refused(tiny_student: Path, skill_pairs: list[dict], in_tmp: Path, train_params) -> None:
    params = train_params(tiny_student, objective="similarity", max_steps=2, batch_size=4)
    with pytest.raises(StageError, match="train.objective=similarity needs a local Hugging Face teacher: set "
                                         "train.local_teacher"):
        train.train(TrainData(skill_pairs), params, in_tmp / "model")
