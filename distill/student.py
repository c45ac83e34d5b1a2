"""Loading the student: any Hugging Face causal LM id or local path.

A local folder that holds a ``config.json`` but no weights is a model *built from a
config*: it is initialised from the seed, which is how the offline default gets a tiny
student without downloading anything. The default one lives in ``data/students/tiny-char``
with a character-level tokenizer kept in the repo; ``python -m distill.student`` rebuilds it.
``data/students/tiny-chat`` is a real-shaped one (byte-level BPE, a ChatML chat template, eos = ``<|im_end|>``
and no pad token, like many instruct models), so chat-template students are tested offline too;
``python -m distill.student chat`` rebuilds it from the corpus kept next to it.
``data/students/tiny-math`` is the same shape for the math word problems: its BPE splits numbers
into digits and knows ``<think>`` and ``</think>`` as single tokens, so a student can learn to reason in them;
``python -m distill.student math`` rebuilds it from ``data/students/tiny-math-corpus.txt``
(written by the math example's seed script).

Every model and tokenizer the project loads goes through ``pretrained`` (here, and in reward.py, semantic.py,
rl.py, tokens.py), which follows the params' ``models`` section: a model's own Python code runs only with
``models.trust_remote_code``, and only safetensors weights load unless ``models.allow_pickle_checkpoints``
(a ``pytorch_model.bin`` is a pickle, which can run code as it loads). ``distill.params.load`` sets it for the
process (``use_models``); until then both are off.
"""

from __future__ import annotations

import json
import string
import sys
from collections.abc import Callable
from pathlib import Path

from distill.entry import StageError
from distill.params import models_policy

TINY_STUDENT_DIR = Path("data/students/tiny-char")
TINY_CHAT_DIR = Path("data/students/tiny-chat")
TINY_CHAT_CORPUS = Path("data/students/tiny-chat-corpus.txt")
TINY_MATH_DIR = Path("data/students/tiny-math")
TINY_MATH_CORPUS = Path("data/students/tiny-math-corpus.txt")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_config.json")

# Character-level vocabulary: printable ASCII plus the specials the trainer needs.
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHARS = list(string.printable[:95]) + ["\n"]

# ChatML, as Qwen and many instruct models write it: each turn closed by <|im_end|> and a newline.
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
CHAT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]  # added but not special, as in Qwen3: decoding with skip_special_tokens keeps
# them, so the reasoning can still be told from the answer


def has_weights(path: Path) -> bool:
    return any((path / name).exists() for name in WEIGHT_FILES)


class ModelPolicyError(StageError):
    """A model that needs what ``models`` in params.yaml does not allow; the message names the key."""


def pretrained(load: Callable, name_or_path: str, weights: bool = False, **options):
    """``load(name_or_path, ...)`` (a ``from_pretrained``) with the code and pickle policy; ``weights``: it loads a
    model's weights (not a tokenizer or config). A refusal names the params key that would allow it."""
    policy = models_policy()
    if weights and not policy.allow_pickle_checkpoints:
        local = Path(name_or_path)
        if local.is_dir() and (local / "pytorch_model.bin").exists() and not any(local.glob("*.safetensors*")):
            raise _pickle_refusal(name_or_path)
        options["use_safetensors"] = True
    try:
        return load(name_or_path, trust_remote_code=policy.trust_remote_code, **options)
    except ValueError as error:
        if "trust_remote_code" not in str(error):
            raise
        raise ModelPolicyError(
            f"{name_or_path}: the model ships its own Python code (config.json auto_map), which "
            "models.trust_remote_code=false does not run; set models.trust_remote_code: true in params.yaml only "
            "for a model whose code you have read") from None
    except OSError as error:
        if "safetensors" not in str(error) or not weights or policy.allow_pickle_checkpoints:
            raise
        raise _pickle_refusal(name_or_path) from None


def _pickle_refusal(name_or_path: str) -> ModelPolicyError:
    return ModelPolicyError(
        f"{name_or_path}: no model.safetensors, only a pickled checkpoint (pytorch_model.bin), which "
        "models.allow_pickle_checkpoints=false does not load (unpickling can run code); convert it to safetensors "
        "(save_pretrained writes them), or set models.allow_pickle_checkpoints: true in params.yaml for a "
        "checkpoint you trust")


def load_tokenizer(name_or_path: str, padding_side: str = "right"):
    from transformers import AutoTokenizer

    return prepare_tokenizer(pretrained(AutoTokenizer.from_pretrained, name_or_path), padding_side)


