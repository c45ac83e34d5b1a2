"""What a transfer method trains on: one bundle, built once by the train stage and handed to each method.

Each method module (``stages/kd.py``, ``stages/on_policy.py``, ``stages/similarity.py``,
``stages/dpo.py``, ``stages/rl.py``) exposes ``make_trainer(model, tokenizer, params, args, data)``
and returns a ready transformers/TRL ``Trainer``; the train stage runs it (resuming from a checkpoint
when there is one) and saves the model, so saving, checkpoints and metrics are the same for all.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TrainData:
    pairs: list[dict]  # {"prompt", "completion"}: the selected rows (plus replayed general rows), SFT format
    kd: object | None = None  # stages.kd.KDExamples with train.method kd
    preferences: list[dict] = field(default_factory=list)  # {"prompt", "chosen", "rejected"}: dpo, rl
    local_teacher: str | None = None  # a Hugging Face id or path: on_policy, similarity
