"""The training arguments every method shares, and where its resumable checkpoints live.

Every TRL config (SFTConfig, DistillationConfig, DPOConfig, RewardConfig, GRPOConfig, RLOOConfig)
is a ``transformers.TrainingArguments``, so one dict of common keywords serves all; a method adds
its own fields. Checkpoints go to ``.distill/checkpoints/<run key>/``, outside DVC's outs (which
``dvc repro`` deletes before a stage runs), so a killed training resumes there; the key hashes the
params and the data, so a changed run never resumes a stale one.
"""

from __future__ import annotations

import os
from pathlib import Path

from distill import params as params_module
from distill.entry import StageError
from distill.io import content_hash

CHECKPOINTS = Path(".distill/checkpoints")


def checkpoint_dir(model_dir: Path, params: params_module.TrainParams, data_hash: str) -> Path:
    key = content_hash({"model_dir": str(model_dir), "params": params.model_dump(), "data": data_hash})[:16]
    return CHECKPOINTS / f"{model_dir.name}-{key}"


def has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available()


def deterministic() -> bool:
    """Whether training runs torch's deterministic algorithms (``TrainingArguments.full_determinism``): always on a
    CPU, where it costs next to nothing; on a GPU only with DISTILL_TRAIN_DETERMINISTIC=1, since it also sets
    CUDA_LAUNCH_BLOCKING=1 and slower kernels (docs/training.md, "Reproducible bytes")."""
    return not has_accelerator() or os.environ.get("DISTILL_TRAIN_DETERMINISTIC") == "1"


def world_size() -> int:
    """How many processes train together: WORLD_SIZE, which the launcher sets (distill/transfer/parallel.py)."""
    return int(os.environ.get("WORLD_SIZE") or 1)


def per_process_batch(params: params_module.TrainParams) -> int:
    """Each training process's share of ``train.batch_size`` (all of it in one process): the batch an optimizer
    step sees is the same for any number of processes (distill/transfer/parallel.py)."""
    processes = world_size()
    if params.batch_size % processes:
        raise StageError(f"train.batch_size={params.batch_size} does not split evenly over the {processes} training "
                         f"processes launched (train.processes={params.processes}, train.accelerate_config="
                         f"{params.accelerate_config}): set train.batch_size to a multiple of {processes}, or launch "
                         "another number of processes")
    return params.batch_size // processes


def common_args(params: params_module.TrainParams, output_dir: Path, max_steps: int | None = None,
                learning_rate: float | None = None) -> dict:
    """TrainingArguments keywords for any TRL config; dpo and rl pass their own steps and rate."""
    steps = max_steps or params.max_steps
    return {
        "output_dir": str(output_dir),
        "max_steps": steps,
        "per_device_train_batch_size": per_process_batch(params),
        "gradient_accumulation_steps": params.gradient_accumulation_steps,
        "bf16": params.precision == "bf16",  # mixed precision: the trainer autocasts, the master weights stay fp32
        "fp16": params.precision == "fp16",
        "learning_rate": learning_rate or params.learning_rate,
        "lr_scheduler_type": params.lr_scheduler,
        "warmup_steps": min(params.warmup_steps, steps // 2),
        "logging_steps": max(1, steps // 50),
        "save_strategy": "steps",
        "save_steps": params.checkpoint_every,
        "save_total_limit": 1,  # only the last checkpoint is needed to resume
        "save_only_model": False,  # optimizer, scheduler and RNG states too: a resumed run continues exactly
        "report_to": "none",
        "seed": params.seed,
        "data_seed": params.seed,
        "full_determinism": deterministic(),  # the same rows and seed give the same weights, byte for byte
        "use_cpu": not has_accelerator(),
        "dataloader_num_workers": 0,
    }


def no_final_checkpoint():
    """A callback that skips the checkpoint transformers writes at the last step: the finished model is saved
    by the train stage anyway, and a last checkpoint (optimizer state included) is only deleted again."""
    from transformers import TrainerCallback

    class NoFinalCheckpoint(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_save = False
            return control

    return NoFinalCheckpoint()


def sft_config(params: params_module.TrainParams, args: dict):
    from trl import SFTConfig

    kd = params.objective == "kd"  # the KD data is tokenised here (distill/transfer/kd.py); TRL must keep its columns
    return SFTConfig(
        **args,
        dataset_kwargs={"skip_prepare_dataset": True} if kd else None,
        remove_unused_columns=not kd,
        max_length=params.max_length,
        packing=params.packing and not kd,
        train_sampling_strategy="group_by_length" if params.group_by_length else "random",
        activation_checkpointing=params.activation_checkpointing,
        completion_only_loss=True,
    )


def lora_config(params: params_module.LoraParams):
    from peft import LoraConfig

    return LoraConfig(
        r=params.r, lora_alpha=params.alpha, lora_dropout=params.dropout,
        target_modules=params.target_modules, task_type="CAUSAL_LM",
    )


def resume_point(checkpoints: Path) -> str | None:
    """The newest *complete* checkpoint in ``checkpoints``, or None. transformers writes ``trainer_state.json``
    last, so a checkpoint killed while being written lacks it (or holds a cut-off one): such folders are removed,
    and the previous checkpoint (kept until the new one is complete) is used."""
    import json
    import shutil

    if not checkpoints.is_dir():
        return None
    found = sorted((path for path in checkpoints.glob("checkpoint-*") if path.name.split("-")[-1].isdigit()),
                   key=lambda path: int(path.name.split("-")[-1]), reverse=True)
    for path in found:
        try:
            json.loads((path / "trainer_state.json").read_text())
            return str(path)
        except (OSError, ValueError):
            print(f"train: {path} was cut off while being written; removing it")
            shutil.rmtree(path, ignore_errors=True)
    return None
