"""Train: the student loader, training pairs, and a short SFT run (full, LoRA, packing, grouped by length)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import polars as pl
import pytest

from distill import params as params_module
from distill import paths, student
from distill.entry import StageError
from distill.prompts import student_prompt
from distill.records import TRAIN_LOG
from distill.transfer import data as train_data
from stages import train

# --- distill.student ---------------------------------------------------------------------------------


def test_load_model_from_config_is_seeded(tiny_student: Path, state, same_weights) -> None:
    first = state(student.load_model(str(tiny_student), 0))
    again = state(student.load_model(str(tiny_student), 0))
    other = state(student.load_model(str(tiny_student), 1))
    assert same_weights(first, again)
    assert not same_weights(first, other)


def test_has_weights_after_save(tiny_student: Path, tmp_path: Path, state, same_weights) -> None:
    folder = tmp_path / "student"
    shutil.copytree(tiny_student, folder)
    assert not student.has_weights(folder)
    model = student.load_model(str(folder), 0)
    model.save_pretrained(folder, safe_serialization=True)
    assert student.has_weights(folder)
    assert same_weights(state(student.load_model(str(folder), 123)), state(model))  # loaded, not re-initialised


def test_tokenizer_round_trips_characters(tiny_student: Path) -> None:
    tokenizer = student.load_tokenizer(str(tiny_student))
    text = "reverse planet\n=tenalp"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token per character
    assert tokenizer.decode(ids) == text
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


# --- stages.train.training_pairs -----------------------------------------------------------------------


def test_training_pairs_keeps_only_kept_rows(student_template: str) -> None:
    rows = pl.DataFrame({
        "instruction": ["reverse cat", "upper dog", "reverse fish"],
        "input": ["", "", "ctx"],
        "response": ["tac", "DOG", "hsif"],
        "keep": [True, False, True],
    })
    pairs = train_data.training_pairs(rows, student_template, student.load_tokenizer("data/students/tiny-char"))
    assert pairs == [
        {"prompt": "reverse cat\n=", "completion": "tac"},
        {"prompt": student_prompt(student_template, "reverse fish", "ctx"), "completion": "hsif"},
    ]


def test_training_pairs_without_kept_rows_fails(student_template: str) -> None:
    rows = pl.DataFrame({"instruction": ["upper dog"], "input": [""], "response": ["DOG"], "keep": [False]})
    with pytest.raises(StageError, match=re.escape(str(paths.SELECT_ROWS))):
        train_data.training_pairs(rows, student_template, student.load_tokenizer("data/students/tiny-char"))


# --- stages.train.train ----------------------------------------------------------------------------------


def check_checkpoint(model_dir: Path, params: params_module.TrainParams, tokenizer_files: tuple[str, ...]) -> None:
    for name in ("model.safetensors", "config.json", *tokenizer_files, "distill_train_params.json"):
        assert (model_dir / name).is_file(), name
    assert not (model_dir / "adapter_config.json").exists()
    assert not model_dir.with_name(model_dir.name + ".partial").exists()
    assert not list(model_dir.parent.glob("*.partial"))
    saved = json.loads((model_dir / "distill_train_params.json").read_text())
    assert saved["params_hash"]
    assert saved["max_steps"] == params.max_steps and saved["lora"]["enabled"] == params.lora.enabled


def check_log(history: list[dict], params: params_module.TrainParams) -> None:
    log = train.loss_log(history)
    assert log.schema == pl.Schema(TRAIN_LOG)
    logged = [entry for entry in history if "loss" in entry]
    assert log.height == len(logged) == params.max_steps  # logging_steps = 1 for 8 steps
    assert log["step"].to_list() == [entry["step"] for entry in logged]
    assert all(math.isfinite(loss) for loss in log["loss"])
    assert log["ce"].null_count() == log["kd"].null_count() == log.height  # only the KD loss has the two terms


@pytest.mark.parametrize("variant", ["full", "lora", "packing", "group_by_length"])
def test_train_saves_a_trained_checkpoint(tiny_student: Path, skill_pairs: list[dict], tmp_path: Path,
                                          variant: str, train_params, state, same_weights,
                                          tokenizer_files: tuple[str, ...]) -> None:
    from transformers import AutoModelForCausalLM

    updates = {"full": {}, "lora": {"lora": params_module.LoraParams(enabled=True, r=4, alpha=8)},
               "packing": {"packing": True}, "group_by_length": {"group_by_length": True}}[variant]
    params = train_params(tiny_student, **updates)
    model_dir = tmp_path / "train" / "model"
    history = train.train(skill_pairs, params, model_dir)

    check_checkpoint(model_dir, params, tokenizer_files)
    check_log(history, params)
    initial = state(student.load_model(str(tiny_student), params.seed))
    trained = state(student.load_model(str(model_dir), params.seed))
    assert initial.keys() == trained.keys()
    assert not same_weights(initial, trained)
    plain = AutoModelForCausalLM.from_pretrained(model_dir)  # a merged model, loadable without PEFT
    assert not hasattr(plain, "peft_config")
    assert same_weights(state(plain), trained)
