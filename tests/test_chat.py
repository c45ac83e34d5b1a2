"""distill/chat.py: what a student sees, with and without a chat template, and the tiny-chat student it is tested on.

The caller's side of assistant-only loss: a (prompt, completion) pair from ``render_example`` given to TRL's
SFTTrainer (``completion_only_loss=True``) is tokenised as prompt and prompt+completion, and the labels are -100
on the prompt's tokens; so training learns the answer and the end-of-turn token, never the prompt.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distill.chat import parse_context, render_example, render_prompt, student_turns
from distill.prompts import student_prompt
from distill.student import build_tiny_chat_student, load_model, load_tokenizer, prepare_tokenizer

CONTEXT = json.dumps([{"role": "system", "content": "You answer in one word."},
                      {"role": "user", "content": "Reverse the word cat."},
                      {"role": "assistant", "content": "tac"}])
# Gemma's shape: BOS written by the template, turns as <start_of_turn>, and no system role.
GEMMA_LIKE = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
              "supported') }}{% endif %}{% for message in messages %}{{ '<start_of_turn>' + ('model' if "
              "message['role'] == 'assistant' else message['role']) + '\\n' + message['content'] + "
              "'<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}"
              "{% endif %}")


def student_copy(source: Path, folder: Path, chat_template: str | None = None, bos_first: bool = False) -> Path:
    """A copy of a student's tokenizer in ``folder``, with another chat template and/or a BOS that tokenising
    adds itself (as Llama's and Gemma's tokenizers do)."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    tokenizer = load_tokenizer(str(source))
    if bos_first:
        core = Tokenizer.from_file(str(source / "tokenizer.json"))
        core.post_processor = processors.TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", tokenizer.convert_tokens_to_ids("<bos>"))])
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                            pad_token="<pad>")
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    return folder


def test_tiny_chat_loads_offline_with_a_chat_template_and_pads_with_eos(tiny_chat: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_chat))
    assert tokenizer.chat_template and 900 <= len(tokenizer) <= 1000
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"  # it ships no pad token
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert len(tokenizer(special, add_special_tokens=False)["input_ids"]) == 1
    text = "Reverse the word planet, then count its letters: 6."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text  # byte-level: lossless
    model = load_model(str(tiny_chat), seed=0)  # config only: initialised from the seed
    assert model.config.eos_token_id == tokenizer.eos_token_id and model.config.vocab_size == len(tokenizer)


def test_tiny_chat_build_is_deterministic_and_matches_the_shipped_files(tiny_chat: Path, tmp_path: Path) -> None:
    corpus = tiny_chat.parent / "tiny-chat-corpus.txt"
    build_tiny_chat_student(tmp_path / "a", corpus)
    build_tiny_chat_student(tmp_path / "b", corpus)
    shipped = sorted(path.name for path in tiny_chat.iterdir())
    assert sorted(path.name for path in (tmp_path / "a").iterdir()) == shipped
    for name in shipped:
        built = (tmp_path / "a" / name).read_bytes()
        assert built == (tmp_path / "b" / name).read_bytes() == (tiny_chat / name).read_bytes(), name


def test_a_conversation_renders_through_the_chat_template(tiny_chat: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_chat))
    turns = student_turns("Reverse the word dog.", "", CONTEXT, "{instruction}\n")
    prompt = render_prompt(tokenizer, turns)
    assert prompt == ("<|im_start|>system\nYou answer in one word.<|im_end|>\n"
                      "<|im_start|>user\nReverse the word cat.<|im_end|>\n"
                      "<|im_start|>assistant\ntac<|im_end|>\n"
                      "<|im_start|>user\nReverse the word dog.\n<|im_end|>\n"
                      "<|im_start|>assistant\n")
    train_prompt, completion = render_example(tokenizer, turns, "god")
    assert train_prompt == prompt  # trained on exactly what eval asks
    assert completion == "god<|im_end|>"  # the end-of-turn token, and nothing after it (TRL adds no second one)


