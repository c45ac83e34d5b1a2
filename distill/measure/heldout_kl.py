"""Held-out KL: how far a student's next-token distribution is from the teacher's, on the teacher's own
held-out answers (teacher forcing over the stored top-k, the tail as one outcome). Lower is closer."""

from __future__ import annotations

import polars as pl

from distill import params as params_module
from distill.device import for_inference


def heldout_kl(model_path: str, evals: pl.DataFrame, answers: list[str | None], teacher: pl.DataFrame,
               template: str, max_length: int, device: str = "auto") -> float | None:
    """Mean forward KL(teacher || student) per token of the teacher's held-out answers (teacher forcing,
    top-k with the tail as one outcome); None without the teacher's log-probs."""
    import torch

    from distill.records import conform
    from distill.student import load_model, load_tokenizer
    from distill.transfer.kd import Collator, examples, kd_loss

    if teacher.is_empty():
        return None
    rows = conform(evals, {name: pl.String for name in ("id", "instruction", "input", "context")}).with_columns(
        response=pl.Series(answers, dtype=pl.String).fill_null(""), keep=pl.lit(True))
    tokenizer = load_tokenizer(model_path)
    found = [e for e in examples(rows, teacher, template, tokenizer, max_length).examples
             if any(ids[0] >= 0 for ids in e["teacher_ids"])]
    if not found:
        return None
    model, collate = for_inference(load_model(model_path, 0), device), Collator(tokenizer.pad_token_id)
    measure = params_module.KDParams(divergence="forward_kl", ce_weight=0.0, tail="bucket")
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(found), 64):
            batch = {name: value.to(model.device) for name, value in collate(found[start:start + 64]).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            count = int(((batch["teacher_ids"][:, 1:, 0] >= 0) & (batch["labels"][:, 1:] != -100)).sum())
            _, _, divergence = kd_loss(logits, batch["labels"], batch["teacher_ids"], batch["teacher_logprobs"],
                                       measure)
            total, tokens = total + float(divergence) * count, tokens + count
    return round(total / tokens, 5) if tokens else None
