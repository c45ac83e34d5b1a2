"""Forgetting guards for the teacher-forced methods (sft, kd): KL to the starting student on every batch.

``train.reference_kl`` > 0 keeps a frozen copy of the student as it was before training and adds
``reference_kl * KL(student || reference)`` over the answer tokens to the loss, so the student
moves towards the teacher's answers without drifting far from what it already knew. TRL has the
same penalty inside DPO and GRPO (their ``beta``) but not in SFTTrainer: written here by hand.
The other guards are the replay mix (``train.replay``, stages/train.py) and the forgetting probe
(stages/evaluate.py).
"""

from __future__ import annotations

import copy

IGNORE = -100


def frozen_copy(model):
    reference = copy.deepcopy(model).eval()
    # TRL wraps the student's forward as an instance attribute bound to the student; the copy must use its own
    reference.__dict__.pop("forward", None)
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    return reference


def reference_kl(logits, reference_logits, labels):
    """Mean over answer tokens of KL(student || reference); position t predicts token t + 1."""
    from distill.transfer.divergences import divergence

    answer = labels[:, 1:] != IGNORE
    student = logits[:, :-1].float().log_softmax(-1)
    reference = reference_logits[:, :-1].float().log_softmax(-1)
    per_position = divergence("reverse_kl", reference, student)  # KL(q || p) with p the reference
    return (per_position * answer).sum() / answer.sum().clamp_min(1)


class ReferenceKL:
    """Mixin for a Trainer: ``self.reference`` (a frozen copy) and the penalty on a batch's logits."""

    def setup_reference(self, weight: float) -> None:
        self.reference_weight = weight
        self.reference = frozen_copy(self.model).to(self.model.device) if weight > 0 else None

    def reference_penalty(self, model, inputs, logits):
        """weight * KL(student || reference) on this batch, logged as ``reference_kl``; 0 when off."""
        if self.reference is None:
            return 0.0
        import torch

        with torch.no_grad():
            reference_logits = self.reference(input_ids=inputs["input_ids"],
                                              attention_mask=inputs.get("attention_mask"), use_cache=False).logits
        penalty = reference_kl(logits, reference_logits, inputs["labels"])
        mode = "train" if model.training else "eval"
        self._metrics[mode].setdefault("reference_kl", []).append(float(penalty.detach()))
        return self.reference_weight * penalty


def sft_trainer_class():
    """TRL's SFTTrainer, plus the reference KL when train.reference_kl > 0."""
    from trl import SFTTrainer

    class GuardedSFTTrainer(ReferenceKL, SFTTrainer):
        def __init__(self, *args, reference_kl: float = 0.0, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.setup_reference(reference_kl)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.reference is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # TRL's own loss uses a fused LM head that builds no logits; the penalty needs them, so the
            # cross-entropy here is the model's own (mean over answer tokens, TRL's labels)
            forward = {key: inputs[key] for key in ("input_ids", "attention_mask", "position_ids", "labels")
                       if key in inputs}
            outputs = model(**forward, use_cache=False)
            loss = outputs.loss + self.reference_penalty(model, inputs, outputs.logits)
            return (loss, outputs) if return_outputs else loss

    return GuardedSFTTrainer
