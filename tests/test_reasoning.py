"""A reasoning teacher's thinking: kept apart from its answer, trained on or not (student.reasoning), written in
the student's think tags, and never scored (only what follows the think block is)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from distill import params as params_module
from distill import task
from distill.entry import StageError
from distill.measure.metrics import score_system, scored_part
from distill.measure.sampling import decode
from distill.prompts import parse_choice
from distill.reasoning import answer_of, of_message, render, split
from distill.student import load_tokenizer
from distill.transfer.arguments import common_args
from distill.transfer.data import TrainData, think_tags, training_pairs, training_rows
from distill.transfer.training import TRAINED_ON, make_trainer, trained_on
from stages import train as train_stage

REPO = Path(__file__).resolve().parents[1]
THINK = ("<think>", "</think>")

# --- distill/reasoning.py ----------------------------------------------------------------------------------------


def test_split_an_inline_block_from_its_answer() -> None:
    assert split("<think>\nadd them\n</think>\n\n4") == ("add them", "4")
    assert split("  <think>a</think>b") == ("a", "b")  # leading whitespace before the block
    assert split("<think>\n\n</think>\n\n4") == (None, "4")  # an empty block is no reasoning
    assert split("[[r]]why[[/r]] so", ("[[r]]", "[[/r]]")) == ("why", "so")


def test_split_without_tags_is_all_answer() -> None:
    assert split("just 4") == (None, "just 4")
    assert split("the tag <think> late, never closed") == (None, "the tag <think> late, never closed")


def test_an_unclosed_block_is_all_reasoning_and_no_answer() -> None:
    """Cut by max_new_tokens inside its thinking: there is no answer yet."""
    assert split("<think>\nlet me see, first") == ("let me see, first", "")
    assert split("<think>") == (None, "")


def test_a_closing_tag_alone_ends_the_reasoning() -> None:
    """R1 chat templates put <think> in the generation prompt: the text starts inside the block."""
    assert split("add them\n</think>\n\n4") == ("add them", "4")
    assert split("</think>4") == (None, "4")


def test_of_message_prefers_the_reasoning_field() -> None:
    assert of_message({"content": "4", "reasoning_content": " add them "}) == ("add them", "4")
    assert of_message({"content": "4", "reasoning": "add them"}) == ("add them", "4")
    # a blank field is no reasoning: the content's own block is looked at
    assert of_message({"content": "<think>why</think>4", "reasoning_content": "  "}) == ("why", "4")
    assert of_message({"content": "<think>\nadd them\n</think>\n\n4"}) == ("add them", "4")
    assert of_message({"content": " 4 "}) == (None, " 4 ")  # no reasoning: the content as it is
    assert of_message({"content": None, "reasoning_content": "thinking"}) == ("thinking", None)
    assert of_message({}) == (None, None)


def test_render_and_answer_of() -> None:
    assert render("add them", "4") == "<think>\nadd them\n</think>\n\n4"
    assert render(None, "4") == render("", "4") == "4"
    assert render(" why ", "so", ("<r>", "</r>")) == "<r>\nwhy\n</r>\n\nso"
    assert split(render("add them", "4")) == ("add them", "4")
    assert answer_of("<think>x</think>\n4") == "4"
    assert answer_of("<r>x</r> 4", ("<r>", "</r>")) == "4"
    assert answer_of("<think>cut off") == ""


def test_the_teacher_answer_never_carries_its_reasoning() -> None:
    """Evaluate's teacher answers are parse_choice of the stored message: a reasoning field or block is dropped."""
    assert parse_choice({"message": {"content": "4", "reasoning_content": "add them"}}) == "4"
    assert parse_choice({"message": {"content": "<think>\nadd them\n</think>\n\n4"}}) == "4"
    assert parse_choice({"message": {"content": "<think>\nadd them, and"}}) is None  # cut while thinking
    assert parse_choice({"message": {"content": " 4 "}}) == "4"


# --- training targets -----------------------------------------------------------------------------------------


def reasoned_rows() -> pl.DataFrame:
    return pl.DataFrame({
        "id": ["a", "b", "c"], "instruction": ["reverse cat", "upper dog", "reverse owl"], "input": ["", "", ""],
        "context": ["", "", ""], "response": ["tac", "DOG", "lwo"],
        "reasoning": ["reverse the letters: t, a, c", None, "skipped row"], "keep": [True, True, False],
    })


def special_think_tokenizer(tiny_chat: Path):
    """tiny-chat with <think> and </think> as single special tokens (as Qwen3 has them, added tokens)."""
    tokenizer = load_tokenizer(str(tiny_chat))
    tokenizer.add_special_tokens({"additional_special_tokens": list(THINK)}, replace_extra_special_tokens=False)
    return tokenizer


