"""IFD and reward scores: batched results equal a direct per-row computation on tiny config-only models."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from distill import student
from distill.curate.ifd import ifd_scores, passes
from distill.curate.reward import reward_scores
from distill.prompts import student_prompt

REPO = Path(__file__).resolve().parents[1]
STUDENT_TEMPLATE = (REPO / "templates" / "student.txt").read_text(encoding="utf-8")
INSTRUCTIONS = ["reverse planet", "upper planet", "reverse a", "upper distillation", "reverse ox", "upper zebra"]
ANSWERS = ["tenalp", "PLANET", "a", "DISTILLATION", "xo", "ARBEZ"]
PROMPTS = [student_prompt(STUDENT_TEMPLATE, text) for text in INSTRUCTIONS]


def direct_loss(model, context: list[int], scored: list[int]) -> float:
    import torch

    ids = torch.tensor([context + scored])
    labels = torch.tensor([[-100] * len(context) + scored])
    with torch.no_grad():
        return float(model(input_ids=ids, labels=labels).loss)


# --- distill.curate.ifd --------------------------------------------------------------------------------------


def test_passes_score_the_same_answer_ids(tiny_student: Path) -> None:
    tokenizer = student.load_tokenizer(str(tiny_student))
    (context, scored), (start, alone) = passes(tokenizer, PROMPTS[0], "tenalp", 256)
    answer = tokenizer("tenalp", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert scored == alone == answer
    assert context == tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]  # tiny-char adds no bos
    assert start == [tokenizer.bos_token_id]  # ... but declares one: the unconditioned pass starts from it


def test_ifd_equals_direct_per_row_computation(tiny_student: Path) -> None:
    scores = ifd_scores(str(tiny_student), PROMPTS, ANSWERS, seed=3, batch_size=4)
    tokenizer = student.load_tokenizer(str(tiny_student))
    model = student.load_model(str(tiny_student), 3).eval()
    eos = [tokenizer.eos_token_id]
    for prompt, answer, score in zip(PROMPTS, ANSWERS, scores, strict=True):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + eos
        expected = direct_loss(model, prompt_ids, answer_ids) / direct_loss(model, [tokenizer.bos_token_id],
                                                                            answer_ids)
        assert score == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_ifd_is_deterministic_and_batch_size_independent(tiny_student: Path) -> None:
    first = ifd_scores(str(tiny_student), PROMPTS, ANSWERS, seed=0, batch_size=32)
    assert ifd_scores(str(tiny_student), PROMPTS, ANSWERS, seed=0, batch_size=32) == first
    assert ifd_scores(str(tiny_student), PROMPTS, ANSWERS, seed=0, batch_size=1) == pytest.approx(first, rel=1e-5)
    assert ifd_scores(str(tiny_student), PROMPTS, ANSWERS, seed=1, batch_size=32) != first  # another init
    assert all(isinstance(score, float) and math.isfinite(score) and score > 0 for score in first)


def test_ifd_is_none_for_empty_or_truncated_answers(tiny_student: Path) -> None:
    prompts = [PROMPTS[0], PROMPTS[1], "x" * 40, "x" * 38]
    scores = ifd_scores(str(tiny_student), prompts, ["tenalp", "", "tenalp", "tenalp"], max_length=40)
    assert scores[0] is not None and scores[1] is None and scores[2] is None
    tokenizer = student.load_tokenizer(str(tiny_student))
    model = student.load_model(str(tiny_student), 0).eval()
    kept = tokenizer("te", add_special_tokens=False)["input_ids"]  # 38 prompt chars leave room for 2 answer ids
    expected = direct_loss(model, tokenizer("x" * 38)["input_ids"], kept) / direct_loss(model, [1], kept)
    assert scores[3] == pytest.approx(expected, rel=1e-5)


def test_ifd_rejects_unpaired_rows(tiny_student: Path) -> None:
    with pytest.raises(ValueError, match="2 prompts and 1 answers"):
        ifd_scores(str(tiny_student), PROMPTS[:2], ANSWERS[:1])


# --- distill.curate.reward -----------------------------------------------------------------------------------


def direct_rewards(folder: Path, texts: list[str], add_special_tokens: bool = True) -> list[float]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return [float(model(**tokenizer(text, return_tensors="pt", add_special_tokens=add_special_tokens)).logits[0, 0])
                for text in texts]


def test_reward_equals_direct_per_row_computation(tiny_reward: Path) -> None:
    scores = reward_scores(str(tiny_reward), PROMPTS, ANSWERS, batch_size=4)
    expected = direct_rewards(tiny_reward, [prompt + answer for prompt, answer in zip(PROMPTS, ANSWERS, strict=True)])
    assert scores == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert len(set(scores)) == len(scores)  # the rows are told apart: padding does not leak into the score


def test_reward_is_deterministic_and_batch_size_independent(tiny_reward: Path) -> None:
    first = reward_scores(str(tiny_reward), PROMPTS, ANSWERS)
    assert reward_scores(str(tiny_reward), PROMPTS, ANSWERS) == first
    assert reward_scores(str(tiny_reward), PROMPTS, ANSWERS, batch_size=1) == pytest.approx(first, rel=1e-5, abs=1e-6)
    assert all(isinstance(score, float) for score in first)


def test_reward_uses_the_chat_template_when_there_is_one(tiny_reward: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    folder = tmp_path / "chat-reward"
    shutil.copytree(tiny_reward, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = "{% for m in messages %}<bos>{{ m['role'][0] }}:{{ m['content'] }}<eos>{% endfor %}"
    tokenizer.save_pretrained(folder)
    scores = reward_scores(str(folder), PROMPTS[:2], ANSWERS[:2])
    texts = [f"<bos>u:{prompt}<eos><bos>a:{answer}<eos>" for prompt, answer in zip(PROMPTS, ANSWERS[:2], strict=False)]
    assert scores == pytest.approx(direct_rewards(folder, texts, add_special_tokens=False), rel=1e-5, abs=1e-6)
    assert scores != pytest.approx(reward_scores(str(tiny_reward), PROMPTS[:2], ANSWERS[:2]))


def test_reward_rejects_a_multi_label_model(tiny_reward: Path, tmp_path: Path) -> None:
    from transformers import AutoConfig

    folder = tmp_path / "two-labels"
    shutil.copytree(tiny_reward, folder)
    config = AutoConfig.from_pretrained(folder)
    config.num_labels = 2
    config.save_pretrained(folder)
    with pytest.raises(ValueError, match="num_labels=2"):
        reward_scores(str(folder), PROMPTS[:1], ANSWERS[:1])


def test_reward_pads_with_eos_when_model_and_tokenizer_have_no_pad(tiny_reward: Path, tmp_path: Path) -> None:
    import json

    from transformers import AutoConfig

    folder = tmp_path / "no-pad"
    shutil.copytree(tiny_reward, folder)
    config = AutoConfig.from_pretrained(folder)
    config.pad_token_id = None
    config.save_pretrained(folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings.pop("pad_token")
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    scores = reward_scores(str(folder), PROMPTS, ANSWERS, batch_size=4)
    expected = direct_rewards(folder, [prompt + answer for prompt, answer in zip(PROMPTS, ANSWERS, strict=True)])
    assert scores == pytest.approx(expected, rel=1e-5, abs=1e-6)
