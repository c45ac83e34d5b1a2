"""Train and evaluate: the student loader, training pairs, a short SFT run (full and LoRA), and eval scoring."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from pathlib import Path

import polars as pl
import pytest

from stages import evaluate, paths, skill, student, train
from stages import params as params_module
from stages.entry import StageError
from stages.prompts import student_prompt
from stages.records import PREDICTION, TRAIN_LOG

REPO = Path(__file__).resolve().parents[1]
TINY_CHAR = REPO / "data" / "students" / "tiny-char"
STUDENT_TEMPLATE = (REPO / "templates" / "student.txt").read_text(encoding="utf-8")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def load_params() -> params_module.Params:
    return params_module.load(REPO / "params.yaml")


def state(model) -> dict:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def same_weights(left: dict, right: dict) -> bool:
    import torch

    return left.keys() == right.keys() and all(torch.equal(left[name], right[name]) for name in left)


def tiny_llama(folder: Path, hidden_size: int, layers: int, heads: int, vocab_size: int | None = None,
               tokenizer: bool = True) -> Path:
    """A config-only Llama in ``folder`` shaped like tiny-char (with its tokenizer files unless told not to)."""
    from transformers import LlamaConfig

    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES if tokenizer else ():
        shutil.copy(TINY_CHAR / name, folder / name)
    config = LlamaConfig.from_pretrained(TINY_CHAR)
    config.update({"hidden_size": hidden_size, "intermediate_size": 2 * hidden_size, "num_hidden_layers": layers,
                   "num_attention_heads": heads, "num_key_value_heads": heads, "head_dim": hidden_size // heads,
                   "vocab_size": vocab_size or config.vocab_size})
    config.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config-only student even smaller than tiny-char: 1 layer, 32 wide, same tokenizer."""
    return tiny_llama(tmp_path_factory.mktemp("tiny-student"), hidden_size=32, layers=1, heads=2)


@pytest.fixture(scope="module")
def skill_pairs() -> list[dict]:
    rng = random.Random(0)
    instructions = [skill.random_instruction(rng) for _ in range(64)]
    return [{"prompt": student_prompt(STUDENT_TEMPLATE, text), "completion": skill.solve(text)}
            for text in instructions]


def train_params(student_dir: Path, **updates: object) -> params_module.TrainParams:
    base = load_params().train
    return base.model_copy(
        update={"student": str(student_dir), "prompt_template": str(REPO / "templates" / "student.txt"),
                "method": "sft", "max_steps": 8, "batch_size": 8, "warmup_steps": 0, **updates}
    )


# --- stages.student ---------------------------------------------------------------------------------


def test_load_model_from_config_is_seeded(tiny_student: Path) -> None:
    first = state(student.load_model(str(tiny_student), 0))
    again = state(student.load_model(str(tiny_student), 0))
    other = state(student.load_model(str(tiny_student), 1))
    assert same_weights(first, again)
    assert not same_weights(first, other)


def test_has_weights_after_save(tiny_student: Path, tmp_path: Path) -> None:
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


def test_training_pairs_keeps_only_kept_rows() -> None:
    rows = pl.DataFrame({
        "instruction": ["reverse cat", "upper dog", "reverse fish"],
        "input": ["", "", "ctx"],
        "response": ["tac", "DOG", "hsif"],
        "keep": [True, False, True],
    })
    pairs = train.training_pairs(rows, STUDENT_TEMPLATE)
    assert pairs == [
        {"prompt": "reverse cat\n=", "completion": "tac"},
        {"prompt": student_prompt(STUDENT_TEMPLATE, "reverse fish", "ctx"), "completion": "hsif"},
    ]


def test_training_pairs_without_kept_rows_fails() -> None:
    rows = pl.DataFrame({"instruction": ["upper dog"], "input": [""], "response": ["DOG"], "keep": [False]})
    with pytest.raises(StageError, match=re.escape(str(paths.SELECT_ROWS))):
        train.training_pairs(rows, STUDENT_TEMPLATE)


# --- stages.train.train ----------------------------------------------------------------------------------


def check_checkpoint(model_dir: Path, params: params_module.TrainParams) -> None:
    for name in ("model.safetensors", "config.json", *TOKENIZER_FILES, "distill_train_params.json"):
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