def prepare_tokenizer(tokenizer, padding_side: str = "right"):
    """Ready for batches: a pad token (eos when it has none, as many causal LMs ship) and the padding side asked
    for (left to generate, right to train and score)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side={padding_side!r}: expected 'left' or 'right'")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"student {tokenizer.name_or_path or '(unnamed)'}: its tokenizer has neither a pad nor "
                             "an eos token, and batches need one to pad with; set pad_token (or eos_token) in its "
                             "tokenizer_config.json")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_model(name_or_path: str, seed: int):
    """A causal LM: pretrained weights when there are any, else initialised from config."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    local = Path(name_or_path)
    if local.is_dir() and not has_weights(local):
        torch.manual_seed(seed)
        config = pretrained(AutoConfig.from_pretrained, name_or_path)
        return AutoModelForCausalLM.from_config(config, trust_remote_code=models_policy().trust_remote_code)
    return pretrained(AutoModelForCausalLM.from_pretrained, name_or_path, weights=True)


def save_config_only(out_dir: Path, tokenizer, config, readme: str) -> None:
    """A student folder of config and tokenizer, no weights: ``load_model`` initialises it from the seed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    config.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(readme)
    print(json.dumps({"built": str(out_dir), "vocab_size": config.vocab_size}))


def build_tiny_student(out_dir: Path = TINY_STUDENT_DIR) -> None:
    """Write the tiny student's config and character tokenizer (no weights)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + CHARS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one token per char
    core.decoder = decoders.Fuse()  # join characters back without spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=6,
        num_key_value_heads=6,
        max_position_embeddings=128,
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<bos>"],
        eos_token_id=vocab["<eos>"],
        tie_word_embeddings=True,
    )
    save_config_only(out_dir, tokenizer, config, "Tiny character-level Llama for the offline demo: config and "
                     "tokenizer only; weights are initialised from `train.seed`. Rebuild with `python -m "
                     "distill.student`.\n")


def save_bpe_chat_student(out_dir: Path, corpus: Path, vocab_size: int, readme: str, digits: bool = False,
                          think: bool = False) -> None:
    """A tiny Llama's config and a byte-level BPE tokenizer trained on ``corpus``, with a ChatML template (no
    weights). ``digits``: each digit a token of its own (as Llama's and Qwen's tokenizers split numbers);
    ``think``: ``<think>`` and ``</think>`` added as single tokens. No pad token on purpose: batching then pads
    with eos, the path most instruct models take. BPE training is deterministic: a rebuild writes the same files."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                          if digits else byte_level)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=CHAT_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(corpus.read_text(encoding="utf-8").splitlines(), trainer=trainer)
    if think:
        core.add_tokens([AddedToken(token, special=False, normalized=False) for token in THINK_TOKENS])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>",
                                        additional_special_tokens=CHAT_SPECIALS, chat_template=CHATML)
    vocab = core.get_vocab()
    config = LlamaConfig(
        vocab_size=core.get_vocab_size(),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=None,  # no pad token: batches pad with eos (prepare_tokenizer)
        tie_word_embeddings=True,
    )
    save_config_only(out_dir, tokenizer, config, readme)


def build_tiny_chat_student(out_dir: Path = TINY_CHAT_DIR, corpus: Path = TINY_CHAT_CORPUS) -> None:
    """The tiny chat student (tests/test_chat.py checks a rebuild writes the same tokenizer.json)."""
    save_bpe_chat_student(out_dir, corpus, 1000, "Tiny byte-level BPE Llama with a ChatML chat template, for "
                          "offline tests of chat students: config and tokenizer only; weights are initialised from "
                          "`train.seed`. Rebuild with `python -m distill.student chat` (from "
                          "data/students/tiny-chat-corpus.txt).\n")


def build_tiny_math_student(out_dir: Path = TINY_MATH_DIR, corpus: Path = TINY_MATH_CORPUS) -> None:
    """The tiny math student: like tiny-chat, but digits are single tokens (a tiny model then learns carrying
    digit by digit rather than a table of numbers) and ``<think>``/``</think>`` are one token each."""
    save_bpe_chat_student(out_dir, corpus, 800, "Tiny byte-level BPE Llama with a ChatML chat template for the "
                          "math word problems: digits split one a token, <think> and </think> single tokens; "
                          "config and tokenizer only; weights are initialised from `train.seed`. Rebuild with "
                          "`python -m distill.student math` (from data/students/tiny-math-corpus.txt, which the "
                          "math seed script writes).\n", digits=True, think=True)


BUILDERS = {"": build_tiny_student, "chat": build_tiny_chat_student, "math": build_tiny_math_student}

if __name__ == "__main__":
    if len(sys.argv) > 2 or (sys.argv[1:] or [""])[0] not in BUILDERS:
        sys.exit("usage: python -m distill.student [chat|math]  (no argument: tiny-char; chat: tiny-chat; "
                 "math: tiny-math)")
    BUILDERS[(sys.argv[1:] or [""])[0]]()