def student(reasoning: str, **fields: object) -> params_module.StudentParams:
    return params_module.StudentParams(model="m", prompt_template="t", reasoning=reasoning, **fields)


def test_think_tags_follow_student_reasoning() -> None:
    assert think_tags(student("drop")) is None
    assert think_tags(student("keep")) == THINK
    assert think_tags(student("keep", think_tags=("<r>", "</r>"))) == ("<r>", "</r>")


def test_drop_trains_on_the_answer_exactly_as_before(tiny_chat: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_chat))
    rows = reasoned_rows()
    before = training_pairs(rows.drop("reasoning"), "{instruction}", tokenizer)  # rows from before the column
    assert training_pairs(rows, "{instruction}", tokenizer, think_tags(student("drop"))) == before
    assert [pair["completion"] for pair in before] == ["tac<|im_end|>", "DOG<|im_end|>"]


def test_keep_trains_on_the_reasoning_inside_the_think_tags(tiny_chat: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_chat))
    rows = reasoned_rows()
    dropped = training_pairs(rows, "{instruction}", tokenizer)
    kept = training_pairs(rows, "{instruction}", tokenizer, THINK)
    assert [pair["prompt"] for pair in kept] == [pair["prompt"] for pair in dropped]  # the same question
    assert kept[0]["completion"] == "<think>\nreverse the letters: t, a, c\n</think>\n\ntac<|im_end|>"
    assert kept[1] == dropped[1]  # no reasoning: the answer alone
    assert kept[0]["prompt"].endswith("<|im_start|>assistant\n")
    # the same text through tiny-char, a student without a chat template
    plain = training_pairs(rows, "{instruction}", load_tokenizer("data/students/tiny-char"), ("<r>", "</r>"))
    assert plain[0] == {"prompt": "reverse cat", "completion": "<r>\nreverse the letters: t, a, c\n</r>\n\ntac"}


def test_think_tags_are_single_tokens_where_the_tokenizer_has_them(tiny_chat: Path) -> None:
    """The rendered text is the same either way; a tokenizer with the tags as tokens reads each as one id, the
    way TRL tokenises a pair (prompt + completion as one text)."""
    plain, special = load_tokenizer(str(tiny_chat)), special_think_tokenizer(tiny_chat)
    (with_plain, _), (with_special, _) = (training_pairs(reasoned_rows(), "{instruction}", tokenizer, THINK)
                                          for tokenizer in (plain, special))
    assert with_plain == with_special
    opening, closing = special.convert_tokens_to_ids(list(THINK))
    ids = special(text=with_special["prompt"] + with_special["completion"])["input_ids"]
    assert ids.count(opening) == ids.count(closing) == 1
    assert ids.index(opening) < ids.index(closing)
    assert special.convert_ids_to_tokens(ids[ids.index(opening) + 1]) == "Ċ"  # the newline after it, apart
    # tiny-chat has no such token: the tags are spelt in pieces, and read back the same
    pieces = plain(text=with_plain["completion"], add_special_tokens=False)["input_ids"]
    assert len(plain.tokenize("<think>")) > 1
    assert plain.decode(pieces) == with_plain["completion"]