@pytest.mark.parametrize("variant", ["full", "lora", "packing", "group_by_length"])
def test_train_saves_a_trained_checkpoint(tiny_student: Path, skill_pairs: list[dict], tmp_path: Path,
                                          variant: str) -> None:
    from transformers import AutoModelForCausalLM

    updates = {"full": {}, "lora": {"lora": params_module.LoraParams(enabled=True, r=4, alpha=8)},
               "packing": {"packing": True}, "group_by_length": {"group_by_length": True}}[variant]
    params = train_params(tiny_student, **updates)
    model_dir = tmp_path / "train" / "model"
    history = train.train(skill_pairs, params, model_dir)

    check_checkpoint(model_dir, params)
    check_log(history, params)
    initial = state(student.load_model(str(tiny_student), params.seed))
    trained = state(student.load_model(str(model_dir), params.seed))
    assert initial.keys() == trained.keys()
    assert not same_weights(initial, trained)
    plain = AutoModelForCausalLM.from_pretrained(model_dir)  # a merged model, loadable without PEFT
    assert not hasattr(plain, "peft_config")
    assert same_weights(state(plain), trained)


# --- stages.evaluate ------------------------------------------------------------------------------------


def test_exact_match() -> None:
    assert skill.exact_match(" tac \n", "tac") == 1.0
    assert skill.exact_match("tac", " tac") == 1.0
    assert skill.exact_match("Tac", "tac") == 0.0
    assert skill.exact_match("ta c", "tac") == 0.0
    assert skill.exact_match(None, "tac") == 0.0
    assert skill.exact_match("", "") == 1.0


def test_gap_closed() -> None:
    assert evaluate.gap_closed(0.0, 0.5, 1.0) == 0.5
    assert evaluate.gap_closed(0.2, 0.2, 0.6) == 0.0
    assert evaluate.gap_closed(0.5, 0.9, 0.5) is None
    assert evaluate.gap_closed(0.6, 0.9, 0.5) is None


def test_score_system_conforms_to_prediction() -> None:
    evals = pl.DataFrame({
        "id": ["a", "b", "c"], "instruction": ["reverse cat", "upper dog", "reverse owl"],
        "input": ["", "", ""], "reference": ["tac", "DOG", "lwo"],
    })
    frame = evaluate.score_system(evals, "teacher", ["tac ", "dog", None])
    assert frame.schema == pl.Schema(PREDICTION)
    assert frame["system"].to_list() == ["teacher"] * 3
    assert frame["id"].to_list() == ["a", "b", "c"]
    assert frame["prediction"].to_list() == ["tac ", "dog", None]
    assert frame["score"].to_list() == [1.0, 0.0, 0.0]


def test_student_answers_batched_and_deterministic(tiny_student: Path) -> None:
    prompts = [student_prompt(STUDENT_TEMPLATE, text) for text in ("reverse planet", "upper cat", "reverse stone")]
    params = params_module.EvaluateParams(max_new_tokens=4, batch_size=2)
    first = evaluate.student_answers(str(tiny_student), prompts, 0, params)
    second = evaluate.student_answers(str(tiny_student), prompts, 0, params)
    assert len(first) == len(prompts)
    assert all(isinstance(answer, str) for answer in first)
    assert first == second


def test_report_renders_scores() -> None:
    metrics = {"rows": 3, "student_before": 0.125, "student_after": 0.5, "teacher": 0.875,
               "gap_closed": 0.5, "student_vs_teacher": 0.5714,
               "forgetting_probe": {"rows": 200, "general_eval": "data/general/eval.jsonl", "forgetting": 0.25,
                                    "loss": {"student_before": 2.0, "student_after": 2.25}}}
    by_op = pl.DataFrame({"op": ["reverse", "upper"], "student_before": [0.0, 0.25],
                          "student_after": [0.5, 0.5], "teacher": [1.0, 0.75]})
    examples = pl.DataFrame({"instruction": ["reverse cat"], "reference": ["tac"], "prediction": ["cat"]})
    text = evaluate.report(metrics, by_op, examples)
    assert "| system | score |" in text
    for name in ("student_before", "student_after", "teacher"):
        assert f"| {name} | {metrics[name]:.3f} |" in text
    assert "| reverse | 0.000 | 0.500 | 1.000 |" in text
    assert "| reverse cat | tac | cat |" in text
    assert "Teacher gap closed: 0.5" in text
    assert "Held-out KL" not in text
    assert ("Forgetting probe (200 general held-out rows, data/general/eval.jsonl), loss per answer token: "
            "student_before 2.0, student_after 2.25; after - before = 0.25 (> 0: the student forgot).") in text
    with_kd = metrics | {"baseline_sft": 0.25, "heldout_kl_to_teacher": {"student_after": 0.1, "baseline_sft": 0.4}}
    text = evaluate.report(with_kd, by_op, examples)
    assert "| baseline_sft | 0.250 |" in text
    assert "Held-out KL to the teacher, per answer token: student_after 0.1, baseline_sft 0.4." in text
