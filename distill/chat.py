"""What the student sees, rendered in one place for training, evaluation, sampling, IFD and KD.

A seed becomes *turns*: its earlier conversation (``context``, a JSON list of ``{"role", "content"}``; "" = none),
then the final user turn, ``student.prompt_template`` filled with the instruction and input. Training and eval
render the same turns the same way, so the student is trained on exactly the prompt it is later asked.

- A student with a chat template sees them through it (``render_prompt``); ``render_example`` splits a
  rendered conversation into (prompt, completion), the completion ending at the template's end-of-turn token.
- A student without one sees plain text: earlier turns as ``Role: content`` lines, then the user content; with no
  context that is exactly ``distill.prompts.student_prompt``, so template-less students see what they always did.
- BOS: a template that writes ``bos_token`` first would get a second one from tokenisation, which adds it itself.
  When the tokenizer adds BOS, that leading ``bos_token`` is stripped from the rendered text; so callers tokenise
  a rendered prompt normally (``add_special_tokens=True``) and get BOS exactly once, with or without a template.
- A template that refuses a system turn (Gemma's "System role not supported") gets the system text merged into
  the first user turn instead, with one notice per process.
"""

from __future__ import annotations

import json
import sys

from jinja2 import TemplateError

from distill.prompts import student_prompt

ROLES = ("system", "user", "assistant")
_noticed: set[str] = set()  # students whose system turns were merged (one notice each per process)


def parse_context(context: str) -> list[dict]:
    """The earlier turns a seed carries; "" is none."""
    if not context.strip():
        return []
    try:
        turns = json.loads(context)
    except ValueError as error:
        raise ValueError(f"context is not JSON ({error}): expected a list of turns or \"\"") from None
    if not isinstance(turns, list) or not all(
            isinstance(turn, dict) and turn.get("role") in ROLES and isinstance(turn.get("content"), str)
            for turn in turns):
        raise ValueError('context must be a JSON list of {"role": "system"|"user"|"assistant", "content": str}, '
                         f"got {context[:200]!r}")
    return [{"role": turn["role"], "content": turn["content"]} for turn in turns]


def student_turns(instruction: str, input_text: str, context: str, template: str) -> list[dict]:
    """The context's turns, then the final user turn."""
    return parse_context(context) + [{"role": "user", "content": student_prompt(template, instruction, input_text)}]


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def plain_prompt(turns: list[dict]) -> str:
    """Without a chat template: earlier turns as ``Role: content`` lines, then the final user content as is."""
    *earlier, last = turns
    if last["role"] != "user":
        raise ValueError(f"the last turn must be the user's, got {last['role']!r}")
    return "".join(f"{turn['role'].capitalize()}: {turn['content']}\n" for turn in earlier) + last["content"]


def render_prompt(tokenizer, turns: list[dict]) -> str:
    """What the student is asked: through its chat template (with the generation prompt), else plain text."""
    if not has_chat_template(tokenizer):
        return plain_prompt(turns)
    return _strip_bos(tokenizer, _apply(tokenizer, turns, add_generation_prompt=True))


def render_example(tokenizer, turns: list[dict], response: str) -> tuple[str, str]:
    """(prompt, completion) to train on; the prompt is ``render_prompt``'s, byte for byte.

    With a chat template the completion is the rest of the rendered conversation: the response and the template's
    end-of-turn token. Anything after the last eos token (ChatML's newline) is dropped: generation stops at eos, and
    TRL appends eos to a completion that does not end with one, which would train a second one.
    """
    prompt = render_prompt(tokenizer, turns)
    if not has_chat_template(tokenizer):
        return prompt, response
    full = _strip_bos(tokenizer, _apply(tokenizer, turns + [{"role": "assistant", "content": response}],
                                        add_generation_prompt=False))
    if not full.startswith(prompt):
        raise ValueError(f"student {_name(tokenizer)}: its chat template renders the prompt differently once the "
                         f"answer follows (prompt {prompt[-80:]!r}, conversation {full[:len(prompt) + 40][-120:]!r}), "
                         "so training would not see the prompt asked at eval; use a template whose generation prompt "
                         "is a prefix of the rendered conversation (chat_template in the student's tokenizer files)")
    return prompt, _end_at_eos(tokenizer, full[len(prompt):])


