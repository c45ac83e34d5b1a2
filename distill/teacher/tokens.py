"""Counting a teacher's tokens with its own tokenizer (``teacher.tokenizer``), so estimates and budgets are exact.

A prompt is counted the way a server that uses the tokenizer bills it: the chat template applied to the
messages with the generation prompt (vLLM, ``transformers serve``, llama.cpp do exactly this); a tokenizer
without a chat template counts the messages' contents joined by newlines. An answer is counted as its text
encoded without special tokens. Without ``teacher.tokenizer`` the estimate divides characters by
``chars_per_token`` and says it is approximate (distill/teacher/estimate.py).
"""

from __future__ import annotations

from functools import lru_cache


def content_text(content: object) -> str:
    """A message's text: a string, or the text parts of a content list (the stand-in reads prompts with it too)."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


class TokenCounter:
    """Prompt and completion token counts of one tokenizer (an HF id or a local path)."""

    def __init__(self, name_or_path: str):
        from transformers import AutoTokenizer

        from distill.student import pretrained  # the models section's code policy

        self.name = name_or_path
        try:
            self.tokenizer = pretrained(AutoTokenizer.from_pretrained, name_or_path)
        except (OSError, ValueError) as error:
            raise ValueError(f"teacher.tokenizer={name_or_path!r} cannot be loaded: {error}") from None

    def prompt_tokens(self, messages: list[dict]) -> int:
        """Tokens of the prompt as the server sees it (its chat template, with the generation prompt)."""
        plain = [{"role": m.get("role", "user"), "content": content_text(m.get("content"))} for m in messages]
        if getattr(self.tokenizer, "chat_template", None):
            encoded = self.tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=True)
            ids = encoded["input_ids"] if isinstance(encoded, dict) or hasattr(encoded, "keys") else encoded
            return len(ids)
        return self.completion_tokens("\n".join(m["content"] for m in plain))

    def completion_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))


@lru_cache(maxsize=8)
def counter(name_or_path: str) -> TokenCounter:
    """One counter per tokenizer per process (loading one takes a second)."""
    return TokenCounter(name_or_path)