def test_the_sft_trainer_sees_the_think_tags_as_single_tokens(tiny_chat: Path, tmp_path: Path,
                                                              train_params) -> None:
    """Through TRL's own dataset preparation (distill's sft trainer), with a student whose tokenizer has them."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = special_think_tokenizer(tiny_chat)
    config = LlamaConfig.from_pretrained(tiny_chat, vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         head_dim=16)
    pairs = training_pairs(reasoned_rows(), "{instruction}", tokenizer, THINK)
    params = train_params(tiny_chat, max_steps=1, batch_size=2)
    trainer = make_trainer(LlamaForCausalLM(config), tokenizer, params, common_args(params, tmp_path),
                           TrainData(pairs=pairs))
    first = trainer.train_dataset[0]
    opening, closing = tokenizer.convert_tokens_to_ids(list(THINK))
    trained = [token for token, label in zip(first["input_ids"], first["labels"], strict=True) if label != -100]
    assert trained.count(opening) == trained.count(closing) == 1
    assert tokenizer.decode(trained) == pairs[0]["completion"]


def test_a_chat_template_that_drops_the_reasoning_is_refused(tiny_chat: Path) -> None:
    """DeepSeek-R1 distills' templates keep only what follows </think> in an assistant turn."""
    tokenizer = load_tokenizer(str(tiny_chat))
    tokenizer.chat_template = (
        "{% for message in messages %}{% set content = message['content'].split('</think>')[-1].lstrip() %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    with pytest.raises(StageError, match="rewrites the target.*student.reasoning: drop"):
        training_pairs(reasoned_rows(), "{instruction}", tokenizer, THINK)
    assert training_pairs(reasoned_rows(), "{instruction}", tokenizer)[0]["completion"] == "tac<|im_end|>"


def test_replayed_general_rows_train_on_their_answer(tmp_path: Path, tiny_char: Path, train_params) -> None:
    general = tmp_path / "general.jsonl"
    general.write_text('{"instruction": "upper cow", "response": "COW"}\n')
    params = train_params(tiny_char, replay=params_module.ReplayParams(data=str(general), ratio=1.0))
    rows = training_rows(reasoned_rows(), params)
    assert rows["reasoning"].to_list() == ["reverse the letters: t, a, c", None, None, None]
    pairs = training_pairs(rows, "{instruction}", load_tokenizer(str(tiny_char)), THINK)
    assert [pair["completion"] for pair in pairs][1:] == ["DOG", "COW", "COW"]


def test_kd_with_reasoning_kept_is_refused_at_load() -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["student"]["reasoning"] = "keep"
    raw["train"]["objective"] = "sft"
    assert params_module.parse(copy.deepcopy(raw)).student.reasoning == "keep"  # sft trains on it
    raw["train"]["objective"] = "kd"
    with pytest.raises(params_module.ParamsError) as caught:
        params_module.parse(raw)
    message = str(caught.value)
    assert message.startswith("params.yaml: train.objective=kd with student.reasoning=keep: ")
    assert "answer tokens only" in message and "\n" not in message


# --- evaluation ---------------------------------------------------------------------------------------------------


def test_scored_part_is_the_answer_after_the_think_block() -> None:
    assert scored_part("<think>\nt-a-c\n</think>\n\ntac", THINK) == "tac"
    assert scored_part("t-a-c\n</think>\n\ntac", THINK) == "tac"  # the opening tag was in the prompt
    assert scored_part("<think>\nt-a-c, and then", THINK) == ""  # cut while thinking: an empty answer
    assert scored_part(" tac \n", THINK) == " tac \n"  # no tags: exactly what was scored before
    assert scored_part(None, THINK) is None
    assert scored_part("<think>x</think>tac", None) == "<think>x</think>tac"  # the teacher: as it is
    assert scored_part("<r>x</r> tac", ("<r>", "</r>")) == "tac"


def test_the_metric_ignores_a_think_block_and_predictions_keep_it() -> None:
    evals = pl.DataFrame({"id": ["a", "b", "c", "d"], "instruction": ["reverse cat"] * 4, "input": [""] * 4,
                          "reference": ["tac"] * 4})
    predictions = [["<think>\nthe letters backwards: tac\n</think>\n\ntac"], ["<think>\ncat is tac"], ["tac"],
                   ["<think>\nthinking\n</think>\n\ncat"]]
    frame = score_system(evals, "student_after", predictions, task.load("demo.words"), THINK)
    assert frame["score"].to_list() == [1.0, 0.0, 1.0, 0.0]
    assert frame["prediction"].to_list() == [samples[0] for samples in predictions]  # the whole text
    teacher = score_system(evals, "teacher", predictions, task.load("demo.words"))  # no tags: as before
    assert teacher["score"].to_list() == [0.0, 0.0, 1.0, 0.0]


def test_decoding_keeps_think_tags_a_tokenizer_marks_special(tiny_chat: Path) -> None:
    """Special tokens (padding, eos) are dropped from an answer; special think tags stay, or the answer's start
    would be lost with them."""
    tokenizer = special_think_tokenizer(tiny_chat)
    text = "<think>\nt-a-c\n</think>\n\ntac"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] * 2
    assert tokenizer.decode(ids, skip_special_tokens=True) != text  # what plain decoding would score
    assert decode(tokenizer, [ids], THINK) == [text]
    assert decode(tokenizer, [ids]) == tokenizer.batch_decode([ids], skip_special_tokens=True)
    plain = load_tokenizer(str(tiny_chat))
    plain_ids = plain(text, add_special_tokens=False)["input_ids"] + [plain.eos_token_id]
    assert decode(plain, [plain_ids], THINK) == plain.batch_decode([plain_ids], skip_special_tokens=True) == [text]


def test_the_train_stage_trains_on_the_kept_reasoning(tiny_student: Path, in_tmp: Path, train_params,
                                                      student_template: str) -> None:
    rows = reasoned_rows()
    params = train_params(tiny_student, max_steps=2, batch_size=2)
    _, metrics = train_stage.run(params, rows, pl.DataFrame(), pl.DataFrame(), in_tmp / "model", in_tmp / "baseline",
                                 THINK)
    assert metrics["examples"] == 2 and metrics["final_loss"] is not None
    saved = json.loads((in_tmp / "model" / TRAINED_ON).read_text())
    kept = training_pairs(rows, student_template, load_tokenizer(str(tiny_student)), THINK)
    assert kept[0]["completion"].startswith("<think>\n")
    assert saved["data_hash"] == trained_on(kept, params)["data_hash"]
