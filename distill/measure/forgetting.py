"""The forgetting probe: the student's loss on general held-out data before and after training.

Training on one narrow skill can overwrite what a student could do before (catastrophic
forgetting). The probe measures it directly: mean cross-entropy per answer token on
``evaluate.general_eval`` (general instruction rows the task never trains on, by default
``data/general/eval.jsonl`` from distill/transfer/replay.py), for the student before training, after it,
and the plain-SFT baseline. A rise from before to after is forgetting; the guards against it are
``train.replay`` and ``train.reference_kl``.
"""

from __future__ import annotations

from pathlib import Path

from distill.chat import example_ids, student_turns
from distill.device import for_inference
from distill.transfer.replay import read_general

IGNORE = -100


def general_loss(model_path: str, rows: list[dict], template: str, max_length: int, seed: int,
                 batch_size: int = 64, device: str = "auto") -> float:
    """Mean cross-entropy per answer token (teacher forcing; the answer ends with EOS, as in training)."""
    import torch

    from distill.student import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_path)
    model = for_inference(load_model(model_path, seed), device)
    examples = []
    for row in rows:
        prompt, answer, end = example_ids(tokenizer, student_turns(row["instruction"], row["input"], "", template),
                                          row["response"])
        answer = answer + end
        examples.append(((prompt + answer)[:max_length], ([IGNORE] * len(prompt) + answer)[:max_length]))
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = examples[start:start + batch_size]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i, _ in batch])
            labels = torch.tensor([lab + [IGNORE] * (width - len(lab)) for _, lab in batch])
            mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch])
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits[:, :-1].float()
            targets = labels[:, 1:].to(model.device)
            total += float(torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE,
                                                             reduction="sum"))
            tokens += int((targets != IGNORE).sum())
    return round(total / max(tokens, 1), 5)


def probe(models: dict[str, str], general_eval: Path, template: str, max_length: int, seed: int,
          device: str = "auto") -> dict:
    """{system: general loss} for each model, and ``forgetting`` = after - before (> 0: the student forgot)."""
    rows = read_general(general_eval)
    losses = {name: general_loss(path, rows, template, max_length, seed, device=device)
              for name, path in models.items()}
    forgetting = (round(losses["student_after"] - losses["student_before"], 5)
                  if {"student_after", "student_before"} <= losses.keys() else None)
    return {"general_eval": str(general_eval), "rows": len(rows), "loss": losses, "forgetting": forgetting}
