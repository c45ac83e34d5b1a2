"""Offline-logit KD: the loss against a direct computation, the tokenizer refusal, the answer alignment,
and a real (tiny) KD training on top-k log-probs the stand-in served over HTTP."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
import torch

from distill.entry import StageError
from distill.io import write_parquet
from distill.params import KDParams
from distill.student import load_tokenizer
from distill.transfer import data as train_data
from distill.transfer import kd
from distill.transfer.data import TrainData
from stages import train


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, seeds, seed_words: list[str], feature_params,
           run_stage) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows and features (k = 5) of 40 seeds, from the stand-in over HTTP, every row kept."""
    folder = tmp_path_factory.mktemp("kd")
    seeds_path = folder / "ingest/train.parquet"
    write_parquet(seeds([f"{op} {word}" for word in seed_words for op in ("reverse", "upper")]), seeds_path)
    run_stage(feature_params(5, wrong_rate=0.0, hard_wrong_rate=0.0, malformed_rate=0.0, refusal_rate=0.0),
              folder, seeds_path)
    rows = pl.read_parquet(folder / "gen/rows.parquet").with_columns(keep=pl.lit(True))
    return rows, pl.read_parquet(folder / "gen/features.parquet")


def test_loss_is_the_weighted_cross_entropy_and_forward_kl_of_a_direct_computation() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 6, dtype=torch.float64)
    labels = torch.tensor([[kd.IGNORE, kd.IGNORE, 2, 5]])  # position 0 is never predicted; 1 is the prompt
    ids = torch.tensor([[[-1, -1]] * 2 + [[2, 0], [5, 1]]])  # the teacher at the positions of tokens 2 and 3
    logprobs = torch.tensor([[[-math.inf, -math.inf]] * 2 + [[math.log(0.7), math.log(0.2)],
                                                             [math.log(0.9), math.log(0.05)]]], dtype=torch.float64)
    loss, ce, divergence = kd.kd_loss(logits, labels, ids, logprobs, KDParams(ce_weight=0.25))
    q = logits[0].softmax(-1)
    direct_ce = -(q[1, 2].log() + q[2, 5].log()) / 2
    direct_kl = 0.0
    for position, (top, probs) in ((1, ([2, 0], [0.7, 0.2])), (2, ([5, 1], [0.9, 0.05]))):
        student = [q[position, i].item() for i in top] + [1 - sum(q[position, i].item() for i in top)]
        teacher = probs + [1 - sum(probs)]  # the tail bucket
        direct_kl += sum(p * math.log(p / s) for p, s in zip(teacher, student, strict=True)) / 2
    assert ce.item() == pytest.approx(direct_ce.item())
    assert divergence.item() == pytest.approx(direct_kl)
    assert loss.item() == pytest.approx(0.25 * direct_ce.item() + 0.75 * direct_kl)


def test_features_of_another_tokenizer_are_refused_before_training(tiny_char) -> None:
    features = pl.DataFrame({"tokenizer": ["gpt2@0123456789abcdef"]})
    with pytest.raises(StageError, match=r"train.objective=kd: .* token ids of gpt2@0123456789abcdef, but the "
                                         r"student .* uses another tokenizer"):
        kd.check_tokenizer(features, str(tiny_char))
    identity = kd.tokenizer_identity(str(tiny_char))
    kd.check_tokenizer(pl.DataFrame({"tokenizer": [f"anywhere@{identity}"]}), str(tiny_char))


def test_examples_align_the_teacher_with_the_answer_tokens(
    served: tuple[pl.DataFrame, pl.DataFrame],
    tiny_char,
    student_template,
) -> None:
    rows, features = served
    edited = rows.with_columns(response=pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("zzz"))
                               .otherwise(pl.col("response")))
    tokenizer = load_tokenizer(str(tiny_char))
    found = kd.examples(edited, features, student_template, tokenizer, 64)
    assert (found.with_teacher, found.without_teacher) == (rows.height - 1, 1)  # "zzz" is not what was served
    example = found.examples[1]
    answer = [i for i, label in enumerate(example["labels"]) if label != kd.IGNORE]
    first = answer[0]
    assert example["teacher_ids"][first - 1] == [-1] * 5  # the prompt has no teacher
    assert example["teacher_ids"][first][0] == example["input_ids"][first]  # the served token leads its top-k
    assert example["teacher_ids"][answer[-1]] == [-1] * 5  # nor does the end of the answer
    assert all(ids == [-1] * 5 for ids in found.examples[0]["teacher_ids"])


def test_kd_trains_the_student_on_the_served_log_probs(served: tuple[pl.DataFrame, pl.DataFrame],
                                                       tiny_student: Path, tmp_path: Path, train_params) -> None:
    rows, features = served
    params = train_params(tiny_student, objective="kd", max_steps=6, batch_size=8)
    params = params.model_copy(update={"kd": KDParams(divergence="skew_forward_kl", temperature=2.0)})
    template = Path(params.prompt_template).read_text()
    found = kd.examples(rows, features, template, load_tokenizer(str(tiny_student)), params.max_length)
    assert found.with_teacher == rows.height
    pairs = train_data.training_pairs(rows, template, load_tokenizer(str(tiny_student)))
    history = train.train(TrainData(pairs, kd=found), params, tmp_path / "model")
    logged = [entry for entry in history if "loss" in entry]
    assert logged and all(math.isfinite(entry["loss"]) and entry["kd"] > 0 and entry["ce"] > 0 for entry in logged)
    log = train.loss_log(history, "kd")  # data/train/log.parquet keeps both terms beside the loss: the report's curves
    assert log["ce"].to_list() == [entry["ce"] for entry in logged] and log["kd"].null_count() == 0
    assert (tmp_path / "model/model.safetensors").exists()
    with pytest.raises(StageError, match="train.objective=kd needs the teacher's log-probs"):
        train.train([], params, tmp_path / "other")


