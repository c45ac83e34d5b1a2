"""Loading the student: any Hugging Face causal LM id or local path.

A local folder that holds a ``config.json`` but no weights is a model *built from a
config*: it is initialised from the seed, which is how the offline default gets a tiny
student without downloading anything. The default one lives in ``data/students/tiny-char``
with a character-level tokenizer kept in the repo; ``python -m distill.student`` rebuilds it.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

TINY_STUDENT_DIR = Path("data/students/tiny-char")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_config.json")

# Character-level vocabulary: printable ASCII plus the specials the trainer needs.
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHARS = list(string.printable[:95]) + ["\n"]


def has_weights(path: Path) -> bool:
    return any((path / name).exists() for name in WEIGHT_FILES)


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token is None:  # many causal LMs ship without one; batching needs it
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name_or_path: str, seed: int):
    """A causal LM: pretrained weights when there are any, else initialised from config."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    local = Path(name_or_path)
    if local.is_dir() and not has_weights(local):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(name_or_path))
    return AutoModelForCausalLM.from_pretrained(name_or_path)


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
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
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
    config.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(
        "Tiny character-level Llama for the offline demo: config and tokenizer only; weights are "
        "initialised from `train.seed`. Rebuild with `python -m distill.student`.\n"
    )
    print(json.dumps({"built": str(out_dir), "vocab_size": len(vocab)}))


if __name__ == "__main__":
    build_tiny_student()
