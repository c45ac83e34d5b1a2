"""A reasoning model's thinking, kept apart from its answer.

Teachers return their reasoning in one of three ways: a separate field of the message
(``reasoning_content``: vLLM, DeepSeek; ``reasoning``: newer vLLM, OpenRouter), a ``<think>...</think>`` block
at the start of the content (QwQ, Qwen3, R1 served raw), or, asked for chain of thought, as text before the
final ``Answer:`` line (distill/prompts.py). Rows keep the reasoning in its own column (GENERATED.reasoning);
the student is trained on it or not (``student.reasoning``), inside its own think tags (``student.think_tags``).
"""

from __future__ import annotations

THINK = ("<think>", "</think>")  # the tags reasoning models write inline
REASONING_FIELDS = ("reasoning_content", "reasoning")  # where servers put it beside the content


def split(text: str, tags: tuple[str, str] = THINK) -> tuple[str | None, str]:
    """``(reasoning, answer)`` of a text that may open with a think block; reasoning None when there is none.
    An unclosed block is all reasoning (the answer was cut off): the answer is ""."""
    opening, closing = tags
    stripped = text.lstrip()
    if not stripped.startswith(opening):
        # some servers drop the opening tag from the content but keep the closing one (R1 chat templates)
        head, found, tail = text.partition(closing)
        if found and opening not in head:
            return head.strip() or None, tail.strip()
        return None, text.strip()
    body = stripped[len(opening):]
    reasoning, found, answer = body.partition(closing)
    if not found:
        return body.strip() or None, ""
    return reasoning.strip() or None, answer.strip()


def of_message(message: dict) -> tuple[str | None, str | None]:
    """``(reasoning, content)`` of a chat completion message: a reasoning field first, else an inline think block.
    Content None when the message has no text content."""
    content = message.get("content")
    content = content if isinstance(content, str) else None
    for field in REASONING_FIELDS:
        value = message.get(field)
        if isinstance(value, str) and value.strip():
            return value.strip(), content
    if content is None:
        return None, None
    reasoning, answer = split(content)
    return reasoning, answer if reasoning is not None else content


def render(reasoning: str | None, answer: str, tags: tuple[str, str] = THINK) -> str:
    """What a student trained on reasoning writes: the reasoning inside its think tags, then the answer."""
    if not reasoning:
        return answer
    return f"{tags[0]}\n{reasoning.strip()}\n{tags[1]}\n\n{answer}"


def answer_of(text: str, tags: tuple[str, str] = THINK) -> str:
    """The part of a student's (or teacher's) text that is scored: what follows its reasoning."""
    return split(text, tags)[1]


