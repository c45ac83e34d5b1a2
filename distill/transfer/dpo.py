"""Ranking optimisation on the teacher's feedback (``train.objective: dpo``), all of it TRL's ``DPOTrainer``.

The feedback method (``generate.elicit: [feedback]``) has the student answer seed inputs and the teacher grade and
correct them; each corrected answer is a preference pair: the teacher's correction is *chosen*, the student's own
answer *rejected*. DPO (Rafailov et al., "Direct Preference Optimization") raises the student's log-likelihood ratio
of chosen over rejected relative to a frozen reference, the starting model (by default the plain-SFT baseline,
``train.start_from_sft``): ``train.dpo.beta`` is the strength of the implicit KL to that reference and
``train.dpo.loss_type`` the loss on the ratio (sigmoid = DPO, ipo, hinge = SLiC).

TRL classes: ``trl.DPOConfig`` and ``trl.DPOTrainer`` on ``data.preferences`` in TRL's standard (plain text)
preference format, ``{"prompt", "chosen", "rejected"}``: TRL appends EOS to both answers, tokenises the prompt
and the answers, and trains on the answer tokens only. The student needs no chat template. ``student.reasoning``
does not reach the pairs (a correction has no reasoning): they are ranked as the feedback method stored them; with
keep, only the SFT start learns the teacher's reasoning.

Written by hand, and only this: the mapping of ``train.dpo`` onto the config, and the reference model. With
``ref_model=None`` TRL 1.16 would *reload* the reference from ``model.config._name_or_path``, which is wrong for a
config-only student (a folder without weights: TRL would fail on its missing ``architectures``, or initialise other
weights) and redundant otherwise, so the reference is a frozen in-memory copy of the starting model. With LoRA
(``train.lora.enabled``) there is no copy: TRL disables the adapter to get the starting model back.
"""

from __future__ import annotations

from distill import params as params_module
from distill.entry import StageError
from distill.transfer.data import TrainData


def check_preferences(data: TrainData, method: str) -> None:
    """Refuse a run without preference pairs with the fix (shared by dpo and rl)."""
    if not data.preferences:
        raise StageError(f"train.objective={method} needs preference pairs (prompt, chosen, rejected), but there are "
                         "none: add feedback to generate.elicit (the teacher grades and corrects the student's "
                         "answers) and re-run generate")


def make_trainer(model, tokenizer, params: params_module.TrainParams, args: dict, data: TrainData):
    """A ready TRL ``DPOTrainer`` on ``data.preferences``: the method contract of distill/transfer/data.py."""
    from pathlib import Path

    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from distill.transfer.arguments import common_args, lora_config
    from distill.transfer.guards import frozen_copy

    check_preferences(data, "dpo")
    settings = params.dpo
    config = DPOConfig(
        **common_args(params, Path(args["output_dir"]), max_steps=settings.max_steps,
                      learning_rate=settings.learning_rate),
        activation_checkpointing=params.activation_checkpointing,
        beta=settings.beta,
        loss_type=[settings.loss_type],
        max_length=params.max_length,
    )
    lora = params.lora.enabled
    return DPOTrainer(
        model=model,
        ref_model=None if lora else frozen_copy(model),
        args=config,
        train_dataset=Dataset.from_list(data.preferences),
        processing_class=tokenizer,
        peft_config=lora_config(params.lora) if lora else None,
    )