def test_gradient_accumulation_takes_the_mean_of_its_batches(served: tuple[pl.DataFrame, pl.DataFrame],
                                                             tiny_student: Path, tmp_path: Path, train_params) -> None:
    """Two batches of 4 accumulated are one step of 8: the same loss, not twice it (the KD loss is a mean the
    Trainer must divide by the accumulation steps)."""
    rows, features = served
    template = (Path(train_params(tiny_student).prompt_template)).read_text()
    tokenizer = load_tokenizer(str(tiny_student))
    data = TrainData(train_data.training_pairs(rows, template, tokenizer),
                     kd=kd.examples(rows, features, template, tokenizer, 64))
    losses = []
    for batch, steps in ((8, 1), (4, 2)):
        params = train_params(tiny_student, objective="kd", max_steps=3, batch_size=batch,
                              gradient_accumulation_steps=steps)
        history = train.train(data, params, tmp_path / f"model-{steps}")
        losses.append([entry["loss"] for entry in history if "loss" in entry])
    assert len(losses[0]) == len(losses[1]) == 3
    assert losses[1] == pytest.approx(losses[0], rel=0.05)


def test_heldout_kl_falls_as_kd_trains(served: tuple[pl.DataFrame, pl.DataFrame], tiny_student: Path,
                                       tmp_path: Path, train_params) -> None:
    from stages.evaluate import heldout_kl

    rows, features = served
    evals = rows.select("id", "instruction", "input")
    answers = rows["response"].to_list()
    params = train_params(tiny_student, objective="kd", max_steps=40, batch_size=8, learning_rate=0.01)
    template = Path(params.prompt_template).read_text()
    before = heldout_kl(str(tiny_student), evals, answers, features, template, params.max_length)
    found = kd.examples(rows, features, template, load_tokenizer(str(tiny_student)), params.max_length)
    pairs = train_data.training_pairs(rows, template, load_tokenizer(str(tiny_student)))
    train.train(TrainData(pairs, kd=found), params, tmp_path / "model")
    after = heldout_kl(str(tmp_path / "model"), evals, answers, features, template, params.max_length)
    assert 0 < after < before
    assert heldout_kl(str(tiny_student), evals, answers, features.clear(), template, params.max_length) is None


def test_local_teachers_mix_with_the_stored_top_k(served: tuple[pl.DataFrame, pl.DataFrame],
                                                  tiny_student: Path, tmp_path: Path, train_params) -> None:
    """Two teachers: the stored top-k and a local model scoring the same answer tokens, mixed 1:1."""
    from distill.params import KDTeacher

    rows, features = served
    template = Path(train_params(tiny_student).prompt_template).read_text()
    found = kd.examples(rows, features, template, load_tokenizer(str(tiny_student)), 64)
    batch = kd.Collator(0)(found.examples[:4])
    teacher = kd.local_teachers(KDParams(teachers=[KDTeacher(model=str(tiny_student))]), str(tiny_student), 0)
    settings = KDParams(teachers=[KDTeacher(model=str(tiny_student), weight=1.0)], stored_weight=1.0)
    ids, logprobs = kd.mixed_teacher(batch["input_ids"], batch["attention_mask"], batch["teacher_ids"],
                                     batch["teacher_logprobs"], teacher, settings)
    stored = batch["teacher_ids"][..., 0] >= 0
    assert ((ids[..., 0] >= 0) == stored).all()  # the mixture exists exactly where the stored teacher does
    mass = logprobs.exp().sum(-1)[stored]
    stored_mass = batch["teacher_logprobs"].exp().sum(-1)[stored]
    assert (mass >= stored_mass * 0.5 - 1e-6).all() and (mass <= 1 + 1e-6).all()
    # the local teacher at entry t is its prediction from the logits at t - 1 (as the stored ones)
    with torch.no_grad():
        local = teacher[0](input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.log_softmax(-1)
    b, t = stored.nonzero()[0].tolist()
    token = int(batch["teacher_ids"][b, t, 0])
    listed = dict(zip(ids[b, t].tolist(), logprobs[b, t].exp().tolist(), strict=True))
    local_top = set(local[b, t - 1].topk(5).indices.tolist())
    expected = 0.5 * float(batch["teacher_logprobs"][b, t, 0].exp())
    expected += 0.5 * float(local[b, t - 1, token].exp()) if token in local_top else 0.0
    assert listed[token] == pytest.approx(expected, rel=1e-4)
    params = train_params(tiny_student, objective="kd", max_steps=3, batch_size=8).model_copy(update={"kd": settings})
    pairs = train_data.training_pairs(rows, template, load_tokenizer(str(tiny_student)))
    history = train.train(TrainData(pairs, kd=found), params, tmp_path / "model")
    assert all(math.isfinite(entry["kd"]) for entry in history if "kd" in entry)
    other = tmp_path / "other-tokenizer"
    other.mkdir()
    (other / "tokenizer.json").write_text("{}")
    with pytest.raises(StageError, match="train.kd.teachers: .* uses another tokenizer"):
        kd.local_teachers(KDParams(teachers=[KDTeacher(model=str(other))]), str(tiny_student), 0)