def _name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", "") or "(unnamed)"


def _apply(tokenizer, turns: list[dict], add_generation_prompt: bool) -> str:
    """The chat template's text; a refused system turn is merged into the first user turn and tried again."""
    try:
        return tokenizer.apply_chat_template(turns, add_generation_prompt=add_generation_prompt, tokenize=False)
    except (TemplateError, TypeError, ValueError) as error:
        if not any(turn["role"] == "system" for turn in turns):
            raise _template_error(tokenizer, error) from None
        first = error
    try:
        text = tokenizer.apply_chat_template(merge_system(turns), add_generation_prompt=add_generation_prompt,
                                             tokenize=False)
    except (TemplateError, TypeError, ValueError) as error:
        raise _template_error(tokenizer, first, error) from None
    if _name(tokenizer) not in _noticed:
        _noticed.add(_name(tokenizer))
        print(f"chat: student {_name(tokenizer)}'s chat template refuses a system turn ({first}); its text is "
              "merged into the first user turn", file=sys.stderr)
    return text


def merge_system(turns: list[dict]) -> list[dict]:
    """System turns folded into the first user turn: ``system + "\\n\\n" + user``."""
    system = "\n\n".join(turn["content"] for turn in turns if turn["role"] == "system")
    rest = [dict(turn) for turn in turns if turn["role"] != "system"]
    first_user = next((turn for turn in rest if turn["role"] == "user"), None)
    if first_user is None:
        raise ValueError("a system turn needs a user turn to merge into")
    first_user["content"] = f"{system}\n\n{first_user['content']}"
    return rest


def _template_error(tokenizer, error: Exception, retried: Exception | None = None) -> ValueError:
    also = f"; with the system turn merged into the first user turn: {retried}" if retried else ""
    return ValueError(f"student {_name(tokenizer)}: its chat template failed on these turns: {error}{also}. Fix the "
                      "chat_template in the student's tokenizer files, or give seeds a context whose roles it accepts")


def _adds_bos(tokenizer) -> bool:
    """Whether tokenising text puts BOS first by itself."""
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id and ids != tokenizer("a", add_special_tokens=False)[
        "input_ids"]


def _strip_bos(tokenizer, text: str) -> str:
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and _adds_bos(tokenizer):
        return text[len(bos):]
    return text


def _end_at_eos(tokenizer, completion: str) -> str:
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos in completion and not completion[completion.rindex(eos) + len(eos):].strip():
        return completion[: completion.rindex(eos) + len(eos)]
    return completion


def frame_turns(frame, template: str) -> list[list[dict]]:
    """The turns of every row of a polars frame with ``instruction``, ``input`` and (optionally) ``context``."""
    contexts = frame["context"] if "context" in frame.columns else [""] * frame.height
    return [student_turns(instruction, input_text, context or "", template)
            for instruction, input_text, context in zip(frame["instruction"], frame["input"], contexts, strict=True)]


def frame_prompts(tokenizer, frame, template: str) -> list[str]:
    """What the student is asked for each row of ``frame`` (evaluation, sampling, IFD, reward scoring)."""
    return [render_prompt(tokenizer, turns) for turns in frame_turns(frame, template)]


def example_ids(tokenizer, turns: list[dict], response: str) -> tuple[list[int], list[int], list[int]]:
    """(prompt, answer, end) token ids of one training example, for code that tokenises examples itself (KD, the
    forgetting probe): the prompt as the student is asked it, the answer alone (the teacher's stored tokens align
    with it), then what closes it, the chat template's end of turn or else eos, so it trains the ending TRL does."""
    prompt, completion = render_example(tokenizer, turns, response)
    if has_chat_template(tokenizer):
        tail = completion[len(response):] if completion.startswith(response) else ""
        end = tokenizer(tail, add_special_tokens=False)["input_ids"]
    else:
        end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return tokenizer(prompt)["input_ids"], tokenizer(response, add_special_tokens=False)["input_ids"], end
