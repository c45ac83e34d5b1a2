"""Instruction-Following Difficulty (IFD, Cherry-LLM: Li et al. 2023) of each row, measured with the student.

IFD = (mean cross-entropy of the answer tokens given the prompt) / (mean cross-entropy of the same answer
tokens with no prompt). Near 0: the instruction makes the answer easy to predict (little left to learn);
higher: the instruction helps less, so the row is harder and more informative; above 1 the instruction does
not help at all, and Cherry-LLM drops those rows (``score.max_ifd``).

Both passes score exactly the same answer ids: prompt and answer are tokenised separately and the ids
concatenated (answer + eos), never the joined string re-tokenised. The unconditioned pass starts from the
tokenizer's bos token (the one it adds, or the one it declares, as tiny-char's); a tokenizer with no bos
moves the first answer token into the context of both passes. A row whose answer is empty, or cut away
by ``max_length``, gets None.

Cost: two forward passes of the student over every row (no generation). On a 2-core CPU the tiny-char
student (4 layers, 192 wide) scores about 600 demo rows/s with both cores free (500 rows of "reverse planet"
-> "tenalp" rendered with templates/student.txt, batch_size 32; 400 rows/s on one thread), but only 13-80
rows/s when another process holds a core (two torch threads then wait on each other). Memory per batch is
batch_size x length x vocab floats of logits: lower ``batch_size`` for a student with a large vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

from distill.device import for_inference, use_all_cores
from distill.student import load_model, load_tokenizer

Pass = tuple[list[int], list[int]]  # (context ids, scored ids): labels are -100 over the context


def passes(tokenizer, prompt: str, answer: str, max_length: int) -> tuple[Pass, Pass] | None:
    """The conditioned and unconditioned (context, scored ids) of one row; None when nothing is left to score."""
    if not answer:
        return None
    bos = tokenizer.bos_token_id
    prefix = [bos] if bos is not None and tokenizer("a")["input_ids"][:1] == [bos] else []
    start = [bos] if bos is not None else []
    prompt_ids = prefix + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    answer_ids += [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    answer_ids = answer_ids[: max(0, max_length - max(len(prompt_ids), len(start)))]
    lead: list[int] = []
    if not start or not prompt_ids:  # the first answer token has nothing to be predicted from in one pass
        lead, answer_ids = answer_ids[:1], answer_ids[1:]
    if not answer_ids:
        return None
    return (prompt_ids + lead, answer_ids), (start + lead, answer_ids)


def mean_losses(model, rows: Sequence[Pass], pad_id: int, batch_size: int) -> list[float]:
    """Mean cross-entropy of each row's scored ids given its context; right-padded batches, shortest first."""
    import torch
    import torch.nn.functional as F

    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
    losses = [0.0] * len(rows)
    for begin in range(0, len(order), batch_size):
        chunk = order[begin : begin + batch_size]
        width = max(len(rows[i][0]) + len(rows[i][1]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            context, scored = rows[i]
            ids[row, : len(context) + len(scored)] = torch.tensor(context + scored)
            labels[row, len(context) : len(context) + len(scored)] = torch.tensor(scored)
            mask[row, : len(context) + len(scored)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits[:, :-1].float()
        targets = labels[:, 1:].to(model.device)
        nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")
        means = nll.sum(1) / (targets != -100).sum(1)
        for row, i in enumerate(chunk):
            losses[i] = float(means[row])
    return losses


def ifd_scores(model_path: str, prompts: Sequence[str], answers: Sequence[str], seed: int = 0,
               batch_size: int = 32, max_length: int = 256, device: str = "auto") -> list[float | None]:
    """IFD per (prompt, answer) row with the student at ``model_path`` (prompts already rendered with its
    template); None where the answer is empty or truncated away. Deterministic for a given seed."""

    if len(prompts) != len(answers):
        raise ValueError(f"ifd_scores got {len(prompts)} prompts and {len(answers)} answers: they pair up row by row")
    use_all_cores()
    tokenizer = load_tokenizer(model_path)
    model = for_inference(load_model(model_path, seed), device)
    pairs = [passes(tokenizer, prompt, answer, max_length) for prompt, answer in zip(prompts, answers, strict=True)]
    kept = [pair for pair in pairs if pair is not None]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked out either way
    conditioned = iter(mean_losses(model, [pair[0] for pair in kept], pad_id, batch_size))
    alone = iter(mean_losses(model, [pair[1] for pair in kept], pad_id, batch_size))
    scores: list[float | None] = []
    for pair in pairs:
        if pair is None:
            scores.append(None)
            continue
        given, without = next(conditioned), next(alone)
        scores.append(given / without if without > 0 else None)
    return scores