def test_completion_tokens_are_the_tail_of_the_example(tiny_chat: Path) -> None:
    """The caller masks by length: tokenise the prompt (add_special_tokens=True) and prompt + completion the same
    way; the completion's tokens are the tail, and only they get labels."""
    tokenizer = load_tokenizer(str(tiny_chat))
    prompt, completion = render_example(tokenizer, student_turns("Spell cat.", "", CONTEXT, "{instruction}"), "c a t")
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = tokenizer(prompt + completion)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids
    assert ids[len(prompt_ids):] == tokenizer(completion, add_special_tokens=False)["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id and ids[-2] != tokenizer.eos_token_id


def test_trl_sft_labels_only_the_completion(tiny_chat: Path, tmp_path: Path) -> None:
    """TRL 1.16's SFTTrainer on render_example pairs: -100 on every prompt token, the completion and its single
    end-of-turn token labelled, padding (with eos) -100 in the collated batch."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tokenizer = load_tokenizer(str(tiny_chat))
    examples = [render_example(tokenizer, student_turns(text, "", context, "{instruction}\n"), answer)
                for text, context, answer in [("Reverse the word dog.", CONTEXT, "god"),
                                              ("Count from one to three.", "", "one two three")]]
    args = SFTConfig(output_dir=str(tmp_path), completion_only_loss=True, max_length=256, report_to="none",
                     use_cpu=True, dataloader_num_workers=0)
    trainer = SFTTrainer(model=load_model(str(tiny_chat), seed=0), args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_list([{"prompt": p, "completion": c} for p, c in examples]))
    rows = [trainer.train_dataset[i] for i in range(len(examples))]
    for (prompt, completion), row in zip(examples, rows, strict=True):
        size = len(tokenizer(prompt)["input_ids"])
        assert row["input_ids"] == tokenizer(prompt + completion)["input_ids"]  # no second eos appended
        assert row["labels"] == [-100] * size + row["input_ids"][size:]
        assert row["labels"][-1] == tokenizer.eos_token_id
    batch = trainer.data_collator(rows)
    for row, labels in zip(rows, batch["labels"].tolist(), strict=True):
        assert labels == row["labels"] + [-100] * (len(labels) - len(row["labels"]))  # right-padded, unlabelled


def test_template_less_student_sees_todays_prompt(tiny_char: Path, student_template: str) -> None:
    tokenizer = load_tokenizer(str(tiny_char))
    assert not tokenizer.chat_template
    plain = student_turns("Reverse the word dog.", "", "", student_template)
    assert render_prompt(tokenizer, plain) == student_template.format(instruction="Reverse the word dog.", input="")
    assert render_example(tokenizer, plain, "god") == (render_prompt(tokenizer, plain), "god")
    with_input = "{instruction}\nInput: {input}\n"
    turns = student_turns("Reverse it.", "dog", "", with_input)
    assert render_prompt(tokenizer, turns) == student_prompt(with_input, "Reverse it.", "dog")
    no_input = student_turns("Reverse it.", "dog", "", "{instruction}\n")  # no {input}: after a blank line
    assert render_prompt(tokenizer, no_input) == "Reverse it.\n\ndog"
    assert render_prompt(tokenizer, student_turns("Reverse the word dog.", "", CONTEXT, "{instruction}\n")) == (
        "System: You answer in one word.\nUser: Reverse the word cat.\nAssistant: tac\nReverse the word dog.\n")


def test_a_bad_context_is_refused() -> None:
    assert parse_context("") == parse_context("  ") == []
    for bad in ("not json", '{"role": "user"}', '[{"role": "tool", "content": "x"}]', '[{"role": "user"}]'):
        with pytest.raises(ValueError, match="context"):
            parse_context(bad)


def test_a_template_without_a_system_role_gets_it_merged(tiny_char: Path, tmp_path: Path, capsys) -> None:
    folder = student_copy(tiny_char, tmp_path / "gemma-like", chat_template=GEMMA_LIKE, bos_first=True)
    tokenizer = load_tokenizer(str(folder))
    turns = student_turns("Reverse the word dog.", "", CONTEXT, "{instruction}")
    prompt = render_prompt(tokenizer, turns)
    assert prompt == ("<start_of_turn>user\nYou answer in one word.\n\nReverse the word cat.<end_of_turn>\n"
                      "<start_of_turn>model\ntac<end_of_turn>\n"
                      "<start_of_turn>user\nReverse the word dog.<end_of_turn>\n<start_of_turn>model\n")
    assert render_example(tokenizer, turns, "god") == (prompt, "god<end_of_turn>\n")  # eos is not end-of-turn here
    assert capsys.readouterr().err.count("refuses a system turn") == 1  # one notice per process
    # the template wrote BOS, tokenising adds it: stripped from the text, so it is there exactly once
    assert tokenizer(prompt)["input_ids"].count(tokenizer.bos_token_id) == 1


def test_a_bos_the_tokenizer_does_not_add_stays_in_the_text(tiny_char: Path, tmp_path: Path) -> None:
    folder = student_copy(tiny_char, tmp_path / "bos-in-text", chat_template=GEMMA_LIKE)
    tokenizer = load_tokenizer(str(folder))
    prompt = render_prompt(tokenizer, student_turns("Reverse the word dog.", "", "", "{instruction}"))
    assert prompt.startswith("<bos><start_of_turn>user\n")
    assert tokenizer(prompt)["input_ids"].count(tokenizer.bos_token_id) == 1


def test_other_template_errors_name_the_student(tiny_char: Path, tmp_path: Path) -> None:
    folder = student_copy(tiny_char, tmp_path / "broken", chat_template="{{ raise_exception('no way') }}")
    with pytest.raises(ValueError, match=r"student .*broken.*no way.*Fix the chat_template"):
        render_prompt(load_tokenizer(str(folder)), student_turns("Hi.", "", CONTEXT, "{instruction}"))


def test_a_template_whose_prompt_is_no_prefix_is_refused(tiny_char: Path, tmp_path: Path) -> None:
    """The generation prompt says ``model``, the rendered answer ``assistant``: training would see another prompt."""
    mismatch = GEMMA_LIKE.replace("('model' if message['role'] == 'assistant' else message['role'])",
                                  "message['role']")
    folder = student_copy(tiny_char, tmp_path / "mismatch", chat_template=mismatch)
    with pytest.raises(ValueError, match="renders the prompt differently.*generation prompt is a prefix"):
        render_example(load_tokenizer(str(folder)), student_turns("Hi.", "", "", "{instruction}"), "Hello.")


@pytest.mark.parametrize("side", ["left", "right"])
def test_batches_pad_on_either_side(tiny_chat: Path, tiny_char: Path, side: str) -> None:
    for student in (tiny_chat, tiny_char):
        tokenizer = load_tokenizer(str(student), padding_side=side)
        texts = [render_prompt(tokenizer, student_turns(text, "", "", "{instruction}"))
                 for text in ("Hi.", "Count to ten.")]
        batch = tokenizer(texts, padding=True)
        short, long = batch["attention_mask"]
        assert all(long) and 0 in short
        assert short == (sorted(short) if side == "left" else sorted(short, reverse=True))  # pads on that side
        ids = [token for token, keep in zip(batch["input_ids"][0], short, strict=True) if keep]
        assert ids == tokenizer(texts[0])["input_ids"]


def test_no_pad_and_no_eos_is_a_clear_error(tiny_char: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    bare = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(str(tiny_char / "tokenizer.json")))
    bare.save_pretrained(tmp_path / "bare")
    with pytest.raises(ValueError, match="neither a pad nor an eos token.*set pad_token"):
        load_tokenizer(str(tmp_path / "bare"))
    with pytest.raises(ValueError, match="padding_side"):
        prepare_tokenizer(load_tokenizer(str(tiny_char)), "middle")
    shutil.rmtree(tmp_path / "bare")


def test_a_chat_seed_is_trained_on_exactly_the_prompt_it_is_asked_at_eval(tiny_chat: Path, tmp_path: Path) -> None:
    """Through the stages' own paths: ingest's normalise, the train stage's pairs, evaluate's prompts."""
    import polars as pl

    from distill.chat import frame_prompts
    from distill.seeds import normalise, read_records
    from distill.transfer.data import training_pairs

    turns = [{"role": "system", "content": "Answer in one sentence."}, {"role": "user", "content": "A word: owl"},
             {"role": "assistant", "content": "Noted: owl."}, {"role": "user", "content": "Spell it backwards."}]
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": turns + [{"role": "assistant", "content": "owl backwards is lwo."}]}))
    seed = normalise(path, read_records(path), "eval")
    tokenizer = load_tokenizer(str(tiny_chat))
    rows = seed.with_columns(response=pl.lit("owl backwards is lwo."), keep=pl.lit(True))
    (pair,) = training_pairs(rows, "{instruction}", tokenizer)
    (asked,) = frame_prompts(tokenizer, seed, "{instruction}")
    assert pair["prompt"] == asked == tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    assert pair["completion"] == "owl backwards is lwo.<|im_end|>"
