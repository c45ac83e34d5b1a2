"""One training run, the same for every method: build the trainer, train (resuming from a checkpoint),
save the student whole or not at all, and its loss log.

Shaped like TRL's own scripts: build the data, the config, the trainer; train; save. ``sft`` is TRL's
SFTTrainer (loss on the completion only); every other method is a module whose ``make_trainer`` builds
its trainer (distill/transfer/data.py). ``train.lora.enabled`` trains LoRA adapters with PEFT and
merges them at save, so the checkpoint loads anywhere.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl

from distill import params as params_module
from distill.device import use_all_cores
from distill.io import atomic_dir, content_hash
from distill.records import TRAIN_LOG, conform
from distill.student import load_model, load_tokenizer
from distill.transfer import kd, parallel
from distill.transfer.arguments import (
    checkpoint_dir,
    common_args,
    lora_config,
    no_final_checkpoint,
    resume_point,
    sft_config,
)
from distill.transfer.data import TrainData

# Methods that learn from the student's own answers or rank them: a raw student's answers are noise, so by
# default they start from the plain-SFT baseline (as GKD, DPO and RLHF recipes start from an SFT model).
STARTS_FROM_SFT = ("on_policy", "dpo", "rl")
TRAINED_ON = "distill_train_params.json"  # in the model folder: the params and the data it was trained on

def trained_on(pairs: list[dict], params: params_module.TrainParams) -> dict:
    """What makes a checkpoint: the train params and the training pairs (the sweep reuses a match)."""
    return params.model_dump() | {"params_hash": content_hash(params.model_dump()), "data_hash": content_hash(pairs)}


def make_trainer(model, tokenizer, params: params_module.TrainParams, args: dict, data: TrainData):
    if params.objective == "sft":
        from datasets import Dataset

        from distill.transfer.guards import sft_trainer_class

        return sft_trainer_class()(model=model, args=sft_config(params, args), processing_class=tokenizer,
                                   train_dataset=Dataset.from_list(data.pairs), reference_kl=params.reference_kl,
                                   peft_config=lora_config(params.lora) if params.lora.enabled else None)
    from distill.transfer import dpo, on_policy, rl, similarity  # imported here: each loads its TRL trainer

    # train.objective -> the module whose make_trainer(model, tokenizer, params, args, data) builds its trainer
    objectives = {"kd": kd, "on_policy": on_policy, "similarity": similarity, "dpo": dpo, "rl": rl}
    return objectives[params.objective].make_trainer(model, tokenizer, params, args, data)


def train(data: TrainData | list[dict], params: params_module.TrainParams, model_dir: Path,
          start: str | None = None) -> list[dict]:
    """Train with ``params.objective`` and save the student to ``model_dir``; return the trainer's log history
    (its summary entry, the one with ``train_runtime``, also says how many ``processes`` trained).
    ``start`` is the model to start from (default ``params.student``). A run killed midway resumes from its
    last checkpoint in ``.distill/checkpoints`` when it is started again with the same params and data.
    With ``train.processes`` above 1 or ``train.accelerate_config`` the run is relaunched in several processes
    (distill/transfer/parallel.py), each of which comes back here."""
    if isinstance(data, list):
        data = TrainData(pairs=data)
    kd_print = [len(data.kd.examples), data.kd.with_teacher, data.kd.examples[:50]] if data.kd else None
    checkpoints = checkpoint_dir(model_dir, params, content_hash([data.pairs, data.preferences, start, kd_print]))
    if not parallel.inside():
        last = resume_point(checkpoints)  # here, once: cut-off checkpoints are removed before any process starts
        if last:
            print(f"train: resuming {model_dir} from its last checkpoint, {last}")
        if parallel.wanted(params):
            return parallel.launch(data, params, model_dir, start)
    use_all_cores()
    tokenizer = load_tokenizer(params.student)
    model = load_model(start or params.student, params.seed)
    trainer = make_trainer(model, tokenizer, params, common_args(params, checkpoints), data)
    trainer.add_callback(no_final_checkpoint())
    trainer.train(resume_from_checkpoint=resume_point(checkpoints))
    save_whole(trainer, tokenizer, trained_on(data.pairs, params), model_dir)
    if trainer.accelerator.is_main_process:
        shutil.rmtree(checkpoints, ignore_errors=True)
    history = trainer.state.log_history
    for entry in history:
        if "train_runtime" in entry:
            entry["processes"] = trainer.accelerator.num_processes
    return history


def save_whole(trainer, tokenizer, provenance: dict, model_dir: Path) -> None:
    """Process 0 saves the trained student (LoRA merged) to ``model_dir``, whole or not at all; the others wait.
    FSDP and DeepSpeed hold a shard of the weights in each process: every process joins in gathering them."""
    from accelerate.utils import DistributedType

    accelerator = trainer.accelerator
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    state_dict = accelerator.get_state_dict(trainer.model_wrapped) if sharded else None
    if accelerator.is_main_process:
        trained = trainer.model.merge_and_unload() if hasattr(trainer.model, "merge_and_unload") else trainer.model
        with atomic_dir(model_dir) as staging:  # the checkpoint appears whole or not at all (a full disk too)
            trained.save_pretrained(staging, state_dict=state_dict, safe_serialization=True)
            tokenizer.save_pretrained(staging)
            (staging / TRAINED_ON).write_text(json.dumps(provenance, indent=2))
    accelerator.wait_for_everyone()


def loss_log(history: list[dict], objective: str = "sft") -> pl.DataFrame:
    entries = [entry for entry in history if "loss" in entry]
    frame = pl.DataFrame(
        {
            "step": [entry["step"] for entry in entries],
            "loss": [float(entry["loss"]) for entry in entries],
            "learning_rate": [float(entry.get("learning_rate", 0.0)) for entry in entries],
            "grad_norm": [float(entry.get("grad_norm", float("nan"))) for entry in entries],
            "objective": ["policy" if objective == "rl" else "loss"] * len(entries),
            # the KD loss's terms, as its trainer logs them (distill/transfer/kd.py): what the mixture weighs
            **{term: [None if entry.get(term) is None else float(entry[term]) for entry in entries]
               for term in ("ce", "kd")},
        }
    )
    return conform(frame, TRAIN_LOG)
